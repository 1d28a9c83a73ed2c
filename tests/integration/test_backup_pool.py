"""The backup pool against the database (issue 12, FusionAI): a round reserves a standby for a running
job, the standby fee is escrowed and paid in the ledger, and a job whose provider dies restarts on its
standby without a new round — or, when the standby is gone too, waits for the next round."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest

from auctions.mechanisms import clear
from auctions.models import Lease, LeaseSla, Round, StandbyReservation
from auctions.selectors.backup_pool import standby_held_devices
from auctions.services.leases import lease_accept, lease_complete, lease_fail, lease_poll, lease_sweep
from auctions.services.rounds import round_clear, round_open, round_replay
from auctions.services.settlement import job_refund, lease_settle
from auctions.services.standby_fees import standby_fee_settle
from market.models import JobRequest, LedgerAccount, LedgerTransfer, Provider, Resource
from market.selectors import ledger_is_balanced
from tests.conftest import NOW
from tests.factories import ConsumerFactory, ProviderFactory, ResourceFactory, job_submit

pytestmark = pytest.mark.django_db

J = JobRequest.Status
S = Lease.Status
Standby = StandbyReservation.Status
FAULT = Lease.CloseReason.PROVIDER_FAULT


def at(seconds: float):
    return NOW + timedelta(seconds=seconds)


def online_resource(ask: str, *, region="eu-west", **fields) -> Resource:
    provider = ProviderFactory(region=region)
    Provider.objects.filter(pk=provider.pk).update(last_heartbeat_at=NOW)
    return ResourceFactory(
        provider=provider, ask_per_device_hour=Decimal(ask), price_floor=Decimal("0"), **fields
    )


def heartbeat(*resources, now) -> None:
    Provider.objects.filter(pk__in=[r.provider_id for r in resources]).update(last_heartbeat_at=now)


def clear_round(now) -> Round:
    return round_clear(round_id=round_open(now=now).pk, now=now)


def earnings(resource) -> Decimal:
    account = LedgerAccount.objects.filter(
        kind=LedgerAccount.Kind.PROVIDER, user_id=resource.provider.user_id
    ).first()
    return account.balance if account else Decimal(0)


def balance(user) -> Decimal:
    return LedgerAccount.objects.get(kind=LedgerAccount.Kind.CONSUMER, user=user).balance


def escrow(job) -> Decimal:
    return LedgerAccount.objects.get(kind=LedgerAccount.Kind.ESCROW, job=job).balance


def start_on(resource, job, *, now) -> Lease:
    """The provider's agent takes its offer and starts the job."""
    (lease,) = lease_poll(provider=resource.provider, now=now)
    assert lease.job_id == job.pk
    return lease_accept(provider=resource.provider, lease_id=lease.pk, now=now)


@pytest.fixture(autouse=True)
def _per_class(settings):
    # One job per round here: under "depth" a lone job buys at the posted price its first round set
    # (the cheapest device's), which the dearer devices these tests fall back to do not take.
    settings.CPX_CLEARING_RULE = "per_class"


@pytest.fixture
def market():
    """Three single-GPU providers: `primary` is the cheapest, `standby` the next, `third` the dearest;
    a consumer's job asking for a standby, matched to `primary` by round 1 and running."""
    primary = online_resource("0.10")
    standby = online_resource("0.20")
    third = online_resource("0.30")
    consumer = ConsumerFactory(balance=Decimal("100"))
    job = job_submit(consumer=consumer, standby=True)
    first = clear_round(NOW)
    lease = start_on(primary, job, now=at(1))
    return {
        "primary": primary,
        "standby": standby,
        "third": third,
        "consumer": consumer,
        "job": job,
        "round": first,
        "lease": lease,
    }


def reserve(market, now=None) -> StandbyReservation:
    """Round 2 reserves the running job's standby."""
    now = now or at(2)
    heartbeat(market["primary"], market["standby"], market["third"], now=now)
    market["round2"] = clear_round(now)
    return StandbyReservation.objects.get(job=market["job"])


