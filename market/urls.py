"""Provider console, consumer pages, accounts and API keys (issue 6)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from market.views import accounts, consumer, provider

app_name = "pages"

urlpatterns = [
    path("", accounts.home, name="home"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(template_name="accounts/login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("keys/", accounts.api_keys, name="api-keys"),
    path("keys/<str:prefix>/revoke/", accounts.api_key_revoke_view, name="api-key-revoke"),
    # provider console
    path("provider/", provider.console, name="provider-console"),
    path("provider/live/", provider.console_live, name="provider-live"),
    path("provider/profile/", provider.profile, name="provider-profile"),
    path("provider/leases/", provider.leases, name="provider-leases"),
    path("provider/proofs.json", provider.proofs_json, name="provider-proofs-json"),
    path("provider/resources/new/", provider.resource_new, name="resource-new"),
    path("provider/resources/<int:pk>/edit/", provider.resource_edit, name="resource-edit"),
    # consumer pages
    path("jobs/", consumer.job_list, name="job-list"),
    path("jobs/live/", consumer.job_list_live, name="job-list-live"),
    path("jobs/new/", consumer.job_new, name="job-new"),
    path("jobs/quote/", consumer.job_quote_partial, name="job-quote"),
    path("jobs/<int:pk>/", consumer.job_detail, name="job-detail"),
    path("jobs/<int:pk>/live/", consumer.job_live, name="job-live"),
    path("jobs/<int:pk>/cancel/", consumer.job_cancel, name="job-cancel"),
    path("balance/", consumer.balance, name="balance"),
]
