"""Job requests: submission (sized, funded, idempotent), state changes by compare-and-set, cancel."""

import hashlib
import json
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction

from auctions.mechanisms.errors import MechanismError
from auctions.mechanisms.llm_sizing import size_llm_job
from auctions.models import Lease
from config.errors import Conflict, InvalidInput, NotFound
from market.models import JobRequest, LedgerAccount, LedgerTransfer, User
from market.services.ledger import InsufficientFunds, ledger_transfer
from market.services.placement import job_request_check_servable, placement_of, region_check

Status = JobRequest.Status
CANCELLABLE = (Status.SUBMITTED, Status.QUEUED, Status.MATCHED)
# The largest memory_per_device_gib the column holds (8 digits, 2 decimals); no device has more.
MAX_MEMORY_PER_DEVICE_GIB = 999_999.99


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


def job_request_submit(
    *, consumer: User, spec: dict, now: datetime, idempotency_key: str | None = None
) -> tuple[JobRequest, bool]:
    """Size a job, hold its budget in escrow and queue it; returns (job, created).

    A retry with the same idempotency key and the same spec returns the first job (created is
    False), whatever the timing: the database's unique constraint settles a race. Raises
    InvalidInput (among them UnknownRegion, and Unservable: no listed resource could ever run the
    job), InsufficientFunds (nothing is written), IdempotencyKeyReused.
    """
    fingerprint = _fingerprint(spec)
    try:
        fields = job_request_size(spec=spec, now=now)
        job_request_check_servable(fields=fields)
        job = _create_funded(
            consumer=consumer,
            fields=fields,
            now=now,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
        )
        return job, True
    except (IntegrityError, InvalidInput):
        # Insert first, look up on conflict: a new key (the common case) costs no extra query.
        # A retry lands here because the key is taken (or, for an old job, because its
        # deadline has passed since): either way it answers with the first job.
        existing = idempotency_key and _existing(
            consumer=consumer, idempotency_key=idempotency_key, fingerprint=fingerprint
        )
        if not existing:
            raise
        return existing, False


@transaction.atomic
def _create_funded(*, consumer, fields, now, idempotency_key, fingerprint) -> JobRequest:
    job = JobRequest.objects.create(
        consumer=consumer,
        status=Status.SUBMITTED,
        idempotency_key=idempotency_key or None,
        request_fingerprint=fingerprint,
        created_at=now,
        updated_at=now,
        **fields,
    )
    balance = LedgerAccount.objects.filter(kind=LedgerAccount.Kind.CONSUMER, user=consumer).first()
    if balance is None:
        raise InsufficientFunds(
            "You have no balance yet: ask an operator for a deposit.", needed=str(job.budget)
        )
    escrow = LedgerAccount.objects.create(kind=LedgerAccount.Kind.ESCROW, job=job)
    ledger_transfer(
        debit=balance, credit=escrow, amount=job.budget, kind=LedgerTransfer.Kind.HOLD, now=now, job=job
    )
    job_request_transition(job=job, from_statuses=(Status.SUBMITTED,), to=Status.QUEUED, now=now)
    job.status = Status.QUEUED
    return job


def _existing(*, consumer, idempotency_key, fingerprint) -> JobRequest | None:
    job = JobRequest.objects.filter(consumer=consumer, idempotency_key=idempotency_key).first()
    if job is not None and job.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used for a different job.", idempotency_key=idempotency_key, job=job.pk
        )
    return job


