"""The provider API: one's own profile and listings; another provider's answer 404."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from market.models import Provider, Resource
from tests.conftest import assert_error, bearer_client
from tests.factories import (
    OperatorFactory,
    ProviderFactory,
    ProviderUserFactory,
    ResourceFactory,
    resource_body,
)

pytestmark = pytest.mark.django_db

CHECKSUMMED = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
RESOURCES = "/api/v1/resources"


def profile_body(**overrides):
    body = {"display_name": "Garage rig", "wallet_address": CHECKSUMMED, "tier": "END", "region": "eu-west"}
    body.update(overrides)
    return body


@pytest.fixture
def provider():
    return ProviderFactory()


@pytest.fixture
def client(provider):
    return bearer_client(provider.user)


class TestProviderProfile:
    def test_registers_a_profile_with_a_checksummed_wallet(self):
        user = ProviderUserFactory()

        response = bearer_client(user).post(
            "/api/v1/provider", profile_body(wallet_address=CHECKSUMMED.lower()), format="json"
        )

        assert response.status_code == 201, response.json()
        assert response.json()["wallet_address"] == CHECKSUMMED
        assert Provider.objects.get(user=user).wallet_address == CHECKSUMMED

    def test_shows_the_callers_profile(self, client, provider):
        response = client.get("/api/v1/provider")

        assert response.status_code == 200
        assert response.json()["id"] == provider.pk

    def test_changes_the_callers_profile(self, client, provider):
        response = client.patch("/api/v1/provider", {"site": "Lyon rack 3", "latitude": 45.76}, format="json")

        assert response.status_code == 200
        provider.refresh_from_db()
        assert (provider.site, provider.latitude) == ("Lyon rack 3", 45.76)

    def test_answers_not_found_before_registration(self):
        response = bearer_client(ProviderUserFactory()).get("/api/v1/provider")

        assert_error(response, 404, "not_found")

    def test_refuses_a_second_registration(self, client, provider):
        response = client.post("/api/v1/provider", profile_body(), format="json")

        assert_error(response, 409, "conflict")
        assert Provider.objects.filter(user=provider.user).count() == 1

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("wallet_address", CHECKSUMMED.replace("aA", "Aa", 1)),
            ("wallet_address", "0x123"),
            ("wallet_address", "0x" + "z" * 40),
            ("wallet_address", CHECKSUMMED + "0"),
            ("wallet_address", 42),
            ("tier", "MOON"),
            ("display_name", "d" * 101),
            ("region", "r" * 33),
            ("latitude", 91),
            ("latitude", "NaN"),
            ("latitude", "Infinity"),
            ("longitude", 10**400),
            ("longitude", -181),
            ("owner", "someone"),
        ],
        ids=lambda v: repr(v)[:40],
    )
    def test_refuses_an_invalid_profile_and_writes_nothing(self, field, value):
        user = ProviderUserFactory()
        body = {**profile_body(), field: value}

        response = bearer_client(user).post("/api/v1/provider", body, format="json")

        assert_error(response, 400, "invalid")
        assert not Provider.objects.filter(user=user).exists()

    @pytest.mark.parametrize("raw", ['{"latitude": NaN}', '{"latitude": Infinity}', "{", "[1,"])
    def test_refuses_malformed_json(self, client, provider, raw):
        response = client.generic("PATCH", "/api/v1/provider", raw, content_type="application/json")

        assert_error(response, 400, "malformed_request")
        provider.refresh_from_db()
        assert provider.latitude is None

    def test_refuses_a_bad_wallet_on_change(self, client, provider):
        before = provider.wallet_address

        response = client.patch("/api/v1/provider", {"wallet_address": CHECKSUMMED.swapcase()}, format="json")

        assert_error(response, 400, "invalid")
        provider.refresh_from_db()
        assert provider.wallet_address == before


class TestResourceCreate:
    def test_lists_a_resource_for_the_caller(self, client, provider):
        response = client.post(RESOURCES, resource_body(), format="json")

        assert response.status_code == 201, response.json()
        resource = Resource.objects.get(pk=response.json()["id"])
        assert resource.provider == provider
        assert resource.ask_per_device_hour == Decimal("0.25")

    def test_answers_not_found_before_registration(self):
        user = ProviderUserFactory()

        response = bearer_client(user).post(RESOURCES, resource_body(), format="json")

        assert_error(response, 404, "not_found")

    def test_refuses_an_ask_below_the_floor(self, client, provider):
        response = client.post(
            RESOURCES, resource_body(ask_per_device_hour="0.05", price_floor="0.10"), format="json"
        )

        error = assert_error(response, 400, "invalid")
        assert error["extra"]["field"] == "ask_per_device_hour"
        assert not Resource.objects.filter(provider=provider).exists()

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("device_class", "QPU"),
            ("device_class", "gpu"),
            ("status", "GONE"),
            ("device_count", 0),
            ("device_count", -1),
            ("device_count", 10**40),
            ("device_count", "two"),
            ("memory_per_device_gib", "NaN"),
            ("memory_per_device_gib", 1e30),
            ("memory_per_device_gib", "0"),
            ("host_ram_gib", -1),
            ("vcpu", -1),
            ("vcpu", 10**40),
            ("fp16_tflops", "Infinity"),
            ("speed_factor", 0),
            ("ask_per_device_hour", -0.25),
            ("ask_per_device_hour", 1e30),
            ("ask_per_device_hour", 10**40),
            ("ask_per_device_hour", [0.25]),
            ("price_floor", "-Infinity"),
            ("auto_pricing", "sometimes"),
            ("available_from", "last tuesday"),
            ("model_name", "m" * 101),
            ("interconnect", "i" * 33),
            ("owner", 1),
        ],
        ids=lambda v: repr(v)[:40],
    )
    def test_refuses_an_invalid_listing_and_writes_nothing(self, client, provider, field, value):
        response = client.post(RESOURCES, {**resource_body(), field: value}, format="json")

        assert_error(response, 400, "invalid")
        assert not Resource.objects.filter(provider=provider).exists()

    def test_lists_for_the_caller_whatever_provider_the_body_names(self, client, provider):
        other = ProviderFactory()

        response = client.post(RESOURCES, {**resource_body(), "provider": other.pk}, format="json")

        assert response.status_code == 201
        assert Resource.objects.get(pk=response.json()["id"]).provider == provider
        assert not Resource.objects.filter(provider=other).exists()

    @pytest.mark.parametrize("raw", ['{"ask_per_device_hour": NaN}', '{"vcpu": Infinity}', '{"a": }'])
    def test_refuses_malformed_json(self, client, provider, raw):
        response = client.generic("POST", RESOURCES, raw, content_type="application/json")

        assert_error(response, 400, "malformed_request")
        assert not Resource.objects.filter(provider=provider).exists()


class TestResourceList:
    def test_lists_only_the_callers_resources(self, client, provider):
        mine = [ResourceFactory(provider=provider) for _ in range(2)]
        ResourceFactory()

        response = client.get(RESOURCES)

        assert response.status_code == 200
        assert [row["id"] for row in response.json()["results"]] == [r.pk for r in mine]

    def test_filters_by_status(self, client, provider):
        listed = ResourceFactory(provider=provider)
        ResourceFactory(provider=provider, status=Resource.Status.PAUSED)

        response = client.get(RESOURCES, {"status": "LISTED"})

        assert [row["id"] for row in response.json()["results"]] == [listed.pk]

    def test_costs_the_same_few_queries_for_5_or_30_resources(
        self, client, provider, django_assert_max_num_queries
    ):
        for _ in range(5):
            ResourceFactory(provider=provider)
        with CaptureQueriesContext(connection) as five:
            client.get(RESOURCES)
        for _ in range(25):
            ResourceFactory(provider=provider)

        with django_assert_max_num_queries(4):
            response = client.get(RESOURCES)

        assert len(response.json()["results"]) == 30
        with CaptureQueriesContext(connection) as thirty:
            client.get(RESOURCES)
        assert len(thirty) == len(five)


class TestResourceDetail:
    def test_shows_changes_and_retires_the_callers_resource(self, client, provider):
        resource = ResourceFactory(provider=provider)
        url = f"{RESOURCES}/{resource.pk}"

        shown = client.get(url)
        changed = client.patch(url, {"ask_per_device_hour": "0.55"}, format="json")
        retired = client.delete(url)

        assert shown.json()["id"] == resource.pk
        assert changed.json()["ask_per_device_hour"] == "0.550000"
        assert retired.json()["status"] == "RETIRED"
        resource.refresh_from_db()
        assert (resource.ask_per_device_hour, resource.status) == (Decimal("0.55"), "RETIRED")

    @pytest.mark.parametrize("method", ["get", "patch", "delete"])
    def test_answers_not_found_for_another_providers_resource(self, client, method):
        other = ResourceFactory()

        response = getattr(client, method)(f"{RESOURCES}/{other.pk}", {"model_name": "Mine"}, format="json")

        assert_error(response, 404, "not_found")
        other.refresh_from_db()
        assert (other.model_name, other.status) == ("RTX 4090", "LISTED")

    def test_refuses_to_change_a_retired_resource(self, client, provider):
        resource = ResourceFactory(provider=provider)
        client.delete(f"{RESOURCES}/{resource.pk}")

        response = client.patch(f"{RESOURCES}/{resource.pk}", {"status": "LISTED"}, format="json")

        assert_error(response, 409, "conflict")
        resource.refresh_from_db()
        assert resource.status == "RETIRED"

    def test_refuses_to_lower_the_ask_below_the_floor(self, client, provider):
        resource = ResourceFactory(provider=provider, price_floor=Decimal("0.3"))

        response = client.patch(f"{RESOURCES}/{resource.pk}", {"ask_per_device_hour": "0.2"}, format="json")

        assert_error(response, 400, "invalid")
        resource.refresh_from_db()
        assert resource.ask_per_device_hour == Decimal("0.4")

    @pytest.mark.parametrize(
        "body", [{"device_count": 10**40}, {"ask_per_device_hour": "NaN"}, {"colour": "red"}], ids=str
    )
    def test_refuses_an_invalid_change(self, client, provider, body):
        resource = ResourceFactory(provider=provider)

        response = client.patch(f"{RESOURCES}/{resource.pk}", body, format="json")

        assert_error(response, 400, "invalid")


class TestOperatorProvidersAndResources:
    def test_lists_every_provider_and_resource(self):
        resources = [ResourceFactory() for _ in range(2)]
        client = bearer_client(OperatorFactory())

        providers = client.get("/api/v1/operator/providers", {"limit": 1000}).json()["results"]
        listings = client.get("/api/v1/operator/resources", {"limit": 1000}).json()["results"]

        assert {r.provider_id for r in resources} <= {row["id"] for row in providers}
        assert {r.pk for r in resources} <= {row["id"] for row in listings}

    @pytest.mark.parametrize("url", ["/api/v1/operator/providers", "/api/v1/operator/resources"])
    def test_costs_the_same_few_queries_for_5_or_30_rows(self, url, django_assert_max_num_queries):
        client = bearer_client(OperatorFactory())
        for _ in range(5):
            ResourceFactory()
        with CaptureQueriesContext(connection) as five:
            client.get(url)
        for _ in range(25):
            ResourceFactory()

        with django_assert_max_num_queries(3):
            response = client.get(url)

        assert len(response.json()["results"]) == 30
        with CaptureQueriesContext(connection) as thirty:
            client.get(url)
        assert len(thirty) == len(five)
