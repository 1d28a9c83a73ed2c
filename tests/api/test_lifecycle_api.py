"""The lifecycle at the API (issue 9): bounded deadlines, and usage accepted at the precision the
API publishes, bounded by elapsed time."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from auctions.models import Lease
from market.models import JobRequest
from tests.api.test_agent_api import live_lease
from tests.conftest import assert_error, bearer_client
from tests.factories import ConsumerFactory, job_body

pytestmark = pytest.mark.django_db

JOBS = "/api/v1/jobs"
AGENT = "/api/v1/agent/leases"


@pytest.fixture
def consumer():
    return ConsumerFactory(balance=Decimal("1000"))


class TestJobDeadlineBound:
    def test_refuses_the_end_of_time_as_a_deadline(self, consumer):
        response = bearer_client(consumer).post(
            JOBS, job_body(deadline="9999-12-31T00:00:00Z"), format="json"
        )

        body = assert_error(response, 400, "deadline_too_far")
        assert body["extra"]["field"] == "deadline"
        assert body["extra"]["max_days"] == 30
        assert not JobRequest.objects.filter(consumer=consumer).exists()

    def test_refuses_a_deadline_beyond_the_bound_and_accepts_one_within(self, consumer):
        client = bearer_client(consumer)
        now = timezone.now()

        too_far = client.post(
            JOBS, job_body(deadline=(now + timedelta(days=30, hours=1)).isoformat()), format="json"
        )
        within = client.post(JOBS, job_body(deadline=(now + timedelta(days=29)).isoformat()), format="json")

        assert_error(too_far, 400, "deadline_too_far")
        assert within.status_code == 201, within.json()

    def test_an_operator_may_allow_longer_deadlines(self, consumer, settings):
        settings.CPX_MAX_JOB_DEADLINE_DAYS = 400
        deadline = (timezone.now() + timedelta(days=365)).isoformat()

        response = bearer_client(consumer).post(JOBS, job_body(deadline=deadline), format="json")

        assert response.status_code == 201, response.json()

    def test_a_deadline_out_of_range_after_its_offset_is_a_400(self, consumer):
        response = bearer_client(consumer).post(
            JOBS, job_body(deadline="9999-12-31T23:59:59-05:00"), format="json"
        )

        assert response.status_code == 400, response.content
        assert set(response.json()) == {"code", "message", "extra"}


def accepted_hours_ago(lease, client, hours: float) -> None:
    """Accept the lease, then date the acceptance back: the lease has been running `hours`."""
    assert client.post(f"{AGENT}/{lease.pk}/accept", {}, format="json").status_code == 200
    Lease.objects.filter(pk=lease.pk).update(accepted_at=timezone.now() - timedelta(hours=hours))


class TestUsagePrecision:
    def test_an_agent_reporting_its_published_cap_is_accepted(self):
        # 0.952381 device-hours = 3428.5716 device-seconds: more decimals than usage is metered in.
        lease = live_lease(max_hours=Decimal("0.952381"))
        client = bearer_client(lease.provider.user)
        accepted_hours_ago(lease, client, hours=2)
        published = client.get(f"{AGENT}/{lease.pk}").json()["allocated_device_seconds"]

        response = client.post(
            f"{AGENT}/{lease.pk}/complete",
            {"tokens_in": 10, "tokens_out": 10, "device_seconds": published},
            format="json",
        )

        assert response.status_code == 200, response.json()
        lease.refresh_from_db()
        assert lease.status == Lease.Status.COMPLETED
        assert lease.device_seconds == Decimal(published) <= Decimal("3428.5716")

    def test_the_cap_is_published_at_the_precision_usage_is_accepted_in(self):
        lease = live_lease(max_hours=Decimal("0.952381"))
        client = bearer_client(lease.provider.user)

        published = client.get(f"{AGENT}/{lease.pk}").json()["allocated_device_seconds"]

        assert published == "3428.571"

    def test_usage_with_six_decimals_is_accepted_and_metered_to_the_millisecond(self):
        lease = live_lease(max_hours=Decimal("0.952381"))
        client = bearer_client(lease.provider.user)
        accepted_hours_ago(lease, client, hours=2)

        response = client.post(
            f"{AGENT}/{lease.pk}/progress",
            {"progress": 0.5, "tokens_in": 1, "tokens_out": 1, "device_seconds": "3428.571600"},
            format="json",
        )

        assert response.status_code == 200, response.json()
        lease.refresh_from_db()
        assert lease.device_seconds == Decimal("3428.571")
