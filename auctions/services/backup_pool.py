"""The backup pool: standby devices each round reserves for running jobs, so that a job whose
provider fails restarts on its standby within seconds instead of waiting for the next round.

FusionAI's model (Tang et al. 2023, "FusionAI: Decentralized training and deploying LLMs with massive
consumer-level GPUs"): consumer GPUs join and quit at will; a broker keeps a backup pool of idle GPUs
and, when a GPU running a task leaves, hands the task to one from the pool at once. CPX's broker is
the round, and the pool is priced:

1. Reserve. After a round has cleared its books, it chooses standbys for the running jobs that want
   one (CPX_BACKUP_POOL_POLICY: "opt_in", jobs submitted with `standby`; "all"; "off") and hold none,
   among the devices its own trades left idle. Which job gets which device is the engine's
   `backup_pool` mechanism (auctions/mechanisms/backup_pool.py): the cheapest device that fits, oldest
   job first, and the pool holds at most CPX_BACKUP_POOL_SHARE of the idle devices, so the rest stay
   in the next round's book. That book is one more document of the round's snapshot and its answer one
   more entry of the round's result, so `cpx_round replay` re-derives the standby choice too.
   A device fits a job when it is of the job's device class with enough memory, all the job's devices
   on one resource, within the job's region or latency SLA, not of the job's current provider nor of
   one that failed it, and when the job's work there costs at most its bid and its budget and ends
   before its deadline. A round considers the oldest MAX_CANDIDATES such jobs, each with its
   MAX_ACCEPTS cheapest fitting devices (bounds on the round's work).
2. Pay. Each standby costs a fee, CPX_STANDBY_FEE_RATE × the running lease's expected cost, escrowed
   from the consumer's balance when it is reserved and paid to the standby's provider when the standby
   is used or stood by until the job ended; refunded when the standby had left (standby_fees.py).
   A consumer whose balance cannot pay the fee gets no standby (the engine's choice for it is then
   unused and the devices stay free).
3. Hold. Devices held in standby are out of the next rounds' books (round_books.snapshot_book). A
   standby whose provider leaves the pool (offline, suspended) or withdraws its listing lapses at the
   next round, its fee refunded, and that round reserves the job another.
4. Restart. When the job's provider fails (the agent fails the lease, or the sweeper finds it silent
   or not accepting: auctions.services.leases `_fail_over`), the job restarts on its standby in the
   same transaction: a DISPATCHED lease on the standby at the standby's ask (at most the bid, so
   individually rational; reputation-adjusted as in every book, the provider receiving its own
   ask), announced to the standby's agent on commit through the offer channel
   (auctions/services/offers.py). If the standby is gone too (offline, unlisted, its devices taken),
   the standby LAPSES, its fee is refunded, and the job waits for the next round as before.

Departures from FusionAI: the pool is paid for (an option premium), not free; a standby is chosen per
job at a round rather than by a broker at failure time, so the choice is published and replayable; a
job restarts from its last checkpoint the agent kept, not from a pipeline stage (CPX's leases carry
whole jobs; a batch's finished requests carry over).
"""

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction

from auctions.mechanisms.canonical import canonical_json
from auctions.models import Lease, StandbyReservation
from auctions.selectors import backup_pool as selectors
from auctions.services import round_books as books
from auctions.services.offers import offers_announce
from auctions.services.sla import lease_sla_copy
from auctions.services.standby_fees import (
    standby_close,
    standby_fee_due,
    standby_fee_hold,
    standby_fee_settle,
    standby_stood_by,
)
from market.models import JobRequest, LedgerAccount
from market.models.providers import Resource
from market.money import to_money
from market.services.jobs import job_request_transition
from market.services.ledger import InsufficientFunds

logger = logging.getLogger(__name__)

POLICIES = ("opt_in", "all", "off")
# Bounds on one round's work (the book is J jobs × R idle devices): the oldest MAX_CANDIDATES running jobs
# without a standby, each listing its MAX_ACCEPTS cheapest fitting devices (the engine takes the
# cheapest with room, so a job loses a standby only when all of those are taken first).
MAX_CANDIDATES = 500
MAX_ACCEPTS = 16
HOUR_QUANTUM = Decimal("0.000001")
MAX_DEVICE_HOURS = Decimal("99999999.999999")
Standby = StandbyReservation.Status
JOB_LIVE = (JobRequest.Status.MATCHED, JobRequest.Status.DISPATCHED, JobRequest.Status.RUNNING)


@dataclass
class PoolBook:
    """The round's backup-pool book: its document (in the snapshot), the engine's result, and the rows
    behind the engine's ids."""

    doc: dict
    text: str
    digest: str
    jobs: dict  # "j<id>" -> candidate job row
    resources: dict  # "r<id>" -> snapshot resource row
    result: dict | None = None
    meta: dict | None = None


