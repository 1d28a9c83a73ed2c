"""Leases at the provider: dispatch to the agent, acceptance, metering, completion, failure and
failover, and the sweeper that catches agents that went silent.

State machine (every change a compare-and-set on `status`; the row count says who won):

    lease  DISPATCHED ──accept──▶ RUNNING ──complete──▶ COMPLETED   (job COMPLETED, escrow settled)
           DISPATCHED|RUNNING ──fail JOB_ERROR──▶ FAILED             (job FAILED, refunded)
           DISPATCHED|RUNNING ──provider fault / silent / not accepted──▶ REASSIGNED
                                                                     (job QUEUED again, provider penalised)
           DISPATCHED|RUNNING ──deadline passed──▶ FAILED            (job EXPIRED, refunded, penalised)
           DISPATCHED ──consumer cancels the MATCHED job──▶ FAILED (OWNER)

LOCK ORDER — the one order in which every transaction of the job and lease lifecycle takes rows
(rounds, cancel, agent calls, heartbeat, sweep, settlement); two of them can then never wait on
each other in a cycle (issue 9, defects 2 and 6):

    1. the round row                  (round_clear only)
    2. job rows, in pk order          (SELECT … FOR UPDATE before anything of the job changes)
    3. lease rows, in pk order
    4. the provider row               (its heartbeat, its reputation: always after jobs and leases)
    5. ledger accounts: provider earnings, then the house accounts (platform fee, penalty), then
       the consumer's balance. A job's escrow is only ever touched under its job's row lock (2),
       so it is serialised there and needs no place of its own.

A service that changes a lease and its job locks the job first (`_lock_job`), so a cancel and a
round writing the job's lease serialise on the job row and no lease stays live on a closed job.
"""

import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q

from auctions.models import Lease, StandbyReservation
from auctions.selectors.leases import provider_online_since
from auctions.services.backup_pool import standby_take_over
from auctions.services.batches import lease_batch_close
from auctions.services.gangs import gang_close_peers, gang_member_complete
from auctions.services.settlement import LeaseSettlement, job_refund, lease_settle, provider_penalise
from auctions.services.sla import lease_sla_settle
from auctions.services.standby_fees import standby_fee_settle
from config.errors import Conflict, DomainError, InvalidInput, NotFound
from market.models import JobRequest, Provider
from market.services.jobs import job_request_transition

logger = logging.getLogger(__name__)

Status = Lease.Status
Reason = Lease.CloseReason
JobStatus = JobRequest.Status
CLOSED = (Status.COMPLETED, Status.FAILED, Status.REASSIGNED)
# The job states a live lease can leave behind it.
JOB_LIVE = (JobStatus.MATCHED, JobStatus.DISPATCHED, JobStatus.RUNNING)
JOB_CLOSED = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED)
# What an agent may say when it fails a lease.
AGENT_FAIL_REASONS = (Reason.JOB_ERROR, Reason.PROVIDER_FAULT)
MAX_TOKENS = 10**15
MAX_DEVICE_SECONDS = Decimal("9999999999.999")  # the column: 16 digits, 3 decimals
# Device-seconds are metered, stored and published to the millisecond (SECONDS_QUANTUM). Reports
# may carry up to USAGE_INPUT_DECIMALS decimals (so an agent echoing an allocation published with
# more is never refused for its precision); they are truncated to the millisecond, never rounded
# up, so a report of exactly the allocation stays within it.
SECONDS_QUANTUM = Decimal("0.001")
USAGE_INPUT_DECIMALS = 6


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


class UsageExceedsElapsedTime(Conflict):
    """More device-seconds than the lease's devices could have run since it was accepted."""

    code = "usage_exceeds_elapsed_time"


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
        return cls(tokens_in, tokens_out, seconds.quantize(SECONDS_QUANTUM, rounding=ROUND_DOWN))


