"""Rounds against the database: opening, clearing unit and heterogeneous books, idempotency, failures,
replay, compare-and-set against concurrent cancels, bulk queries, and a two-worker race on PostgreSQL."""

import json
import threading
import types
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from auctions.mechanisms import MechanismError, throughput, welfare_milp
from auctions.models import Lease, Round
from auctions.selectors import rounds as round_selectors
from auctions.services import rounds as round_services
from auctions.services.jobs import job_request_cancel
from auctions.services.rounds import RoundBookChanged, RoundBusy, round_clear, round_open, round_replay
from market.models import JobRequest, Provider
from tests.conftest import NOW
from tests.factories import ConsumerFactory, ProviderFactory, ResourceFactory, job_submit

pytestmark = pytest.mark.django_db

Status = JobRequest.Status


def online_resource(*, region="eu-west", lat=None, lon=None, **fields):
    """A listed resource of a provider that heartbeat at NOW (the book takes online providers only)."""
    provider = ProviderFactory(region=region, latitude=lat, longitude=lon)
    Provider.objects.filter(pk=provider.pk).update(last_heartbeat_at=NOW)
    fields.setdefault("price_floor", Decimal("0"))
    return ResourceFactory(provider=provider, **fields)


def funded_consumer():
    return ConsumerFactory(balance=Decimal("10000"))


def bid(consumer, price: str, **fields):
    return job_submit(consumer=consumer, max_price_per_device_hour=Decimal(price), **fields)


def cleared_round():
    round_obj = round_open(now=NOW)
    return round_clear(round_id=round_obj.pk, now=NOW)


class TestRoundOpen:
    def test_opens_one_round_and_returns_it_while_it_is_active(self):
        first = round_open(now=NOW)

        second = round_open(now=NOW)

        assert first.pk == second.pk
        assert first.status == Round.Status.OPEN
        assert first.mechanism["unit"]["mechanism"] == "mcafee"

    def test_the_database_refuses_a_second_active_round(self):
        round_open(now=NOW)

        with pytest.raises(IntegrityError), transaction.atomic():
            Round.objects.create(status=Round.Status.OPEN, active_slot=1, opened_at=NOW)

    def test_a_race_on_the_active_slot_resolves_to_the_round_that_won(self, monkeypatch):
        # The other worker inserted its round after our read saw none: our insert hits the unique slot.
        winner = Round.objects.create(status=Round.Status.OPEN, active_slot=1, opened_at=NOW)
        reads = iter([None])
        real_read = round_selectors.round_active
        monkeypatch.setattr(round_selectors, "round_active", lambda: next(reads, None) or real_read())

        opened = round_open(now=NOW)

        assert opened.pk == winner.pk
        assert Round.objects.filter(status=Round.Status.OPEN).count() == 1

    def test_opens_a_new_round_once_the_last_one_cleared(self):
        first = cleared_round()

        second = round_open(now=NOW)

        assert second.pk != first.pk
        assert second.status == Round.Status.OPEN


