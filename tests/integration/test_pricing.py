"""Pricing against the database: Stackelberg quotes per resource class, auto-priced asks and floors,
and the quote for one job spec."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from auctions.mechanisms import MechanismError, price
from auctions.models import PriceQuote
from auctions.services import pricing as pricing_services
from auctions.services.pricing import job_quote, price_quotes_update
from auctions.services.rounds import round_clear, round_open
from market.models import JobRequest, Provider, Resource
from tests.conftest import NOW
from tests.factories import (
    ConsumerFactory,
    OperatorFactory,
    ProviderFactory,
    ResourceFactory,
    job_spec,
    job_submit,
)

pytestmark = pytest.mark.django_db

CLASS = "GPU/24G/eu-west"


def online_resource(*, region="eu-west", **fields):
    provider = ProviderFactory(region=region)
    Provider.objects.filter(pk=provider.pk).update(last_heartbeat_at=NOW)
    return ResourceFactory(provider=provider, **fields)


def bids(*prices: str):
    consumer = ConsumerFactory(balance=Decimal("10000"))
    return [job_submit(consumer=consumer, max_price_per_device_hour=Decimal(p)) for p in prices]


class TestPriceQuotesUpdate:
    def test_stores_a_quote_per_class_from_the_stackelberg_game(self):
        online_resource(ask_per_device_hour=Decimal("0.40"), price_floor=Decimal("0.10"))
        online_resource(ask_per_device_hour=Decimal("0.40"), price_floor=Decimal("0.20"))
        bids("1.00", "0.80", "0.60")

        quotes = price_quotes_update(now=NOW)

        assert [q.resource_class for q in quotes] == [CLASS]
        quote = PriceQuote.objects.get(resource_class=CLASS)
        # c = median floor 0.15; capacity = 2 free devices x 1 h; the followers are the three bids.
        game = {
            "game": "stackelberg",
            "valuations": [1.0, 0.8, 0.6],
            "unit_cost": 0.15,
            "capacity": 2.0,
            "pricing": "uniform",
        }
        expected = price(game)
        assert quote.inputs["game"] == game
        assert quote.recommended_ask == Decimal(repr(max(0.15, expected["price"]))).quantize(
            Decimal("0.000001")
        )
        assert Decimal("0.15") <= quote.recommended_ask <= Decimal("1.00")
        assert quote.expected_price == quote.recommended_ask  # no round history yet: p*
        assert quote.expected_utilisation == pytest.approx(min(1.0, expected["total_demand"] / 2.0))
        assert (quote.device_class, quote.region, quote.memory_tier_gib, quote.followers) == (
            "GPU",
            "eu-west",
            24,
            3,
        )
        assert quote.created_at == NOW

    def test_auto_priced_resources_take_the_recommended_ask_but_never_go_below_their_floor(self):
        follows = online_resource(
            ask_per_device_hour=Decimal("0.90"), price_floor=Decimal("0.10"), auto_pricing=True
        )
        floored = online_resource(
            ask_per_device_hour=Decimal("0.95"), price_floor=Decimal("0.90"), auto_pricing=True
        )
        manual = online_resource(ask_per_device_hour=Decimal("0.70"), price_floor=Decimal("0.10"))
        bids("1.00", "0.80", "0.60", "0.50")

        quote = price_quotes_update(now=NOW)[0]

        assert quote.recommended_ask < Decimal("0.90")
        follows.refresh_from_db()
        floored.refresh_from_db()
        manual.refresh_from_db()
        # Three providers lead (docs/eetorp.md): each auto-priced listing takes its own provider's ask.
        asks = {
            int(provider): Decimal(repr(ask)).quantize(Decimal("0.000001"))
            for provider, ask in quote.result["provider_asks"].items()
        }
        assert follows.ask_per_device_hour == asks[follows.provider_id] < Decimal("0.90")
        assert floored.ask_per_device_hour == max(asks[floored.provider_id], Decimal("0.90"))
        assert manual.ask_per_device_hour == Decimal("0.70")

    def test_a_class_without_demand_gets_no_quote(self):
        online_resource(ask_per_device_hour=Decimal("0.40"))

        assert price_quotes_update(now=NOW) == []
        assert not PriceQuote.objects.exists()

    def test_a_game_without_equilibrium_gives_no_quote_and_no_crash(self, monkeypatch):
        online_resource(ask_per_device_hour=Decimal("0.40"), auto_pricing=True)
        bids("1.00", "0.80")

        def no_equilibrium(doc, *, input_sha256=None):
            raise MechanismError("no_equilibrium", "no price attains the supremum")

        monkeypatch.setattr(pricing_services, "price", no_equilibrium)

        assert price_quotes_update(now=NOW) == []
        assert Resource.objects.get().ask_per_device_hour == Decimal("0.40")

    def test_expected_price_is_the_last_clearing_price_of_the_class(self):
        online_resource(ask_per_device_hour=Decimal("0.10"), price_floor=Decimal("0"), device_count=2)
        online_resource(ask_per_device_hour=Decimal("0.50"), price_floor=Decimal("0"))
        bids("1.00", "0.90", "0.40")  # two trades at (0.40 + 0.50) / 2 = 0.45
        round_clear(round_id=round_open(now=NOW).pk, now=NOW)
        bids("0.70")

        quote = price_quotes_update(now=NOW)[0]

        assert quote.expected_price == Decimal("0.450000")
        assert quote.followers == 2 + 2  # the queued bids (0.40 and 0.70) and the two leased ones


class TestJobQuote:
    def test_a_competitive_bid_would_clear_at_the_class_price(self):
        # With it: bids 1.00, 0.90, 0.40 against asks 0.10 x 2, 0.50: two trades at 0.45.
        online_resource(ask_per_device_hour=Decimal("0.10"), price_floor=Decimal("0"), device_count=2)
        online_resource(ask_per_device_hour=Decimal("0.50"), price_floor=Decimal("0"))
        bids("0.90", "0.40")

        answer = job_quote(spec=job_spec(max_price_per_device_hour=Decimal("1.00")), now=NOW)

        assert answer["resource_class"] == CLASS
        assert answer["would_clear_now"] is True
        assert answer["expected_price"] == Decimal("0.450000")
        assert answer["reason"] is None
        assert answer["chance_of_clearing"] is None  # no round history

    def test_a_low_bid_is_told_the_bid_that_would_clear(self):
        online_resource(ask_per_device_hour=Decimal("0.10"), price_floor=Decimal("0"), device_count=3)
        online_resource(ask_per_device_hour=Decimal("0.50"), price_floor=Decimal("0"))
        bids("1.00", "0.90", "0.80")

        answer = job_quote(spec=job_spec(max_price_per_device_hour=Decimal("0.05")), now=NOW)

        assert answer["would_clear_now"] is False
        assert answer["reason"] == "bid_below_clearing"
        assert answer["min_bid_to_clear"] is not None and answer["min_bid_to_clear"] > Decimal("0.05")
        assert str(answer["min_bid_to_clear"]) in answer["suggestion"]

    def test_a_job_larger_than_every_device_is_told_why(self):
        online_resource(ask_per_device_hour=Decimal("0.10"))

        answer = job_quote(
            spec=job_spec(requested_memory_per_device_gib=Decimal("200"), requested_device_count=1), now=NOW
        )

        assert answer["would_clear_now"] is False
        assert answer["reason"] == "memory_exceeds_every_resource"
        assert "24 GiB" in answer["suggestion"]

    def test_a_job_whose_region_has_no_supply_says_so(self):
        online_resource(region="us-east", ask_per_device_hour=Decimal("0.10"))

        answer = job_quote(spec=job_spec(region="ap-south"), now=NOW)

        assert answer["reason"] == "no_supply_in_region"

    def test_chance_of_clearing_is_the_share_of_recent_rounds_at_or_below_the_bid(self):
        online_resource(ask_per_device_hour=Decimal("0.10"), price_floor=Decimal("0"), device_count=2)
        online_resource(ask_per_device_hour=Decimal("0.50"), price_floor=Decimal("0"))
        bids("1.00", "0.90", "0.40")
        round_clear(round_id=round_open(now=NOW).pk, now=NOW)  # buyer price 0.45

        low = job_quote(spec=job_spec(max_price_per_device_hour=Decimal("0.30")), now=NOW)
        high = job_quote(spec=job_spec(max_price_per_device_hour=Decimal("0.60")), now=NOW)

        assert low["chance_of_clearing"] == 0.0
        assert high["chance_of_clearing"] == 1.0


class TestJobQuoteComesTrue:
    """`would_clear_now` is the next round's rule run on the book plus the job, not a guess."""

    def earlier_round_posting(self, price: float):
        from auctions.models import Round

        Round.objects.create(
            status=Round.Status.CLEARED,
            active_slot=None,
            opened_at=NOW,
            prices={CLASS: {"estimate": price, "buyer_price": None}},
        )

    def test_a_bid_above_the_ask_but_below_the_posted_price_would_not_clear(self):
        # The cheapest ask is 0.10, so the class-book answer says a 0.35 bid clears; the posted price
        # of the thin class is 0.40, so the next round would not match it.
        online_resource(ask_per_device_hour=Decimal("0.10"), price_floor=Decimal("0"))
        self.earlier_round_posting(0.4)
        spec = job_spec(max_price_per_device_hour=Decimal("0.35"))

        answer = job_quote(spec=spec, now=NOW)
        job_submit(consumer=ConsumerFactory(balance=Decimal("100")), **spec)
        round_obj = round_clear(round_id=round_open(now=NOW).pk, now=NOW)

        assert answer["would_clear_now"] is False
        assert answer["reason"] == "not_matched_next_round"
        assert round_obj.jobs_matched == 0

    def test_a_bid_the_next_round_matches_is_quoted_at_the_price_it_pays(self):
        online_resource(ask_per_device_hour=Decimal("0.10"), price_floor=Decimal("0"))
        self.earlier_round_posting(0.4)
        spec = job_spec(max_price_per_device_hour=Decimal("1.00"))

        answer = job_quote(spec=spec, now=NOW)
        job = job_submit(consumer=ConsumerFactory(balance=Decimal("100")), **spec)
        round_obj = round_clear(round_id=round_open(now=NOW).pk, now=NOW)

        assert answer["would_clear_now"] is True
        assert answer["expected_price"] == Decimal("0.400000")
        lease = round_obj.leases.get()
        assert (lease.job_id, lease.unit_price_paid) == (job.pk, answer["expected_price"])


