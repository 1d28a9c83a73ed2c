"""Operator pages (issue 6), under /ops/."""

from django.urls import path

from auctions import views

app_name = "ops"

urlpatterns = [
    path("market/", views.market, name="market"),
    path("market/live/", views.market_live, name="market-live"),
    path("market/<slug:series>.csv", views.market_csv, name="market-csv"),
    path("rounds/", views.round_list, name="round-list"),
    path("rounds/<int:pk>/", views.round_detail, name="round-detail"),
    path("rounds/<int:pk>/replay/", views.round_replay_view, name="round-replay"),
    path("settlements/", views.settlements, name="settlements"),
]