class TestRoundClearUnitBook:
    def test_matches_single_device_jobs_to_the_cheapest_devices_at_the_mcafee_price(self):
        # One class (GPU, 24 GiB tier, eu-west). Bids 1.00, 0.80, 0.30, 0.15; asks 0.10, 0.20, 0.50.
        # k = 2 (0.30 < 0.50); p0 = (b3 + s3) / 2 = (0.30 + 0.50) / 2 = 0.40 and s2 = 0.20 <= 0.40 <= b2
        # = 0.80, so both efficient pairs trade at 0.40, buyers and sellers alike.
        cheap = online_resource(ask_per_device_hour=Decimal("0.10"), fp16_tflops=Decimal("82.6"))
        middle = online_resource(ask_per_device_hour=Decimal("0.20"))
        dear = online_resource(ask_per_device_hour=Decimal("0.50"))
        consumer = funded_consumer()
        high = bid(consumer, "1.00")
        second = bid(consumer, "0.80")
        low = bid(consumer, "0.30")
        lowest = bid(consumer, "0.15")

        round_obj = cleared_round()

        assert round_obj.status == Round.Status.CLEARED
        leases = {lease.job_id: lease for lease in Lease.objects.filter(round=round_obj)}
        assert set(leases) == {high.pk, second.pk}
        assert {leases[high.pk].resource_id, leases[second.pk].resource_id} == {cheap.pk, middle.pk}
        assert leases[high.pk].resource_id == cheap.pk  # the best bid takes the cheapest device
        for lease in leases.values():
            assert lease.unit_price_paid == Decimal("0.400000")
            assert lease.unit_price_received == Decimal("0.400000")
            assert lease.devices == 1
            assert lease.resource_class == "GPU/24G/eu-west"
            assert lease.status == Lease.Status.DISPATCHED
            assert lease.max_device_hours == Decimal("25.000000")  # budget 10 / 0.40 per device-hour
        # 2 x 7e9 FLOPs x 1e6 tokens / (82.6 TFLOPS x 0.30) / 3600 s
        expected = 2 * 7e9 * 1e6 / (82.6e12 * throughput.DEFAULT_UTILISATION) / 3600
        assert float(leases[high.pk].expected_device_hours) == pytest.approx(expected, abs=1e-6)
        statuses = dict(JobRequest.objects.filter(consumer=consumer).values_list("id", "status"))
        assert statuses == {
            high.pk: Status.MATCHED,
            second.pk: Status.MATCHED,
            low.pk: Status.QUEUED,
            lowest.pk: Status.QUEUED,
        }
        assert round_obj.prices["GPU/24G/eu-west"]["buyer_price"] == pytest.approx(0.40)
        assert round_obj.jobs_matched == 2
        assert round_obj.active_slot is None
        assert round_obj.welfare == pytest.approx((1.00 + 0.80) - (0.10 + 0.20))
        assert set(round_obj.timings_ms) == {"snapshot", "clear", "write"}
        assert dear.pk not in {lease.resource_id for lease in leases.values()}

    def test_stores_a_snapshot_the_engine_re_runs_to_the_same_result(self):
        online_resource(ask_per_device_hour=Decimal("0.10"), device_count=2)
        consumer = funded_consumer()
        first = bid(consumer, "1.00")
        second = bid(consumer, "0.90")

        round_obj = cleared_round()

        from auctions.mechanisms import clear
        from auctions.mechanisms.canonical import input_sha256

        docs = json.loads(round_obj.snapshot)
        assert docs[0]["mechanism"] == "mcafee"
        assert docs[0]["bids"]["id"] == [f"j{first.pk}", f"j{second.pk}"]
        assert input_sha256(clear(docs)) == round_obj.result_sha256
        assert round_obj.result[0]["input_sha256"] == input_sha256(docs[0])

    def test_leaves_out_providers_that_never_heartbeat_and_those_gone_silent(self):
        silent = online_resource(ask_per_device_hour=Decimal("0.10"))
        Provider.objects.filter(pk=silent.provider_id).update(last_heartbeat_at=NOW - timedelta(hours=1))
        ResourceFactory(ask_per_device_hour=Decimal("0.10"), price_floor=Decimal("0"))  # never seen
        bid(funded_consumer(), "1.00")

        round_obj = cleared_round()

        assert round_obj.resources_in_book == 0
        assert not Lease.objects.filter(round=round_obj).exists()

    def test_counts_devices_held_by_active_leases_as_busy(self):
        resource = online_resource(ask_per_device_hour=Decimal("0.10"), device_count=1)
        consumer = funded_consumer()
        bid(consumer, "1.00")
        cleared_round()
        waiting = bid(consumer, "2.00")

        round_obj = cleared_round()

        assert round_obj.resources_in_book == 0
        assert JobRequest.objects.get(pk=waiting.pk).status == Status.QUEUED
        assert Lease.objects.filter(resource=resource).count() == 1


