"""Bench-only URLconf: every normal URL, plus `POST /bench/bare-jobs`, a bare Django view (no DRF)
that runs the same transaction as `POST /api/v1/jobs` with the same SQL statements:

    SELECT api key JOIN user            (authentication, the same selector)
    SELECT job by (consumer, idempotency key)
    BEGIN
      INSERT job RETURNING id
      SELECT the consumer's balance account
      INSERT escrow account RETURNING id
      SAVEPOINT
        UPDATE balance - budget WHERE balance >= budget
        UPDATE escrow + budget
        INSERT hold transfer RETURNING id
      RELEASE SAVEPOINT
      UPDATE job SET status = QUEUED WHERE status = SUBMITTED
    COMMIT

What it leaves out is the framework: DRF's request wrapping, authentication and permission classes,
throttling, serializer validation and rendering. Input checks are the minimum (it is a yardstick,
not an endpoint); the response carries the same job fields.
"""

import hashlib
import json
from datetime import datetime
from decimal import Decimal

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import JsonResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from auctions.mechanisms.llm_sizing import size_llm_job
from config.urls import urlpatterns as project_urlpatterns
from market.api.serializers import JobRequestSerializer
from market.models import JobRequest, LedgerAccount, LedgerTransfer, Role
from market.selectors import api_key_authenticate

FIELDS = JobRequestSerializer.Meta.fields  # the API's answer, without DRF on the request path


def _error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"code": code, "message": message, "extra": {}}, status=status)


def _job(job: JobRequest, status: int) -> JsonResponse:
    return JsonResponse(
        {name: getattr(job, name) for name in FIELDS}, encoder=DjangoJSONEncoder, status=status
    )


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
    idempotency_key = request.META.get("HTTP_IDEMPOTENCY_KEY") or None
    try:
        spec = json.loads(request.body)
        fields = {
            "kind": spec["kind"],
            "model_name": str(spec["model_name"])[:100],
            "params_billion": Decimal(spec["params_billion"]),
            "quant_bits": int(spec["quant_bits"]),
            "context_length": int(spec["context_length"]),
            "batch_size": int(spec.get("batch_size", 1)),
            "workload_tokens": int(spec["workload_tokens"]),
            "max_price_per_device_hour": Decimal(spec["max_price_per_device_hour"]),
            "budget": Decimal(spec["budget"]),
            "deadline": datetime.fromisoformat(spec["deadline"]),
            "region": str(spec["region"])[:32],
        }
        sizing = size_llm_job(
            kind=fields["kind"],
            params_billion=float(fields["params_billion"]),
            quant_bits=fields["quant_bits"],
            context_length=fields["context_length"],
            batch_size=fields["batch_size"],
        )
    except Exception as error:  # a yardstick: any bad input is a 400
        return _error("invalid", f"Bad input: {error}", 400)
    fingerprint = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    now = timezone.now()
    if idempotency_key:
        existing = JobRequest.objects.filter(consumer=user, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _job(existing, 200)
    amount = fields["budget"]
    try:
        with transaction.atomic():
            job = JobRequest.objects.create(
                consumer=user,
                status=JobRequest.Status.SUBMITTED,
                idempotency_key=idempotency_key,
                request_fingerprint=fingerprint,
                memory_per_device_gib=Decimal(str(sizing.memory_per_device_gib)),
                device_count=sizing.device_count,
                sizing=sizing.as_dict(),
                created_at=now,
                updated_at=now,
                **fields,
            )
            balance = LedgerAccount.objects.filter(kind=LedgerAccount.Kind.CONSUMER, user=user).first()
            escrow = LedgerAccount.objects.create(kind=LedgerAccount.Kind.ESCROW, job=job)
            with transaction.atomic():
                debited = LedgerAccount.objects.filter(pk=balance.pk, balance__gte=amount)
                if debited.update(balance=F("balance") - amount) != 1:
                    raise _Insufficient
                LedgerAccount.objects.filter(pk=escrow.pk).update(balance=F("balance") + amount)
                LedgerTransfer.objects.create(
                    kind=LedgerTransfer.Kind.HOLD,
                    debit=balance,
                    credit=escrow,
                    amount=amount,
                    job=job,
                    created_at=now,
                )
            JobRequest.objects.filter(pk=job.pk, status__in=(JobRequest.Status.SUBMITTED,)).update(
                status=JobRequest.Status.QUEUED, updated_at=now
            )
            job.status = JobRequest.Status.QUEUED
    except _Insufficient:
        return _error("insufficient_funds", "The account does not hold enough money.", 409)
    except IntegrityError:
        existing = JobRequest.objects.filter(consumer=user, idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return _job(existing, 200)
    return _job(job, 201)


class _Insufficient(Exception):
    pass


urlpatterns = [*project_urlpatterns, path("bench/bare-jobs", bare_job_submit, name="bench-bare-jobs")]