class TestStandbyReservation:
    def test_the_next_round_reserves_the_cheapest_idle_device_for_the_running_job(self, market):
        balance_before = balance(market["consumer"])

        reservation = reserve(market)

        assert market["lease"].round_id == market["round"].pk  # round 1 matched it ...
        assert reservation.round_id == market["round2"].pk  # ... round 2 reserved its standby
        assert reservation.resource_id == market["standby"].pk
        assert reservation.status == Standby.HELD
        assert reservation.unit_price == Decimal("0.200000")
        lease = market["lease"]
        assert reservation.fee == (
            Decimal("0.05") * lease.unit_price_paid * lease.expected_device_hours
        ).quantize(Decimal("0.000001"))
        assert balance(market["consumer"]) == balance_before - reservation.fee
        hold = LedgerTransfer.objects.get(reference=f"standby:{reservation.pk}:hold")
        assert (hold.amount, hold.credit.kind) == (reservation.fee, LedgerAccount.Kind.ESCROW)
        assert ledger_is_balanced()

    def test_the_round_that_matches_a_job_reserves_nothing_for_it(self, settings):
        online_resource("0.10")
        online_resource("0.20")
        job = job_submit(consumer=ConsumerFactory(balance=Decimal("100")), standby=True)

        clear_round(NOW)

        assert JobRequest.objects.get(pk=job.pk).status == J.MATCHED
        assert not StandbyReservation.objects.filter(job=job).exists()

    def test_a_job_that_did_not_ask_gets_no_standby_under_opt_in_and_one_under_all(self, settings, market):
        JobRequest.objects.filter(pk=market["job"].pk).update(standby=False)

        heartbeat(market["standby"], market["third"], market["primary"], now=at(2))
        clear_round(at(2))
        assert not StandbyReservation.objects.filter(job=market["job"]).exists()

        settings.CPX_BACKUP_POOL_POLICY = "all"
        heartbeat(market["standby"], market["third"], market["primary"], now=at(3))
        clear_round(at(3))
        assert StandbyReservation.objects.filter(job=market["job"], status=Standby.HELD).exists()

    def test_the_pool_holds_at_most_its_share_of_the_idle_devices(self, settings, market):
        settings.CPX_BACKUP_POOL_SHARE = 0.4  # two idle devices: floor(0.8) = 0

        clear_round(at(2))

        assert not StandbyReservation.objects.filter(job=market["job"]).exists()
        assert json.loads(Round.objects.order_by("-id").first().snapshot)[-1]["share"] == 0.4

    def test_a_held_standby_is_out_of_the_next_rounds_book(self, market):
        reservation = reserve(market)
        other = job_submit(consumer=ConsumerFactory(balance=Decimal("100")))

        heartbeat(market["primary"], market["standby"], market["third"], now=at(3))
        clear_round(at(3))

        assert standby_held_devices() == {reservation.resource_id: 1}
        (lease,) = Lease.objects.filter(job=other)
        assert lease.resource_id == market["third"].pk  # the cheaper standby device was not for sale

    def test_a_consumer_who_cannot_pay_the_fee_gets_no_standby(self):
        primary = online_resource("0.10")
        online_resource("0.20")
        consumer = ConsumerFactory(balance=Decimal("10"))  # exactly the budget: nothing left for a fee
        job = job_submit(consumer=consumer, standby=True)
        clear_round(NOW)
        start_on(primary, job, now=at(1))

        clear_round(at(2))

        assert not StandbyReservation.objects.filter(job=job).exists()
        assert balance(consumer) == Decimal("0")
        assert ledger_is_balanced()

    def test_a_standby_that_leaves_the_pool_lapses_and_the_next_round_reserves_another(
        self, market, settings
    ):
        first = reserve(market)
        settings.CPX_BACKUP_POOL_SHARE = 1  # one idle device left: the default half of it rounds down to 0
        refunded_before = balance(market["consumer"])
        heartbeat(market["primary"], market["third"], now=at(3))
        # The standby's GPU quit: its agent has been silent for longer than the heartbeat timeout.
        Provider.objects.filter(pk=market["standby"].provider_id).update(
            last_heartbeat_at=NOW - timedelta(hours=1)
        )

        clear_round(at(3))

        first.refresh_from_db()
        assert first.status == Standby.LAPSED
        assert LedgerTransfer.objects.filter(reference=f"standby:{first.pk}:refund").count() == 1
        second = StandbyReservation.objects.get(job=market["job"], status=Standby.HELD)
        assert balance(market["consumer"]) == refunded_before + first.fee - second.fee  # refunded, held again
        assert second.resource_id == market["third"].pk
        assert ledger_is_balanced()

    def test_the_standby_choice_is_in_the_snapshot_and_replays(self, market):
        reservation = reserve(market)

        round2 = Round.objects.get(pk=market["round2"].pk)
        report = round_replay(round_id=round2.pk)

        pool_doc = json.loads(round2.snapshot)[-1]
        assert pool_doc["mechanism"] == "backup_pool"
        assert round2.result[-1]["standbys"] == {f"j{market['job'].pk}": f"r{reservation.resource_id}"}
        assert clear(pool_doc) == round2.result[-1]
        assert report["match"] is True


