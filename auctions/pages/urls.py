"""Pages that show auctions data (leases, quotes), served under the `pages` namespace beside
market.urls (see config/urls.py)."""

from django.urls import path

from auctions.pages import brokers, consumer, provider, sla

urlpatterns = [
    # provider console
    path("provider/", provider.console, name="provider-console"),
    path("provider/live/", provider.console_live, name="provider-live"),
    path("provider/leases/", provider.leases, name="provider-leases"),
    path("provider/leases/<int:pk>/", sla.lease_detail, name="provider-lease-detail"),
    path("provider/proofs.json", provider.proofs_json, name="provider-proofs-json"),
    # a consumer's job
    path("jobs/quote/", consumer.job_quote_partial, name="job-quote"),
    path("jobs/<int:pk>/", consumer.job_detail, name="job-detail"),
    path("jobs/<int:pk>/live/", consumer.job_live, name="job-live"),
    path("jobs/<int:pk>/cancel/", consumer.job_cancel, name="job-cancel"),
    path("jobs/<int:pk>/sla/", sla.job_terms, name="job-sla"),
    # the broker's prices at the duals (issue 12)
    path("broker/prices/", brokers.broker_prices, name="broker-prices"),
]
