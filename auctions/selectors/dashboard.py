"""Reads of the operator dashboards: rounds as time series, the book's depth per class, provider
health, a round's allocations. Each is a fixed number of queries whatever the size of the market."""

from datetime import datetime

from django.db.models import BooleanField, Count, ExpressionWrapper, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from auctions.models import Lease, Round
from auctions.selectors import rounds as round_selectors
from auctions.selectors.leases import provider_online_since
from market.models import Provider, Resource

SERIES_FIELDS = (
    "id",
    "status",
    "opened_at",
    "cleared_at",
    "prices",
    "welfare",
    "optimality_gap",
    "timings_ms",
    "jobs_in_book",
    "resources_in_book",
    "jobs_matched",
)
# Close reasons that are the provider's doing (not the consumer's, not the job's own error).
PROVIDER_FAULTS = (
    Lease.CloseReason.PROVIDER_FAULT,
    Lease.CloseReason.UNSTABLE,
    Lease.CloseReason.DEADLINE,
    Lease.CloseReason.VERIFICATION_FAILED,
    Lease.CloseReason.SLA_BREACH,
)


def round_series(*, limit: int) -> list[dict]:
    """The last `limit` finished rounds (CLEARED or FAILED), oldest first, as plain dicts: one query."""
    rows = list(
        Round.objects.filter(status__in=(Round.Status.CLEARED, Round.Status.FAILED))
        .order_by("-id")
        .values(*SERIES_FIELDS)[:limit]
    )
    rows.reverse()
    return rows


def round_totals() -> dict:
    """How many rounds by status (one query)."""
    counts = dict(Round.objects.order_by().values_list("status").annotate(n=Count("id")))
    return {
        "total": sum(counts.values()),
        **{status.lower(): counts.get(status, 0) for status in Round.Status},
    }


def book_depth(*, now: datetime) -> dict:
    """The book the next round would see, per resource class: queued single-device bids and free
    devices offered, with the best (highest) bid and best (lowest) ask; plus the jobs that go to the
    heterogeneous book and those with no fitting supply. The grouping is the round's and the
    pricing game's own (`classes.group_book`), not a copy. Two queries."""
    from auctions.services.pricing import _book_resources, _grouped  # the pricing service's grouping

    jobs = round_selectors.round_book_jobs(now=now, lock=False)
    resources = _book_resources(now=now, only_free=True)
    grouped = _grouped(jobs, resources, free=True)
    classes = []
    for key, book in grouped["books"].items():
        bids = [order["price"] for order in book["bids"]]
        asks = [order["price"] for order in book["asks"]]
        classes.append(
            {
                "resource_class": key,
                "bids": len(bids),
                "best_bid": max(bids) if bids else None,
                "devices_offered": sum(order["quantity"] for order in book["asks"]),
                "asks": len(asks),
                "best_ask": min(asks) if asks else None,
                "crossed": bool(bids and asks and max(bids) >= min(asks)),
            }
        )
    return {
        "classes": classes,
        "queued_jobs": len(jobs),
        "heterogeneous": len(grouped["heterogeneous"]),
        "unplaced": len(grouped["unplaced"]),
    }


def provider_health(*, now: datetime) -> QuerySet[Provider]:
    """Every provider with `online` (active, heartbeat within CPX_HEARTBEAT_TIMEOUT_S), listed
    resources, leases running, completed, and failed by the provider's fault. One query."""
    since = provider_online_since(now=now)
    listed = (
        Resource.objects.filter(provider=OuterRef("pk"), status=Resource.Status.LISTED)
        .order_by()
        .values("provider")
        .annotate(n=Count("id"))
        .values("n")
    )
    return (
        Provider.objects.select_related("user")
        .annotate(
            listed=Coalesce(Subquery(listed), 0),
            running=Count("leases", filter=Q(leases__status__in=Lease.ACTIVE)),
            completed=Count("leases", filter=Q(leases__status=Lease.Status.COMPLETED)),
            faults=Count("leases", filter=Q(leases__close_reason__in=PROVIDER_FAULTS)),
            online=ExpressionWrapper(
                Q(status=Provider.Status.ACTIVE, last_heartbeat_at__gte=since), output_field=BooleanField()
            ),
        )
        .order_by("id")
    )


def round_allocations(*, round_obj: Round) -> QuerySet[Lease]:
    """A round's leases (its allocations) with job, resource and provider joined, by id."""
    return Lease.objects.filter(round=round_obj).select_related("job", "resource", "provider").order_by("id")