class TestRoundClearHeterogeneousBook:
    def test_gives_a_multi_device_job_all_its_devices_on_one_resource(self):
        single = online_resource(ask_per_device_hour=Decimal("0.05"), device_count=1)
        quad = online_resource(ask_per_device_hour=Decimal("0.30"), device_count=4)
        job = bid(funded_consumer(), "1.00", requested_device_count=2)

        round_obj = cleared_round()

        lease = Lease.objects.get(round=round_obj)
        assert (lease.job_id, lease.resource_id, lease.devices) == (job.pk, quad.pk, 2)
        assert single.pk != lease.resource_id
        assert round_obj.mechanism["books"] == [{"kind": "heterogeneous", "device_class": "GPU"}]
        # greedy + critical: the provider receives its ask, the job pays at least that, at most its bid
        # (per speed-1 device-hour; this device has speed 1).
        assert lease.unit_price_received == Decimal("0.300000")
        assert Decimal("0.30") <= lease.unit_price_paid <= Decimal("1.00")
        assert round_obj.lp_bound is not None and round_obj.optimality_gap is not None

    def test_a_job_that_failed_on_a_provider_is_not_offered_to_it_again(self):
        cheap = online_resource(ask_per_device_hour=Decimal("0.10"))
        other = online_resource(ask_per_device_hour=Decimal("0.20"))
        job = bid(funded_consumer(), "1.00")
        earlier = Round.objects.create(status=Round.Status.CLEARED, active_slot=None, opened_at=NOW)
        Lease.objects.create(
            round=earlier,
            job=job,
            resource=cheap,
            provider=cheap.provider,
            devices=1,
            resource_class="GPU/24G/eu-west",
            unit_price_paid=Decimal("0.1"),
            unit_price_received=Decimal("0.1"),
            max_device_hours=Decimal("1"),
            expected_device_hours=Decimal("1"),
            status=Lease.Status.FAILED,
            dispatched_at=NOW,
        )

        round_obj = cleared_round()

        assert Lease.objects.get(round=round_obj).resource_id == other.pk


class TestRoundClearCandidatePruning:
    def test_a_heterogeneous_book_offers_the_cheapest_providers_with_room_to_spare(self):
        resources = [
            online_resource(ask_per_device_hour=Decimal(f"0.{10 + i}"), device_count=4) for i in range(20)
        ]
        bid(funded_consumer(), "1.00", requested_device_count=2)

        round_obj = cleared_round()

        offered = json.loads(round_obj.snapshot)[0]["providers"]
        assert [p["id"] for p in offered] == [f"r{r.pk}" for r in resources[:16]]  # the 16 cheapest
        assert Lease.objects.get(round=round_obj).resource_id == resources[0].pk


class TestRoundClearLatency:
    def test_a_job_with_a_latency_sla_goes_only_to_providers_close_enough(self):
        # Both providers say eu-west; the cheap one sits in Lisbon (~24 ms from the eu-west centroid by
        # the latency model), the dear one in Paris (~2 ms). An SLA of 15 ms rules Lisbon out.
        lisbon = online_resource(ask_per_device_hour=Decimal("0.10"), lat=38.72, lon=-9.14)
        paris = online_resource(ask_per_device_hour=Decimal("0.30"), lat=48.86, lon=2.35)
        consumer = funded_consumer()
        strict = bid(consumer, "1.00", latency_sla_ms=15)

        round_obj = cleared_round()

        assert Lease.objects.get(job=strict).resource_id == paris.pk
        assert not Lease.objects.filter(round=round_obj, resource=lisbon).exists()

    def test_a_job_whose_sla_no_provider_meets_stays_queued(self):
        # Submitted into an empty market (a market with only this listing refuses it: unservable).
        job = bid(funded_consumer(), "1.00", latency_sla_ms=20, region="eu-west")
        online_resource(region="us-east", ask_per_device_hour=Decimal("0.10"), lat=39.04, lon=-77.49)

        cleared_round()

        assert JobRequest.objects.get(pk=job.pk).status == Status.QUEUED
        assert not Lease.objects.filter(job=job).exists()

    def test_a_job_without_sla_in_a_region_without_supply_is_placed_elsewhere(self):
        far = online_resource(region="us-east", ask_per_device_hour=Decimal("0.10"))
        job = bid(funded_consumer(), "1.00", region="ap-south")

        cleared_round()

        assert Lease.objects.get(job=job).resource_id == far.pk

    def test_a_strict_multi_device_job_never_runs_outside_its_region(self):
        # Submitted into an empty market, then only us-east lists: the heterogeneous book must hold
        # a strict job to eu-west even without a latency limit.
        job = bid(funded_consumer(), "1.00", requested_device_count=2, region="eu-west", placement="strict")
        online_resource(region="us-east", ask_per_device_hour=Decimal("0.10"), device_count=4)

        cleared_round()

        assert JobRequest.objects.get(pk=job.pk).status == Status.QUEUED
        assert not Lease.objects.filter(job=job).exists()

    def test_a_multi_device_job_with_a_latency_sla_runs_in_a_neighbouring_region_within_it(self):
        # An SLA implies strict placement, which means "within latency_sla_ms of its region"
        # (market.services.placement): a node listed in eu-central but sitting in Paris (~2 ms from
        # the eu-west centroid) meets 15 ms, so the heterogeneous book may not hold the job to eu-west.
        job = bid(funded_consumer(), "1.00", requested_device_count=2, region="eu-west", latency_sla_ms=15)
        near = online_resource(
            region="eu-central", lat=48.86, lon=2.35, ask_per_device_hour=Decimal("0.10"), device_count=4
        )

        cleared_round()

        assert Lease.objects.get(job=job).resource_id == near.pk

    def test_a_preferred_multi_device_job_runs_outside_its_region(self):
        job = bid(
            funded_consumer(), "1.00", requested_device_count=2, region="eu-west", placement="preferred"
        )
        far = online_resource(region="us-east", ask_per_device_hour=Decimal("0.10"), device_count=4)

        cleared_round()

        assert Lease.objects.get(job=job).resource_id == far.pk


