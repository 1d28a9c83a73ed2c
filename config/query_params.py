"""An API query parameter given without a value is refused with 400, not read as "no filter".

`GET /api/v1/jobs?kind=` is a client's mistake (a template that left a blank, an unset variable):
silently listing every kind hides it. django-filter and DRF serializers skip empty values, so the
rule is kept here, once, for every path under /api/v1/ (the HTML pages' GET forms may submit blank
filters and are not touched). Unknown parameter names are still ignored, as HTTP caches and
tracing tools add their own.
"""

from django.http import JsonResponse

API_PREFIX = "/api/v1/"


class EmptyQueryParameterMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith(API_PREFIX) and request.GET:
            empty = sorted(name for name in request.GET if any(v == "" for v in request.GET.getlist(name)))
            if empty:
                return JsonResponse(
                    {
                        "code": "invalid",
                        "message": "The request has invalid fields.",
                        "extra": {"fields": {name: ["This parameter may not be empty."] for name in empty}},
                    },
                    status=400,
                )
        return self.get_response(request)
