"""The lifecycle at the API (issue 9): bounded deadlines, and usage accepted at the precision the
API publishes, bounded by elapsed time."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from market.models import JobRequest
from tests.conftest import assert_error, bearer_client
from tests.factories import ConsumerFactory, job_body

pytestmark = pytest.mark.django_db

JOBS = "/api/v1/jobs"


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