class TestRoundClearIdempotency:
    def test_a_second_clear_of_a_cleared_round_changes_nothing(self):
        online_resource(ask_per_device_hour=Decimal("0.10"))
        consumer = funded_consumer()
        bid(consumer, "1.00")
        round_obj = cleared_round()
        before = Round.objects.values().get(pk=round_obj.pk)
        late = bid(consumer, "5.00")

        again = round_clear(round_id=round_obj.pk, now=NOW + timedelta(minutes=1))

        assert Round.objects.values().get(pk=round_obj.pk) == before
        assert again.status == Round.Status.CLEARED
        assert Lease.objects.filter(round=round_obj).count() == 1
        assert JobRequest.objects.get(pk=late.pk).status == Status.QUEUED

    def test_an_unknown_round_is_not_found(self):
        with pytest.raises(round_services.RoundNotFound):
            round_clear(round_id=987654, now=NOW)


class TestRoundClearFailures:
    def test_an_engine_error_marks_the_round_failed_and_frees_the_slot(self, monkeypatch):
        online_resource(ask_per_device_hour=Decimal("0.10"))
        job = bid(funded_consumer(), "1.00")

        def broken(doc, *, input_sha256=None):
            raise MechanismError("time_limit", "the solver stopped with no solution")

        monkeypatch.setattr(round_services, "clear", broken)

        round_obj = cleared_round()

        assert round_obj.status == Round.Status.FAILED
        assert round_obj.error == "time_limit: the solver stopped with no solution"
        assert round_obj.active_slot is None
        assert JobRequest.objects.get(pk=job.pk).status == Status.QUEUED
        assert not Lease.objects.filter(round=round_obj).exists()
        assert round_open(now=NOW).pk != round_obj.pk

    def test_a_job_cancelled_while_the_round_holds_it_is_not_matched(self, monkeypatch):
        # Bids 1.00, 0.90, 0.40 against asks 0.10 x 2 and 0.50: two trades at (0.40 + 0.50) / 2.
        online_resource(ask_per_device_hour=Decimal("0.10"), device_count=2)
        online_resource(ask_per_device_hour=Decimal("0.50"))
        consumer = funded_consumer()
        kept = bid(consumer, "1.00")
        cancelled = bid(consumer, "0.90")
        bid(consumer, "0.40")
        real_clear = round_services.clear

        def cancel_during_clearing(doc, *, input_sha256=None):
            # The consumer's cancel lands between the snapshot and the write (a lock that failed).
            if JobRequest.objects.filter(pk=cancelled.pk, status=Status.QUEUED).exists():
                JobRequest.objects.filter(pk=cancelled.pk).update(status=Status.CANCELLED)
            return real_clear(doc, input_sha256=input_sha256)

        monkeypatch.setattr(round_services, "clear", cancel_during_clearing)
        round_obj = round_open(now=NOW)

        with pytest.raises(RoundBookChanged):
            round_clear(round_id=round_obj.pk, now=NOW)

        # Nothing of the round was written; the next run clears the book as it now stands.
        round_obj.refresh_from_db()
        assert round_obj.status == Round.Status.OPEN
        assert not Lease.objects.filter(round=round_obj).exists()
        JobRequest.objects.filter(pk=cancelled.pk).update(status=Status.CANCELLED)
        monkeypatch.setattr(round_services, "clear", real_clear)
        round_obj = round_clear(round_id=round_obj.pk, now=NOW)
        assert list(Lease.objects.filter(round=round_obj).values_list("job_id", flat=True)) == [kept.pk]
        assert JobRequest.objects.get(pk=cancelled.pk).status == Status.CANCELLED

    def test_a_job_cancelled_before_the_round_is_not_in_the_book(self):
        online_resource(ask_per_device_hour=Decimal("0.10"))
        consumer = funded_consumer()
        job = bid(consumer, "1.00")
        job_request_cancel(consumer=consumer, job_id=job.pk, now=NOW)

        round_obj = cleared_round()

        assert round_obj.jobs_in_book == 0
        assert not Lease.objects.filter(job=job).exists()


