"""Job requests: submission (sized, funded, idempotent) and state changes by compare-and-set.

What changes a job together with its leases (cancel, settlement, failover, the sweep) lives in
`auctions.services`, the one owner of the job and lease lifecycle; this module knows no lease.
"""

import hashlib
import json
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.dispatch import Signal

from auctions.mechanisms.errors import MechanismError
from auctions.mechanisms.llm_sizing import size_llm_job
from config.errors import Conflict, InvalidInput
from market.models import DataFile, JobRequest, LedgerAccount, LedgerTransfer, User
from market.services.elastic import elastic_check_spec, elastic_size
from market.services.files import file_get_for_owner, file_upload
from market.services.gangs import gang_terms_check
from market.services.ledger import InsufficientFunds, ledger_transfer
from market.services.placement import job_request_check_servable, placement_of, region_check

Status = JobRequest.Status
# Sent inside a submission's transaction with the new job and the SLA terms its consumer stated
# (`sla`, or None): auctions.services.sla records them, as market knows no contract or lease. A
# receiver that raises refuses the submission and nothing is written.
job_request_submitted = Signal()
# The largest memory_per_device_gib the column holds (8 digits, 2 decimals); no device has more.
MAX_MEMORY_PER_DEVICE_GIB = 999_999.99


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class DeadlineTooFar(InvalidInput):
    """A deadline beyond CPX_MAX_JOB_DEADLINE_DAYS: escrow and leases would be held for that long."""

    code = "deadline_too_far"


