"""The provider-agent API and the consumer's view of its job's leases: one happy path per endpoint,
and the error shapes (404 for another's, 409 with a code out of order, 400 malformed) with nothing
changed."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from auctions.models import Lease
from market.models import JobRequest, LedgerTransfer
from tests.conftest import bearer_client
from tests.factories import ConsumerFactory, ResourceFactory, job_submit
from tests.integration.test_leases import make_lease, snapshot

pytestmark = pytest.mark.django_db

BASE = "/api/v1"


def assert_error(response, status: int, code: str) -> dict:
    body = response.json()
    assert response.status_code == status, body
    assert set(body) == {"code", "message", "extra"} and body["code"] == code, body
    return body


def live_lease(**kwargs) -> Lease:
    """A DISPATCHED lease of a job due tomorrow by the real clock (the API's now)."""
    now = timezone.now()
    consumer = ConsumerFactory(balance=Decimal("100"))
    job = job_submit(
        consumer=consumer, now=now, budget=Decimal("10"), deadline=now + timezone.timedelta(days=1)
    )
    return make_lease(job=job, now=now, **kwargs)


@pytest.fixture
def lease():
    return live_lease()


@pytest.fixture
def agent(lease):
    return bearer_client(lease.provider.user)


def accepted(agent, lease):
    """Accept the lease, then date the acceptance an hour back: the usage these tests report is
    within what its devices could have run since (metering is bounded by wall time)."""
    response = agent.post(f"{BASE}/agent/leases/{lease.pk}/accept", {"simulated": True}, format="json")
    assert response.status_code == 200, response.json()
    Lease.objects.filter(pk=lease.pk).update(accepted_at=timezone.now() - timezone.timedelta(hours=1))
    return response.json()


def body(**overrides):
    return {"tokens_in": 10, "tokens_out": 5, "device_seconds": "60.5", **overrides}


class TestHeartbeat:
    def test_answers_which_listed_leases_still_run(self, agent, lease):
        accepted(agent, lease)

        response = agent.post(f"{BASE}/agent/heartbeat", {"leases": [lease.pk, 999999]}, format="json")

        assert response.status_code == 200
        assert response.json()["running"] == [lease.pk]
        assert response.json()["closed"] == [999999]

    @pytest.mark.parametrize("payload", [{"leases": "x"}, {"leases": [-1]}, {"other": 1}])
    def test_refuses_a_malformed_body(self, agent, payload):
        assert_error(agent.post(f"{BASE}/agent/heartbeat", payload, format="json"), 400, "invalid")

    def test_refuses_a_consumer_key(self):
        client = bearer_client(ConsumerFactory())

        assert_error(client.post(f"{BASE}/agent/heartbeat", {}, format="json"), 403, "permission_denied")

    def test_refuses_no_key(self, api_client):
        assert_error(api_client.post(f"{BASE}/agent/heartbeat", {}, format="json"), 401, "not_authenticated")


class TestLeasePoll:
    def test_offers_the_dispatched_lease_in_a_fixed_number_of_queries(self, agent, lease):
        live_lease(resource=ResourceFactory(provider=lease.provider))

        with CaptureQueriesContext(connection) as queries:
            response = agent.get(f"{BASE}/agent/leases", {"wait": 0})

        assert response.status_code == 200
        assert len(response.json()) == 2
        assert response.json()[0]["job"]["kind"] == "INFERENCE"
        assert JobRequest.objects.get(pk=lease.job_id).status == "DISPATCHED"
        assert len(queries) <= 12

    def test_waits_at_most_the_long_poll_limit(self, settings):
        settings.CPX_AGENT_LONG_POLL_S = 0
        client = bearer_client(ResourceFactory().provider.user)

        response = client.get(f"{BASE}/agent/leases", {"wait": 30})

        assert response.status_code == 200 and response.json() == []

    @pytest.mark.parametrize("wait", ["-1", "NaN", "soon", "1e400"])
    def test_refuses_a_malformed_wait(self, agent, wait):
        assert_error(agent.get(f"{BASE}/agent/leases", {"wait": wait}), 400, "invalid")


class TestLeaseDetail:
    def test_shows_the_lease(self, agent, lease):
        response = agent.get(f"{BASE}/agent/leases/{lease.pk}")

        assert response.status_code == 200
        # Published to the millisecond, the precision usage is metered and accepted in.
        assert response.json()["allocated_device_seconds"] == f"{lease.max_device_hours * 3600:.3f}"

    def test_answers_another_providers_lease_as_not_found(self, lease):
        stranger = bearer_client(ResourceFactory().provider.user)

        assert_error(stranger.get(f"{BASE}/agent/leases/{lease.pk}"), 404, "lease_not_found")

    def test_answers_an_unknown_lease_as_not_found(self, agent):
        assert_error(agent.get(f"{BASE}/agent/leases/99999999"), 404, "lease_not_found")
        assert_error(agent.get(f"{BASE}/agent/leases/{2**70}"), 404, "lease_not_found")


class TestLeaseAccept:
    def test_runs_the_lease_as_a_simulation(self, agent, lease):
        data = accepted(agent, lease)

        assert (data["status"], data["simulated"]) == ("RUNNING", True)

    def test_twice_is_a_conflict_and_changes_nothing(self, agent, lease):
        accepted(agent, lease)
        before = snapshot(lease)

        response = agent.post(f"{BASE}/agent/leases/{lease.pk}/accept", {"simulated": False}, format="json")

        assert_error(response, 409, "lease_already_accepted")
        assert snapshot(lease) == before

    def test_another_providers_lease_is_not_found_and_unchanged(self, lease):
        stranger = bearer_client(ResourceFactory().provider.user)
        before = snapshot(lease)

        assert_error(
            stranger.post(f"{BASE}/agent/leases/{lease.pk}/accept", {}, format="json"), 404, "lease_not_found"
        )
        assert snapshot(lease) == before

    def test_refuses_a_malformed_body(self, agent, lease):
        before = snapshot(lease)

        assert_error(
            agent.post(f"{BASE}/agent/leases/{lease.pk}/accept", {"simulated": "perhaps"}, format="json"),
            400,
            "invalid",
        )
        assert snapshot(lease) == before


class TestLeaseProgress:
    def test_records_usage(self, agent, lease):
        accepted(agent, lease)

        response = agent.post(
            f"{BASE}/agent/leases/{lease.pk}/progress", {**body(), "progress": 0.25}, format="json"
        )

        assert response.status_code == 200
        assert (response.json()["progress"], response.json()["device_seconds"]) == (0.25, "60.500")

    def test_before_accept_is_a_conflict(self, agent, lease):
        before = snapshot(lease)

        response = agent.post(
            f"{BASE}/agent/leases/{lease.pk}/progress", {**body(), "progress": 0.1}, format="json"
        )

        assert_error(response, 409, "lease_not_running")
        assert snapshot(lease) == before

    def test_usage_beyond_the_allocation_is_refused(self, agent, lease):
        accepted(agent, lease)
        before = snapshot(lease)
        too_much = str((lease.max_device_hours * 3600 + 1).quantize(Decimal("0.001")))

        response = agent.post(
            f"{BASE}/agent/leases/{lease.pk}/progress",
            {**body(device_seconds=too_much), "progress": 0.5},
            format="json",
        )

        assert_error(response, 409, "usage_exceeds_allocation")
        assert snapshot(lease) == before

    @pytest.mark.parametrize(
        "bad",
        [
            {"progress": "NaN"},
            {"progress": 2},
            {"tokens_in": -1},
            {"tokens_out": 10**18},
            {"device_seconds": "NaN"},
            {"device_seconds": "-1"},
            {"device_seconds": "1e20"},
            {"device_seconds": "Infinity"},
            {"device_seconds": "0.0000001"},  # more decimals than USAGE_INPUT_DECIMALS
            {"surprise": 1},
        ],
    )
    def test_malformed_numbers_are_refused_and_change_nothing(self, agent, lease, bad):
        accepted(agent, lease)
        before = snapshot(lease)

        response = agent.post(
            f"{BASE}/agent/leases/{lease.pk}/progress", {**body(), "progress": 0.5, **bad}, format="json"
        )

        assert_error(response, 400, "invalid")
        assert snapshot(lease) == before

    def test_a_raw_nan_literal_is_malformed_json(self, agent, lease):
        accepted(agent, lease)

        response = agent.post(
            f"{BASE}/agent/leases/{lease.pk}/progress",
            '{"progress": NaN, "tokens_in": 1, "tokens_out": 1, "device_seconds": "1"}',
            content_type="application/json",
        )

        assert_error(response, 400, "malformed_request")


class TestLeaseComplete:
    def test_completes_and_answers_the_settlement(self, agent, lease):
        accepted(agent, lease)

        response = agent.post(
            f"{BASE}/agent/leases/{lease.pk}/complete", body(device_seconds="3600"), format="json"
        )

        assert response.status_code == 200, response.json()
        data = response.json()
        assert data["lease"]["status"] == "COMPLETED"
        assert data["settlement"]["charge"] == "0.800000"
        assert data["settlement"]["refund"] == "9.200000"

    def test_a_replay_is_a_conflict_and_pays_once(self, agent, lease):
        accepted(agent, lease)
        agent.post(f"{BASE}/agent/leases/{lease.pk}/complete", body(), format="json")
        before = snapshot(lease)

        response = agent.post(f"{BASE}/agent/leases/{lease.pk}/complete", body(), format="json")

        assert assert_error(response, 409, "lease_already_closed")["extra"]["status"] == "COMPLETED"
        assert snapshot(lease) == before
        assert LedgerTransfer.objects.filter(reference=f"lease:{lease.pk}:payment").count() == 1

    def test_before_accept_is_a_conflict(self, agent, lease):
        before = snapshot(lease)

        assert_error(
            agent.post(f"{BASE}/agent/leases/{lease.pk}/complete", body(), format="json"),
            409,
            "lease_not_running",
        )
        assert snapshot(lease) == before

    def test_another_providers_lease_is_not_found(self, agent, lease):
        accepted(agent, lease)
        before = snapshot(lease)
        stranger = bearer_client(ResourceFactory().provider.user)

        assert_error(
            stranger.post(f"{BASE}/agent/leases/{lease.pk}/complete", body(), format="json"),
            404,
            "lease_not_found",
        )
        assert snapshot(lease) == before

    def test_usage_going_backwards_is_refused(self, agent, lease):
        accepted(agent, lease)
        agent.post(
            f"{BASE}/agent/leases/{lease.pk}/progress", {**body(tokens_in=50), "progress": 0.5}, format="json"
        )
        before = snapshot(lease)

        response = agent.post(f"{BASE}/agent/leases/{lease.pk}/complete", body(tokens_in=40), format="json")

        assert_error(response, 409, "usage_went_backwards")
        assert snapshot(lease) == before


class TestLeaseFail:
    def test_a_provider_fault_fails_the_lease_over(self, agent, lease):
        accepted(agent, lease)

        response = agent.post(
            f"{BASE}/agent/leases/{lease.pk}/fail",
            {"reason": "PROVIDER_FAULT", "detail": "GPU fell off the bus"},
            format="json",
        )

        assert response.status_code == 200
        assert (response.json()["status"], response.json()["close_reason"]) == (
            "REASSIGNED",
            "PROVIDER_FAULT",
        )
        assert JobRequest.objects.get(pk=lease.job_id).status == "QUEUED"

    @pytest.mark.parametrize(
        "payload", [{"reason": "DEADLINE"}, {"reason": "JOB_ERROR", "detail": "x" * 301}, {}]
    )
    def test_refuses_a_malformed_body(self, agent, lease, payload):
        before = snapshot(lease)

        assert_error(
            agent.post(f"{BASE}/agent/leases/{lease.pk}/fail", payload, format="json"), 400, "invalid"
        )
        assert snapshot(lease) == before

    def test_a_closed_lease_is_a_conflict(self, agent, lease):
        agent.post(f"{BASE}/agent/leases/{lease.pk}/fail", {"reason": "JOB_ERROR"}, format="json")
        before = snapshot(lease)

        response = agent.post(f"{BASE}/agent/leases/{lease.pk}/fail", {"reason": "JOB_ERROR"}, format="json")

        assert_error(response, 409, "lease_already_closed")
        assert snapshot(lease) == before


class TestJobLeases:
    def test_the_consumer_sees_why_each_lease_ended(self, agent, lease):
        accepted(agent, lease)
        agent.post(
            f"{BASE}/agent/leases/{lease.pk}/fail",
            {"reason": "PROVIDER_FAULT", "detail": "power cut"},
            format="json",
        )
        consumer = bearer_client(lease.job.consumer)

        with CaptureQueriesContext(connection) as queries:
            response = consumer.get(f"{BASE}/jobs/{lease.job_id}/leases")

        assert response.status_code == 200
        [row] = response.json()
        assert (row["status"], row["close_reason"], row["close_detail"]) == (
            "REASSIGNED",
            "PROVIDER_FAULT",
            "power cut",
        )
        assert row["close_reason_label"] == "Provider fault"
        assert row["unit_price_paid"] == "0.800000"
        assert len(queries) <= 6

    def test_another_consumers_job_is_not_found(self, lease):
        stranger = bearer_client(ConsumerFactory())

        assert_error(stranger.get(f"{BASE}/jobs/{lease.job_id}/leases"), 404, "not_found")
