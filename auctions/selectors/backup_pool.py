"""Reads of the backup pool: devices held in standby, the running jobs that want a standby, a job's
standbys. The model is in auctions/services/backup_pool.py."""

from collections import defaultdict
from datetime import datetime

from django.db import connection
from django.db.models import Q, QuerySet, Sum

from auctions.models import Lease, StandbyReservation
from auctions.selectors.leases import provider_online_since
from auctions.selectors.rounds import BOOK_JOB_FIELDS
from market.models import JobRequest, Provider, Resource

HELD = StandbyReservation.Status.HELD
# A standby is kept for jobs an agent has taken (DISPATCHED or RUNNING): a MATCHED job can still be
# cancelled, and a cancel must not leave a standby behind.
STANDBY_JOB_STATES = (JobRequest.Status.DISPATCHED, JobRequest.Status.RUNNING)


def standby_held_devices() -> dict[int, int]:
    """Devices held in standby, by resource id (one aggregate query): out of the next round's book."""
    rows = (
        StandbyReservation.objects.filter(status=HELD)
        .values("resource_id")
        .annotate(devices=Sum("devices"))
        .order_by("resource_id")
    )
    return {row["resource_id"]: int(row["devices"]) for row in rows}


def standby_candidates(*, round_id: int, now: datetime, opt_in_only: bool, limit: int = 2000) -> list[dict]:
    """Running jobs that want a standby and hold none, oldest first, as book rows with their live
    lease (`lease_id`, `lease_provider_id`, `unit_price_paid`, `expected_device_hours`) and the
    providers that failed them (`excluded`). Three queries.

    Only jobs whose live lease an EARLIER round wrote: a round never reserves for the jobs it matched
    itself (their agents have not taken them yet), and so a standby's lease (written for the
    reserving round, auctions.services.backup_pool) never meets another lease of the job and round.
    The job rows are locked FOR UPDATE SKIP LOCKED (PostgreSQL): a job busy in another transaction
    (completing, failing over) gets its standby at a later round instead of making the round wait."""
    # A gang's members fail over together and it is re-queued whole (market.services.gangs): no standby.
    jobs = JobRequest.objects.filter(
        status__in=STANDBY_JOB_STATES, deadline__gt=now, gang__isnull=True
    ).exclude(standbys__status=HELD)
    if opt_in_only:
        jobs = jobs.filter(standby=True)
    if connection.features.has_select_for_update_skip_locked:
        jobs = jobs.select_for_update(skip_locked=True, of=("self",))
    rows = list(jobs.order_by("id").values(*BOOK_JOB_FIELDS, "consumer_id")[:limit])
    if not rows:
        return []
    ids = [row["id"] for row in rows]
    leases = {
        lease["job_id"]: lease
        for lease in Lease.objects.filter(job_id__in=ids, status__in=Lease.ACTIVE, round_id__lt=round_id)
        .order_by("id")
        .values("job_id", "id", "provider_id", "unit_price_paid", "expected_device_hours")
    }
    excluded = defaultdict(set)
    failed = Lease.objects.filter(job_id__in=ids, status__in=(Lease.Status.FAILED, Lease.Status.REASSIGNED))
    for job_id, provider_id in failed.values_list("job_id", "provider_id").order_by("job_id"):
        excluded[job_id].add(provider_id)
    out = []
    for row in rows:
        lease = leases.get(row["id"])
        if lease is None:
            continue
        row["lease_id"] = lease["id"]
        row["lease_provider_id"] = lease["provider_id"]
        row["unit_price_paid"] = lease["unit_price_paid"]
        row["lease_expected_device_hours"] = lease["expected_device_hours"]
        row["excluded"] = excluded.get(row["id"], set()) | {lease["provider_id"]}
        out.append(row)
    return out


def standby_departed(*, now: datetime, limit: int = 500) -> list[StandbyReservation]:
    """HELD standbys whose provider left the pool (offline for CPX_HEARTBEAT_TIMEOUT_S, or not active)
    or whose listing was withdrawn, oldest first (one query; their jobs are locked FOR UPDATE SKIP
    LOCKED in a second one when there are any, and a standby whose job is busy waits for a later
    round)."""
    gone = (
        Q(provider__last_heartbeat_at__lt=provider_online_since(now=now))
        | Q(provider__last_heartbeat_at__isnull=True)
        | ~Q(provider__status=Provider.Status.ACTIVE)
        | ~Q(resource__status=Resource.Status.LISTED)
    )
    rows = list(
        StandbyReservation.objects.filter(status=HELD)
        .filter(gone)
        .select_related("provider__user", "job__consumer")
        .order_by("id")[:limit]
    )
    if rows and connection.features.has_select_for_update_skip_locked:
        locked = set(
            JobRequest.objects.select_for_update(skip_locked=True)
            .filter(pk__in=[row.job_id for row in rows])
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        rows = [row for row in rows if row.job_id in locked]
    return rows


def standby_list_for_job(*, job: JobRequest) -> QuerySet[StandbyReservation]:
    """Every standby the job has had, oldest first."""
    return StandbyReservation.objects.filter(job=job).select_related("resource", "provider").order_by("id")
