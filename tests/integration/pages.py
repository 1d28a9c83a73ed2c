"""Helpers of the page tests (tests/integration/test_pages*.py): signed-in clients and market data
made through the services, dated by the real clock (the views read it)."""

from datetime import timedelta
from decimal import Decimal

from django.test import Client
from django.utils import timezone

from auctions.models import Lease, PriceQuote, Round
from auctions.services.rounds import round_clear, round_open
from market.models import Provider
from tests.factories import ConsumerFactory, ProviderFactory, ResourceFactory, job_submit

CLASSES = ["GPU/24G/eu-west", "GPU/16G/us-east", "GPU/80G/eu-central"]


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def online_provider(**fields) -> Provider:
    provider = ProviderFactory(**fields)
    Provider.objects.filter(pk=provider.pk).update(last_heartbeat_at=timezone.now())
    provider.refresh_from_db()
    return provider


def live_job(consumer, **overrides):
    """A queued job due tomorrow by the real clock."""
    now = timezone.now()
    overrides.setdefault("deadline", now + timedelta(days=1))
    return job_submit(consumer=consumer, now=now, **overrides)


def cleared_round_with_a_lease():
    """A real round through round_open/round_clear: one online resource, one matching job."""
    resource = ResourceFactory(
        provider=online_provider(), price_floor=Decimal("0"), ask_per_device_hour=Decimal("0.20")
    )
    consumer = ConsumerFactory(balance=Decimal("100"))
    job = live_job(consumer, max_price_per_device_hour=Decimal("1.5"), quant_bits=4)
    now = timezone.now()
    round_obj = round_clear(round_id=round_open(now=now).pk, now=now)
    return round_obj, job, resource


def synthetic_rounds(count: int) -> list[Round]:
    """`count` CLEARED rounds with prices in three classes, as a dashboard reads them (bulk)."""
    start = timezone.now() - timedelta(seconds=5 * count)
    rounds = [
        Round(
            status=Round.Status.CLEARED,
            active_slot=None,
            opened_at=start + timedelta(seconds=5 * i),
            cleared_at=start + timedelta(seconds=5 * i + 1),
            snapshot_sha256=f"{i:064x}",
            result_sha256=f"{i + 1:064x}",
            welfare=1.0 + (i % 7) * 0.25,
            lp_bound=1.2 + (i % 7) * 0.25,
            optimality_gap=(i % 5) / 100,
            jobs_in_book=10 + i % 4,
            resources_in_book=6,
            jobs_matched=3 + i % 4,
            timings_ms={"snapshot": 1.5, "clear": 2.0 + i % 3, "write": 0.7},
            prices={
                key: {
                    "buyer_price": 0.3 + n * 0.4 + (i % 6) * 0.02,
                    "seller_price": 0.25 + n * 0.4,
                    "traded": 1 + n,
                }
                for n, key in enumerate(CLASSES)
            },
        )
        for i in range(count)
    ]
    return Round.objects.bulk_create(rounds)


def quote_for(resource_class: str, *, ask="0.35", utilisation=0.62) -> PriceQuote:
    device_class, memory, region = resource_class.split("/")
    return PriceQuote.objects.create(
        resource_class=resource_class,
        device_class=device_class,
        region=region,
        memory_tier_gib=int(memory.rstrip("G")),
        recommended_ask=Decimal(ask),
        expected_price=Decimal(ask),
        expected_utilisation=utilisation,
        demand_device_hours=5.0,
        capacity_device_hours=8.0,
        followers=4,
        created_at=timezone.now(),
    )


def lease_for(job, resource, round_obj, **fields) -> Lease:
    now = timezone.now()
    values = {
        "round": round_obj,
        "job": job,
        "resource": resource,
        "provider": resource.provider,
        "devices": 1,
        "resource_class": "GPU/24G/eu-west",
        "unit_price_paid": Decimal("0.5"),
        "unit_price_received": Decimal("0.4"),
        "max_device_hours": Decimal("10"),
        "expected_device_hours": Decimal("1"),
        "dispatched_at": now,
    }
    values.update(fields)
    return Lease.objects.create(**values)
