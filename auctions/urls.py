"""Operator pages (issue 6), under /ops/."""

from django.urls import path

from auctions import views
from contracts import views as contract_views

app_name = "ops"

urlpatterns = [
    path("market/", views.market, name="market"),
    path("market/live/", views.market_live, name="market-live"),
    path("market/<slug:series>.csv", views.market_csv, name="market-csv"),
    path("rounds/", views.round_list, name="round-list"),
    path("rounds/<int:pk>/", views.round_detail, name="round-detail"),
    path("rounds/<int:pk>/replay/", views.round_replay_view, name="round-replay"),
    # Settlement dashboard (issue 5): contracts.views replaces the placeholder, same URL name.
    path("settlements/", contract_views.settlements, name="settlements"),
    path("settlements/<int:pk>/", contract_views.settlement_detail, name="settlement-detail"),
    path("settlements/<int:pk>/retry/", contract_views.settlement_retry, name="settlement-retry"),
]
