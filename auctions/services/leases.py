"""Leases at the provider: dispatch to the agent, acceptance, metering, completion, failure and
failover, and the sweeper that catches agents that went silent.

State machine (every change a compare-and-set on `status`; the row count says who won):

    lease  DISPATCHED ──accept──▶ RUNNING ──complete──▶ COMPLETED   (job COMPLETED, escrow settled)
           DISPATCHED|RUNNING ──fail JOB_ERROR──▶ FAILED             (job FAILED, refunded)
           DISPATCHED|RUNNING ──provider fault / silent / not accepted──▶ REASSIGNED
                                                                     (job QUEUED again, provider penalised)
           DISPATCHED|RUNNING ──deadline passed──▶ FAILED            (job EXPIRED, refunded, penalised)
           DISPATCHED ──consumer cancels the MATCHED job──▶ FAILED (OWNER)

Lock order: the lease row first, then its job, then ledger accounts (see market.services.settlement).
"""

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from auctions.models import Lease
from auctions.selectors.leases import provider_online_since
from auctions.services.batches import lease_batch_close
from config.errors import Conflict, InvalidInput, NotFound
from market.models import JobRequest, Provider
from market.services.jobs import job_request_transition
from market.services.settlement import LeaseSettlement, job_refund, lease_settle, provider_penalise

Status = Lease.Status
Reason = Lease.CloseReason
JobStatus = JobRequest.Status
CLOSED = (Status.COMPLETED, Status.FAILED, Status.REASSIGNED)
# The job states a live lease can leave behind it.
JOB_LIVE = (JobStatus.MATCHED, JobStatus.DISPATCHED, JobStatus.RUNNING)
# What an agent may say when it fails a lease.
AGENT_FAIL_REASONS = (Reason.JOB_ERROR, Reason.PROVIDER_FAULT)
MAX_TOKENS = 10**15
MAX_DEVICE_SECONDS = Decimal("9999999999.999")  # the column: 16 digits, 3 decimals
SECONDS_QUANTUM = Decimal("0.001")


class LeaseNotFound(NotFound):
    code = "lease_not_found"


class LeaseAlreadyClosed(Conflict):
    code = "lease_already_closed"


class LeaseAlreadyAccepted(Conflict):
    code = "lease_already_accepted"


class LeaseNotRunning(Conflict):
    code = "lease_not_running"


class LeaseDeadlinePassed(Conflict):
    code = "lease_deadline_passed"


class UsageExceedsAllocation(Conflict):
    code = "usage_exceeds_allocation"


class UsageWentBackwards(Conflict):
    code = "usage_went_backwards"


class LeaseJobOutOfStep(Conflict):
    """The lease's job is not in the state the lease implies (it was changed behind its back)."""

    code = "lease_job_out_of_step"


