"""Elastic demand over the API (docs/eetorp.md): submission and quote take `elastic` instead of a size
and bid, and refuse inconsistent specs with stable codes in the one error shape."""

from decimal import Decimal

import pytest
from django.utils import timezone

from auctions.mechanisms.elastic import best_response
from market.models import JobRequest, Provider
from tests.conftest import assert_error, bearer_client
from tests.factories import ConsumerFactory, ProviderFactory, ResourceFactory, job_body

pytestmark = pytest.mark.django_db

ELASTIC = {"unit": "device_hours", "utility_weight": "8", "max_quantity": "5"}


def elastic_body(**overrides):
    fields = {
        "quant_bits": 4,
        "latency_sla_ms": None,
        "workload_tokens": None,
        "max_price_per_device_hour": None,
        "budget": "20",
        "elastic": ELASTIC,
    }
    return job_body(**{**fields, **overrides})


class TestElasticSubmit:
    def test_submits_an_elastic_job_and_shows_its_utility_and_derived_bid(self):
        consumer = ConsumerFactory(balance=Decimal("100"))

        response = bearer_client(consumer).post("/api/v1/jobs", elastic_body(), format="json")

        assert response.status_code == 201, response.json()
        body = response.json()
        assert body["max_price_per_device_hour"] == "8.000000"  # the first device-hour is worth 8
        assert body["elastic"]["unit"] == "device_hours"
        assert body["elastic"]["max_quantity"] == "5.000000"
        assert JobRequest.objects.get(pk=body["id"]).elastic["utility_weight"] == "8.000000"

    @pytest.mark.parametrize(
        ("overrides", "code", "field"),
        [
            ({"max_price_per_device_hour": "1"}, "elastic_with_bid", "max_price_per_device_hour"),
            ({"workload_tokens": 100}, "elastic_with_workload", "workload_tokens"),
            (
                {"kind": "FINE_TUNE", "elastic": {**ELASTIC, "unit": "million_tokens"}},
                "elastic_unit_mismatch",
                "elastic.unit",
            ),
            (
                {"elastic": {**ELASTIC, "min_quantity": "9"}},
                "elastic_bounds_inverted",
                "elastic.min_quantity",
            ),
            ({"quant_bits": 16, "params_billion": "70"}, "elastic_multi_device", "elastic"),
            ({"gang": {"max_members": 2}}, "elastic_with_gang", "gang"),
        ],
    )
    def test_refuses_inconsistent_specs_with_stable_codes(self, overrides, code, field):
        consumer = ConsumerFactory(balance=Decimal("100"))

        response = bearer_client(consumer).post("/api/v1/jobs", elastic_body(**overrides), format="json")

        body = assert_error(response, 400, code)
        assert body["extra"]["field"] == field
        assert not JobRequest.objects.filter(consumer=consumer).exists()

    @pytest.mark.parametrize(
        "elastic",
        [
            {**ELASTIC, "unit": "furlongs"},
            {**ELASTIC, "utility_weight": "0"},
            {**ELASTIC, "colour": "red"},
            {"unit": "device_hours"},
        ],
    )
    def test_refuses_bad_elastic_fields(self, elastic):
        response = bearer_client(ConsumerFactory(balance=Decimal("100"))).post(
            "/api/v1/jobs", elastic_body(elastic=elastic), format="json"
        )

        assert_error(response, 400, "invalid")

    def test_a_fixed_job_still_needs_its_bid(self):
        response = bearer_client(ConsumerFactory(balance=Decimal("100"))).post(
            "/api/v1/jobs", job_body(max_price_per_device_hour=None), format="json"
        )

        body = assert_error(response, 400, "invalid")
        assert "max_price_per_device_hour" in str(body["extra"])


class TestElasticQuote:
    def test_quotes_what_the_job_would_buy_at_the_next_rounds_price(self):
        provider = ProviderFactory()
        Provider.objects.filter(pk=provider.pk).update(last_heartbeat_at=timezone.now())
        resource = ResourceFactory(provider=provider, ask_per_device_hour=Decimal("0.50"), device_count=2)

        response = bearer_client(ConsumerFactory()).post("/api/v1/quote", elastic_body(), format="json")

        assert response.status_code == 200, response.json()
        body = response.json()
        assert body["would_clear_now"] is True
        price = 0.5 / float(resource.speed_factor)  # the device's ask per reference device-hour
        assert body["elastic"]["price_per_unit"] == pytest.approx(price)
        expected = best_response(weight=8.0, price=price, budget=20.0, max_quantity=5.0)
        assert body["elastic"]["quantity"] == pytest.approx(expected)
        assert body["expected_price"] == "0.500000"

    def test_a_utility_below_every_devices_price_is_told_what_to_raise(self):
        provider = ProviderFactory()
        Provider.objects.filter(pk=provider.pk).update(last_heartbeat_at=timezone.now())
        resource = ResourceFactory(provider=provider, ask_per_device_hour=Decimal("5.00"), device_count=2)
        body = elastic_body(elastic={"unit": "device_hours", "utility_weight": "0.5"})

        response = bearer_client(ConsumerFactory()).post("/api/v1/quote", body, format="json")

        answer = response.json()
        assert answer["would_clear_now"] is False
        assert answer["reason"] == "bid_below_clearing"
        assert Decimal(answer["min_bid_to_clear"]) == Decimal(
            repr(5 / float(resource.speed_factor))
        ).quantize(Decimal("0.000001"))
        assert "raise utility_weight" in answer["suggestion"]
        assert "elastic" not in answer

    def test_the_quote_refuses_an_inconsistent_elastic_spec_with_the_same_code(self):
        response = bearer_client(ConsumerFactory()).post(
            "/api/v1/quote", elastic_body(max_price_per_device_hour="1"), format="json"
        )

        body = assert_error(response, 400, "elastic_with_bid")
        assert body["extra"]["field"] == "max_price_per_device_hour"
