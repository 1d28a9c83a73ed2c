"""Cloud–edge tiers against the database (AI-Bazaar, auctions/services/tier_books.py): a latency-bound job
takes an edge device while the edge has one, overflows to the cloud at the cloud's price level when it
has none, and the round replays bit for bit."""

import json
from decimal import Decimal

import pytest

from auctions.models import Lease, Round
from auctions.services.rounds import round_clear, round_open, round_replay
from market.models import Provider
from market.money import to_money
from tests.conftest import NOW
from tests.factories import ConsumerFactory, ProviderFactory, ResourceFactory, job_submit

pytestmark = pytest.mark.django_db


def listed(*, tier: str, region: str, devices: int, ask: str):
    provider = ProviderFactory(region=region, tier=tier)
    Provider.objects.filter(pk=provider.pk).update(last_heartbeat_at=NOW)
    return ResourceFactory(
        provider=provider, device_count=devices, ask_per_device_hour=Decimal(ask), price_floor=Decimal("0")
    )


def latency_bound_jobs(count: int) -> list:
    consumer = ConsumerFactory(balance=Decimal("10000"))
    return [
        job_submit(
            consumer=consumer,
            max_price_per_device_hour=Decimal("2.00"),
            latency_sla_ms=40,
            region="eu-west",
        )
        for _ in range(count)
    ]


def cleared_round():
    return round_clear(round_id=round_open(now=NOW).pk, now=NOW)


def tier_book(round_obj) -> dict:
    (book,) = [b for b in round_obj.mechanism["books"] if b["kind"] == "tiered"]
    return book


class TestTieredClearing:
    def test_a_latency_bound_job_takes_the_edge_while_the_edge_has_room(self):
        edge = listed(tier=Provider.Tier.EDGE, region="eu-west", devices=1, ask="0.80")
        listed(tier=Provider.Tier.CLOUD, region="eu-central", devices=8, ask="0.30")  # cheaper, farther
        (job,) = latency_bound_jobs(1)

        round_obj = cleared_round()

        lease = Lease.objects.get(job=job)
        assert lease.resource_id == edge.pk
        assert tier_book(round_obj)["tiers"]["placed"] == {"END": 0, "EDGE": 1, "CLOUD": 0}
        assert tier_book(round_obj)["tiers"]["overflow_share"] == 0.0

    def test_latency_bound_jobs_overflow_to_the_cloud_at_its_price_level_when_the_edge_is_full(self):
        edge = listed(tier=Provider.Tier.EDGE, region="eu-west", devices=1, ask="0.80")
        cloud = listed(tier=Provider.Tier.CLOUD, region="eu-central", devices=8, ask="0.30")
        jobs = latency_bound_jobs(3)

        round_obj = cleared_round()

        leases = {lease.job_id: lease for lease in Lease.objects.filter(job__in=jobs)}
        on_edge = [lease for lease in leases.values() if lease.resource_id == edge.pk]
        on_cloud = [lease for lease in leases.values() if lease.resource_id == cloud.pk]
        summary = tier_book(round_obj)["tiers"]
        cloud_price = summary["cloud_price"]
        assert (len(on_edge), len(on_cloud)) == (1, 2)
        assert summary["overflow_share"] == pytest.approx(2 / 3)
        assert summary["overflow_causes"] == {"edge_full": 2}
        speed = float(cloud.speed_factor)
        assert all(lease.unit_price_paid == to_money(cloud_price * speed) for lease in on_cloud)
        assert cloud_price > 0.30  # the leader's level, not the cloud's ask
        assert on_edge[0].unit_price_paid != on_cloud[0].unit_price_paid

    def test_the_round_replays_from_its_snapshot(self):
        listed(tier=Provider.Tier.EDGE, region="eu-west", devices=1, ask="0.80")
        listed(tier=Provider.Tier.CLOUD, region="eu-central", devices=8, ask="0.30")
        latency_bound_jobs(3)

        report = round_replay(round_id=cleared_round().pk)

        assert report["match"] is True

    def test_with_tiers_off_the_job_goes_to_the_cheaper_cloud(self, settings):
        settings.CPX_TIER_CLEARING = "off"
        listed(tier=Provider.Tier.EDGE, region="eu-west", devices=1, ask="0.80")
        # In the job's own region: the heterogeneous book holds a strict job there.
        cloud = listed(tier=Provider.Tier.CLOUD, region="eu-west", devices=8, ask="0.30")
        (job,) = latency_bound_jobs(1)

        round_obj = cleared_round()

        assert Lease.objects.get(job=job).resource_id == cloud.pk
        assert not [b for b in round_obj.mechanism["books"] if b["kind"] == "tiered"]

    def test_a_job_without_a_latency_sla_routes_as_before(self):
        listed(tier=Provider.Tier.EDGE, region="eu-west", devices=1, ask="0.80")
        listed(tier=Provider.Tier.CLOUD, region="eu-central", devices=8, ask="0.30")
        consumer = ConsumerFactory(balance=Decimal("10000"))
        job_submit(consumer=consumer, max_price_per_device_hour=Decimal("2.00"), latency_sla_ms=None)

        round_obj = cleared_round()

        assert not [b for b in round_obj.mechanism["books"] if b["kind"] == "tiered"]

    def test_a_job_overflows_when_an_earlier_round_filled_the_edge(self):
        edge = listed(tier=Provider.Tier.EDGE, region="eu-west", devices=1, ask="0.80")
        cloud = listed(tier=Provider.Tier.CLOUD, region="eu-central", devices=8, ask="0.30")
        (first,) = latency_bound_jobs(1)
        cleared_round()
        (second,) = latency_bound_jobs(1)

        round_obj = cleared_round()

        assert Lease.objects.get(job=first).resource_id == edge.pk
        assert Lease.objects.get(job=second).resource_id == cloud.pk
        assert tier_book(round_obj)["tiers"]["overflow_causes"] == {"edge_full": 1}
        assert tier_book(round_obj)["tiers"]["edge_price_median"] is None


