"""Broker pages: the console and the prices at the duals for a broker only, the appointments page
for providers and consumers only, the appoint form's refusals beside its field, and the welfare
allocation of the live book for the broker's principals."""

from decimal import Decimal

import pytest
from django.utils import timezone

from auctions.selectors.brokers import broker_market_prices
from market.models import BrokerAppointment, Role
from tests.factories import ConsumerFactory, OperatorFactory, ResourceFactory, UserFactory
from tests.integration.pages import live_job, online_provider, signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker():
    return UserFactory(username="acme-broker", role=Role.BROKER)


def appoint(broker, principal, side, rate="0.02"):
    return BrokerAppointment.objects.create(
        broker=broker, principal=principal, side=side, fee_rate=Decimal(rate), created_at=timezone.now()
    )


class TestRoles:
    def test_each_role_sees_its_own_broker_page_only(self, broker):
        consumer = ConsumerFactory()

        assert signed_in(broker).get("/broker/").status_code == 200
        assert signed_in(broker).get("/broker/prices/").status_code == 200
        assert signed_in(broker).get("/brokers/").status_code == 403
        assert signed_in(consumer).get("/brokers/").status_code == 200
        assert signed_in(consumer).get("/broker/").status_code == 403
        assert signed_in(consumer).get("/broker/prices/").status_code == 403


class TestAppointForm:
    def test_an_unknown_broker_is_refused_beside_its_field(self, broker):
        consumer = ConsumerFactory()

        response = signed_in(consumer).post("/brokers/", {"broker": "nobody", "fee_rate": "0.02"})

        assert response.status_code == 400
        assert "No broker by that name." in response.content.decode()
        assert not BrokerAppointment.objects.filter(principal=consumer).exists()

    def test_the_broker_revokes_from_its_console(self, broker):
        consumer = ConsumerFactory()
        appointment = appoint(broker, consumer, "consumer")

        response = signed_in(broker).post(f"/brokers/{appointment.pk}/revoke/")

        assert response.status_code == 302
        appointment.refresh_from_db()
        assert appointment.status == "REVOKED"


class TestPricesAtTheDuals:
    def test_the_principals_higher_bid_trades_and_pays_between_the_losing_bid_and_its_own(self, broker):
        provider = online_provider()
        resource = ResourceFactory(
            provider=provider, price_floor=Decimal("0"), ask_per_device_hour=Decimal("0.20")
        )
        principal = ConsumerFactory(balance=Decimal("100"))
        rival = ConsumerFactory(balance=Decimal("100"))
        appoint(broker, principal, "consumer")
        appoint(broker, provider.user, "provider", "0.05")
        mine = live_job(principal, max_price_per_device_hour=Decimal("1.00"))
        live_job(rival, max_price_per_device_hour=Decimal("0.50"))

        prices = broker_market_prices(broker=broker, now=timezone.now())

        assert [(q.job_id, q.trades, q.resource_id) for q in prices.jobs] == [(mine.pk, True, resource.pk)]
        assert 0.5 - 1e-9 <= prices.jobs[0].price <= 1.0 + 1e-9
        assert prices.welfare == pytest.approx(mine.device_count * (1.00 - 0.20))
        assert [(r.resource_id, r.principal) for r in prices.resources] == [
            (resource.pk, provider.user.username)
        ]
        assert prices.resources[0].dual_price >= 0.3 - 1e-9  # at least the losing bid over the ask


class TestOperatorDashboard:
    def test_lists_each_broker_with_its_active_principals(self, broker):
        appoint(broker, ConsumerFactory(), "consumer")

        response = signed_in(OperatorFactory()).get("/ops/market/live/")

        body = response.content.decode()
        assert response.status_code == 200
        assert 'id="brokers"' in body and "acme-broker" in body
