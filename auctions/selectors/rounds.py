"""Reads of rounds, their books and quotes: explicit ordering, one query per list, bulk snapshots."""

from datetime import datetime, timedelta

from django.db.models import Count, F, Max, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from auctions.models import Lease, PriceQuote, Round
from auctions.selectors import broker_reach
from market.models import JobRequest, Provider, Resource

BOOK_JOB_FIELDS = (
    "id",
    "kind",
    "params_billion",
    "workload_tokens",
    "workload_device_hours",
    "device_class",
    "max_price_per_device_hour",
    "budget",
    "deadline",
    "latency_sla_ms",
    "region",
    "placement",  # "strict" holds the job to its region (market.services.placement)
    "gang",  # a gang job clears in the gang book (auctions.services.gang_books)
    "memory_per_device_gib",
    "device_count",
    "waiting_reason",
    "elastic",  # elastic demand (docs/eetorp.md): the round sizes the job at its price
)
BOOK_RESOURCE_FIELDS = (
    "id",
    "provider_id",
    "device_class",
    "device_count",
    "memory_per_device_gib",
    "fp16_tflops",
    "speed_factor",
    "ask_per_device_hour",
    "price_floor",
    "auto_pricing",
    "busy",
    "provider__region",
    "provider__latitude",
    "provider__longitude",
    "provider__tier",
    "provider__reputation",  # the quality factor of its ask (auctions.mechanisms.quality)
)


def round_book_jobs(*, now: datetime, lock: bool) -> list[dict]:
    """QUEUED jobs whose deadline is ahead, oldest first (earlier orders win ties), in ONE query.

    With `lock`, the rows are locked FOR UPDATE until the transaction ends, so a concurrent cancel
    waits for the round and then sees the job MATCHED (PostgreSQL; SQLite has one writer anyway).
    """
    jobs = JobRequest.objects.filter(status=JobRequest.Status.QUEUED, deadline__gt=now)
    if lock:
        jobs = jobs.select_for_update()
    return list(jobs.order_by("created_at", "id").values(*BOOK_JOB_FIELDS, broker=broker_reach.job_broker()))


def round_book_exclusions() -> list[tuple[int, int]]:
    """(job, provider) pairs where a QUEUED job's earlier lease failed or was reassigned, in ONE query."""
    return list(
        Lease.objects.filter(
            job__status=JobRequest.Status.QUEUED, status__in=(Lease.Status.FAILED, Lease.Status.REASSIGNED)
        )
        .exclude(close_reason=Lease.CloseReason.GANG)  # closed for a peer's fault, not its own
        .values_list("job_id", "provider_id")
        .distinct()
        .order_by("job_id", "provider_id")
    )


def round_book_resources(
    *, now: datetime, heartbeat_timeout_s: float, include_unseen: bool, only_free: bool = True
) -> list[dict]:
    """LISTED resources of ACTIVE, online providers inside their availability window, with `busy` =
    devices held by active leases (one aggregate query), by id; with `only_free`, those with a free
    device only."""
    online = Q(provider__last_heartbeat_at__gte=now - timedelta(seconds=heartbeat_timeout_s))
    if include_unseen:
        online |= Q(provider__last_heartbeat_at__isnull=True)
    resources = (
        Resource.objects.filter(status=Resource.Status.LISTED, provider__status=Provider.Status.ACTIVE)
        .filter(online)
        .filter(Q(available_from__isnull=True) | Q(available_from__lte=now))
        .filter(Q(available_until__isnull=True) | Q(available_until__gt=now))
        .annotate(busy=Coalesce(Sum("leases__devices", filter=Q(leases__status__in=Lease.ACTIVE)), 0))
        .order_by("id")
    )
    if only_free:
        resources = resources.filter(device_count__gt=F("busy"))
    return list(resources.values(*BOOK_RESOURCE_FIELDS, broker=broker_reach.resource_broker()))


def round_active() -> Round | None:
    """The OPEN or CLEARING round, if any (there is at most one: `active_slot` is unique)."""
    return Round.objects.filter(active_slot=1).first()


def round_next_id() -> int:
    """The id the next round to clear will have: the active round's, else one past the newest (a
    sequence may skip ids after a failed insert, so a quote's guess can be wrong then)."""
    active = round_active()
    if active is not None:
        return active.pk
    return (Round.objects.order_by("-id").values_list("id", flat=True).first() or 0) + 1


def round_get(*, round_id: int) -> Round | None:
    return Round.objects.filter(pk=round_id).first()


def round_list(*, status: str | None = None) -> QuerySet[Round]:
    """Rounds newest first, without their (large) snapshot and result texts."""
    rounds = Round.objects.defer("snapshot", "result").order_by("-id")
    return rounds.filter(status=status) if status else rounds


def round_lease_summary(*, round_obj: Round) -> dict:
    """Leases of a round: how many, devices, and counts per status and resource class (two queries)."""
    leases = Lease.objects.filter(round=round_obj)
    by_status = dict(leases.values_list("status").annotate(n=Count("id")).order_by("status"))
    by_class = {
        row["resource_class"]: {"leases": row["n"], "devices": row["devices"]}
        for row in leases.values("resource_class")
        .annotate(n=Count("id"), devices=Sum("devices"))
        .order_by("resource_class")
    }
    return {"leases": sum(by_status.values()), "by_status": by_status, "by_class": by_class}


def round_recent_lease_bids(*, round_ids: list[int]) -> list[tuple[str, object]]:
    """(resource class, the job's bid per device-hour) of every lease the given rounds made (one query)."""
    return list(
        Lease.objects.filter(round_id__in=round_ids)
        .order_by("id")
        .values_list("resource_class", "job__max_price_per_device_hour")
    )


def round_recent_cleared(*, limit: int) -> list[Round]:
    """The last `limit` CLEARED rounds, newest first, with only the fields pricing reads."""
    return list(
        Round.objects.filter(status=Round.Status.CLEARED)
        .only("id", "prices", "cleared_at")
        .order_by("-id")[:limit]
    )


def quote_latest_list(*, region: str | None = None, device_class: str | None = None) -> QuerySet[PriceQuote]:
    """The newest quote per resource class, ordered by class (one query: a subquery of the newest ids;
    quotes are written in batches with increasing ids, so the highest id is the newest)."""
    quotes = PriceQuote.objects.all()
    if region:
        quotes = quotes.filter(region=region)
    if device_class:
        quotes = quotes.filter(device_class=device_class)
    newest = quotes.order_by().values("resource_class").annotate(newest=Max("id")).values("newest")
    return PriceQuote.objects.filter(pk__in=newest).order_by("resource_class")