class TestRoundReplay:
    def test_replay_of_a_cleared_round_matches(self):
        online_resource(ask_per_device_hour=Decimal("0.10"), device_count=2)
        consumer = funded_consumer()
        bid(consumer, "1.00")
        bid(consumer, "0.50", requested_device_count=2)
        round_obj = cleared_round()

        report = round_replay(round_id=round_obj.pk)

        assert report["match"] is True
        assert report["round"] == round_obj.pk
        assert report["snapshot_sha256"] == round_obj.snapshot_sha256
        assert report["recomputed_result_sha256"] == report["result_sha256"] == round_obj.result_sha256

    def test_replay_of_a_round_whose_solver_guard_fired_matches_on_a_quick_machine(
        self, settings, monkeypatch
    ):
        settings.CPX_HETEROGENEOUS_MECHANISM, settings.CPX_HETEROGENEOUS_PAYMENT_RULE = "welfare", "vcg"
        settings.CPX_WELFARE_TIME_LIMIT_S = 45.0
        online_resource(ask_per_device_hour=Decimal("0.10"), device_count=4)
        online_resource(ask_per_device_hour=Decimal("0.20"), device_count=2)
        consumer = funded_consumer()
        for price in ("1.00", "0.80", "0.60"):
            bid(consumer, price, requested_device_count=2)
        ticks = iter(range(0, 10**9, 30))  # a machine so slow that the guard cuts the MILP: 30 s a reading
        with monkeypatch.context() as patch:
            patch.setattr(
                welfare_milp, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks)))
            )
            round_obj = cleared_round()
        (hetero,) = [r for r in round_obj.result if r["mechanism"] == "welfare"]

        report = round_replay(round_id=round_obj.pk)

        assert hetero["stopped_by"] == "time_limit" and hetero["time_cuts"]
        assert report["match"] is True

    def test_a_tampered_snapshot_is_a_mismatch(self):
        online_resource(ask_per_device_hour=Decimal("0.10"), device_count=2)
        consumer = funded_consumer()
        bid(consumer, "1.00")
        bid(consumer, "0.90")
        round_obj = cleared_round()
        docs = json.loads(round_obj.snapshot)
        docs[0]["asks"]["price"][0] = 0.05
        Round.objects.filter(pk=round_obj.pk).update(snapshot=json.dumps(docs))

        report = round_replay(round_id=round_obj.pk)

        assert report["match"] is False
        assert report["recomputed_result_sha256"] != report["result_sha256"]

    def test_a_tampered_result_is_a_mismatch(self):
        online_resource(ask_per_device_hour=Decimal("0.10"))
        bid(funded_consumer(), "1.00")
        round_obj = cleared_round()
        result = round_obj.result
        result[0]["buyer_price"] = 0.01
        Round.objects.filter(pk=round_obj.pk).update(result=result)

        report = round_replay(round_id=round_obj.pk)

        assert report["match"] is False
        assert report["recomputed_result_sha256"] == report["result_sha256"]  # the engine still agrees
        assert report["stored_result_sha256"] != report["result_sha256"]

    def test_the_command_exits_0_on_match_1_on_mismatch_2_on_unknown(self, capsys):
        online_resource(ask_per_device_hour=Decimal("0.10"))
        bid(funded_consumer(), "1.00")
        round_obj = cleared_round()

        with pytest.raises(SystemExit) as matched:
            call_command("cpx_round", "replay", str(round_obj.pk))
        assert matched.value.code == 0
        assert json.loads(capsys.readouterr().out)["match"] is True

        Round.objects.filter(pk=round_obj.pk).update(result_sha256="0" * 64)
        with pytest.raises(SystemExit) as mismatched:
            call_command("cpx_round", "replay", str(round_obj.pk))
        assert mismatched.value.code == 1

        with pytest.raises(SystemExit) as unknown:
            call_command("cpx_round", "replay", "987654")
        assert unknown.value.code == 2

    def test_the_command_clears_a_round_and_lists_it(self, capsys):
        # The command clears at the real clock: the provider heartbeats now, the job is due tomorrow.
        resource = online_resource(ask_per_device_hour=Decimal("0.10"))
        Provider.objects.filter(pk=resource.provider_id).update(last_heartbeat_at=timezone.now())
        bid(funded_consumer(), "1.00", now=timezone.now(), deadline=timezone.now() + timedelta(days=1))

        call_command("cpx_round", "clear")
        cleared = capsys.readouterr().out
        call_command("cpx_round", "list")
        listed = capsys.readouterr().out

        round_obj = Round.objects.get()
        assert round_obj.status == Round.Status.CLEARED
        assert f"round {round_obj.pk}" in cleared and "matched 1" in cleared
        assert str(round_obj.pk) in listed and "CLEARED" in listed