def job_request_submit(
    *, consumer: User, spec: dict, now: datetime, idempotency_key: str | None = None
) -> tuple[JobRequest, bool]:
    """Size a job, hold its budget in escrow and queue it; returns (job, created).

    A retry with the same idempotency key and the same spec returns the first job (created is
    False), whatever the timing: the database's unique constraint settles a race. Raises
    InvalidInput (among them UnknownRegion, and Unservable: no listed resource could ever run the
    job), InsufficientFunds (nothing is written), IdempotencyKeyReused, GangInvalid, GangUnservable
    (an opt-in `gang`: market.services.gangs), and the SLA terms' errors (an opt-in `sla`:
    auctions.services.sla).
    """
    fingerprint = _fingerprint(spec)
    spec = dict(spec)
    sla = spec.pop("sla", None)
    try:
        fields = job_request_size(spec=job_spec_with_input(consumer=consumer, spec=spec), now=now)
        if fields.get("gang") is not None:  # a gang spans nodes: its own servability check
            fields["gang"] = gang_terms_check(gang=fields["gang"], fields=fields)
        else:
            job_request_check_servable(fields=fields)
        job = _create_funded(
            consumer=consumer,
            fields=fields,
            now=now,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            sla=sla,
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


def job_request_submit_with_upload(
    *, consumer: User, spec: dict, upload, now: datetime, idempotency_key: str | None = None
) -> tuple[JobRequest, bool]:
    """The submit page's path: keep the attached file (a batch file for inference, a dataset
    otherwise; the same bytes kept before are reused, so a form posted twice is one file and one
    job) and submit the job with it. Raises what file_upload and job_request_submit raise."""
    purpose = (
        DataFile.Purpose.BATCH if spec["kind"] == JobRequest.Kind.INFERENCE else DataFile.Purpose.DATASET
    )
    data_file = file_upload(owner=consumer, purpose=purpose, upload=upload, now=now, reuse=True)
    spec = {**spec, "input_file_id": data_file.public_id}
    return job_request_submit(consumer=consumer, spec=spec, now=now, idempotency_key=idempotency_key)


@transaction.atomic
def _create_funded(*, consumer, fields, now, idempotency_key, fingerprint, sla=None) -> JobRequest:
    job = JobRequest.objects.create(
        consumer=consumer,
        status=Status.SUBMITTED,
        idempotency_key=idempotency_key or None,
        request_fingerprint=fingerprint,
        created_at=now,
        updated_at=now,
        **fields,
    )
    job_request_submitted.send(sender=JobRequest, job=job, sla=sla, now=now)
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


class BatchModelMismatch(InvalidInput):
    code = "batch_model_mismatch"


class InputFileUnsuitable(InvalidInput):
    code = "input_file_unsuitable"


def job_spec_with_input(*, consumer: User, spec: dict) -> dict:
    """Resolve `input_file_id` into the job's input file and what it implies.

    An inference job takes a batch file (purpose `batch`) whose model is the job's `model_name`;
    its workload_tokens become the file's prompt-token estimate plus the sum of its max_tokens (the
    most it can use), whatever the spec stated. A training or fine-tuning job takes a dataset
    (purpose `dataset`), carried as an opaque file. Raises FileNotFound (not the consumer's),
    InputFileUnsuitable, BatchModelMismatch.
    """
    if not spec.get("input_file_id"):
        return {key: value for key, value in spec.items() if key != "input_file_id"}
    spec = dict(spec)
    data_file = file_get_for_owner(owner=consumer, file_id=spec.pop("input_file_id"))
    if data_file.deleted_at is not None:
        raise InputFileUnsuitable("The input file has expired.", field="input_file_id")
    if spec["kind"] == JobRequest.Kind.INFERENCE:
        if data_file.purpose != DataFile.Purpose.BATCH:
            raise InputFileUnsuitable(
                "An inference job takes a file of purpose batch.", field="input_file_id"
            )
        if data_file.model_name != spec["model_name"]:
            raise BatchModelMismatch(
                f"The batch file's requests name the model {data_file.model_name!r}, "
                f"the job {spec['model_name']!r}.",
                field="model_name",
                file_model=data_file.model_name,
            )
        spec["workload_tokens"] = data_file.prompt_tokens_estimate + data_file.max_tokens_total
    elif data_file.purpose != DataFile.Purpose.DATASET:
        raise InputFileUnsuitable(
            "A training or fine-tuning job takes a file of purpose dataset.", field="input_file_id"
        )
    spec["input_file"] = data_file
    return spec


def job_request_size(*, spec: dict, now: datetime) -> dict:
    """Check the rules across fields and size the job; returns the model fields.

    Raises InvalidInput (a deadline passed, a missing workload, a budget over CPX_MAX_JOB_BUDGET, a
    job that cannot be sized, UnknownRegion, PlacementConflictsWithSla, the Elastic* errors of
    market.services.elastic), DeadlineTooFar (beyond CPX_MAX_JOB_DEADLINE_DAYS)."""
    kind = spec["kind"]
    region = region_check(spec["region"])
    placement = placement_of(placement=spec.get("placement"), latency_sla_ms=spec.get("latency_sla_ms"))
    if spec["deadline"] <= now:
        raise InvalidInput("The deadline has passed.", field="deadline")
    max_days = settings.CPX_MAX_JOB_DEADLINE_DAYS
    latest = now + timedelta(days=max_days)
    if spec["deadline"] > latest:
        raise DeadlineTooFar(
            f"A job's deadline is at most {max_days} days ahead (by {latest.isoformat()}).",
            field="deadline",
            max_days=max_days,
            latest=latest.isoformat(),
        )
    if spec.get("elastic") is not None:
        elastic_check_spec(spec=spec)  # its size follows from its purchase (docs/eetorp.md)
    elif kind == JobRequest.Kind.INFERENCE and not spec.get("workload_tokens"):
        raise InvalidInput("An inference job states workload_tokens.", field="workload_tokens")
    elif kind != JobRequest.Kind.INFERENCE and not spec.get("workload_device_hours"):
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
    elastic = {}
    if spec.get("elastic") is not None:
        elastic = elastic_size(spec=spec, device_count=sizing.device_count)
    return {
        **spec,
        **elastic,
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
