"""The pages in a real browser (Chromium through Playwright) against a live, moving market: a provider
signs up and lists a GPU; a consumer submits a job with its quote and watches it complete without
reloading; an operator watches rounds clear, opens one, replays it and sees the hashes match; the
role and ownership checks; keyboard use and phone width."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from auctions.models import Round
from market.models import JobRequest, Provider, Resource
from tests.browser.conftest import TIMEOUT_S, log_in, user_with_password, wait_for
from tests.factories import (
    ConsumerFactory,
    OperatorFactory,
    ProviderFactory,
    ProviderUserFactory,
    ResourceFactory,
    job_submit,
)

pytestmark = pytest.mark.browser

TIMEOUT_MS = TIMEOUT_S * 1000


def gpu_of_an_online_provider(market, **fields) -> Resource:
    """A listed GPU whose provider runs the real agent loop (simulate backend)."""
    with market.db.turn():
        resource = ResourceFactory(price_floor=Decimal("0"), ask_per_device_hour=Decimal("0.20"), **fields)
    market.start_agent(resource.provider)
    return resource


class TestProvider:
    def test_signs_up_registers_and_lists_a_gpu(self, page, live_market):
        page.goto(f"{live_market.url}/accounts/signup/")
        page.get_by_label("Username").fill("rig-owner")
        page.get_by_label("Provider — I sell computing power").check()
        page.locator("#id_password1").fill("a-long-unusual-passphrase-9")
        page.locator("#id_password2").fill("a-long-unusual-passphrase-9")
        page.get_by_role("button", name="Sign up").click()

        page.locator("#id_display_name").fill("Rig in the attic")
        page.locator("#id_wallet_address").fill("0x" + "c0ffee" * 6 + "beef")
        page.locator("#id_region").fill("eu-west")
        page.get_by_role("button", name="Register").click()
        expect(page.get_by_role("heading", name="List a device")).to_be_visible()
        page.locator("#id_device_class").select_option("GPU")
        page.locator("#id_model_name").fill("RTX 3080")
        page.locator("#id_device_count").fill("1")
        page.locator("#id_memory_per_device_gib").fill("10")
        page.locator("#id_host_ram_gib").fill("32")
        page.locator("#id_vcpu").fill("8")
        page.locator("#id_fp16_tflops").fill("29.8")
        page.locator("#id_ask_per_device_hour").fill("0.18")
        page.get_by_role("button", name="List it").click()

        expect(page.get_by_text("RTX 3080 is listed.")).to_be_visible()
        row = page.locator("tr", has_text="RTX 3080")
        expect(row).to_contain_text("GPU/8G/eu-west")
        expect(row).to_contain_text("Listed")
        resource = live_market.db.read(lambda: Resource.objects.select_related("provider__user").get())
        assert (resource.provider.user.username, resource.model_name) == ("rig-owner", "RTX 3080")
        assert page.problems == []

    def test_bad_input_shows_beside_the_field_and_anothers_listing_is_not_found(self, page, live_market):
        with live_market.db.turn():
            mine = ProviderFactory(user=user_with_password(ProviderUserFactory))
            theirs = ResourceFactory()
            own = ResourceFactory(provider=mine)
        log_in(page, live_market, mine.user)

        page.goto(f"{live_market.url}/provider/resources/{own.pk}/edit/")
        page.locator("#id_ask_per_device_hour").fill("0.01")
        page.locator("#id_price_floor").fill("0.50")
        page.get_by_role("button", name="Save").click()

        field = page.locator("#id_ask_per_device_hour")
        expect(field).to_have_attribute("aria-invalid", "true")
        expect(field).to_have_attribute("aria-describedby", re.compile("id_ask_per_device_hour_error"))
        expect(page.locator("#id_ask_per_device_hour_error")).to_contain_text(
            "cannot be below the price floor"
        )
        response = page.goto(f"{live_market.url}/provider/resources/{theirs.pk}/edit/")
        assert response.status == 404
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()


class TestConsumer:
    def test_submits_a_job_after_its_quote_and_watches_it_complete_without_reloading(self, page, live_market):
        gpu_of_an_online_provider(live_market)
        with live_market.db.turn():
            consumer = user_with_password(ConsumerFactory, balance=Decimal("100"))
        log_in(page, live_market, consumer)

        page.goto(f"{live_market.url}/jobs/new/")
        page.locator("#id_model_name").fill("llama-3.1-8b-instruct")
        page.locator("#id_params_billion").fill("8")
        page.locator("#id_workload_tokens").fill("50000")
        page.locator("#id_region").fill("eu-west")
        page.locator("#id_max_price_per_device_hour").fill("1.5")
        page.locator("#id_budget").fill("10")
        page.locator("#id_budget").blur()
        quote = page.locator("#quote-body")
        expect(quote).to_contain_text("would clear now", timeout=TIMEOUT_MS)
        expect(quote).to_contain_text("GPU/24G/eu-west")
        page.get_by_role("button", name="Submit job").click()
        expect(
            page.get_by_role("heading", name=re.compile(r"Job #\d+: llama-3.1-8b-instruct"))
        ).to_be_visible()
        page.evaluate("window.__sameDocument = true")  # a reload would lose it

        expect(page.locator("#job-status")).to_have_text("Completed", timeout=TIMEOUT_MS)

        assert page.evaluate("window.__sameDocument === true")
        expect(page.locator("ol.timeline")).to_contain_text("Matched")
        expect(page.locator("ol.timeline")).to_contain_text("Running")
        expect(page.locator("#job-live")).not_to_have_attribute("hx-trigger", re.compile("every"))
        job = live_market.db.read(lambda: JobRequest.objects.get(consumer=consumer))
        assert job.status == "COMPLETED"
        assert page.problems == []

    def test_cannot_open_operator_pages_or_another_consumers_job(self, page, live_market):
        with live_market.db.turn():
            consumer = user_with_password(ConsumerFactory)
            other = ConsumerFactory(balance=Decimal("50"))
            theirs = job_submit(
                consumer=other, now=timezone.now(), deadline=timezone.now() + timedelta(days=1)
            )
        log_in(page, live_market, consumer)

        market = page.goto(f"{live_market.url}/ops/market/")
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
        job = page.goto(f"{live_market.url}/jobs/{theirs.pk}/")

        assert (market.status, job.status) == (403, 404)
        expect(page.get_by_role("link", name="Dashboard")).to_have_count(0)


class TestOperator:
    def test_watches_rounds_clear_opens_one_replays_it_and_sees_the_hashes_match(self, page, live_market):
        gpu_of_an_online_provider(live_market)
        with live_market.db.turn():
            operator = user_with_password(OperatorFactory)
            consumer = ConsumerFactory(balance=Decimal("100"))
            job_submit(
                consumer=consumer,
                now=timezone.now(),
                deadline=timezone.now() + timedelta(days=1),
                quant_bits=4,
            )
        log_in(page, live_market, operator)
        page.goto(f"{live_market.url}/ops/market/")
        first = page.locator("#market-live tbody tr").first.locator("a").inner_text()
        page.evaluate("window.__sameDocument = true")

        expect(page.locator("#market-live tbody tr").first.locator("a")).not_to_have_text(
            first, timeout=TIMEOUT_MS
        )

        assert page.evaluate("window.__sameDocument === true")
        busy = wait_for(
            lambda: live_market.db.read(
                lambda: Round.objects.filter(status="CLEARED", jobs_matched__gt=0).order_by("id").first()
            ),
            timeout_s=TIMEOUT_S,
            what="a round that matched the job",
        )
        page.goto(f"{live_market.url}/ops/rounds/{busy.pk}/")
        stored = page.locator("#result-sha").inner_text()
        page.get_by_role("button", name="Replay this round").click()
        expect(page.locator("#replay-verdict")).to_contain_text("Replay matches", timeout=TIMEOUT_MS)
        assert page.locator("#replay-result-sha").inner_text() == stored == busy.result_sha256
        expect(page.get_by_role("link", name="Settlements")).to_be_visible()
        assert page.problems == []


class TestAccessibilityAndLayout:
    def test_logs_in_with_the_keyboard_alone(self, page, live_market):
        with live_market.db.turn():
            provider = ProviderFactory(user=user_with_password(ProviderUserFactory))
        page.goto(f"{live_market.url}/accounts/login/")

        username = page.locator("#id_username")
        for _ in range(15):  # the skip link, the header's links, then the form
            if username.evaluate("element => element === document.activeElement"):
                break
            page.keyboard.press("Tab")
        expect(username).to_be_focused()
        page.keyboard.type(provider.user.username)
        page.keyboard.press("Tab")
        page.keyboard.type("browser-test-passphrase-7")
        page.keyboard.press("Enter")

        expect(page.get_by_role("heading", name=provider.display_name)).to_be_visible()

    def test_pages_fit_a_phone_without_sideways_scrolling(self, page, live_market):
        gpu = gpu_of_an_online_provider(live_market)
        with live_market.db.turn():
            consumer = user_with_password(ConsumerFactory, balance=Decimal("100"))
            Provider.objects.filter(pk=gpu.provider_id).update(display_name="A provider with a long name")
        page.set_viewport_size({"width": 390, "height": 844})
        log_in(page, live_market, consumer)

        for path in ("/jobs/", "/jobs/new/", "/balance/", "/keys/"):
            page.goto(f"{live_market.url}{path}")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
        assert page.problems == []