class TestRoundClearQueries:
    @pytest.mark.parametrize("jobs", [3, 40])
    def test_snapshot_and_write_are_bulk_at_any_size(self, jobs, django_assert_max_num_queries):
        for _ in range(4):
            online_resource(ask_per_device_hour=Decimal("0.10"), device_count=jobs)
        consumer = funded_consumer()
        for i in range(jobs):
            bid(consumer, "1.00", requested_device_count=1 + i % 2)
        round_obj = round_open(now=NOW)

        # 16: two of them copy the jobs' SLA terms to their leases (auctions.services.sla), one is
        # PostgreSQL's savepoint around the clearing; three for the backup pool (the devices it holds;
        # standbys that left; running jobs that want a standby).
        with django_assert_max_num_queries(19):
            round_clear(round_id=round_obj.pk, now=NOW)

        # Identical bids: McAfee finds no price-setting bid beyond the k-th and drops one trade.
        assert Lease.objects.filter(round=round_obj).count() >= jobs - 1


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
class TestRoundClearRace:
    def test_two_workers_clearing_the_same_round_produce_one_result(self, require_postgres):
        online_resource(ask_per_device_hour=Decimal("0.10"), device_count=8)
        consumer = funded_consumer()
        for i in range(20):
            bid(consumer, "1.00", requested_device_count=1 + i % 2)
        round_id = round_open(now=NOW).pk
        barrier = threading.Barrier(2)
        outcomes = []

        def worker():
            try:
                barrier.wait()
                outcomes.append(round_clear(round_id=round_id, now=NOW).status)
            except RoundBusy:
                outcomes.append("busy")
            finally:
                connection.close()

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert sorted(outcomes) in (["CLEARED", "busy"], ["CLEARED", "CLEARED"])
        round_obj = Round.objects.get(pk=round_id)
        assert round_obj.status == Round.Status.CLEARED
        leases = Lease.objects.filter(round=round_obj)
        assert leases.count() == round_obj.jobs_matched > 0
        assert leases.values("job").distinct().count() == leases.count()
        assert round_replay(round_id=round_id)["match"] is True


