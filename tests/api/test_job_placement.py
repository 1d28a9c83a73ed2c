"""Where a job may run: known regions, strict or preferred placement, and jobs no listed resource
could ever run refused at submission (422 unservable) with the binding reason and the nearest fit."""

from decimal import Decimal

import pytest

from market.models import JobRequest, LedgerAccount, LedgerTransfer
from tests.conftest import assert_error, bearer_client
from tests.factories import ConsumerFactory, ProviderFactory, ResourceFactory, job_body

pytestmark = pytest.mark.django_db

JOBS = "/api/v1/jobs"


@pytest.fixture
def consumer():
    return ConsumerFactory(balance=Decimal("1000"))


@pytest.fixture
def client(consumer):
    return bearer_client(consumer)


@pytest.fixture
def market():
    """Two listings: one 24 GiB card in eu-west (Lisbon), four 80 GiB cards in ap-south (Bengaluru)."""
    lisbon = ProviderFactory(region="eu-west", site="Lisbon", latitude=38.72, longitude=-9.14)
    bengaluru = ProviderFactory(region="ap-south", site="Bengaluru")
    return {
        "small": ResourceFactory(provider=lisbon, model_name="RTX 4090", memory_per_device_gib=Decimal(24)),
        "big": ResourceFactory(
            provider=bengaluru, model_name="A100-80G", device_count=4, memory_per_device_gib=Decimal(80)
        ),
    }


def assert_nothing_written(consumer):
    assert not JobRequest.objects.filter(consumer=consumer).exists()
    assert not LedgerAccount.objects.filter(job__consumer=consumer).exists()
    assert not LedgerTransfer.objects.filter(kind=LedgerTransfer.Kind.HOLD, job__consumer=consumer).exists()
    assert LedgerAccount.objects.get(user=consumer).balance == Decimal("1000")


class TestRegions:
    def test_lists_the_regions_cpx_knows_without_login(self, client):
        from rest_framework.test import APIClient

        response = APIClient().get("/api/v1/regions")

        assert response.status_code == 200
        names = [region["name"] for region in response.json()]
        assert "eu-west" in names and "ap-south" in names
        assert names == sorted(names)

    def test_refuses_an_unknown_region_and_writes_nothing(self, client, consumer, market):
        response = client.post(JOBS, job_body(region="mars-1"), format="json")

        body = assert_error(response, 400, "unknown_region")
        assert "eu-west" in body["extra"]["known"]
        assert_nothing_written(consumer)

    def test_refuses_an_unknown_region_in_a_quote(self, client):
        response = client.post("/api/v1/quote", job_body(region="mars-1"), format="json")

        assert_error(response, 400, "unknown_region")


class TestPlacement:
    def test_a_latency_sla_implies_strict(self, client, market):
        response = client.post(JOBS, job_body(latency_sla_ms=200), format="json")

        assert response.status_code == 201, response.json()
        assert response.json()["placement"] == "strict"

    def test_without_an_sla_the_job_states_preferred_by_default(self, client, market):
        response = client.post(JOBS, job_body(latency_sla_ms=None), format="json")

        assert response.status_code == 201, response.json()
        assert response.json()["placement"] == "preferred"

    def test_refuses_preferred_with_a_latency_sla(self, client, consumer, market):
        response = client.post(JOBS, job_body(latency_sla_ms=200, placement="preferred"), format="json")

        assert_error(response, 400, "placement_conflicts_with_sla")
        assert_nothing_written(consumer)


