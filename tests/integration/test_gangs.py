"""FusionAI gangs end to end (docs/fusionai-gangs.md): a 70B model at fp16 that no single node of
24 GiB consumer GPUs can hold clears as one pipeline across two providers, each member sees its
stage and peers, completes and is paid; a member that dies re-queues the whole gang once, and no
one is paid twice. The round replays from its snapshot, gang book included."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from auctions.models import Lease, Round
from auctions.services.leases import (
    LeaseAlreadyClosed,
    lease_accept,
    lease_complete,
    lease_fail,
    lease_poll,
    lease_sweep,
)
from auctions.services.rounds import round_clear, round_open, round_replay
from market.models import JobRequest, LedgerAccount, LedgerTransfer, Provider
from market.selectors import ledger_is_balanced
from market.services.gangs import GangInvalid, GangUnservable
from market.services.placement import Unservable
from tests.batches import batch_job, batch_jsonl
from tests.conftest import NOW, assert_error, bearer_client
from tests.factories import ConsumerFactory, job_body, job_submit
from tests.integration.test_rounds import online_resource

pytestmark = pytest.mark.django_db

S = Lease.Status
J = JobRequest.Status
PARIS, FRANKFURT, LONDON = (48.86, 2.35), (50.11, 8.68), (51.51, -0.13)
GANG = {"max_members": 4, "max_latency_ms": 30}


def big_job(consumer, **overrides):
    """Llama-2-70B at fp16: ~168 GiB, beyond any node of four 24 GiB GPUs."""
    fields = {
        "model_name": "llama-2-70b",
        "params_billion": Decimal("70"),
        "quant_bits": 16,
        "workload_tokens": 20_000,
        "max_price_per_device_hour": Decimal("2"),
        "budget": Decimal("500"),
        "gang": GANG,
        **overrides,
    }
    return job_submit(consumer=consumer, **fields)


def consumer_gpus(place, ask="0.40"):
    return online_resource(
        lat=place[0], lon=place[1], device_count=4, ask_per_device_hour=Decimal(ask), price_floor=Decimal("0")
    )


def clear_round(at=NOW):
    return round_clear(round_id=round_open(now=at).pk, now=at)


def payments(lease) -> int:
    return LedgerTransfer.objects.filter(reference=f"lease:{lease.pk}:payment").count()


def run_member(lease, *, at):
    lease_poll(provider=lease.provider, now=at)
    lease_accept(provider=lease.provider, lease_id=lease.pk, now=at)


def complete(lease, *, at):
    return lease_complete(
        provider=lease.provider,
        lease_id=lease.pk,
        tokens_in=10_000,
        tokens_out=10_000,
        device_seconds=Decimal("3600"),
        now=at,
    )


class TestGangSubmission:
    def test_a_model_too_large_for_any_node_is_refused_alone_and_taken_as_a_gang(self):
        consumer_gpus(PARIS)
        consumer_gpus(FRANKFURT)
        consumer = ConsumerFactory(balance=Decimal("10000"))

        with pytest.raises(Unservable):
            big_job(consumer, gang=None)
        job = big_job(consumer)

        assert job.status == J.QUEUED
        assert job.gang["max_members"] == 4 and job.gang["max_latency_ms"] == 30
        assert job.gang["layers"] == job.sizing["layers"]
        assert job.gang["layer_gib"] * job.gang["layers"] == pytest.approx(
            job.sizing["total_gb"] * 1e9 / 2**30
        )

    @pytest.mark.parametrize(
        "gang",
        [
            {"max_members": 1},
            {"max_members": 17},
            {"max_members": "4"},
            {"max_latency_ms": 30},
            {"max_members": 4, "extra": 1},
            [4],
            {"max_members": 4, "max_latency_ms": 0},
        ],
    )
    def test_refuses_malformed_terms_with_a_stable_code(self, gang):
        consumer = ConsumerFactory(balance=Decimal("10000"))

        with pytest.raises(GangInvalid) as refused:
            big_job(consumer, gang=gang)

        assert refused.value.code == "gang_invalid"
        assert not JobRequest.objects.filter(consumer=consumer).exists()

    def test_refuses_a_batch_file_job_as_a_gang(self):
        consumer = ConsumerFactory(balance=Decimal("10000"))

        with pytest.raises(GangInvalid) as refused:
            batch_job(consumer=consumer, data=batch_jsonl(2), now=NOW, gang=GANG)

        assert refused.value.code == "gang_invalid" and "input file" in refused.value.message
        assert not JobRequest.objects.filter(consumer=consumer).exists()

    def test_refuses_a_gang_that_no_listed_members_could_hold(self):
        consumer_gpus(PARIS)
        consumer = ConsumerFactory(balance=Decimal("10000"))

        with pytest.raises(GangUnservable) as refused:
            big_job(consumer, gang={"max_members": 2})  # one node of 4 x 24 GiB is listed: 40 of 71 layers

        assert refused.value.code == "gang_unservable"
        assert refused.value.status == 422

    def test_the_api_takes_gang_terms_and_shows_the_pipeline_unit(self):
        consumer = ConsumerFactory(balance=Decimal("100"))

        response = bearer_client(consumer).post(
            "/api/v1/jobs", job_body(gang={"max_members": 3, "max_latency_ms": None}), format="json"
        )

        assert response.status_code == 201, response.json()
        gang = response.json()["gang"]
        assert (gang["max_members"], gang["max_latency_ms"]) == (3, None)
        assert gang["layers"] >= 1 and gang["layer_gib"] > 0

    def test_the_api_answers_malformed_terms_in_the_one_error_shape(self):
        consumer = ConsumerFactory(balance=Decimal("100"))

        response = bearer_client(consumer).post(
            "/api/v1/jobs", job_body(gang={"max_members": 99}), format="json"
        )

        assert_error(response, 400, "gang_invalid")


class TestGangRound:
    def test_the_round_matches_the_whole_gang_across_providers_and_replays(self):
        paris, frankfurt = consumer_gpus(PARIS), consumer_gpus(FRANKFURT)
        consumer_gpus(LONDON, ask="0.90")
        job = big_job(ConsumerFactory(balance=Decimal("10000")))

        round_obj = clear_round()

        assert round_obj.status == Round.Status.CLEARED and round_obj.jobs_matched == 1
        leases = list(Lease.objects.filter(job=job).order_by("gang_stage"))
        assert [lease.resource_id for lease in leases] == [paris.pk, frankfurt.pk]
        assert [lease.gang_stage for lease in leases] == [0, 1]
        assert leases[0].gang["layers"][0] == 0 and leases[-1].gang["layers"][1] == job.gang["layers"]
        assert leases[0].gang["layers"][1] == leases[1].gang["layers"][0]
        assert leases[0].gang["peers"] == leases[1].gang["peers"]
        assert {peer["provider"] for peer in leases[0].gang["peers"]} == {
            paris.provider_id,
            frankfurt.provider_id,
        }
        for lease in leases:
            assert lease.unit_price_paid >= lease.unit_price_received >= Decimal("0.40")
        assert JobRequest.objects.get(pk=job.pk).status == J.MATCHED
        assert '"mechanism":"gang"' in round_obj.snapshot
        assert round_replay(round_id=round_obj.pk)["match"]

    def test_too_few_members_within_the_latency_bound_match_nothing(self):
        consumer_gpus(PARIS)
        consumer_gpus((39.04, -77.49))  # Ashburn: beyond 30 ms of Paris
        job = big_job(ConsumerFactory(balance=Decimal("10000")))

        clear_round()

        job.refresh_from_db()
        assert not Lease.objects.filter(job=job).exists()
        assert job.status == J.QUEUED and job.waiting_reason["code"] == "gang_unmatched"


class TestGangLifecycle:
    def test_each_member_completes_and_is_paid_once_the_whole_gang_has(self):
        consumer_gpus(PARIS)
        consumer_gpus(FRANKFURT)
        job = big_job(ConsumerFactory(balance=Decimal("10000")))
        clear_round()
        first, second = Lease.objects.filter(job=job).order_by("gang_stage")
        for lease in (first, second):
            run_member(lease, at=NOW)
        done = NOW + timedelta(hours=1)

        _, pending = complete(first, at=done)
        job.refresh_from_db()
        assert job.status == J.RUNNING and pending.charge == 0 and payments(first) == 0
        _, settled = complete(second, at=done)

        job.refresh_from_db()
        assert job.status == J.COMPLETED
        assert payments(first) == payments(second) == 1
        assert settled.provider_net > 0 and settled.refund > 0
        assert LedgerAccount.objects.get(kind=LedgerAccount.Kind.ESCROW, job=job).balance == 0
        assert ledger_is_balanced()
        with pytest.raises(LeaseAlreadyClosed):
            complete(second, at=done)
        assert payments(second) == 1

    def test_a_member_that_dies_requeues_the_whole_gang_once_and_nothing_is_paid_twice(self):
        paris, frankfurt = consumer_gpus(PARIS), consumer_gpus(FRANKFURT)
        london = consumer_gpus(LONDON, ask="0.90")
        job = big_job(ConsumerFactory(balance=Decimal("10000")))
        clear_round()
        first, second = Lease.objects.filter(job=job).order_by("gang_stage")
        for lease in (first, second):
            run_member(lease, at=NOW)
        later = NOW + timedelta(hours=1)
        complete(first, at=later)  # stage 0 finished, unpaid until the gang has

        lease_fail(
            provider=second.provider,
            lease_id=second.pk,
            reason="PROVIDER_FAULT",
            detail="GPU lost",
            now=later,
        )

        first.refresh_from_db()
        second.refresh_from_db()
        job.refresh_from_db()
        assert (second.status, second.close_reason) == (S.REASSIGNED, "PROVIDER_FAULT")
        assert (first.status, first.close_reason) == (S.REASSIGNED, "GANG")
        assert job.status == J.QUEUED
        assert Provider.objects.get(pk=frankfurt.provider_id).reputation < 1  # the faulty one pays
        assert LedgerTransfer.objects.filter(reference=f"lease:{first.pk}:penalty").count() == 0
        assert payments(first) == payments(second) == 0
        assert Provider.objects.get(pk=paris.provider_id).reputation == 1

        # The next round: the faulty provider is out for this job, its innocent peer is not.
        for resource in (paris, frankfurt, london):
            Provider.objects.filter(pk=resource.provider_id).update(last_heartbeat_at=later)
        clear_round(at=later)
        again = list(Lease.objects.filter(job=job, status=S.DISPATCHED).order_by("gang_stage"))
        assert {lease.resource_id for lease in again} == {paris.pk, london.pk}
        for lease in again:
            run_member(lease, at=later)
        for lease in again:
            complete(lease, at=later + timedelta(hours=1))

        job.refresh_from_db()
        assert job.status == J.COMPLETED
        paid = LedgerTransfer.objects.filter(job=job, kind=LedgerTransfer.Kind.PAYMENT)
        assert sorted(paid.values_list("reference", flat=True)) == sorted(
            f"lease:{lease.pk}:payment" for lease in again
        )
        assert ledger_is_balanced()

    def test_an_agent_sees_its_stage_and_peers(self):
        now = timezone.now()
        consumer_gpus(PARIS)
        consumer_gpus(FRANKFURT)
        Provider.objects.update(last_heartbeat_at=now)
        job = big_job(ConsumerFactory(balance=Decimal("10000")), now=now, deadline=now + timedelta(days=1))
        clear_round(at=now)
        lease = Lease.objects.filter(job=job).order_by("gang_stage").last()

        body = bearer_client(lease.provider.user).get(f"/api/v1/agent/leases/{lease.pk}").json()

        assert body["gang"]["stage"] == 1 and body["gang"]["stages"] == 2
        assert [peer["stage"] for peer in body["gang"]["peers"]] == [0, 1]
        assert body["gang"]["layers"][1] == job.gang["layers"]

    def test_a_silent_member_is_swept_and_takes_the_gang_back_to_the_queue(self, settings):
        consumer_gpus(PARIS)
        consumer_gpus(FRANKFURT)
        job = big_job(ConsumerFactory(balance=Decimal("10000")))
        clear_round()
        first, second = Lease.objects.filter(job=job).order_by("gang_stage")
        for lease in (first, second):
            run_member(lease, at=NOW)
        Lease.objects.filter(pk=first.pk).update(last_heartbeat_at=NOW + timedelta(hours=1))
        sweep_at = NOW + timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S + 1)

        summary = lease_sweep(now=sweep_at)

        first.refresh_from_db()
        second.refresh_from_db()
        job.refresh_from_db()
        assert (second.status, second.close_reason) == (S.REASSIGNED, "UNSTABLE")
        assert (first.status, first.close_reason) == (S.REASSIGNED, "GANG")
        assert job.status == J.QUEUED
        assert (summary.unstable, summary.requeued, summary.failed) == (1, 1, 0)
        assert ledger_is_balanced()

    def test_a_job_error_in_one_stage_fails_the_job_and_closes_its_peers(self):
        consumer_gpus(PARIS)
        consumer_gpus(FRANKFURT)
        job = big_job(ConsumerFactory(balance=Decimal("10000")))
        clear_round()
        first, second = Lease.objects.filter(job=job).order_by("gang_stage")
        for lease in (first, second):
            run_member(lease, at=NOW)

        lease_fail(
            provider=first.provider, lease_id=first.pk, reason="JOB_ERROR", detail="bad weights", now=NOW
        )

        second.refresh_from_db()
        job.refresh_from_db()
        assert (second.status, second.close_reason) == (S.FAILED, "GANG")
        assert job.status == J.FAILED
        assert LedgerAccount.objects.get(kind=LedgerAccount.Kind.ESCROW, job=job).balance == 0
        assert ledger_is_balanced()


class TestGangThroughTheAgentApi:
    def test_two_agents_poll_their_stages_complete_over_http_and_are_each_paid(self):
        now = timezone.now()
        consumer_gpus(PARIS)
        consumer_gpus(FRANKFURT)
        Provider.objects.update(last_heartbeat_at=now)
        job = big_job(ConsumerFactory(balance=Decimal("10000")), now=now, deadline=now + timedelta(days=1))
        clear_round(at=now)
        leases = list(Lease.objects.filter(job=job).order_by("gang_stage"))
        agents = [bearer_client(lease.provider.user) for lease in leases]

        polled = [agent.get("/api/v1/agent/leases", {"wait": 0}).json() for agent in agents]
        for agent, lease in zip(agents, leases, strict=True):
            response = agent.post(
                f"/api/v1/agent/leases/{lease.pk}/accept", {"simulated": True}, format="json"
            )
            assert response.status_code == 200, response.json()
        # Metering is bounded by wall time since acceptance: date the acceptances an hour back.
        Lease.objects.filter(job=job).update(accepted_at=now - timedelta(hours=1))
        usage = {"tokens_in": 10_000, "tokens_out": 10_000, "device_seconds": "3600"}
        answers = [
            agent.post(f"/api/v1/agent/leases/{lease.pk}/complete", usage, format="json").json()
            for agent, lease in zip(agents, leases, strict=True)
        ]

        stages = [
            [item["gang"]["stage"] for item in (page["results"] if isinstance(page, dict) else page)]
            for page in polled
        ]
        assert stages == [[0], [1]]
        assert answers[0]["settlement"]["charge"] == "0.000000"  # paid with the last member
        assert Decimal(answers[1]["settlement"]["provider_net"]) > 0
        job.refresh_from_db()
        assert job.status == J.COMPLETED
        assert all(payments(lease) == 1 for lease in leases)
        assert ledger_is_balanced()
        seen = bearer_client(job.consumer).get(f"/api/v1/jobs/{job.pk}/leases").json()
        assert sorted(lease["gang"]["stage"] for lease in seen) == [0, 1]
