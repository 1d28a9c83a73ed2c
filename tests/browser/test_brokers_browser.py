"""The broker's pages in a real browser (Chromium through Playwright) against a live market: a consumer
appoints a broker on its Brokers page; the broker places a job for it on a provider that appointed it
too; the live round clears, the agent runs the job, settlement splits the payment three ways; the
broker's console shows both principals and the fees earned, its prices page the market at the LP
duals, and the broker revokes an appointment."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from market.models import BrokerAppointment, BrokerFee, JobRequest, Role
from market.selectors import ledger_is_balanced
from market.services.brokers import broker_appoint, broker_job_submit
from tests.browser.conftest import TIMEOUT_S, log_in, user_with_password, wait_for
from tests.factories import ConsumerFactory, ResourceFactory, UserFactory, job_spec

pytestmark = pytest.mark.browser


class TestBrokerPages:
    def test_a_broker_trades_for_two_principals_and_sees_its_fees(self, page, live_market):
        db = live_market.db
        with db.turn():
            broker = user_with_password(UserFactory, username="acme-broker", role=Role.BROKER)
            consumer = user_with_password(ConsumerFactory, username="lab-consumer", balance=Decimal("100"))
            resource = ResourceFactory(price_floor=Decimal("0"), ask_per_device_hour=Decimal("0.20"))
            broker_appoint(
                principal=resource.provider.user,
                broker_username=broker.username,
                fee_rate="0.05",
                now=timezone.now(),
            )
        live_market.start_agent(resource.provider)

        # The consumer appoints the broker in its browser.
        log_in(page, live_market, consumer)
        page.get_by_role("link", name="Brokers").click()
        page.get_by_label("Broker's username").fill(broker.username)
        page.get_by_label("Fee rate").fill("0.02")
        page.get_by_role("button", name="Appoint").click()
        expect(page.locator("#appointments")).to_contain_text("acme-broker")
        expect(page.locator("#appointments")).to_contain_text("0.020000")

        with db.turn():
            job, _ = broker_job_submit(
                broker=broker,
                principal_username=consumer.username,
                spec=job_spec(deadline=timezone.now() + timedelta(days=1)),
                now=timezone.now(),
            )
        wait_for(
            lambda: db.read(lambda: JobRequest.objects.get(pk=job.pk).status == JobRequest.Status.COMPLETED),
            timeout_s=TIMEOUT_S,
            what="the brokered job to complete",
        )
        fees = db.read(
            lambda: list(BrokerFee.objects.filter(appointment__broker=broker).select_related("transfer"))
        )
        assert sorted(f.appointment.side for f in fees) == ["consumer", "provider"]
        assert db.read(ledger_is_balanced)

        # The broker's console: both principals, their fees, and the jobs placed.
        page.context.clear_cookies()
        log_in(page, live_market, broker)
        expect(page.get_by_role("heading", name="Broker console")).to_be_visible()
        principals = page.locator("#principals")
        expect(principals).to_contain_text(consumer.username)
        expect(principals).to_contain_text(resource.provider.user.username)
        total = sum(f.transfer.amount for f in fees)
        expect(page.locator("#fee-balance")).to_have_text(f"{total:.6f}")
        expect(page.locator("#brokered-jobs")).to_contain_text(f"#{job.pk}")

        # The market at the duals: the provider principal's free device, priced.
        page.get_by_role("link", name="Prices at the duals").click()
        expect(page.get_by_role("heading", name="Prices at the duals")).to_be_visible()
        expect(page.locator("#principal-resources")).to_contain_text(resource.provider.user.username)
        page.get_by_role("link", name="Back to principals").click()

        page.locator(f'tr[data-principal="{consumer.username}"]').get_by_role("button", name="Revoke").click()
        expect(page.locator(f'tr[data-principal="{consumer.username}"]')).to_contain_text("Revoked")
        assert db.read(
            lambda: BrokerAppointment.objects.get(broker=broker, principal=consumer).status == "REVOKED"
        )

        page.set_viewport_size({"width": 390, "height": 844})  # a phone: no sideways scrolling
        for path in ("/broker/", "/broker/prices/"):
            page.goto(f"{live_market.url}{path}")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
        assert page.problems == []

    def test_signs_up_as_a_broker_and_lands_on_the_console(self, page, live_market):
        page.goto(f"{live_market.url}/accounts/signup/")
        page.get_by_label("Username").fill("new-broker")
        page.get_by_label("Broker — I trade for providers or consumers who appoint me").check()
        page.locator("#id_password1").fill("a-long-unusual-passphrase-9")
        page.locator("#id_password2").fill("a-long-unusual-passphrase-9")
        page.get_by_role("button", name="Sign up").click()

        expect(page.get_by_role("heading", name="Broker console")).to_be_visible()
        expect(page.get_by_role("link", name="Principals")).to_be_visible()
        assert page.problems == []
