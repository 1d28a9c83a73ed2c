"""URL map: the REST API under /api/v1/, its schema and docs, the admin, and the pages."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("market.api.urls")),
    path("api/v1/", include("auctions.api.urls")),
    path("api/v1/", include("contracts.api")),  # on-chain settlement (issue 5)
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Pages (issue 6)
    path("ops/", include("auctions.urls")),
    path("market/", include("auctions.market_pages")),  # public market and replays (issue 14)
    path("funds/", include("contracts.funds")),  # a consumer adds funds (issue 14)
    path("", include("market.urls")),
]