def priced_round(prices: dict) -> Round:
    """An earlier cleared round whose market-clearing estimates the next round posts as its prices."""
    return Round.objects.create(
        status=Round.Status.CLEARED,
        active_slot=None,
        opened_at=NOW,
        prices={key: {"estimate": price, "buyer_price": None} for key, price in prices.items()},
    )


class TestRoundClearDepthRule:
    def test_a_thin_class_trades_its_only_efficient_trade_at_the_posted_price(self):
        resource = online_resource(ask_per_device_hour=Decimal("0.10"))
        job = bid(funded_consumer(), "1.00")
        priced_round({"GPU/24G/eu-west": 0.4})

        round_obj = cleared_round()

        lease = Lease.objects.get(round=round_obj)
        assert (lease.job_id, lease.resource_id) == (job.pk, resource.pk)
        assert lease.unit_price_paid == lease.unit_price_received == Decimal("0.400000")
        assert round_obj.mechanism["posted_prices"] == {"GPU/24G/eu-west": 0.4}
        assert round_obj.mechanism["books"] == [{"kind": "posted_price"}]
        entry = round_obj.prices["GPU/24G/eu-west"]
        assert (entry["rule"], entry["posted_price"], entry["traded"]) == ("posted_price", 0.4, 1)
        assert json.loads(round_obj.snapshot)[0]["salt"] == f"round-{round_obj.pk}"
        assert round_replay(round_id=round_obj.pk)["match"] is True

    def test_a_job_is_served_by_a_larger_class_when_its_own_is_full(self):
        online_resource(ask_per_device_hour=Decimal("0.10"), device_count=1)
        larger = online_resource(ask_per_device_hour=Decimal("0.30"), memory_per_device_gib=Decimal("48"))
        consumer = funded_consumer()
        first, second = bid(consumer, "1.00"), bid(consumer, "1.00")
        priced_round({"GPU/24G/eu-west": 0.4, "GPU/48G/eu-west": 0.5})

        round_obj = cleared_round()

        leases = {lease.job_id: lease for lease in Lease.objects.filter(round=round_obj)}
        assert set(leases) == {first.pk, second.pk}
        assert sorted(str(lease.unit_price_paid) for lease in leases.values()) == ["0.400000", "0.500000"]
        assert {lease.resource_class for lease in leases.values()} == {"GPU/24G/eu-west", "GPU/48G/eu-west"}
        assert larger.pk in {lease.resource_id for lease in leases.values()}

    def test_a_bid_below_the_posted_price_waits_and_the_round_replays(self):
        online_resource(ask_per_device_hour=Decimal("0.10"))
        job = bid(funded_consumer(), "0.30")
        priced_round({"GPU/24G/eu-west": 0.4})

        round_obj = cleared_round()

        assert round_obj.jobs_matched == 0
        assert JobRequest.objects.get(pk=job.pk).status == Status.QUEUED
        assert round_replay(round_id=round_obj.pk)["match"] is True
        # Next round's price: the lowest that clears this book (the ask 0.10; bids are per reference
        # device-hour and this device has speed 1).
        assert round_obj.prices["GPU/24G/eu-west"]["estimate"] == pytest.approx(0.1)

    def test_a_class_without_a_price_yet_clears_as_before_and_records_one(self):
        online_resource(ask_per_device_hour=Decimal("0.10"))
        job = bid(funded_consumer(), "1.00")

        round_obj = cleared_round()

        assert Lease.objects.get(round=round_obj).job_id == job.pk
        assert round_obj.mechanism["books"] == [{"kind": "heterogeneous", "device_class": "GPU"}]
        assert round_obj.prices["GPU/24G/eu-west"]["estimate"] == pytest.approx(0.1)

    def test_a_thick_class_clears_by_the_unit_double_auction(self, settings):
        settings.CPX_THICK_BOOK_MIN_ORDERS = 2
        online_resource(ask_per_device_hour=Decimal("0.10"), device_count=3)
        consumer = funded_consumer()
        for price in ("1.00", "0.80", "0.30"):
            bid(consumer, price)
        priced_round({"GPU/24G/eu-west": 0.9})

        round_obj = cleared_round()

        assert round_obj.mechanism["books"] == [{"kind": "unit", "resource_class": "GPU/24G/eu-west"}]
        assert round_obj.prices["GPU/24G/eu-west"]["rule"] == "mcafee"

    def test_a_job_its_thick_class_cannot_hold_to_its_sla_goes_to_the_heterogeneous_book(self, settings):
        settings.CPX_THICK_BOOK_MIN_ORDERS = 2
        online_resource(ask_per_device_hour=Decimal("0.10"), lat=38.72, lon=-9.14, device_count=2)
        paris = online_resource(ask_per_device_hour=Decimal("0.30"), lat=48.86, lon=2.35)
        consumer = funded_consumer()
        bid(consumer, "1.00")
        bid(consumer, "0.90")
        strict = bid(consumer, "1.00", latency_sla_ms=15)  # Lisbon (~24 ms) is in the class, too far
        priced_round({"GPU/24G/eu-west": 0.2})

        round_obj = cleared_round()

        kinds = [book["kind"] for book in round_obj.mechanism["books"]]
        assert kinds == ["heterogeneous", "unit"]
        assert Lease.objects.get(job=strict).resource_id == paris.pk