def _fingerprint(spec: dict) -> str:
    text = json.dumps(spec, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def job_request_size(*, spec: dict, now: datetime) -> dict:
    """Check the rules across fields and size the job; returns the model fields.

    Raises InvalidInput (UnknownRegion, PlacementConflictsWithSla, sizing)."""
    kind = spec["kind"]
    region = region_check(spec["region"])
    placement = placement_of(placement=spec.get("placement"), latency_sla_ms=spec.get("latency_sla_ms"))
    if spec["deadline"] <= now:
        raise InvalidInput("The deadline has passed.", field="deadline")
    if kind == JobRequest.Kind.INFERENCE and not spec.get("workload_tokens"):
        raise InvalidInput("An inference job states workload_tokens.", field="workload_tokens")
    if kind != JobRequest.Kind.INFERENCE and not spec.get("workload_device_hours"):
        raise InvalidInput(
            "A training or fine-tuning job states workload_device_hours.", field="workload_device_hours"
        )
    if spec["budget"] > settings.CPX_MAX_JOB_BUDGET:
        raise InvalidInput(
            f"A job's budget is at most {settings.CPX_MAX_JOB_BUDGET}.",
            field="budget",
            max=str(settings.CPX_MAX_JOB_BUDGET),
        )
    requested_memory = spec.get("requested_memory_per_device_gib")
    requested_devices = spec.get("requested_device_count")
    try:
        sizing = size_llm_job(
            kind=kind,
            params_billion=float(spec["params_billion"]),
            quant_bits=spec["quant_bits"],
            context_length=spec["context_length"],
            batch_size=spec.get("batch_size", 1),
            device_count=requested_devices,
            max_device_memory_gib=float(requested_memory) if requested_memory else 80.0,
        )
    except MechanismError as error:
        raise InvalidInput(f"The job cannot be sized: {error.message}", field="sizing") from None
    if sizing.memory_per_device_gib > MAX_MEMORY_PER_DEVICE_GIB:
        raise InvalidInput(
            "The job needs more memory per device than any device has: shrink the context, batch or "
            "model, or use more devices.",
            field="sizing",
            memory_per_device_gib=sizing.memory_per_device_gib,
        )
    memory = requested_memory if requested_memory else Decimal(str(sizing.memory_per_device_gib))
    return {
        **spec,
        "region": region,
        "placement": placement,
        "memory_per_device_gib": memory,
        "device_count": sizing.device_count,
        "sizing": sizing.as_dict(),
    }


def job_request_transition(
    *, job: JobRequest, from_statuses: tuple[str, ...], to: str, now: datetime, close_reason: str = ""
) -> bool:
    """Compare-and-set the job's status; True if this caller made the change."""
    updates = {"status": to, "updated_at": now}
    if close_reason:
        updates["close_reason"] = close_reason
    return JobRequest.objects.filter(pk=job.pk, status__in=from_statuses).update(**updates) == 1


@transaction.atomic
def job_request_cancel(*, consumer: User, job_id: int, now: datetime) -> JobRequest:
    """Cancel a job that has not been dispatched and release its escrow to the consumer. A MATCHED
    job's lease (offered, not yet taken by the agent) closes with reason OWNER, in the same
    transaction.

    Raises NotFound (no such job of this consumer), Conflict (already dispatched or ended).
    """
    job = JobRequest.objects.filter(pk=job_id, consumer=consumer).first()
    if job is None:
        raise NotFound("No such job.", job=job_id)
    # The lease row before the job row, as every lease service takes them (no deadlock with an
    # agent accepting it). If the job turns out not cancellable, the Conflict rolls this back.
    Lease.objects.filter(job=job, status=Lease.Status.DISPATCHED).update(
        status=Lease.Status.FAILED,
        close_reason=Lease.CloseReason.OWNER,
        close_detail="cancelled by the consumer",
        ended_at=now,
    )
    if not job_request_transition(
        job=job, from_statuses=CANCELLABLE, to=Status.CANCELLED, now=now, close_reason="OWNER"
    ):
        job.refresh_from_db(fields=["status"])
        raise Conflict(f"A {job.status.lower()} job cannot be cancelled.", status=job.status)
    _release_escrow(job=job, now=now)
    job.refresh_from_db()
    return job


def _release_escrow(*, job: JobRequest, now: datetime) -> None:
    escrow = LedgerAccount.objects.select_for_update().get(job=job)
    if escrow.balance > 0:
        balance = LedgerAccount.objects.get(kind=LedgerAccount.Kind.CONSUMER, user_id=job.consumer_id)
        ledger_transfer(
            debit=escrow,
            credit=balance,
            amount=escrow.balance,
            kind=LedgerTransfer.Kind.RELEASE,
            now=now,
            job=job,
        )
