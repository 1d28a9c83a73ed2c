"""Issue 14 in a real browser: the public market page without login (and on a phone), the job list's
placement and ran-where columns filling in live, and a signed-in consumer replaying a round."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from auctions.models import Round
from market.models import JobRequest, Provider, Resource
from tests.browser.conftest import TIMEOUT_S, log_in, user_with_password, wait_for
from tests.factories import ConsumerFactory, ProviderFactory, ProviderUserFactory, ResourceFactory, job_submit

pytestmark = pytest.mark.browser

TIMEOUT_MS = TIMEOUT_S * 1000


def gpu_in_porto(market) -> Resource:
    """A listed GPU in eu-west (site Porto) whose provider runs the real agent loop."""
    with market.db.turn():
        resource = ResourceFactory(
            price_floor=Decimal("0"), ask_per_device_hour=Decimal("0.20"), speed_factor=Decimal("2")
        )
        Provider.objects.filter(pk=resource.provider_id).update(site="Porto", display_name="Porto edge")
    market.start_agent(resource.provider)
    return resource


def a_job(market, consumer, **fields) -> JobRequest:
    now = timezone.now()
    with market.db.turn():
        return job_submit(
            consumer=consumer,
            now=now,
            deadline=now + timedelta(days=1),
            quant_bits=4,
            max_price_per_device_hour=Decimal("1.5"),
            **fields,
        )


class TestPublicMarket:
    def test_a_visitor_sees_offers_and_clearing_prices_without_logging_in(self, page, live_market):
        gpu_in_porto(live_market)
        with live_market.db.turn():
            consumer = ConsumerFactory(balance=Decimal("100"))
        a_job(live_market, consumer)
        wait_for(
            lambda: live_market.db.read(lambda: Round.objects.filter(jobs_matched__gt=0).exists()),
            timeout_s=TIMEOUT_S,
            what="a round that matched the job",
        )

        page.goto(f"{live_market.url}/market/")

        expect(page.get_by_role("heading", name="The market")).to_be_visible()
        expect(page.locator("main")).to_contain_text("USDC per reference device-hour")
        offers = page.locator('#offers tr[data-class="GPU/24G/eu-west"]')
        expect(offers).to_contain_text("eu-west")
        expect(offers).to_contain_text("0.1000")  # 0.20 per device-hour on a 2x device
        expect(page.locator("#recent-prices")).to_contain_text("GPU/24G/eu-west")
        expect(page.get_by_role("link", name="Sign up to trade")).to_be_visible()
        assert "Porto edge" not in page.content()
        assert page.problems == []

    def test_the_market_page_fits_a_phone(self, page, live_market):
        gpu_in_porto(live_market)
        page.set_viewport_size({"width": 390, "height": 844})

        page.goto(f"{live_market.url}/market/")

        expect(page.locator("#offers")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert page.problems == []


class TestJobPlacement:
    def test_the_job_list_shows_placement_and_fills_in_where_the_job_ran(self, page, live_market):
        gpu_in_porto(live_market)
        with live_market.db.turn():
            consumer = user_with_password(ConsumerFactory, balance=Decimal("100"))
        job = a_job(live_market, consumer, latency_sla_ms=200)
        log_in(page, live_market, consumer)

        page.goto(f"{live_market.url}/jobs/")
        row = page.locator("tr", has=page.get_by_role("link", name=f"#{job.pk}"))

        expect(row.locator('[data-col="placement"]')).to_contain_text("strict")
        expect(row.locator('[data-col="ran-where"]')).to_contain_text("eu-west · Porto", timeout=TIMEOUT_MS)
        expect(row.locator('[data-col="ran-where"]')).to_contain_text("Porto edge")
        page.get_by_role("link", name=f"#{job.pk}").click()
        expect(page.locator("#ran-where")).to_contain_text("Porto edge")
        expect(page.locator("main")).to_contain_text(re.compile(r"strict \(within 200 ms\)"))
        assert page.problems == []

    def test_a_signed_in_consumer_replays_a_round_from_the_market(self, page, live_market):
        gpu_in_porto(live_market)
        with live_market.db.turn():
            consumer = user_with_password(ConsumerFactory, balance=Decimal("100"))
        a_job(live_market, consumer)
        busy = wait_for(
            lambda: live_market.db.read(
                lambda: Round.objects.filter(jobs_matched__gt=0).order_by("id").first()
            ),
            timeout_s=TIMEOUT_S,
            what="a round that matched the job",
        )
        log_in(page, live_market, consumer)

        page.goto(f"{live_market.url}/market/rounds/{busy.pk}/")
        page.get_by_role("button", name="Replay this round").click()

        expect(page.locator("#replay-verdict")).to_contain_text("Replay matches", timeout=TIMEOUT_MS)
        expect(page.get_by_role("link", name="Snapshot (JSON)")).to_have_attribute(
            "href", f"/api/v1/rounds/{busy.pk}/snapshot"
        )
        assert page.problems == []


class TestPhoneLayout:
    def test_the_provider_console_fits_a_phone(self, page, live_market):
        with live_market.db.turn():
            provider = ProviderFactory(
                user=user_with_password(ProviderUserFactory), display_name="A provider with a long name"
            )
            ResourceFactory(provider=provider, model_name="Jetson AGX Orin 64GB", price_floor=Decimal("0"))
        page.set_viewport_size({"width": 390, "height": 844})
        log_in(page, live_market, provider.user)

        for path in ("/provider/", "/provider/leases/", "/provider/resources/new/", "/keys/", "/market/"):
            page.goto(f"{live_market.url}{path}")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
        nav_last = page.locator(".main-nav .nav li").last
        expect(nav_last).to_be_in_viewport(ratio=1)
        assert page.problems == []


def _has_waiting_reason() -> bool:
    return any(field.name == "waiting_reason" for field in JobRequest._meta.get_fields())


@pytest.mark.skipif(not _has_waiting_reason(), reason="JobRequest.waiting_reason arrives with i14-liquidity")
class TestWaitingReason:
    def test_the_job_page_says_why_a_queued_job_waits(self, page, live_market):
        with live_market.db.turn():
            consumer = user_with_password(ConsumerFactory, balance=Decimal("100"))
        job = a_job(live_market, consumer)  # submitted while nothing is listed: nothing to judge by
        with live_market.db.turn():
            small = ResourceFactory(
                price_floor=Decimal("0"),
                ask_per_device_hour=Decimal("0.20"),
                memory_per_device_gib=Decimal("2"),
            )
        live_market.start_agent(small.provider)
        log_in(page, live_market, consumer)

        page.goto(f"{live_market.url}/jobs/{job.pk}/")

        expect(page.locator("#waiting-reason")).to_contain_text("Why it waits", timeout=TIMEOUT_MS)
        page.goto(f"{live_market.url}/jobs/")
        row = page.locator("tr", has=page.get_by_role("link", name=f"#{job.pk}"))
        expect(row.locator('[data-col="waiting"]')).not_to_be_empty()
        assert page.problems == []