class TestAnOddRegionAlreadyStored:
    """Input is checked (tests/api/test_hostile_input.py); rows written before that, or by hand, must
    still not stop the pricing, the dashboard or a round."""

    @pytest.mark.parametrize("region", ["eu/west", ""])
    def test_the_pricing_and_the_market_dashboard_carry_on(self, region):
        resource = ResourceFactory(price_floor=Decimal("0"), ask_per_device_hour=Decimal("0.2"))
        Provider.objects.filter(pk=resource.provider_id).update(
            last_heartbeat_at=timezone.now(), region=region
        )
        consumer = ConsumerFactory(balance=Decimal("100"))
        now = timezone.now()
        job = job_submit(consumer=consumer, now=now, deadline=now + timedelta(days=1), quant_bits=4)
        JobRequest.objects.filter(pk=job.pk).update(region=region)
        operator = Client()
        operator.force_login(OperatorFactory())

        quotes = price_quotes_update(now=now)
        page = operator.get(reverse("ops:market"))
        live = operator.get(reverse("ops:market-live"))

        label = region.replace("/", "-") or "-"
        assert [q.resource_class for q in quotes] == [f"GPU/24G/{label}"]
        assert page.status_code == 200 and live.status_code == 200
        assert f"GPU/24G/{label}" in live.content.decode()