def standby_book(
    *, builder: "books.BookBuilder", cleared: list, round_id: int, now: datetime
) -> PoolBook | None:
    """Build the round's backup-pool book from the devices its trades left idle and the running jobs
    that want a standby (locking those jobs); None when the pool is off or nobody wants one."""
    policy, share = settings.CPX_BACKUP_POOL_POLICY, float(settings.CPX_BACKUP_POOL_SHARE)
    if policy == "off" or share <= 0:
        return None
    standby_lapse_departed(now=now)  # their jobs become candidates again, below
    candidates = selectors.standby_candidates(
        round_id=round_id, now=now, opt_in_only=policy == "opt_in", limit=MAX_CANDIDATES
    )
    if not candidates:
        return None
    free = {r["id"]: r["free"] for r in builder.resources}
    for fill in builder.fills(cleared):
        free[fill.resource["id"]] -= fill.devices
    idle = [r for r in builder.resources if free[r["id"]] > 0]
    cheapest_first = sorted(idle, key=lambda r: (r["ask"], r["id"]))
    jobs = []
    for job in candidates:
        _enrich(job, now=now)
        accepts = []
        for resource in cheapest_first:
            if _fits(builder, job, resource, free[resource["id"]]):
                accepts.append(f"r{resource['id']}")
                if len(accepts) == MAX_ACCEPTS:
                    break
        jobs.append({"id": f"j{job['id']}", "devices": job["device_count"], "accepts": sorted(accepts)})
    doc = {
        "mechanism": "backup_pool",
        "share": share,
        "jobs": jobs,
        "asks": [{"id": f"r{r['id']}", "price": r["ask"], "quantity": free[r["id"]]} for r in idle],
    }
    text = canonical_json(doc)
    return PoolBook(
        doc=doc,
        text=text,
        digest=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        jobs={f"j{job['id']}": job for job in candidates},
        resources={f"r{r['id']}": r for r in idle},
        meta={"kind": "backup_pool", "share": share, "policy": policy},
    )


def standby_lapse_departed(*, now: datetime) -> int:
    """Standbys whose provider left the pool (consumer GPUs quit at will) or whose listing was withdrawn
    LAPSE and their fees are refunded, so the round can reserve another standby for their jobs.
    Returns how many lapsed."""
    lapsed = 0
    for reservation in selectors.standby_departed(now=now):
        if standby_close(
            reservation=reservation, to=Standby.LAPSED, now=now, detail="the standby left the pool"
        ):
            standby_fee_settle(reservation=reservation, now=now)
            lapsed += 1
    return lapsed


def _enrich(job: dict, *, now: datetime) -> None:
    job["memory"] = float(job["memory_per_device_gib"])
    job["bid"] = float(job["max_price_per_device_hour"])
    job["base_device_hours"] = books.throughput.base_device_hours(**books._workload(job))
    job["hours_left"] = (job["deadline"] - now).total_seconds() / 3600


def _fits(builder: "books.BookBuilder", job: dict, resource: dict, free: int) -> bool:
    """Whether `resource` can stand by for `job` (the rules of the module docstring, step 1)."""
    if resource["device_class"] != job["device_class"] or resource["memory"] < job["memory"] - 1e-9:
        return False
    if free < job["device_count"] or resource["provider_id"] in job["excluded"]:
        return False
    if (
        job.get("placement") == "strict"
        and job["latency_sla_ms"] is None
        and resource["region"] != job["region"]
    ):
        return False
    if (
        job["latency_sla_ms"] is not None
        and not builder._rtt(job["region"], resource) <= job["latency_sla_ms"]
    ):
        return False  # NaN (an unknown place) fails too
    hours = books.device_hours_on(job, resource)
    cost = resource["ask"] * hours
    if hours / job["device_count"] > job["hours_left"]:
        return False
    return cost <= job["bid"] * job["base_device_hours"] and cost <= float(job["budget"])


