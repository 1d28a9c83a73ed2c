"""The rounds and quotes API: happy paths, error shapes, roles, and query counts on lists."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from auctions.models import PriceQuote, Round
from auctions.services.rounds import round_clear, round_open
from market.models import Provider
from tests.conftest import NOW, assert_error, bearer_client
from tests.factories import (
    ConsumerFactory,
    OperatorFactory,
    ProviderFactory,
    ResourceFactory,
    job_body,
    job_submit,
)

pytestmark = pytest.mark.django_db


def quote_row(resource_class="GPU/24G/eu-west", *, region="eu-west", device_class="GPU", ask="0.40", at=NOW):
    return PriceQuote.objects.create(
        resource_class=resource_class,
        device_class=device_class,
        region=region,
        memory_tier_gib=24,
        recommended_ask=Decimal(ask),
        expected_price=Decimal(ask),
        expected_utilisation=0.5,
        demand_device_hours=1.0,
        capacity_device_hours=2.0,
        followers=3,
        created_at=at,
    )


def cleared_round_with_a_lease():
    provider = ProviderFactory()
    Provider.objects.filter(pk=provider.pk).update(last_heartbeat_at=NOW)
    ResourceFactory(provider=provider, ask_per_device_hour=Decimal("0.10"), price_floor=Decimal("0"))
    job_submit(consumer=ConsumerFactory(balance=Decimal("100")))
    return round_clear(round_id=round_open(now=NOW).pk, now=NOW)


class TestQuoteList:
    def test_lists_the_latest_quote_per_class_to_any_role(self):
        quote_row(ask="0.30", at=NOW - timedelta(minutes=5))
        newest = quote_row(ask="0.40")
        other = quote_row("GPU/24G/us-east", region="us-east", ask="0.20")

        for user in (ConsumerFactory(), ProviderFactory().user, OperatorFactory()):
            response = bearer_client(user).get("/api/v1/quotes")

            assert response.status_code == 200
            rows = response.json()["results"]
            assert [row["id"] for row in rows] == [newest.pk, other.pk]
            assert rows[0]["recommended_ask"] == "0.400000"

    def test_filters_by_region_and_device_class(self):
        quote_row()
        east = quote_row("GPU/24G/us-east", region="us-east")
        quote_row("NPU/0G/us-east", region="us-east", device_class="NPU")

        response = bearer_client(ConsumerFactory()).get("/api/v1/quotes?region=us-east&device_class=GPU")

        assert [row["id"] for row in response.json()["results"]] == [east.pk]

    def test_refuses_an_unknown_filter(self):
        response = bearer_client(ConsumerFactory()).get("/api/v1/quotes?colour=red")

        assert_error(response, 400, "invalid")

    def test_needs_authentication(self, api_client):
        assert_error(api_client.get("/api/v1/quotes"), 401, "not_authenticated")

    def test_costs_the_same_queries_for_one_or_many_classes(self, django_assert_max_num_queries):
        client = bearer_client(ConsumerFactory())
        quote_row()
        with django_assert_max_num_queries(4):
            client.get("/api/v1/quotes")
        for i in range(20):
            quote_row(f"GPU/24G/r{i}", region=f"r{i}")

        with django_assert_max_num_queries(4):
            response = client.get("/api/v1/quotes")

        assert response.json()["count"] == 21


class TestJobQuote:
    def test_answers_for_a_job_spec(self):
        provider = ProviderFactory()
        Provider.objects.filter(pk=provider.pk).update(last_heartbeat_at=timezone.now())
        ResourceFactory(provider=provider, ask_per_device_hour=Decimal("0.10"), device_count=2)
        consumer = ConsumerFactory()

        response = bearer_client(consumer).post("/api/v1/quote", job_body(latency_sla_ms=None), format="json")

        assert response.status_code == 200, response.json()
        body = response.json()
        assert set(body) == {
            "resource_class",
            "device_count",
            "memory_per_device_gib",
            "expected_price",
            "would_clear_now",
            "chance_of_clearing",
            "reason",
            "min_bid_to_clear",
            "suggestion",
        }
        assert body["would_clear_now"] is True
        assert body["resource_class"] == "GPU/24G/eu-west"

    def test_a_job_no_device_can_hold_is_told_why(self):
        response = bearer_client(ConsumerFactory()).post(
            "/api/v1/quote",
            job_body(requested_memory_per_device_gib="500", requested_device_count=1),
            format="json",
        )

        assert response.status_code == 200
        assert response.json()["reason"] == "memory_exceeds_every_resource"

    @pytest.mark.parametrize(
        "body",
        [
            {"colour": "red"},
            {"max_price_per_device_hour": "-1"},
            {"max_price_per_device_hour": "NaN"},
            {"quant_bits": 7},
            {"deadline": "yesterday"},
        ],
    )
    def test_refuses_bad_fields_with_the_error_shape(self, body):
        response = bearer_client(ConsumerFactory()).post("/api/v1/quote", job_body(**body), format="json")

        assert_error(response, 400, "invalid")

    def test_refuses_rules_across_fields_with_the_error_shape(self):
        past = (timezone.now() - timedelta(hours=1)).isoformat()

        response = bearer_client(ConsumerFactory()).post(
            "/api/v1/quote", job_body(deadline=past), format="json"
        )

        body = assert_error(response, 400, "invalid")
        assert body["extra"]["field"] == "deadline"

    def test_refuses_a_body_that_is_not_an_object(self):
        response = bearer_client(ConsumerFactory()).post("/api/v1/quote", [1, 2], format="json")

        assert_error(response, 400, "invalid")

    def test_is_for_consumers(self):
        response = bearer_client(ProviderFactory().user).post("/api/v1/quote", job_body(), format="json")

        assert_error(response, 403, "permission_denied")


class TestRoundList:
    def test_lists_rounds_newest_first_with_pagination(self):
        first = cleared_round_with_a_lease()
        second = round_open(now=NOW)

        response = bearer_client(OperatorFactory()).get("/api/v1/rounds?limit=1")

        body = response.json()
        assert response.status_code == 200
        assert body["count"] == 2
        assert [row["id"] for row in body["results"]] == [second.pk]
        assert body["next"] is not None
        assert first.pk != second.pk

    def test_filters_by_status(self):
        cleared = cleared_round_with_a_lease()
        round_open(now=NOW)

        response = bearer_client(OperatorFactory()).get("/api/v1/rounds?status=CLEARED")

        assert [row["id"] for row in response.json()["results"]] == [cleared.pk]

    def test_refuses_an_unknown_status(self):
        response = bearer_client(OperatorFactory()).get("/api/v1/rounds?status=PARTY")

        assert_error(response, 400, "invalid")

    @pytest.mark.parametrize("role", ["consumer", "provider"])
    def test_is_open_to_every_signed_in_role(self, role):
        user = ConsumerFactory() if role == "consumer" else ProviderFactory().user
        cleared = cleared_round_with_a_lease()

        response = bearer_client(user).get("/api/v1/rounds")

        assert response.status_code == 200
        assert cleared.pk in [row["id"] for row in response.json()["results"]]

    def test_refuses_an_anonymous_caller(self):
        assert_error(APIClient().get("/api/v1/rounds"), 401, "not_authenticated")

    def test_costs_the_same_queries_for_one_or_many_rounds(self, django_assert_max_num_queries):
        client = bearer_client(OperatorFactory())
        Round.objects.create(status=Round.Status.FAILED, active_slot=None, opened_at=NOW)
        with django_assert_max_num_queries(4):
            client.get("/api/v1/rounds")
        Round.objects.bulk_create(
            [Round(status=Round.Status.FAILED, active_slot=None, opened_at=NOW) for _ in range(30)]
        )

        with django_assert_max_num_queries(4):
            response = client.get("/api/v1/rounds")

        assert response.json()["count"] == 31


class TestRoundDetail:
    def test_shows_a_round_with_its_lease_summary(self):
        round_obj = cleared_round_with_a_lease()

        response = bearer_client(OperatorFactory()).get(f"/api/v1/rounds/{round_obj.pk}")

        body = response.json()
        assert response.status_code == 200
        assert body["status"] == "CLEARED"
        assert body["snapshot_sha256"] == round_obj.snapshot_sha256
        assert body["leases"]["leases"] == round_obj.jobs_matched == 1
        assert body["leases"]["by_status"] == {"DISPATCHED": 1}

    def test_an_unknown_round_is_404_with_the_error_shape(self):
        response = bearer_client(OperatorFactory()).get("/api/v1/rounds/987654")

        assert_error(response, 404, "round_not_found")


class TestRoundReplay:
    def test_replays_a_round_and_reports_a_match(self):
        round_obj = cleared_round_with_a_lease()

        response = bearer_client(OperatorFactory()).post(f"/api/v1/rounds/{round_obj.pk}/replay")

        assert response.status_code == 200
        assert response.json()["match"] is True
        assert response.json()["result_sha256"] == round_obj.result_sha256

    def test_an_unknown_round_is_404(self):
        response = bearer_client(OperatorFactory()).post("/api/v1/rounds/987654/replay")

        assert_error(response, 404, "round_not_found")

    @pytest.mark.parametrize("role", ["consumer", "provider"])
    def test_any_signed_in_role_can_replay(self, role):
        user = ConsumerFactory() if role == "consumer" else ProviderFactory().user
        round_obj = cleared_round_with_a_lease()

        response = bearer_client(user).post(f"/api/v1/rounds/{round_obj.pk}/replay")

        assert response.status_code == 200
        assert response.json()["match"] is True