@dataclass(frozen=True)
class Usage:
    """Cumulative usage of one lease as the agent reports it."""

    tokens_in: int
    tokens_out: int
    device_seconds: Decimal

    @classmethod
    def checked(cls, *, tokens_in, tokens_out, device_seconds) -> "Usage":
        """Refuses negative, non-integral, non-finite and out-of-range numbers. Raises InvalidInput."""
        for name, value in (("tokens_in", tokens_in), ("tokens_out", tokens_out)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
                raise InvalidInput(f"{name} is a whole number from 0 to {MAX_TOKENS}.", field=name)
        try:
            raw = str(device_seconds) if isinstance(device_seconds, float) else device_seconds
            seconds = Decimal(raw)
        except (InvalidOperation, TypeError, ValueError):
            raise InvalidInput("device_seconds is a number.", field="device_seconds") from None
        if not seconds.is_finite() or not 0 <= seconds <= MAX_DEVICE_SECONDS:
            raise InvalidInput(
                f"device_seconds is a number from 0 to {MAX_DEVICE_SECONDS}.", field="device_seconds"
            )
        return cls(tokens_in, tokens_out, seconds.quantize(SECONDS_QUANTUM))


def lease_allocated_device_seconds(lease: Lease) -> Decimal:
    """The most device-seconds a lease may report: max_device_hours × 3600.

    Both are totals over the lease's devices (max_device_hours = escrow / price per device-hour).
    Whatever is reported, the charge is capped at the job's escrow (market.services.settlement),
    so the allocation is a sanity bound, not the purse.
    """
    return lease.max_device_hours * 3600


def _heartbeat(provider: Provider, now: datetime) -> None:
    # Monotonic: a delayed request must not move the heartbeat back in time.
    Provider.objects.filter(pk=provider.pk).filter(
        Q(last_heartbeat_at__isnull=True) | Q(last_heartbeat_at__lt=now)
    ).update(last_heartbeat_at=now)


def _own_lease(*, provider: Provider, lease_id: int) -> Lease:
    lease = Lease.objects.select_related("job").filter(pk=lease_id, provider=provider).first()
    if lease is None:
        raise LeaseNotFound("No such lease.", lease=lease_id)
    return lease


class LeaseChanged(Conflict):
    code = "lease_changed"


def _refused(lease: Lease, *, wanted: str, usage: "Usage | None" = None) -> Conflict:
    """The error for a compare-and-set that found the lease otherwise than `wanted`."""
    lease.refresh_from_db()
    extra = {"lease": lease.pk, "status": lease.status}
    if lease.status in CLOSED:
        return LeaseAlreadyClosed(
            f"The lease is already {lease.status.lower()}.", close_reason=lease.close_reason, **extra
        )
    if wanted == Status.DISPATCHED:
        return LeaseAlreadyAccepted("The lease was already accepted.", **extra)
    if wanted == Status.RUNNING and lease.status == Status.DISPATCHED:
        return LeaseNotRunning("Accept the lease before reporting on it.", **extra)
    if usage is not None:
        return UsageWentBackwards(
            "Usage is cumulative: a report cannot be lower than the last one.",
            tokens_in=lease.tokens_in,
            tokens_out=lease.tokens_out,
            device_seconds=str(lease.device_seconds),
            progress=lease.progress,
            **extra,
        )
    return LeaseChanged("The lease changed meanwhile; read it again.", **extra)


def _check_allocation(lease: Lease, usage: Usage) -> None:
    allocated = lease_allocated_device_seconds(lease)
    if usage.device_seconds > allocated:
        raise UsageExceedsAllocation(
            "The usage reported is more than the lease allocated.",
            lease=lease.pk,
            device_seconds=str(usage.device_seconds),
            allocated_device_seconds=str(allocated),
        )


def _monotonic(usage: Usage) -> Q:
    return Q(
        tokens_in__lte=usage.tokens_in,
        tokens_out__lte=usage.tokens_out,
        device_seconds__lte=usage.device_seconds,
    )


@transaction.atomic
def provider_heartbeat(*, provider: Provider, now: datetime, lease_ids=()) -> dict:
    """Record that the provider's agent is alive (it is back in the book if it was silent) and that
    it still runs the RUNNING leases among `lease_ids`.

    Returns {"running": ids refreshed, "closed": ids listed that are no longer RUNNING} so the agent
    stops work the exchange has given to someone else. Unknown and others' ids count as closed.
    """
    _heartbeat(provider, now)
    listed = sorted({int(pk) for pk in lease_ids})
    running = list(
        Lease.objects.filter(provider=provider, pk__in=listed, status=Status.RUNNING).values_list(
            "pk", flat=True
        )
    )
    if running:
        Lease.objects.filter(pk__in=running, status=Status.RUNNING).update(last_heartbeat_at=now)
    return {"running": running, "closed": [pk for pk in listed if pk not in set(running)]}


@transaction.atomic
def lease_poll(*, provider: Provider, now: datetime) -> list[Lease]:
    """The provider's DISPATCHED leases (offers waiting for its agent), oldest first; their jobs
    go MATCHED → DISPATCHED in one compare-and-set. A poll is also a heartbeat."""
    _heartbeat(provider, now)
    leases = list(
        Lease.objects.filter(provider=provider, status=Status.DISPATCHED)
        .select_related("job", "resource")
        .order_by("id")
    )
    if leases:
        job_ids = [lease.job_id for lease in leases]
        JobRequest.objects.filter(pk__in=job_ids, status=JobStatus.MATCHED).update(
            status=JobStatus.DISPATCHED, updated_at=now
        )
        for lease in leases:
            if lease.job.status == JobStatus.MATCHED:
                lease.job.status = JobStatus.DISPATCHED
    return leases


@transaction.atomic
def lease_accept(*, provider: Provider, lease_id: int, now: datetime, simulated: bool = False) -> Lease:
    """The agent takes the lease: DISPATCHED → RUNNING, its job → RUNNING. `simulated` marks a run
    by the simulation backend. Raises LeaseNotFound, LeaseAlreadyAccepted, LeaseAlreadyClosed,
    LeaseDeadlinePassed, LeaseJobOutOfStep."""
    lease = _own_lease(provider=provider, lease_id=lease_id)
    if lease.status == Status.DISPATCHED and lease.job.deadline <= now:
        raise LeaseDeadlinePassed("The job's deadline has passed.", lease=lease.pk)
    won = Lease.objects.filter(pk=lease.pk, status=Status.DISPATCHED).update(
        status=Status.RUNNING, accepted_at=now, last_heartbeat_at=now, simulated=bool(simulated)
    )
    if not won:
        raise _refused(lease, wanted=Status.DISPATCHED)
    if not job_request_transition(job=lease.job, from_statuses=JOB_LIVE[:2], to=JobStatus.RUNNING, now=now):
        raise LeaseJobOutOfStep("The lease's job can no longer run.", lease=lease.pk, job=lease.job_id)
    _heartbeat(provider, now)
    lease.refresh_from_db()
    return lease


@transaction.atomic
def lease_report_progress(
    *,
    provider: Provider,
    lease_id: int,
    progress: float,
    tokens_in: int,
    tokens_out: int,
    device_seconds: Decimal,
    now: datetime,
) -> Lease:
    """Record cumulative usage of a RUNNING lease; also a heartbeat of the lease and the provider.

    Counters only grow; usage beyond the allocation is refused. A refused report changes nothing.
    Raises InvalidInput, LeaseNotFound, LeaseNotRunning, LeaseAlreadyClosed, UsageExceedsAllocation,
    UsageWentBackwards.
    """
    if isinstance(progress, bool) or not isinstance(progress, int | float) or not math.isfinite(progress):
        raise InvalidInput("progress is a number from 0 to 1.", field="progress")
    if not 0 <= progress <= 1:
        raise InvalidInput("progress is a number from 0 to 1.", field="progress")
    usage = Usage.checked(tokens_in=tokens_in, tokens_out=tokens_out, device_seconds=device_seconds)
    lease = _own_lease(provider=provider, lease_id=lease_id)
    _check_allocation(lease, usage)
    won = (
        Lease.objects.filter(pk=lease.pk, status=Status.RUNNING)
        .filter(_monotonic(usage), progress__lte=progress)
        .update(progress=progress, last_heartbeat_at=now, **asdict(usage))
    )
    if not won:
        raise _refused(lease, wanted=Status.RUNNING, usage=usage)
    _heartbeat(provider, now)
    lease.refresh_from_db()
    return lease


@transaction.atomic
def lease_complete(
    *,
    provider: Provider,
    lease_id: int,
    tokens_in: int,
    tokens_out: int,
    device_seconds: Decimal,
    now: datetime,
) -> tuple[Lease, LeaseSettlement]:
    """The agent finished the job: RUNNING → COMPLETED with its final usage, the job COMPLETED, and
    the escrow settled in the same transaction (the provider paid by metered usage, the platform's
    fee, the rest refunded).

    A batch job's lease (an inference job with an input file) must have every request answered;
    its usage is metered from its recorded results (auctions.services.batches), and the job's output
    and error files are written. A replayed completion is refused with LeaseAlreadyClosed (409) and
    pays nothing: the lease's compare-and-set lets exactly one completion through. Raises
    InvalidInput, LeaseNotFound, LeaseNotRunning, LeaseAlreadyClosed, UsageExceedsAllocation,
    UsageWentBackwards, LeaseJobOutOfStep, BatchIncomplete.
    """
    usage = Usage.checked(tokens_in=tokens_in, tokens_out=tokens_out, device_seconds=device_seconds)
    lease = _own_lease(provider=provider, lease_id=lease_id)
    if (
        lease.job.input_file_id
        and lease.job.kind == JobRequest.Kind.INFERENCE
        and lease.status == Status.RUNNING
    ):
        # A batch lease is metered by the results it recorded, not by what the agent reports.
        usage = Usage(*lease_batch_close(lease=lease, now=now))
    _check_allocation(lease, usage)
    won = (
        Lease.objects.filter(pk=lease.pk, status=Status.RUNNING)
        .filter(_monotonic(usage))
        .update(
            status=Status.COMPLETED,
            close_reason=Reason.COMPLETED,
            progress=1,
            last_heartbeat_at=now,
            ended_at=now,
            **asdict(usage),
        )
    )
    if not won:
        raise _refused(lease, wanted=Status.RUNNING, usage=usage)
    if not job_request_transition(
        job=lease.job,
        from_statuses=(JobStatus.RUNNING,),
        to=JobStatus.COMPLETED,
        now=now,
        close_reason=Reason.COMPLETED,
    ):
        raise LeaseJobOutOfStep("The lease's job is not running.", lease=lease.pk, job=lease.job_id)
    _heartbeat(provider, now)
    lease.refresh_from_db()
    return lease, lease_settle(lease=lease, now=now)


@transaction.atomic
def lease_fail(*, provider: Provider, lease_id: int, reason: str, detail: str, now: datetime) -> Lease:
    """The agent gives a lease up. JOB_ERROR (the job itself cannot run): lease FAILED, job FAILED and
    its escrow refunded. PROVIDER_FAULT: lease REASSIGNED, job re-queued for the next round without
    this provider (or EXPIRED and refunded past its deadline), the provider penalised.

    Raises InvalidInput (another reason), LeaseNotFound, LeaseAlreadyClosed.
    """
    if reason not in AGENT_FAIL_REASONS:
        raise InvalidInput(
            f"An agent fails a lease with one of {', '.join(AGENT_FAIL_REASONS)}.", field="reason"
        )
    detail = str(detail or "")[:300]
    lease = _own_lease(provider=provider, lease_id=lease_id)
    _heartbeat(provider, now)
    if reason == Reason.JOB_ERROR:
        won = Lease.objects.filter(pk=lease.pk, status__in=Lease.ACTIVE).update(
            status=Status.FAILED, close_reason=reason, close_detail=detail, ended_at=now
        )
        if not won:
            raise _refused(lease, wanted="ACTIVE")
        if not job_request_transition(
            job=lease.job, from_statuses=JOB_LIVE, to=JobStatus.FAILED, now=now, close_reason=reason
        ):
            raise LeaseJobOutOfStep("The lease's job is not live.", lease=lease.pk, job=lease.job_id)
        job_refund(job=lease.job, now=now, reason=f"job error: {detail}" if detail else "job error")
    elif _fail_over(lease, from_statuses=Lease.ACTIVE, reason=reason, detail=detail, now=now) is None:
        raise _refused(lease, wanted="ACTIVE")
    lease.refresh_from_db()
    return lease


def _fail_over(
    lease: Lease, *, from_statuses, reason: str, detail: str, now: datetime, still: Q | None = None
) -> str | None:
    """Close a live lease the provider failed and put its job back in the book (or expire it past its
    deadline); penalise the provider. Returns "requeued" or "expired", or None if the lease's
    compare-and-set lost (it had changed: completed, failed over by someone else, or — with `still` —
    no longer matches the sweep's reason)."""
    expired = lease.job.deadline <= now
    candidates = Lease.objects.filter(pk=lease.pk, status__in=from_statuses)
    if still is not None:
        candidates = candidates.filter(still)
    won = candidates.update(
        status=Status.FAILED if expired else Status.REASSIGNED,
        close_reason=reason,
        close_detail=detail[:300],
        ended_at=now,
    )
    if not won:
        return None
    lease.refresh_from_db()
    if expired:
        job_request_transition(
            job=lease.job, from_statuses=JOB_LIVE, to=JobStatus.EXPIRED, now=now, close_reason=Reason.DEADLINE
        )
    elif not job_request_transition(job=lease.job, from_statuses=JOB_LIVE, to=JobStatus.QUEUED, now=now):
        raise LeaseJobOutOfStep("The lease's job is not live.", lease=lease.pk, job=lease.job_id)
    # Penalty before refund: the provider's account is locked before the consumer's (lock order).
    provider_penalise(provider=lease.provider, lease=lease, now=now)
    if expired:
        job_refund(job=lease.job, now=now, reason="deadline passed")
        return "expired"
    return "requeued"


@dataclass
class SweepSummary:
    deadline: int = 0
    unstable: int = 0
    not_accepted: int = 0
    requeued: int = 0
    expired: int = 0
    queued_expired: int = 0
    providers_offline: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def lease_sweep(*, now: datetime, limit: int = 500) -> SweepSummary:
    """Fail over what the agents let drop, each lease in its own transaction:

    - live leases past their job's deadline → FAILED (DEADLINE), job EXPIRED and refunded;
    - RUNNING leases without a heartbeat or progress for CPX_HEARTBEAT_TIMEOUT_S → REASSIGNED
      (UNSTABLE), job QUEUED for the next round;
    - DISPATCHED leases not accepted within CPX_OFFER_TIMEOUT_S → REASSIGNED (PROVIDER_FAULT);
    - QUEUED jobs past their deadline → EXPIRED and refunded.
    The provider of every failed-over lease pays its SLA penalty. Providers silent for
    CPX_HEARTBEAT_TIMEOUT_S are out of the book through `providers_online` (counted here, not
    written). Safe to run twice or beside a completion: every close is a compare-and-set that
    re-checks its reason. At most `limit` rows of each kind per call.
    """
    summary = SweepSummary()
    stale_since = now - timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S)
    offered_before = now - timedelta(seconds=settings.CPX_OFFER_TIMEOUT_S)
    late = Lease.objects.filter(status__in=Lease.ACTIVE, job__deadline__lte=now)
    silent = Q(status=Status.RUNNING) & (
        Q(last_heartbeat_at__lt=stale_since) | Q(last_heartbeat_at__isnull=True)
    )
    unaccepted = Q(status=Status.DISPATCHED, dispatched_at__lt=offered_before)
    passes = (
        ("deadline", late, None, Reason.DEADLINE, "the job's deadline passed"),
        (
            "unstable",
            Lease.objects.filter(silent),
            silent,
            Reason.UNSTABLE,
            f"no heartbeat for {settings.CPX_HEARTBEAT_TIMEOUT_S} s",
        ),
        (
            "not_accepted",
            Lease.objects.filter(unaccepted),
            unaccepted,
            Reason.PROVIDER_FAULT,
            f"not accepted within {settings.CPX_OFFER_TIMEOUT_S} s",
        ),
    )
    for counter, queryset, still, reason, detail in passes:
        for lease in queryset.select_related("job", "provider").order_by("id")[:limit]:
            with transaction.atomic():
                outcome = _fail_over(
                    lease, from_statuses=Lease.ACTIVE, reason=reason, detail=detail, now=now, still=still
                )
            if outcome is not None:
                setattr(summary, counter, getattr(summary, counter) + 1)
                setattr(summary, outcome, getattr(summary, outcome) + 1)
    overdue = JobRequest.objects.filter(status=JobStatus.QUEUED, deadline__lte=now).order_by("id")[:limit]
    for job in overdue:
        with transaction.atomic():
            if job_request_transition(
                job=job,
                from_statuses=(JobStatus.QUEUED,),
                to=JobStatus.EXPIRED,
                now=now,
                close_reason=Reason.DEADLINE,
            ):
                job_refund(job=job, now=now, reason="deadline passed in the queue")
                summary.queued_expired += 1
    summary.providers_offline = Provider.objects.filter(
        last_heartbeat_at__lt=provider_online_since(now=now)
    ).count()
    return summary
