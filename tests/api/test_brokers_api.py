"""The broker API: principals appoint and revoke; a broker lists principals and fees and acts only
for the principals that appointed it."""

from decimal import Decimal

import pytest

from market.models import BrokerAppointment, BrokeredJob, Resource, Role
from tests.conftest import assert_error, bearer_client
from tests.factories import ConsumerFactory, ResourceFactory, UserFactory, job_body
from tests.integration.pages import live_job, online_provider
from tests.unit.mechanisms import test_replay_under_load

pytestmark = pytest.mark.django_db
cpu_load = test_replay_under_load.cpu_load  # real CPU burners beside the second quote


@pytest.fixture
def broker():
    return UserFactory(username="acme-broker", role=Role.BROKER)


@pytest.fixture
def consumer():
    return ConsumerFactory(balance=Decimal("100"))


class TestAppointments:
    def test_a_consumer_appoints_lists_and_revokes_a_broker(self, broker, consumer):
        client = bearer_client(consumer)

        made = client.post(
            "/api/v1/broker-appointments", {"broker": broker.username, "fee_rate": "0.02"}, format="json"
        )
        listed = client.get("/api/v1/broker-appointments")
        revoked = client.post(f"/api/v1/broker-appointments/{made.json()['id']}/revoke")

        assert made.status_code == 201, made.json()
        assert (made.json()["side"], made.json()["fee_rate"]) == ("consumer", "0.020000")
        assert [row["broker"] for row in listed.json()] == [broker.username]
        assert revoked.json()["status"] == "REVOKED"

    def test_refusals_answer_the_one_error_shape(self, broker, consumer):
        client = bearer_client(consumer)

        assert_error(
            client.post(
                "/api/v1/broker-appointments", {"broker": "nobody", "fee_rate": "0.02"}, format="json"
            ),
            404,
            "broker_not_found",
        )
        assert_error(
            client.post(
                "/api/v1/broker-appointments", {"broker": broker.username, "fee_rate": "0.7"}, format="json"
            ),
            400,
            "broker_fee_rate_invalid",
        )
        client.post(
            "/api/v1/broker-appointments", {"broker": broker.username, "fee_rate": "0.02"}, format="json"
        )
        assert_error(
            client.post(
                "/api/v1/broker-appointments", {"broker": broker.username, "fee_rate": "0.02"}, format="json"
            ),
            409,
            "broker_already_appointed",
        )

    def test_a_broker_cannot_appoint_and_a_consumer_cannot_list_principals(self, broker, consumer):
        assert bearer_client(broker).get("/api/v1/broker-appointments").status_code == 403
        assert bearer_client(consumer).get("/api/v1/broker/principals").status_code == 403


class TestBrokerActsForPrincipals:
    def test_submits_a_job_for_an_appointed_consumer_and_not_for_another(self, broker, consumer):
        ResourceFactory()
        BrokerAppointment.objects.create(
            broker=broker,
            principal=consumer,
            side="consumer",
            fee_rate=Decimal("0.02"),
            created_at="2026-01-01T00:00Z",
        )
        client = bearer_client(broker)

        made = client.post(f"/api/v1/broker/principals/{consumer.username}/jobs", job_body(), format="json")
        stranger = ConsumerFactory(balance=Decimal("100"))
        refused = client.post(
            f"/api/v1/broker/principals/{stranger.username}/jobs", job_body(), format="json"
        )
        principals = client.get("/api/v1/broker/principals")
        fees = client.get("/api/v1/broker/fees")

        assert made.status_code == 201, made.json()
        assert BrokeredJob.objects.get(job_id=made.json()["id"]).job.consumer == consumer
        assert_error(refused, 403, "broker_not_appointed")
        assert [row["principal"] for row in principals.json()] == [consumer.username]
        assert fees.json() == {"balance": "0.000000", "by_principal": []}

    def test_prices_an_appointed_providers_listing(self, broker):
        resource = ResourceFactory()
        BrokerAppointment.objects.create(
            broker=broker,
            principal=resource.provider.user,
            side="provider",
            fee_rate=Decimal("0.05"),
            created_at="2026-01-01T00:00Z",
        )
        url = f"/api/v1/broker/principals/{resource.provider.user.username}/resources/{resource.pk}"

        response = bearer_client(broker).patch(url, {"ask_per_device_hour": "0.35"}, format="json")

        assert response.status_code == 200, response.json()
        assert Resource.objects.get(pk=resource.pk).ask_per_device_hour == Decimal("0.35")


class TestBrokerPrices:
    def test_answers_the_book_at_the_duals_for_a_broker_only(self, broker, consumer):
        response = bearer_client(broker).get("/api/v1/broker/prices")

        assert response.status_code == 200, response.json()
        assert set(response.json()) == {
            "welfare",
            "lp_bound",
            "jobs_in_book",
            "resources_in_book",
            "jobs",
            "resources",
        }
        assert bearer_client(consumer).get("/api/v1/broker/prices").status_code == 403

    def test_the_same_book_gives_the_same_quote_under_cpu_load(self, broker, consumer, cpu_load):
        BrokerAppointment.objects.create(
            broker=broker,
            principal=consumer,
            side="consumer",
            fee_rate=Decimal("0.02"),
            created_at="2026-01-01T00:00Z",
        )
        ResourceFactory(
            provider=online_provider(),
            device_count=2,
            price_floor=Decimal("0"),
            ask_per_device_hour=Decimal("0.2"),
        )
        for bid in ("0.5", "0.7", "0.9"):  # three jobs for two devices: a choice the MILP must make
            live_job(consumer, max_price_per_device_hour=Decimal(bid), quant_bits=4)
        client = bearer_client(broker)
        quiet = client.get("/api/v1/broker/prices")
        assert cpu_load() >= 2

        loaded = client.get("/api/v1/broker/prices")

        assert quiet.status_code == 200, quiet.json()
        assert loaded.json() == quiet.json()
        assert sum(job["trades"] for job in quiet.json()["jobs"]) == 2  # the two best bids trade