class TestTierViews:
    def test_the_api_and_the_market_page_show_the_overflow_share_and_the_price_per_tier(self, client):
        listed(tier=Provider.Tier.EDGE, region="eu-west", devices=1, ask="0.80")
        listed(tier=Provider.Tier.CLOUD, region="eu-central", devices=8, ask="0.30")
        latency_bound_jobs(3)
        summary = tier_book(cleared_round())["tiers"]

        tiers = client.get("/api/v1/market").json()["tiers"]
        page = client.get("/market/").content.decode()

        assert tiers["placed"] == {"END": 0, "EDGE": 1, "CLOUD": 2}
        assert tiers["overflow_share"] == pytest.approx(2 / 3)
        (row,) = tiers["device_classes"]
        assert Decimal(row["cloud_price"]) == to_money(summary["cloud_price"])
        assert Decimal(row["edge_price_median"]) == to_money(summary["edge_price_median"])
        assert "67%" in page
        assert f"{to_money(summary['cloud_price']):.4f}" in page


class TestFallThrough:
    """Rule `depth`: a latency-bound job the tiered book prices out clears in the same round in the
    posted-price book, on the devices the tiered book left free (tier_books.tier_unmatched)."""

    def test_a_priced_out_latency_bound_job_clears_in_the_same_round_at_the_posted_price(self, settings):
        settings.CPX_CLEARING_RULE = "depth"
        listed(tier=Provider.Tier.EDGE, region="eu-west", devices=1, ask="0.80")
        cloud = listed(tier=Provider.Tier.CLOUD, region="eu-west", devices=8, ask="0.30")
        # Earlier rounds' estimates: the device class's median (3.0) is the tier game's demand scale,
        # which puts the cloud's Stackelberg level far above the job's bid; its own class posts 0.35.
        Round.objects.create(
            status=Round.Status.CLEARED,
            active_slot=None,
            opened_at=NOW,
            prices={
                key: {"estimate": price, "buyer_price": None}
                for key, price in {
                    "GPU/24G/eu-west": 0.35,
                    "GPU/24G/eu-central": 3.0,
                    "GPU/24G/us-east": 3.0,
                }.items()
            },
        )
        consumer = ConsumerFactory(balance=Decimal("10000"))
        job = job_submit(
            consumer=consumer, max_price_per_device_hour=Decimal("0.50"), latency_sla_ms=40, region="eu-west"
        )

        round_obj = cleared_round()

        summary = tier_book(round_obj)["tiers"]
        assert summary["placed"] == {"END": 0, "EDGE": 0, "CLOUD": 0}
        assert summary["cloud_price"] > 0.50  # priced out of the tiered book by the cloud's level
        assert summary["edge_price_low"] > 0.50  # and by the edge follower's price
        kinds = [book["kind"] for book in round_obj.mechanism["books"]]
        assert kinds == ["tiered", "posted_price"]
        lease = Lease.objects.get(job=job)
        assert lease.round_id == round_obj.pk
        assert lease.resource_id == cloud.pk
        assert lease.unit_price_paid == to_money(0.35 * float(cloud.speed_factor))
        job.refresh_from_db()
        assert job.waiting_reason is None
        assert round_replay(round_id=round_obj.pk)["match"] is True

    def test_a_priced_out_job_whose_class_is_thick_falls_through_to_its_unit_book(self, settings):
        settings.CPX_CLEARING_RULE = "depth"
        settings.CPX_THICK_BOOK_MIN_ORDERS = 2
        listed(tier=Provider.Tier.EDGE, region="eu-west", devices=1, ask="0.80")
        listed(tier=Provider.Tier.CLOUD, region="eu-west", devices=8, ask="0.30")
        Round.objects.create(
            status=Round.Status.CLEARED,
            active_slot=None,
            opened_at=NOW,
            prices={
                key: {"estimate": 3.0, "buyer_price": None}
                for key in ("GPU/24G/eu-west", "GPU/24G/eu-central", "GPU/24G/us-east")
            },
        )
        consumer = ConsumerFactory(balance=Decimal("10000"))
        others = [
            job_submit(consumer=consumer, max_price_per_device_hour=Decimal("1.00"), region="eu-west")
            for _ in range(2)
        ]  # no SLA: they make GPU/24G/eu-west thick before the tiered book clears
        job = job_submit(
            consumer=consumer, max_price_per_device_hour=Decimal("0.50"), latency_sla_ms=40, region="eu-west"
        )

        round_obj = cleared_round()

        assert tier_book(round_obj)["tiers"]["placed"] == {"END": 0, "EDGE": 0, "CLOUD": 0}
        books = json.loads(round_obj.snapshot)
        (unit,) = [book for book in books if isinstance(book["bids"], dict)]
        assert sorted(unit["bids"]["id"]) == sorted(f"j{j.pk}" for j in [*others, job])
        assert round_replay(round_id=round_obj.pk)["match"] is True