class TestUnservable:
    def test_refuses_a_job_bigger_than_every_device_with_the_nearest_fit(self, client, consumer, market):
        # 70B at fp16 forced onto one device: ~150 GiB on one card, and the largest has 80.
        body = job_body(params_billion="70", quant_bits=16, requested_device_count=1, latency_sla_ms=None)

        response = client.post(JOBS, body, format="json")

        error = assert_error(response, 422, "unservable")
        assert error["extra"]["reason"] == "memory_exceeds_every_resource"
        nearest = error["extra"]["nearest"]
        assert nearest["requested_device_count"] == 4
        assert nearest["resource_model"] == "A100-80G"
        assert Decimal(nearest["memory_per_device_gib"]) <= 80
        assert_nothing_written(consumer)

    def test_the_nearest_fit_is_accepted(self, client, market):
        body = job_body(params_billion="70", quant_bits=16, requested_device_count=1, latency_sla_ms=None)
        nearest = client.post(JOBS, body, format="json").json()["extra"]["nearest"]

        body["requested_device_count"] = nearest["requested_device_count"]
        response = client.post(JOBS, body, format="json")

        assert response.status_code == 201, response.json()

    def test_refuses_a_training_job_no_node_has_the_devices_for(self, client, consumer, market):
        body = job_body(
            kind="TRAINING",
            params_billion="405",
            quant_bits=16,
            context_length=8192,
            workload_tokens=None,
            workload_device_hours="100",
            latency_sla_ms=None,
        )

        response = client.post(JOBS, body, format="json")

        error = assert_error(response, 422, "unservable")
        assert error["extra"]["reason"] in ("memory_exceeds_every_resource", "devices_exceed_every_resource")
        assert_nothing_written(consumer)

    def test_refuses_a_latency_sla_no_fitting_resource_meets(self, client, consumer, market):
        # Only the Bengaluru node holds 60 GiB per device: ~100+ ms from Paris.
        body = job_body(requested_memory_per_device_gib="60", latency_sla_ms=30)

        response = client.post(JOBS, body, format="json")

        error = assert_error(response, 422, "unservable")
        assert error["extra"]["reason"] == "latency_sla_unmet"
        assert error["extra"]["nearest"]["region"] == "ap-south"
        assert error["extra"]["nearest"]["latency_sla_ms"] > 30
        assert_nothing_written(consumer)

    def test_refuses_strict_placement_in_a_region_without_a_fit(self, client, consumer, market):
        body = job_body(requested_memory_per_device_gib="60", latency_sla_ms=None, placement="strict")

        response = client.post(JOBS, body, format="json")

        error = assert_error(response, 422, "unservable")
        assert error["extra"]["reason"] == "no_supply_in_region"
        assert error["extra"]["nearest"] == {"placement": "preferred", "region": "ap-south"}
        assert_nothing_written(consumer)

    def test_accepts_the_same_job_placed_preferred(self, client, market):
        body = job_body(requested_memory_per_device_gib="60", latency_sla_ms=None, placement="preferred")

        response = client.post(JOBS, body, format="json")

        assert response.status_code == 201, response.json()

    def test_refuses_a_device_class_nobody_lists(self, client, consumer, market):
        response = client.post(JOBS, job_body(device_class="TPU", latency_sla_ms=None), format="json")

        error = assert_error(response, 422, "unservable")
        assert error["extra"]["reason"] == "no_resource_of_class"
        assert_nothing_written(consumer)

    def test_a_busy_or_paused_market_still_judges_by_its_listings(self, client, market):
        market["big"].status = "PAUSED"
        market["big"].save(update_fields=["status"])
        body = job_body(requested_memory_per_device_gib="60", latency_sla_ms=None)

        response = client.post(JOBS, body, format="json")

        assert_error(response, 422, "unservable")

    def test_an_empty_market_refuses_nothing(self, client):
        response = client.post(JOBS, job_body(params_billion="70", quant_bits=16), format="json")

        assert response.status_code == 201, response.json()


class TestRanWhere:
    def test_the_job_list_and_detail_say_where_a_matched_job_runs(self, client, consumer):
        from auctions.services.rounds import round_clear, round_open
        from market.models import Provider
        from tests.conftest import NOW
        from tests.factories import job_submit

        porto = ProviderFactory(region="eu-west", site="Porto", display_name="Porto edge")
        Provider.objects.filter(pk=porto.pk).update(last_heartbeat_at=NOW)
        ResourceFactory(provider=porto, model_name="RTX 4090", price_floor=Decimal(0))
        matched = job_submit(consumer=consumer, max_price_per_device_hour=Decimal("2.00"))
        round_clear(round_id=round_open(now=NOW).pk, now=NOW)
        waiting = job_submit(consumer=consumer)

        rows = {row["id"]: row for row in client.get(JOBS).json()["results"]}
        detail = client.get(f"{JOBS}/{matched.pk}").json()

        assert rows[waiting.pk]["ran_where"] is None
        where = rows[matched.pk]["ran_where"]
        assert (where["region"], where["site"], where["provider"]) == ("eu-west", "Porto", "Porto edge")
        assert where["resource"] == "RTX 4090" and where["devices"] == 1
        assert detail["ran_where"] == where
        assert rows[matched.pk]["spent"] == "0.000000"  # nothing charged before it runs


class TestPriceUnits:
    def test_a_job_and_its_leases_state_prices_in_the_bids_unit(self, client, consumer):
        from auctions.services.rounds import round_clear, round_open
        from market.models import Provider
        from tests.conftest import NOW
        from tests.factories import job_submit

        fast = ProviderFactory(region="eu-west", site="Porto")
        Provider.objects.filter(pk=fast.pk).update(last_heartbeat_at=NOW)
        ResourceFactory(provider=fast, speed_factor=Decimal("2"), price_floor=Decimal(0))
        job = job_submit(consumer=consumer, max_price_per_device_hour=Decimal("2.00"))
        round_clear(round_id=round_open(now=NOW).pk, now=NOW)

        detail = client.get(f"{JOBS}/{job.pk}").json()
        lease = client.get(f"{JOBS}/{job.pk}/leases").json()[0]

        assert detail["price_unit"] == "USDC per reference device-hour"
        assert (lease["region"], lease["site"], lease["speed_factor"]) == ("eu-west", "Porto", "2.000")
        paid = Decimal(lease["unit_price_paid"])
        assert Decimal(lease["unit_price_paid_per_reference_device_hour"]) == (paid / 2).quantize(
            Decimal("0.000001")
        )


class TestProviderRegion:
    def test_a_provider_cannot_register_in_an_unknown_region(self):
        from tests.factories import ProviderUserFactory, random_wallet

        client = bearer_client(ProviderUserFactory())

        response = client.post(
            "/api/v1/provider",
            {"display_name": "Rig", "wallet_address": random_wallet(), "region": "mars-1"},
            format="json",
        )

        assert_error(response, 400, "unknown_region")