class TestRoundLpBound:
    def test_the_bound_is_never_below_the_welfare_and_the_gap_is_consistent(self, settings):
        # A unit book (two bids in one class) beside a heterogeneous book (a two-device job): the
        # bound used to cover the heterogeneous books only while the welfare covered both.
        settings.CPX_CLEARING_RULE = "per_class"
        online_resource(ask_per_device_hour=Decimal("0.10"), device_count=2)
        online_resource(ask_per_device_hour=Decimal("0.05"), device_count=4, region="us-east")
        consumer = funded_consumer()
        bid(consumer, "1.00", latency_sla_ms=None)
        bid(consumer, "0.90", latency_sla_ms=None)
        bid(consumer, "5.00", requested_device_count=2, region="us-east", latency_sla_ms=None)

        round_obj = cleared_round()

        kinds = sorted(book["kind"] for book in round_obj.mechanism["books"])
        assert kinds == ["heterogeneous", "unit"]
        assert round_obj.jobs_matched == 2  # McAfee gives up one of the two unit trades
        assert round_obj.lp_bound >= round_obj.welfare > 0
        expected_gap = (round_obj.lp_bound - round_obj.welfare) / round_obj.lp_bound
        assert round_obj.optimality_gap == pytest.approx(expected_gap, abs=1e-12)


class TestRoundWaitingReason:
    def test_a_bid_below_the_posted_price_is_told_by_how_much(self):
        online_resource(ask_per_device_hour=Decimal("0.10"))
        job = bid(funded_consumer(), "0.30")
        priced_round({"GPU/24G/eu-west": 0.4})

        round_obj = cleared_round()

        reason = JobRequest.objects.get(pk=job.pk).waiting_reason
        assert reason["code"] == "bid_below_price"
        assert reason["price"] == pytest.approx(0.4)
        assert reason["short_by"] == pytest.approx(0.1)
        assert reason["round"] == round_obj.pk

    def test_a_job_no_free_device_fits_says_so_and_keeps_the_round_it_was_first_told(self):
        # Submitted into an empty market (a market with only this listing refuses it: unservable).
        job = bid(funded_consumer(), "1.00")
        online_resource(ask_per_device_hour=Decimal("0.10"), memory_per_device_gib=Decimal("8"))
        first = cleared_round()

        cleared_round()

        reason = JobRequest.objects.get(pk=job.pk).waiting_reason
        assert reason["code"] == "memory"
        assert reason["round"] == first.pk  # unchanged reasons are not rewritten each round

    def test_a_matched_job_has_no_waiting_reason(self):
        job = bid(funded_consumer(), "1.00")
        cleared_round()
        assert JobRequest.objects.get(pk=job.pk).waiting_reason["code"] == "memory"
        online_resource(ask_per_device_hour=Decimal("0.10"))

        cleared_round()

        job.refresh_from_db()
        assert (job.status, job.waiting_reason) == (Status.MATCHED, None)
