"""A Content-Security-Policy header on every HTML answer (Django 5.2 has none built in).

The pages load scripts, styles and images from this origin only, with no inline script or style:
htmx comes from node_modules as a static file, charts are inline SVG drawn with presentation
attributes (not `style=`), and every form posts back here. Paths in CPX_CSP_EXEMPT_PREFIXES (the
Swagger UI of /api/docs/, which loads its assets from a CDN) are served without the header.
"""

from django.conf import settings

POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.exempt = tuple(getattr(settings, "CPX_CSP_EXEMPT_PREFIXES", ()))

    def __call__(self, request):
        response = self.get_response(request)
        if not request.path.startswith(self.exempt):
            response.headers.setdefault("Content-Security-Policy", POLICY)
        return response