class TestRestartOnStandby:
    def test_a_provider_that_dies_mid_lease_hands_the_job_to_its_standby_without_a_new_round(self, market):
        reservation = reserve(market)
        rounds_before = Round.objects.count()
        standby_earnings = earnings(market["standby"])

        lease_fail(
            provider=market["primary"].provider,
            lease_id=market["lease"].pk,
            reason=FAULT,
            detail="GPU fell off the bus",
            now=at(4),
        )

        assert Round.objects.count() == rounds_before
        failed = Lease.objects.get(pk=market["lease"].pk)
        assert failed.status == S.REASSIGNED
        reservation.refresh_from_db()
        assert reservation.status == Standby.USED
        takeover = reservation.takeover
        assert (takeover.resource_id, takeover.status) == (market["standby"].pk, S.DISPATCHED)
        assert takeover.unit_price_paid == takeover.unit_price_received == Decimal("0.200000")
        assert LeaseSla.objects.filter(lease=takeover).exists()  # the job's SLA terms bind the standby too
        assert JobRequest.objects.get(pk=market["job"].pk).status == J.MATCHED
        # The standby earned its fee; the failing provider paid its penalty (it had no earnings to take).
        assert earnings(market["standby"]) == standby_earnings + reservation.fee
        assert LedgerTransfer.objects.filter(reference=f"standby:{reservation.pk}:payment").count() == 1
        assert ledger_is_balanced()

    def test_a_standby_of_lower_reputation_is_priced_as_every_book_prices_it(self, market):
        # f = 1 + 0.5 × (1 − 0.8) = 1.1: the pool ranks and charges the ask × f (0.22, still below the
        # third GPU's 0.30), and the standby's provider receives its own ask (0.22 / f).
        Provider.objects.filter(pk=market["standby"].provider_id).update(reputation=Decimal("0.8"))
        reservation = reserve(market)

        lease_fail(
            provider=market["primary"].provider,
            lease_id=market["lease"].pk,
            reason=FAULT,
            detail="",
            now=at(4),
        )

        reservation.refresh_from_db()
        assert reservation.resource_id == market["standby"].pk
        assert (reservation.unit_price, reservation.unit_price_received) == (
            Decimal("0.220000"),
            Decimal("0.200000"),
        )
        takeover = reservation.takeover
        assert (takeover.unit_price_paid, takeover.unit_price_received) == (
            Decimal("0.220000"),
            Decimal("0.200000"),
        )

    def test_the_standby_agent_runs_the_job_to_completion_and_is_paid_at_its_ask(self, market):
        reservation = reserve(market)
        lease_fail(
            provider=market["primary"].provider,
            lease_id=market["lease"].pk,
            reason=FAULT,
            detail="",
            now=at(4),
        )
        standby_lease = start_on(market["standby"], market["job"], now=at(5))
        fee_paid = earnings(market["standby"])

        _, settlement = lease_complete(
            provider=market["standby"].provider,
            lease_id=standby_lease.pk,
            tokens_in=1000,
            tokens_out=1000,
            device_seconds=Decimal("3.600"),
            now=at(10),
        )

        assert standby_lease.unit_price_paid == Decimal("0.200000")
        assert settlement.charge == Decimal("0.000200")  # 0.001 device-hours at 0.20
        assert earnings(market["standby"]) == fee_paid + settlement.provider_net
        assert escrow(market["job"]) == 0
        assert JobRequest.objects.get(pk=market["job"].pk).status == J.COMPLETED
        assert reservation.fee > 0 and ledger_is_balanced()

    def test_the_sweeper_hands_a_silent_providers_job_to_its_standby(self, market, settings):
        reserve(market)
        later = at(2 + settings.CPX_HEARTBEAT_TIMEOUT_S + 1)
        heartbeat(market["standby"], market["third"], now=later)  # the primary went silent

        summary = lease_sweep(now=later)

        assert (summary.unstable, summary.standby, summary.requeued) == (1, 1, 0)
        (takeover,) = Lease.objects.filter(job=market["job"], status=S.DISPATCHED)
        assert takeover.resource_id == market["standby"].pk

    def test_a_job_that_completes_on_its_primary_releases_its_standby_and_pays_the_fee_once(self, market):
        reservation = reserve(market)

        lease, _ = lease_complete(
            provider=market["primary"].provider,
            lease_id=market["lease"].pk,
            tokens_in=10,
            tokens_out=10,
            device_seconds=Decimal("1.000"),
            now=at(5),
        )
        lease_settle(lease=lease, now=at(6))  # a retried settlement
        job_refund(job=market["job"], now=at(6), reason="retry")
        reservation.refresh_from_db()
        standby_fee_settle(reservation=reservation, now=at(7))

        assert reservation.status == Standby.RELEASED
        assert earnings(market["standby"]) == reservation.fee
        assert LedgerTransfer.objects.filter(reference__startswith=f"standby:{reservation.pk}:").count() == 2
        assert escrow(market["job"]) == 0
        assert ledger_is_balanced()


