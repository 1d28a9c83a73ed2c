"""Cloud–edge tiers against the database (AI-Bazaar, auctions/services/tier_books.py): a latency-bound job
takes an edge device while the edge has one, overflows to the cloud at the cloud's price level when it
has none, and the round replays bit for bit."""

from decimal import Decimal

import pytest

from auctions.models import Lease
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
