"""Cloud–edge tiers in a real browser (AI-Bazaar, docs/ai-bazaar.md): latency-bound jobs fill the one
edge device and overflow to the cloud; the public market page and the operator dashboard show the
overflow share and the price of each tier."""

from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from auctions.models import Round
from market.models import Provider
from tests.browser.conftest import TIMEOUT_S, log_in, user_with_password, wait_for
from tests.factories import ConsumerFactory, OperatorFactory, ProviderFactory, ResourceFactory, job_submit

pytestmark = pytest.mark.browser


def listed(market, *, tier: str, region: str, devices: int, ask: str):
    with market.db.turn():
        provider = ProviderFactory(region=region, tier=tier)
        ResourceFactory(
            provider=provider,
            device_count=devices,
            ask_per_device_hour=Decimal(ask),
            price_floor=Decimal("0"),
        )
    market.start_agent(provider)


def overflowed(market) -> Round | None:
    """The first round whose tiered book sent a job to the cloud."""

    def read():
        for round_obj in Round.objects.filter(status=Round.Status.CLEARED).order_by("id"):
            for book in (round_obj.mechanism or {}).get("books", []):
                if book.get("kind") == "tiered" and book["tiers"]["placed"]["CLOUD"]:
                    return round_obj
        return None

    return market.db.read(read)


class TestTierViews:
    def test_the_market_page_and_the_dashboard_show_overflow_share_and_price_per_tier(
        self, page, live_market
    ):
        listed(live_market, tier=Provider.Tier.EDGE, region="eu-west", devices=1, ask="0.80")
        listed(live_market, tier=Provider.Tier.CLOUD, region="eu-central", devices=8, ask="0.30")
        now = timezone.now()
        with live_market.db.turn():
            consumer = ConsumerFactory(balance=Decimal("100"))
            for _ in range(3):  # one turn: the same round sees all three
                job_submit(
                    consumer=consumer,
                    now=now,
                    deadline=now + timezone.timedelta(days=1),
                    quant_bits=4,
                    max_price_per_device_hour=Decimal("2.00"),
                    latency_sla_ms=40,
                )
        wait_for(
            lambda: overflowed(live_market), timeout_s=TIMEOUT_S, what="a round that overflowed to the cloud"
        )

        page.goto(f"{live_market.url}/market/")

        tiers = page.locator("#tiers")
        expect(tiers.get_by_role("heading", name="Cloud and edge tiers")).to_be_visible()
        expect(tiers.locator("[data-overflow-share]")).to_contain_text("%")
        row = tiers.locator('tr[data-tier-class="GPU"]')
        expect(row).to_be_visible()
        expect(tiers.locator("thead")).to_contain_text("Cloud price")
        expect(tiers.locator("thead")).to_contain_text("Edge price")
        cells = row.locator("td")
        assert cells.nth(2).inner_text().strip() not in ("", "0")  # jobs placed on the cloud
        assert cells.nth(5).inner_text().strip() != "—"  # the cloud leader's price
        assert page.problems == []

        with live_market.db.turn():
            operator = user_with_password(OperatorFactory)
        log_in(page, live_market, operator)
        page.goto(f"{live_market.url}/ops/market/")
        expect(page.locator("#tiers tr[data-tier-class='GPU']")).to_be_visible()
        assert page.problems == []