class TestStandbyRaces:
    def test_a_standby_that_died_too_lapses_its_fee_is_refunded_and_the_next_round_places_the_job(
        self, market
    ):
        reservation = reserve(market)
        Provider.objects.filter(pk=market["standby"].provider_id).update(
            last_heartbeat_at=NOW - timedelta(hours=1)
        )
        paid_before = balance(market["consumer"])

        lease_fail(
            provider=market["primary"].provider,
            lease_id=market["lease"].pk,
            reason=FAULT,
            detail="",
            now=at(4),
        )

        reservation.refresh_from_db()
        assert reservation.status == Standby.LAPSED
        assert balance(market["consumer"]) == paid_before + reservation.fee
        assert earnings(market["standby"]) == 0
        assert JobRequest.objects.get(pk=market["job"].pk).status == J.QUEUED
        assert not Lease.objects.filter(job=market["job"], status__in=Lease.ACTIVE).exists()

        heartbeat(market["third"], now=at(5))
        clear_round(at(5))

        (lease,) = Lease.objects.filter(job=market["job"], status__in=Lease.ACTIVE)
        assert lease.resource_id == market["third"].pk  # not the failed primary, not the dead standby
        assert ledger_is_balanced()

    def test_a_standby_whose_agent_dies_before_accepting_falls_back_to_the_next_round(self, market, settings):
        reserve(market)
        lease_fail(
            provider=market["primary"].provider,
            lease_id=market["lease"].pk,
            reason=FAULT,
            detail="",
            now=at(4),
        )
        (takeover,) = Lease.objects.filter(job=market["job"], status=S.DISPATCHED)
        later = at(4 + settings.CPX_OFFER_TIMEOUT_S + 1)
        heartbeat(market["third"], now=later)

        summary = lease_sweep(now=later)
        clear_round(later)

        assert (summary.not_accepted, summary.requeued, summary.standby) == (1, 1, 0)
        assert Lease.objects.get(pk=takeover.pk).status == S.REASSIGNED
        (lease,) = Lease.objects.filter(job=market["job"], status__in=Lease.ACTIVE)
        assert lease.resource_id == market["third"].pk
        assert ledger_is_balanced()

    def test_a_second_failover_of_the_same_lease_finds_it_closed_and_moves_nothing(self, market):
        reservation = reserve(market)
        lease_fail(
            provider=market["primary"].provider,
            lease_id=market["lease"].pk,
            reason=FAULT,
            detail="",
            now=at(4),
        )
        transfers = LedgerTransfer.objects.count()

        with pytest.raises(Exception) as refused:
            lease_fail(
                provider=market["primary"].provider,
                lease_id=market["lease"].pk,
                reason=FAULT,
                detail="",
                now=at(5),
            )

        assert getattr(refused.value, "code", "") == "lease_already_closed"
        assert LedgerTransfer.objects.count() == transfers
        assert Lease.objects.filter(job=market["job"], status__in=Lease.ACTIVE).count() == 1
        assert StandbyReservation.objects.get(pk=reservation.pk).status == Standby.USED

    def test_a_standby_whose_listing_was_withdrawn_lapses(self, market):
        reservation = reserve(market)
        Resource.objects.filter(pk=market["standby"].pk).update(status=Resource.Status.PAUSED)

        lease_fail(
            provider=market["primary"].provider,
            lease_id=market["lease"].pk,
            reason=FAULT,
            detail="",
            now=at(4),
        )

        reservation.refresh_from_db()
        assert reservation.status == Standby.LAPSED
        assert JobRequest.objects.get(pk=market["job"].pk).status == J.QUEUED
        assert ledger_is_balanced()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
