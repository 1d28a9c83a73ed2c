"""URL map: the REST API under /api/v1/, its schema and docs, the admin, and the pages."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from auctions.pages import urls as auction_pages
from market import urls as market_pages

# One `pages` namespace over the pages of both apps: each page sits in the app whose data it shows.
PAGES = (market_pages.urlpatterns + auction_pages.urlpatterns, "pages")

urlpatterns = [
    path("", include("ops.urls")),  # /healthz, /readyz, /metrics (issue 13)
    path("admin/", admin.site.urls),
    path("api/v1/", include("market.api.urls")),
    path("api/v1/", include("auctions.api.urls")),
    path("api/v1/", include("contracts.api")),  # on-chain settlement (issue 5)
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Pages (issue 6)
    path("ops/", include("auctions.urls")),
    path("", include(PAGES)),
]

# JSON for unknown API paths and crashes under /api/; HTML pages elsewhere (config.exception_handler).
handler404 = "config.exception_handler.not_found"
handler500 = "config.exception_handler.server_error"