def standby_reserve(*, round_id: int, pool: PoolBook | None, now: datetime) -> int:
    """Write the standbys the engine chose (`pool.result`), each fee escrowed from its consumer in a
    savepoint of its own: a consumer who cannot pay gets none. Returns the standbys reserved."""
    if pool is None or not pool.result:
        return 0
    rate = Decimal(settings.CPX_STANDBY_FEE_RATE)
    reserved = 0
    for job_key, ask_key in pool.result["standbys"].items():
        job, resource = pool.jobs[job_key], pool.resources[ask_key]
        fee = standby_fee_due(
            rate=rate,
            unit_price_paid=job["unit_price_paid"],
            expected_device_hours=job["lease_expected_device_hours"],
        )
        hours = min(MAX_DEVICE_HOURS, Decimal(repr(books.device_hours_on(job, resource))))
        # The pool prices by the quality-adjusted ask (reputation feeds clearing, auctions.services.sla);
        # the provider receives that price / its quality factor, as in every book.
        paid = to_money(pool.result["prices"][job_key])
        try:
            with transaction.atomic():
                reservation = StandbyReservation.objects.create(
                    round_id=round_id,
                    job_id=job["id"],
                    lease_id=job["lease_id"],
                    resource_id=resource["id"],
                    provider_id=resource["provider_id"],
                    devices=job["device_count"],
                    unit_price=paid,
                    unit_price_received=min(to_money(books._received(resource, float(paid))), paid),
                    expected_device_hours=hours.quantize(HOUR_QUANTUM),
                    fee=fee,
                    created_at=now,
                )
                standby_fee_hold(reservation=reservation, job=JobRequest.objects.get(pk=job["id"]), now=now)
        except InsufficientFunds:
            logger.info("job %s gets no standby: its consumer cannot pay the fee %s", job["id"], fee)
            continue
        reserved += 1
    return reserved


def standby_take_over(*, lease: Lease, now: datetime) -> StandbyReservation | None:
    """The job of a lease that just failed over restarts on its standby: a new DISPATCHED lease on the
    standby (the job MATCHED), announced to its agent on commit; the reservation USED. If the standby is
    gone (its provider offline or suspended, its listing withdrawn, its devices taken) the reservation
    LAPSES and the caller requeues the job. Returns the reservation (USED or LAPSED), or None when the
    job held no standby. The caller holds the job's row lock, has closed `lease`, and settles the
    reservation's fee (standby_fees.standby_fee_settle) after the failing provider's penalty (lock
    order: provider rows before ledger accounts)."""
    reservation = (
        StandbyReservation.objects.filter(job_id=lease.job_id, status=Standby.HELD)
        .select_related("provider__user", "resource", "job__consumer")
        .order_by("id")
        .first()
    )
    if reservation is None:
        return None
    reason = _unavailable(reservation, now=now)
    if reason:
        standby_close(reservation=reservation, to=Standby.LAPSED, now=now, detail=reason)
        return reservation
    escrow = LedgerAccount.objects.get(kind=LedgerAccount.Kind.ESCROW, job_id=lease.job_id).balance
    budget = escrow - reservation.fee  # the fee leaves the escrow for the standby's provider
    price = reservation.unit_price
    limit = MAX_DEVICE_HOURS if price <= 0 else min(MAX_DEVICE_HOURS, budget / price)
    try:
        with transaction.atomic():
            takeover = _takeover_lease(reservation, lease=lease, limit=limit, now=now)
            lease_sla_copy(leases=[takeover])  # the job's SLA terms bind the standby as any lease
    except IntegrityError:  # the job already has a lease of the reserving round: not by construction
        standby_close(
            reservation=reservation, to=Standby.LAPSED, now=now, detail="the job has a lease of its round"
        )
        return reservation
    standby_close(reservation=reservation, to=Standby.USED, now=now, detail=f"lease {lease.pk} failed over")
    StandbyReservation.objects.filter(pk=reservation.pk).update(takeover=takeover)
    reservation.takeover = takeover
    job_request_transition(job=lease.job, from_statuses=JOB_LIVE, to=JobRequest.Status.MATCHED, now=now)
    offers_announce(provider_ids=[reservation.provider_id])
    return reservation


def _takeover_lease(reservation: StandbyReservation, *, lease: Lease, limit: Decimal, now: datetime) -> Lease:
    price = reservation.unit_price
    resource = reservation.resource
    return Lease.objects.create(
        round_id=reservation.round_id,
        job_id=lease.job_id,
        resource=resource,
        provider_id=reservation.provider_id,
        devices=reservation.devices,
        resource_class=books.class_of(
            device_class=resource.device_class,
            memory_gib=float(resource.memory_per_device_gib),
            region=reservation.provider.region,
        ),
        unit_price_paid=price,
        unit_price_received=reservation.unit_price_received,
        max_device_hours=max(Decimal(0), limit).quantize(HOUR_QUANTUM),
        expected_device_hours=reservation.expected_device_hours,
        status=Lease.Status.DISPATCHED,
        dispatched_at=now,
    )


def _unavailable(reservation: StandbyReservation, *, now: datetime) -> str:
    """Why the standby cannot take the job now ("" when it can)."""
    if not standby_stood_by(reservation, now=now):
        return "the standby had left (offline, suspended or unlisted)"
    resource = Resource.objects.get(pk=reservation.resource_id)
    busy = sum(
        Lease.objects.filter(resource_id=resource.pk, status__in=Lease.ACTIVE).values_list(
            "devices", flat=True
        )
    )
    if resource.device_count - busy < reservation.devices:
        return "the standby's devices are taken"
    if reservation.job.deadline <= now:
        return "the job's deadline passed"
    return ""