class TestStandbyRacesOnPostgres:
    def test_the_agent_and_the_sweeper_failing_the_same_lease_at_once_restart_the_job_once(
        self, require_postgres, settings
    ):
        from tests.conftest import run_together

        settings.CPX_CLEARING_RULE = "per_class"
        primary, standby, third = online_resource("0.10"), online_resource("0.20"), online_resource("0.30")
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = job_submit(consumer=consumer, standby=True)
        clear_round(NOW)
        lease = start_on(primary, job, now=at(1))
        later = at(2 + settings.CPX_HEARTBEAT_TIMEOUT_S + 1)
        heartbeat(standby, third, now=at(2))
        clear_round(at(2))
        heartbeat(standby, third, now=later)  # the primary went silent: the sweeper fails it over too
        reservation = StandbyReservation.objects.get(job=job)

        def work(i):
            if i == 0:
                return lease_fail(
                    provider=primary.provider, lease_id=lease.pk, reason=FAULT, detail="", now=later
                ).status
            return lease_sweep(now=later).standby

        results = run_together(2, work)

        assert Lease.objects.filter(job=job, status__in=Lease.ACTIVE).count() == 1
        reservation.refresh_from_db()
        assert reservation.status == Standby.USED
        assert LedgerTransfer.objects.filter(reference=f"standby:{reservation.pk}:payment").count() == 1
        assert earnings(standby) == reservation.fee
        # One of the two won the lease; the other was refused (the agent) or swept nothing (the sweeper).
        assert results.count(S.REASSIGNED) + results.count(1) == 1, results
        assert ledger_is_balanced()


class TestJobPageShowsTheStandby:
    def test_the_consumers_job_page_shows_its_standby_and_the_restart_on_it(self, market):
        from django.urls import reverse

        from tests.integration.pages import signed_in

        reservation = reserve(market)
        client = signed_in(market["consumer"])
        held = client.get(reverse("pages:job-detail", args=[market["job"].pk])).content.decode()
        lease_fail(
            provider=market["primary"].provider,
            lease_id=market["lease"].pk,
            reason=FAULT,
            detail="",
            now=at(4),
        )

        used = client.get(reverse("pages:job-detail", args=[market["job"].pk])).content.decode()

        assert 'id="standby">Held — ' in held and reservation.provider.display_name in held
        assert "Restarted on its standby" not in held
        assert 'id="standby">Used — ' in used
        assert "Restarted on its standby" in used


class TestGangsHoldNoStandby:
    def test_a_running_gang_gets_no_standby_and_a_dead_member_requeues_it_whole(self, settings):
        from tests.integration import test_gangs as gangs

        settings.CPX_BACKUP_POOL_POLICY = "all"
        settings.CPX_BACKUP_POOL_SHARE = 1
        gangs.consumer_gpus(gangs.PARIS)
        gangs.consumer_gpus(gangs.FRANKFURT)
        job = gangs.big_job(ConsumerFactory(balance=Decimal("10000")), standby=True)
        gangs.clear_round()
        # Listed after the gang matched: idle, and big enough for the whole job on one node, so a
        # standby could sit here, were the job not a gang.
        online_resource(
            "0.01", device_count=job.device_count, memory_per_device_gib=job.memory_per_device_gib
        )
        first, second = Lease.objects.filter(job=job).order_by("gang_stage")
        for lease in (first, second):
            gangs.run_member(lease, at=at(1))
        Provider.objects.update(last_heartbeat_at=at(2))

        gangs.clear_round(at(2))
        lease_fail(provider=second.provider, lease_id=second.pk, reason=FAULT, detail="", now=at(3))

        assert not StandbyReservation.objects.filter(job=job).exists()
        assert JobRequest.objects.get(pk=job.pk).status == J.QUEUED