def lease_allocated_device_seconds(lease: Lease) -> Decimal:
    """The most device-seconds a lease may report: max_device_hours × 3600, truncated to the
    millisecond — the precision usage is metered in, so an agent that reports exactly the published
    allocation is accepted (issue 9, defect 3: it was published with 6 decimals and refused at 3).

    Both are totals over the lease's devices (max_device_hours = escrow / price per device-hour).
    Whatever is reported, the charge is capped at the job's escrow (auctions.services.settlement),
    so the allocation is a sanity bound, not the purse.
    """
    return (lease.max_device_hours * 3600).quantize(SECONDS_QUANTUM, rounding=ROUND_DOWN)


def _heartbeat(provider: Provider, now: datetime) -> None:
    _heartbeat_many([provider.pk], now)


def _heartbeat_many(provider_ids: list[int], now: datetime) -> None:
    if len(provider_ids) > 1:  # several rows: locked in pk order (step 4 of the lock order)
        list(
            Provider.objects.select_for_update().filter(pk__in=provider_ids).order_by("pk").values_list("pk")
        )
    # Monotonic: a delayed request must not move the heartbeat back in time.
    Provider.objects.filter(pk__in=provider_ids).filter(
        Q(last_heartbeat_at__isnull=True) | Q(last_heartbeat_at__lt=now)
    ).update(last_heartbeat_at=now)


def _own_lease(*, provider: Provider, lease_id: int) -> Lease:
    lease = Lease.objects.select_related("job").filter(pk=lease_id, provider=provider).first()
    if lease is None:
        raise LeaseNotFound("No such lease.", lease=lease_id)
    return lease


def _lock_job(lease: Lease) -> None:
    """Lock the lease's job row (step 2 of the lock order) and refresh `lease.job` from it."""
    lease.job = JobRequest.objects.select_for_update().get(pk=lease.job_id)


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


def lease_max_device_seconds_at(lease: Lease, *, now: datetime) -> Decimal | None:
    """The most device-seconds the lease can have used by `now`:

        devices × (seconds since acceptance × speed + CPX_METERING_TOLERANCE_S)

    speed is 1, or CPX_SIMULATION_SPEEDUP for a lease its agent accepted as a simulation (which runs
    that many times faster than real time, and is shown as simulated to the consumer; an operator
    sets 1 to hold simulations to real time too). Metered usage is time on devices: nothing runs
    faster than the clock. None before acceptance."""
    if lease.accepted_at is None:
        return None
    elapsed = Decimal(str(max(0.0, (now - lease.accepted_at).total_seconds())))
    if lease.simulated:
        elapsed *= Decimal(str(max(1.0, float(settings.CPX_SIMULATION_SPEEDUP))))
    bound = lease.devices * (elapsed + Decimal(str(settings.CPX_METERING_TOLERANCE_S)))
    return bound.quantize(SECONDS_QUANTUM, rounding=ROUND_DOWN)


