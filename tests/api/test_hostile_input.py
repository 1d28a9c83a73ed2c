"""Hostile input the API refuses with a stable code (issue 9): JSON nested too deep, pagination values
that are not small integers, regions that would break resource-class keys. (The nested body against a
real gunicorn worker is tests/workers/test_server_faults.py.)"""

import uuid
from decimal import Decimal

import pytest

from market.models import JobRequest, Provider
from tests.conftest import assert_error, bearer_client
from tests.factories import ConsumerFactory, OperatorFactory, ProviderUserFactory, job_body, job_submit

pytestmark = pytest.mark.django_db

JOBS = "/api/v1/jobs"


def nested(depth: int) -> str:
    return '{"leases":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


@pytest.fixture
def consumer():
    return ConsumerFactory(balance=Decimal("1000"))


def post_raw(client, body: str):
    return client.generic(
        "POST", JOBS, body, content_type="application/json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
    )


class TestNestedJson:
    @pytest.mark.parametrize("depth", [33, 1000, 100_000])
    def test_refuses_a_body_deeper_than_the_limit(self, consumer, depth):
        response = post_raw(bearer_client(consumer), nested(depth))

        body = assert_error(response, 400, "json_too_deep")
        assert body["extra"] == {"max_depth": 32}
        assert not JobRequest.objects.filter(consumer=consumer).exists()

    def test_parses_a_body_at_the_limit(self, consumer):
        response = post_raw(bearer_client(consumer), nested(32))

        assert_error(response, 400, "invalid")  # parsed, then refused field by field

    def test_counts_no_bracket_inside_a_string(self, consumer):
        body = job_body(model_name="[" * 80 + "{" * 20)

        response = bearer_client(consumer).post(
            JOBS, body, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
        )

        assert response.status_code == 201, response.json()

    def test_refuses_a_deep_heartbeat_too(self):
        provider_user = ProviderUserFactory()

        response = bearer_client(provider_user).generic(
            "POST", "/api/v1/agent/heartbeat", nested(100_000), content_type="application/json"
        )

        assert_error(response, 400, "json_too_deep")


class TestPagination:
    @pytest.fixture
    def client(self, consumer):
        for _ in range(3):
            job_submit(consumer=consumer)
        return bearer_client(consumer)

    @pytest.mark.parametrize(
        "query",
        [
            {"limit": "9223372036854775808"},
            {"limit": "2147483648"},
            {"limit": "-1"},
            {"limit": "0"},
            {"limit": "ten"},
            {"limit": "1.5"},
            {"limit": " 5"},
            {"limit": "٣"},  # a digit, but not an ASCII one
            {"offset": "9223372036854775808"},
            {"offset": "-1"},
            {"offset": "x"},
        ],
        ids=lambda q: f"{next(iter(q))}={next(iter(q.values()))}",
    )
    def test_refuses_a_value_that_is_not_an_integer_in_range(self, client, query):
        response = client.get(JOBS, query)

        body = assert_error(response, 400, "invalid")
        assert list(body["extra"]["fields"]) == list(query)

    def test_caps_the_limit_and_links_to_the_rest(self, client, settings):
        settings.CPX_API_MAX_LIMIT = 2

        response = client.get(JOBS, {"limit": "100000000"})

        assert response.status_code == 200
        body = response.json()
        assert (body["count"], len(body["results"])) == (3, 2)
        assert "limit=2" in body["next"] and "offset=2" in body["next"]

    def test_pages_with_valid_values_as_before(self, client):
        response = client.get(JOBS, {"limit": "2", "offset": "2"})

        assert response.status_code == 200
        assert len(response.json()["results"]) == 1

    def test_an_operator_list_is_capped_too(self, client, settings):
        settings.CPX_API_MAX_LIMIT = 1

        response = bearer_client(OperatorFactory()).get("/api/v1/operator/jobs", {"limit": "500"})

        assert len(response.json()["results"]) == 1


class TestRegion:
    @pytest.mark.parametrize(
        "region", ["eu/west", "EU-west", "eu west", "eu--west", "-eu", "", "eu_west", "é"]
    )
    def test_a_job_with_a_region_off_the_pattern_is_refused(self, consumer, region):
        response = bearer_client(consumer).post(
            JOBS, job_body(region=region), format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
        )

        body = assert_error(response, 400, "invalid")
        assert list(body["extra"]["fields"]) == ["region"]
        assert not JobRequest.objects.filter(consumer=consumer).exists()

    def test_a_provider_profile_with_a_slash_in_its_region_is_refused(self):
        user = ProviderUserFactory()

        response = bearer_client(user).post(
            "/api/v1/provider",
            {
                "display_name": "Edge",
                "wallet_address": "0x52908400098527886E0F7030069857D2E4169EE7",
                "tier": "EDGE",
                "region": "eu/west",
            },
            format="json",
        )

        body = assert_error(response, 400, "invalid")
        assert list(body["extra"]["fields"]) == ["region"]
        assert not Provider.objects.filter(user=user).exists()

    @pytest.mark.parametrize("region", ["eu-west", "ap-south-1", "lab1"])
    def test_a_slug_region_is_accepted(self, consumer, region):
        response = bearer_client(consumer).post(
            JOBS, job_body(region=region), format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
        )

        assert response.status_code == 201, response.json()
