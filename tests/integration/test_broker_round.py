"""The `brokers` book in a live round (docs/mecm.md): jobs placed through a broker clear by MECM's
three-tier MILP over their broker's provider principals and the direct listings, at the engine's dual
prices; the round replays from its snapshot; the brokered lease's payment splits three ways."""

import json
from decimal import Decimal

import pytest

from auctions.mechanisms import clear
from auctions.models import Lease
from auctions.services.leases import lease_accept, lease_complete
from auctions.services.rounds import round_clear, round_open, round_replay
from market.models import LedgerTransfer, Role
from market.selectors import ledger_is_balanced
from market.services.brokers import broker_appoint, broker_job_submit
from tests.conftest import NOW, later
from tests.factories import UserFactory, job_spec
from tests.integration.test_leases import escrow, usage
from tests.integration.test_rounds import bid, funded_consumer, online_resource

pytestmark = pytest.mark.django_db
Q = Decimal("0.000001")


def brokered_market():
    """One broker; its consumer principal's two 1-device jobs (bids 1.00 and 0.60); its provider
    principal's 1-device listing at 0.20; a direct listing at 0.30 of a provider with no broker; and
    an un-brokered job at 0.90 from another consumer."""
    broker = UserFactory(username="edge-broker", role=Role.BROKER)
    consumer = funded_consumer()
    brokered = online_resource(ask_per_device_hour=Decimal("0.20"), device_count=1)
    direct = online_resource(ask_per_device_hour=Decimal("0.30"), device_count=1)
    broker_appoint(principal=consumer, broker_username=broker.username, fee_rate="0.02", now=NOW)
    broker_appoint(
        principal=brokered.provider.user, broker_username=broker.username, fee_rate="0.05", now=NOW
    )
    jobs = [
        broker_job_submit(
            broker=broker,
            principal_username=consumer.username,
            spec=job_spec(max_price_per_device_hour=Decimal(price), budget=Decimal("10")),
            now=NOW,
        )[0]
        for price in ("1.00", "0.60")
    ]
    other = bid(funded_consumer(), "0.90")
    return broker, jobs, other, brokered, direct


class TestBrokersBook:
    def test_brokered_jobs_clear_in_the_brokers_book_at_its_dual_prices_and_the_round_replays(self):
        _, (high, low), other, brokered, direct = brokered_market()

        round_obj = round_clear(round_id=round_open(now=NOW).pk, now=NOW)

        books = json.loads(round_obj.snapshot)
        kinds = [meta["kind"] for meta in round_obj.mechanism["books"]]
        assert kinds[0] == "brokers"
        doc = books[0]
        assert {u["id"] for u in doc["users"]} == {f"j{high.pk}", f"j{low.pk}"}  # the brokered jobs only
        assert doc["brokers"][0]["servers"] == [f"r{brokered.pk}"]  # its provider principal's listing
        assert doc["brokers"][0]["capacity"] == 1  # = its principals' free devices
        result = clear(doc)
        # Both brokered jobs trade: the best through the broker or direct, the other on the other listing.
        assert set(result["assignments"]) == {f"j{high.pk}", f"j{low.pk}"}
        assert set(result["assignments"].values()) == {f"r{brokered.pk}", f"r{direct.pk}"}
        assert any(route == doc["brokers"][0]["id"] for route in result["routes"].values())
        for job in (high, low):
            lease = Lease.objects.get(job=job)
            price = Decimal(str(result["unit_prices"][f"j{job.pk}"])).quantize(Q)
            assert abs(lease.unit_price_paid - price) <= Q  # the engine's dual price, per device-hour
            assert lease.unit_price_received <= lease.unit_price_paid <= job.max_price_per_device_hour
        # The un-brokered job does not reach the broker's listing in this book, and none is left for it.
        assert not Lease.objects.filter(job=other).exists()
        assert round_replay(round_id=round_obj.pk)["match"] is True

    def test_the_brokered_lease_settles_three_ways_balanced(self):
        broker, (high, low), _, brokered, _ = brokered_market()
        round_clear(round_id=round_open(now=NOW).pk, now=NOW)
        lease = Lease.objects.get(resource=brokered)
        job = lease.job
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW)
        lease, settlement = lease_complete(
            provider=lease.provider,
            lease_id=lease.pk,
            now=later(hours=1),
            **usage(device_seconds=Decimal("3600")),
        )

        moved = dict(
            LedgerTransfer.objects.filter(job=job)
            .exclude(kind=LedgerTransfer.Kind.HOLD)
            .values_list("reference", "amount")
        )
        assert job.pk in (high.pk, low.pk)
        assert moved[f"lease:{lease.pk}:broker:consumer"] == (
            lease.unit_price_paid * Decimal("0.02")
        ).quantize(Q)
        assert moved[f"lease:{lease.pk}:broker:provider"] > 0
        assert (
            settlement.broker
            == moved[f"lease:{lease.pk}:broker:consumer"] + moved[f"lease:{lease.pk}:broker:provider"]
        )
        assert sum(moved.values()) == Decimal("10")  # provider + brokers + platform + refund = the hold
        assert escrow(job) == 0
        assert ledger_is_balanced()
