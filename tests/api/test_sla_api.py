"""The SLA contract's API (auctions/api/sla.py): terms stated and read by the consumer with stable
error codes, the terms in the agent's offer before it accepts, the probe on the heartbeat echoed,
and a failed spot check closing the lease as VERIFICATION_FAILED with its quality breach charged."""

import copy
from datetime import timedelta
from decimal import Decimal

import pytest

from auctions.models import JobTerms, Lease, LeaseSla, Verification
from auctions.services.sla import lease_sla_copy
from auctions.services.verification import verification_decide, verification_poll
from market.models import JobRequest, LedgerAccount, LedgerTransfer, Provider
from market.selectors import ledger_is_balanced
from tests.batches import answer, batch_job, batch_jsonl
from tests.conftest import NOW, assert_error, bearer_client
from tests.factories import ConsumerFactory, ProviderFactory, job_body, job_submit
from tests.integration.test_leases import make_lease
from tests.llm import MODEL

pytestmark = pytest.mark.django_db
BASE = "/api/v1"


@pytest.fixture(autouse=True)
def far_deadlines(settings):
    """The views read the real clock: deadlines lie far ahead of it."""
    settings.CPX_MAX_JOB_DEADLINE_DAYS = 36500


def far_job(consumer, **fields):
    return job_submit(consumer=consumer, deadline=NOW.replace(year=2099), **fields)


