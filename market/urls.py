"""Pages of market data: accounts and API keys, the provider's profile and listings, the consumer's
job list, submit form and balance (issue 6).

Pages that show leases (the provider console, a job's own page and its cancel, the quote) are
`auctions.pages.urls`; config/urls.py serves both lists under the one `pages` namespace.
"""

from django.contrib.auth import views as auth_views
from django.urls import path

from market.views import accounts, brokers, consumer, provider

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
    # provider profile and listings
    path("provider/profile/", provider.profile, name="provider-profile"),
    path("provider/resources/new/", provider.resource_new, name="resource-new"),
    path("provider/resources/<int:pk>/edit/", provider.resource_edit, name="resource-edit"),
    # consumer pages
    path("jobs/", consumer.job_list, name="job-list"),
    path("jobs/live/", consumer.job_list_live, name="job-list-live"),
    path("jobs/new/", consumer.job_new, name="job-new"),
    path("balance/", consumer.balance, name="balance"),
    # brokers (issue 12)
    path("broker/", brokers.broker_console, name="broker-console"),
    path("brokers/", brokers.broker_appointments, name="broker-appointments"),
    path("brokers/<int:pk>/revoke/", brokers.broker_appointment_revoke, name="broker-appointment-revoke"),
]
