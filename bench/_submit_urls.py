"""Bench-only URLconf: every normal URL, plus `POST /bench/bare-jobs`, a bare Django view (no DRF)
that calls the same service as `POST /api/v1/jobs`, `job_request_submit`, so it sends the same SQL
statements by construction (authentication by the same selector, the servability check, the job
insert, the escrow hold, the queueing update).

What it leaves out is the framework: DRF's request wrapping, authentication and permission classes,
throttling, serializer validation and rendering. Input checks are the service's own (it is a
yardstick, not an endpoint); the response carries the job's own columns.
"""

import json
from datetime import datetime
from decimal import Decimal

from django.core.serializers.json import DjangoJSONEncoder
from django.http import JsonResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from config.urls import urlpatterns as project_urlpatterns
from market.models import JobRequest, Role
from market.selectors import api_key_authenticate
from market.services.jobs import job_request_submit

COLUMNS = [field.attname for field in JobRequest._meta.concrete_fields]


def _error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"code": code, "message": message, "extra": {}}, status=status)


@csrf_exempt
def bare_job_submit(request):
    if request.method != "POST":
        return _error("method_not_allowed", "POST only.", 405)
    scheme, _, raw = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    key = api_key_authenticate(raw.strip()) if scheme == "Bearer" else None
    if key is None:
        return _error("authentication_failed", "Unknown or revoked API key.", 401)
    user = key.user
    if key.role != Role.CONSUMER or not user.holds_role(Role.CONSUMER):
        return _error("permission_denied", "This needs a consumer API key.", 403)
    try:
        body = json.loads(request.body)
        spec = {  # what the serializer would hand the service, converted by hand
            "kind": body["kind"],
            "model_name": str(body["model_name"])[:100],
            "params_billion": Decimal(body["params_billion"]),
            "quant_bits": int(body["quant_bits"]),
            "context_length": int(body["context_length"]),
            "batch_size": int(body.get("batch_size", 1)),
            "workload_tokens": int(body["workload_tokens"]),
            "max_price_per_device_hour": Decimal(body["max_price_per_device_hour"]),
            "budget": Decimal(body["budget"]),
            "deadline": datetime.fromisoformat(body["deadline"]),
            "region": str(body["region"])[:32],
            "device_class": body.get("device_class", "GPU"),
        }
        job, created = job_request_submit(
            consumer=user,
            spec=spec,
            now=timezone.now(),
            idempotency_key=request.META.get("HTTP_IDEMPOTENCY_KEY") or None,
        )
    except Exception as error:  # a yardstick: any refusal is a 400
        return _error("invalid", f"Bad input: {error}", 400)
    return JsonResponse(
        {name: getattr(job, name) for name in COLUMNS},
        encoder=DjangoJSONEncoder,
        status=201 if created else 200,
    )


urlpatterns = [*project_urlpatterns, path("bench/bare-jobs", bare_job_submit, name="bench-bare-jobs")]