class TestJobTermsApi:
    def test_states_and_reads_the_terms(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = far_job(consumer)
        client = bearer_client(consumer)

        response = client.put(
            f"{BASE}/jobs/{job.pk}/sla",
            {"latency_p95_ms": 80, "min_quality": 0.95, "latency_penalty_rate": "0.3"},
            format="json",
        )

        assert response.status_code == 200, response.json()
        body = client.get(f"{BASE}/jobs/{job.pk}/sla").json()
        assert (body["latency_p95_ms"], body["min_quality"], body["latency_penalty_rate"]) == (
            80,
            "0.9500",
            "0.3000",
        )
        assert body["stated"] is True

    def test_bad_terms_answer_400_with_a_stable_code(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = far_job(consumer)

        response = bearer_client(consumer).put(f"{BASE}/jobs/{job.pk}/sla", {"min_quality": 2}, format="json")

        assert_error(response, 400, "sla_quality_invalid")

    def test_anothers_job_answers_404(self):
        job = far_job(ConsumerFactory(balance=Decimal("100")))

        response = bearer_client(ConsumerFactory()).put(f"{BASE}/jobs/{job.pk}/sla", {}, format="json")

        assert_error(response, 404, "not_found")


class TestAgentSeesTheTerms:
    def test_the_offer_carries_the_terms_before_acceptance(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = far_job(consumer, latency_sla_ms=120)
        lease = make_lease(job=job)
        lease_sla_copy(leases=[lease])
        agent = bearer_client(lease.provider.user, "provider")

        offers = agent.get(f"{BASE}/agent/leases").json()

        assert offers[0]["id"] == lease.pk and offers[0]["status"] == "DISPATCHED"
        assert offers[0]["sla"]["terms"]["latency_p95_ms"] == 120
        assert offers[0]["sla"]["terms"]["deadline_penalty_rate"] == "0.10"

    def test_the_heartbeat_probe_echoed_is_an_rtt_sample_on_the_running_lease(self):
        lease = make_lease(job=far_job(ConsumerFactory(balance=Decimal("100"))))
        lease_sla_copy(leases=[lease])
        agent = bearer_client(lease.provider.user, "provider")
        agent.post(f"{BASE}/agent/leases/{lease.pk}/accept", {}, format="json")

        probe = agent.post(f"{BASE}/agent/heartbeat", {"leases": [lease.pk]}, format="json").json()["probe"]
        echo = agent.post(f"{BASE}/agent/probes", {"token": probe}, format="json")

        assert echo.status_code == 200, echo.json()
        assert echo.json()["leases"] == [lease.pk]
        assert LeaseSla.objects.get(lease=lease).probes == 1
        assert_error(
            agent.post(f"{BASE}/agent/probes", {"token": "1.x"}, format="json"), 400, "probe_invalid"
        )


def greedy_answer(custom_id: str, text: str) -> dict:
    line = answer(custom_id)
    line["response"]["body"]["choices"] = [{"index": 0, "message": {"role": "assistant", "content": text}}]
    return line


class TestVerificationFailed:
    def test_a_failed_spot_check_closes_the_lease_verification_failed_and_charges_its_quality(
        self, file_storage, settings
    ):
        settings.CPX_VERIFY_FRACTION = 1.0
        settings.CPX_VERIFY_SAMPLE = 2
        consumer = ConsumerFactory(balance=Decimal("100"))
        data = batch_jsonl(2, max_tokens=8, temperature=0)
        job = batch_job(consumer=consumer, data=data, now=NOW, deadline=NOW.replace(year=2099))
        lease = make_lease(job=job, now=NOW, expected_hours=Decimal("0.5"))
        lease_sla_copy(leases=[lease])
        LeaseSla.objects.filter(lease=lease).update(
            terms={
                **LeaseSla.objects.get(lease=lease).terms,
                "min_quality": "0.9",
                "quality_penalty_rate": "0.5",
            }
        )
        agent = bearer_client(lease.provider.user, "provider")
        agent.post(f"{BASE}/agent/leases/{lease.pk}/accept", {}, format="json")
        lines = [greedy_answer("request-1", "edge"), greedy_answer("request-2", "power")]
        agent.post(f"{BASE}/agent/leases/{lease.pk}/results", {"results": lines}, format="json")
        done = agent.post(
            f"{BASE}/agent/leases/{lease.pk}/complete",
            {"tokens_in": 0, "tokens_out": 0, "device_seconds": "0"},
            format="json",
        )
        assert done.status_code == 200, done.json()
        verifier = ProviderFactory()
        [handed] = verification_poll(provider=verifier, models=[MODEL], now=NOW + timedelta(minutes=1))
        rerun = [copy.deepcopy(lines[0]), greedy_answer("request-2", "a different model")]

        verification = verification_decide(
            provider=verifier, verification_id=handed["id"], results=rerun, now=NOW + timedelta(minutes=2)
        )

        lease.refresh_from_db()
        assert verification.status == Verification.Status.FAILED
        assert lease.close_reason == Lease.CloseReason.VERIFICATION_FAILED
        row = LeaseSla.objects.get(lease=lease)
        assert row.quality == Decimal("0.5000")
        assert [b["kind"] for b in row.breaches] == ["quality"]
        assert LedgerTransfer.objects.filter(reference=f"lease:{lease.pk}:sla:quality").count() <= 1
        assert Provider.objects.get(pk=lease.provider_id).reputation < 1
        assert ledger_is_balanced()


class TestTermsAtSubmission:
    """`sla` on POST /jobs: the terms are the job's from its first moment (no round can match it
    before they are stated), checked with the same codes, and a refusal leaves nothing behind."""

    def test_the_submitted_terms_are_the_jobs_terms(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        client = bearer_client(consumer)
        terms = {"latency_p95_ms": 90, "min_quality": "0.9", "deadline_penalty_rate": "0.25"}

        response = client.post(
            f"{BASE}/jobs", job_body(deadline="2099-01-01T00:00:00Z", sla=terms), format="json"
        )

        assert response.status_code == 201, response.json()
        body = client.get(f"{BASE}/jobs/{response.json()['id']}/sla").json()
        assert body["stated"] is True
        assert (body["latency_p95_ms"], body["min_quality"], body["deadline_penalty_rate"]) == (
            90,
            "0.9000",
            "0.2500",
        )

    @pytest.mark.parametrize(
        "terms, code",
        [
            ({"latency_p95_ms": 0}, "sla_latency_invalid"),
            ({"latency_p95_ms": True}, "sla_latency_invalid"),
            ({"min_quality": "1.5"}, "sla_quality_invalid"),
            ({"quality_penalty_rate": "NaN"}, "sla_rate_invalid"),
            ({"complete_by": "2000-01-01T00:00:00Z"}, "sla_deadline_invalid"),
            ({"complete_by": "2199-01-01T00:00:00Z"}, "sla_deadline_invalid"),
            ({"uptime": 0.99}, "sla_term_unknown"),
            (["latency_p95_ms", 80], "sla_terms_invalid"),
        ],
    )
    def test_bad_terms_refuse_the_submission_and_write_nothing(self, terms, code):
        consumer = ConsumerFactory(balance=Decimal("100"))

        response = bearer_client(consumer).post(
            f"{BASE}/jobs", job_body(deadline="2099-01-01T00:00:00Z", sla=terms), format="json"
        )

        assert_error(response, 400, code)
        assert not JobRequest.objects.filter(consumer=consumer).exists()
        assert not LedgerTransfer.objects.filter(debit__user=consumer).exists()
        assert LedgerAccount.objects.get(kind=LedgerAccount.Kind.CONSUMER, user=consumer).balance == 100

    def test_a_retry_with_other_terms_is_a_reused_key(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        client = bearer_client(consumer)
        first = job_body(deadline="2099-01-01T00:00:00Z", sla={"latency_p95_ms": 90})

        assert client.post(f"{BASE}/jobs", first, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 201
        again = client.post(f"{BASE}/jobs", first, format="json", HTTP_IDEMPOTENCY_KEY="k")
        other = client.post(
            f"{BASE}/jobs",
            {**first, "sla": {"latency_p95_ms": 200}},
            format="json",
            HTTP_IDEMPOTENCY_KEY="k",
        )

        assert again.status_code == 200
        assert_error(other, 409, "idempotency_key_reused")
        assert JobTerms.objects.filter(job__consumer=consumer).count() == 1