def _check_elapsed(lease: Lease, usage: Usage, now: datetime) -> None:
    if lease.status != Status.RUNNING:
        return  # the compare-and-set refuses it with the lease's own state (closed, not accepted)
    bound = lease_max_device_seconds_at(lease, now=now)
    if bound is not None and usage.device_seconds > bound:
        raise UsageExceedsElapsedTime(
            "The usage reported is more than the lease's devices could have run since it was accepted.",
            lease=lease.pk,
            device_seconds=str(usage.device_seconds),
            max_device_seconds=str(bound),
            devices=lease.devices,
            accepted_at=lease.accepted_at.isoformat(),
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
    listed = sorted({int(pk) for pk in lease_ids})
    running = []
    if listed:
        # Leases (3) in pk order, then the provider (4): the lock order of every lease service.
        running = list(
            Lease.objects.select_for_update()
            .filter(provider=provider, pk__in=listed, status=Status.RUNNING)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    if running:
        Lease.objects.filter(pk__in=running, status=Status.RUNNING).update(last_heartbeat_at=now)
    _heartbeat(provider, now)
    return {"running": running, "closed": [pk for pk in listed if pk not in set(running)]}


def lease_poll(*, provider: Provider, now: datetime) -> list[Lease]:
    """The provider's DISPATCHED leases (offers waiting for its agent), oldest first; their jobs
    go MATCHED → DISPATCHED in one compare-and-set. A poll is also a heartbeat."""
    return lease_poll_many(providers=[provider], now=now)[provider.pk]


@transaction.atomic
def lease_poll_many(*, providers: list[Provider], now: datetime) -> dict[int, list[Lease]]:
    """`lease_poll` for several providers at once, in one transaction and a fixed number of queries
    (the offer channel answers every agent a round's commit woke in a process with one call):
    {provider id: its leases, oldest first}."""
    by_provider: dict[int, list[Lease]] = {provider.pk: [] for provider in providers}
    leases = list(
        Lease.objects.filter(provider_id__in=by_provider, status=Status.DISPATCHED)
        .select_related("job", "resource", "sla")
        .order_by("id")
    )
    if leases:
        # Jobs (2) in pk order, then the providers (4).
        matched = set(
            JobRequest.objects.select_for_update()
            .filter(pk__in=[lease.job_id for lease in leases], status=JobStatus.MATCHED)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if matched:
            JobRequest.objects.filter(pk__in=matched).update(status=JobStatus.DISPATCHED, updated_at=now)
        for lease in leases:
            if lease.job_id in matched:
                lease.job.status = JobStatus.DISPATCHED
            by_provider[lease.provider_id].append(lease)
    _heartbeat_many(sorted(by_provider), now)
    return by_provider


@transaction.atomic
def lease_accept(*, provider: Provider, lease_id: int, now: datetime, simulated: bool = False) -> Lease:
    """The agent takes the lease: DISPATCHED → RUNNING, its job → RUNNING. `simulated` marks a run
    by the simulation backend. Raises LeaseNotFound, LeaseAlreadyAccepted, LeaseAlreadyClosed,
    LeaseDeadlinePassed, LeaseJobOutOfStep."""
    lease = _own_lease(provider=provider, lease_id=lease_id)
    _lock_job(lease)
    if lease.status == Status.DISPATCHED and lease.job.deadline <= now:
        raise LeaseDeadlinePassed("The job's deadline has passed.", lease=lease.pk)
    won = Lease.objects.filter(pk=lease.pk, status=Status.DISPATCHED).update(
        status=Status.RUNNING, accepted_at=now, last_heartbeat_at=now, simulated=bool(simulated)
    )
    if not won:
        raise _refused(lease, wanted=Status.DISPATCHED)
    # A gang's job runs from its first member's acceptance on (auctions.services.gangs).
    running_from = JOB_LIVE if lease.gang is not None else JOB_LIVE[:2]
    if not job_request_transition(job=lease.job, from_statuses=running_from, to=JobStatus.RUNNING, now=now):
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

    Counters only grow; usage beyond the allocation or beyond what the devices could have run since
    acceptance (`lease_max_device_seconds_at`) is refused. A refused report changes nothing.
    Raises InvalidInput, LeaseNotFound, LeaseNotRunning, LeaseAlreadyClosed, UsageExceedsAllocation,
    UsageExceedsElapsedTime, UsageWentBackwards.
    """
    if isinstance(progress, bool) or not isinstance(progress, int | float) or not math.isfinite(progress):
        raise InvalidInput("progress is a number from 0 to 1.", field="progress")
    if not 0 <= progress <= 1:
        raise InvalidInput("progress is a number from 0 to 1.", field="progress")
    usage = Usage.checked(tokens_in=tokens_in, tokens_out=tokens_out, device_seconds=device_seconds)
    lease = _own_lease(provider=provider, lease_id=lease_id)
    _check_allocation(lease, usage)
    _check_elapsed(lease, usage, now)
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
    UsageExceedsElapsedTime, UsageWentBackwards, LeaseJobOutOfStep, BatchIncomplete.
    """
    usage = Usage.checked(tokens_in=tokens_in, tokens_out=tokens_out, device_seconds=device_seconds)
    lease = _own_lease(provider=provider, lease_id=lease_id)
    _lock_job(lease)
    batch = (
        lease.job.input_file_id
        and lease.job.kind == JobRequest.Kind.INFERENCE
        and lease.status == Status.RUNNING
    )
    if batch:
        # A batch lease is metered by the results it recorded, not by what the agent reports: the
        # device-seconds are CPX's own figure from the tokens, so the wall-time bound (a check on the
        # agent's word) does not apply to them.
        usage = Usage(*lease_batch_close(lease=lease, now=now))
    _check_allocation(lease, usage)
    if not batch:
        _check_elapsed(lease, usage, now)
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
    if lease.gang is not None:  # the job completes, and members are paid, with its last member
        _heartbeat(provider, now)
        lease.refresh_from_db()
        return lease, gang_member_complete(lease=lease, now=now)
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
    settlement = lease_settle(lease=lease, now=now)
    if lease_sla_settle(lease=lease, now=now):  # breaches of its terms, measured: penalty charged
        lease.refresh_from_db()
    return lease, settlement


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
    _lock_job(lease)
    if reason == Reason.JOB_ERROR:
        won = Lease.objects.filter(pk=lease.pk, status__in=Lease.ACTIVE).update(
            status=Status.FAILED, close_reason=reason, close_detail=detail, ended_at=now
        )
        if not won:
            raise _refused(lease, wanted="ACTIVE")
        if lease.gang is not None:
            gang_close_peers(lease=lease, now=now, status=Status.FAILED)
        if not job_request_transition(
            job=lease.job, from_statuses=JOB_LIVE, to=JobStatus.FAILED, now=now, close_reason=reason
        ):
            raise LeaseJobOutOfStep("The lease's job is not live.", lease=lease.pk, job=lease.job_id)
        _heartbeat(provider, now)
        job_refund(job=lease.job, now=now, reason=f"job error: {detail}" if detail else "job error")
    elif _fail_over(lease, from_statuses=Lease.ACTIVE, reason=reason, detail=detail, now=now) is None:
        raise _refused(lease, wanted="ACTIVE")
    else:
        _heartbeat(provider, now)
    lease.refresh_from_db()
    return lease


def _fail_over(
    lease: Lease, *, from_statuses, reason: str, detail: str, now: datetime, still: Q | None = None
) -> str | None:
    """Close a live lease the provider failed and put its job back in the book (or expire it past its
    deadline), or restart it on its standby in the backup pool; penalise the provider. Returns
    "requeued", "standby" or "expired", or None if the lease's
    compare-and-set lost (it had changed: completed, failed over by someone else, or — with `still` —
    no longer matches the sweep's reason). The caller holds the job's row lock (`_lock_job`).

    A live lease whose job is already closed (cancelled, expired, failed, completed) is closed FAILED
    with the job's reason and returns "orphaned": nothing to requeue or refund, and no penalty — the
    provider could not have run a job CPX had closed. A job in any other state out of step with its
    lease raises LeaseJobOutOfStep before anything is written."""
    candidates = Lease.objects.filter(pk=lease.pk, status__in=from_statuses)
    if still is not None:
        candidates = candidates.filter(still)
    job = lease.job
    if job.status in JOB_CLOSED:
        closed_as = job.close_reason if job.close_reason in Reason.values else reason
        if closed_as == Reason.COMPLETED:
            closed_as = reason
        if not candidates.update(
            status=Status.FAILED,
            close_reason=closed_as,
            close_detail=f"its job was already {job.status.lower()}",
            ended_at=now,
        ):
            return None
        return "orphaned"
    if job.status not in JOB_LIVE:
        raise LeaseJobOutOfStep("The lease's job is not live.", lease=lease.pk, job=lease.job_id)
    expired = job.deadline <= now
    won = candidates.update(
        status=Status.FAILED if expired else Status.REASSIGNED,
        close_reason=reason,
        close_detail=detail[:300],
        ended_at=now,
    )
    if not won:
        return None
    lease.refresh_from_db()
    if lease.gang is not None:  # one member down takes the gang down: re-queued whole, once
        gang_close_peers(lease=lease, now=now, status=Status.FAILED if expired else Status.REASSIGNED)
    # The backup pool: a job holding a standby restarts on it now (USED), not at the next round,
    # unless the standby is gone too (LAPSED): then it is requeued as before. (A gang holds none.)
    standby = None if expired or lease.gang is not None else standby_take_over(lease=lease, now=now)
    restarted = standby is not None and standby.status == StandbyReservation.Status.USED
    if expired:
        job_request_transition(
            job=lease.job, from_statuses=JOB_LIVE, to=JobStatus.EXPIRED, now=now, close_reason=Reason.DEADLINE
        )
    elif not restarted and not job_request_transition(
        job=lease.job, from_statuses=JOB_LIVE, to=JobStatus.QUEUED, now=now
    ):
        raise LeaseJobOutOfStep("The lease's job is not live.", lease=lease.pk, job=lease.job_id)
    # Penalty before refund: the provider's account is locked before the consumer's (lock order).
    provider_penalise(provider=lease.provider, lease=lease, now=now)
    if standby is not None:
        standby_fee_settle(reservation=standby, now=now)
    if expired:
        job_refund(job=lease.job, now=now, reason="deadline passed")
        return "expired"
    return "standby" if restarted else "requeued"


# What one row of a sweep may raise without stopping the sweep: a domain refusal (a lease out of
# step with its job), a database error of that row's transaction, bad numbers in that row.
ROW_FAULTS = (DomainError, DatabaseError, ArithmeticError, ValueError)


@dataclass
class SweepSummary:
    """What one sweep did. `orphaned`: live leases found on closed jobs and closed. `failed`: rows
    whose transaction raised (rolled back, logged, listed in failed_leases / failed_jobs); the sweep
    went on past them."""

    deadline: int = 0
    unstable: int = 0
    not_accepted: int = 0
    requeued: int = 0
    standby: int = 0  # restarted on their standby in the backup pool
    expired: int = 0
    orphaned: int = 0
    queued_expired: int = 0
    providers_offline: int = 0
    failed: int = 0
    failed_leases: list[int] = field(default_factory=list)
    failed_jobs: list[int] = field(default_factory=list)

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

    A live lease whose job is already closed is closed too (`orphaned`, no penalty). A row whose
    transaction raises (ROW_FAULTS) is rolled back, logged and counted in `failed`; the sweep goes
    on with the next row, so one bad row never stops failover, refunds or expiry for the rest.
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
            if lease.pk in summary.failed_leases:
                continue  # already failed in an earlier pass of this sweep
            try:
                with transaction.atomic():
                    _lock_job(lease)
                    outcome = _fail_over(
                        lease, from_statuses=Lease.ACTIVE, reason=reason, detail=detail, now=now, still=still
                    )
            except ROW_FAULTS as error:
                _record_failure(summary.failed_leases, "lease", lease.pk, error, summary=summary)
                continue
            if outcome is not None:
                setattr(summary, counter, getattr(summary, counter) + 1)
                setattr(summary, outcome, getattr(summary, outcome) + 1)
    overdue = JobRequest.objects.filter(status=JobStatus.QUEUED, deadline__lte=now).order_by("id")[:limit]
    for job in overdue:
        try:
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
        except ROW_FAULTS as error:
            _record_failure(summary.failed_jobs, "job", job.pk, error, summary=summary)
    summary.providers_offline = Provider.objects.filter(
        last_heartbeat_at__lt=provider_online_since(now=now)
    ).count()
    return summary


def _record_failure(ids: list[int], kind: str, pk: int, error: Exception, *, summary: SweepSummary) -> None:
    # One bad row must not stop the sweep (issue 9): its transaction rolled back, it is logged and
    # counted, and the next row is swept. The next sweep tries it again.
    summary.failed += 1
    ids.append(pk)
    code = getattr(error, "code", type(error).__name__)
    logger.warning("sweep: %s %s not swept (%s): %s", kind, pk, code, error)
