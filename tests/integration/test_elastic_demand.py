"""Elastic demand (EETORP, docs/eetorp.md) against the database: submission rules, a round buying each
matched job its best response at the price it cleared, the replay, and settlement of what it bought."""

from decimal import Decimal

import pytest
from django.urls import reverse

from auctions.mechanisms import price
from auctions.mechanisms.elastic import best_response, choke_price
from auctions.models import Lease
from auctions.services.leases import lease_accept, lease_complete
from auctions.services.pricing import price_quotes_update
from auctions.services.provider_asks import MAX_FOLLOWERS, MAX_LEADERS, class_oligopoly
from auctions.services.rounds import round_clear, round_open, round_replay
from config.errors import InvalidInput
from market.models import JobRequest, LedgerAccount, Provider
from tests.conftest import NOW, later
from tests.factories import ConsumerFactory, ProviderFactory, ResourceFactory, job_submit
from tests.integration.pages import online_provider, quote_for, signed_in

pytestmark = pytest.mark.django_db


def online_resource(**fields):
    provider = ProviderFactory(region="eu-west")
    Provider.objects.filter(pk=provider.pk).update(last_heartbeat_at=NOW)
    fields.setdefault("price_floor", Decimal("0"))
    return ResourceFactory(provider=provider, **fields)


def elastic_job(consumer, *, weight: str, budget: str, unit: str = "device_hours", **fields):
    bounds = {name: fields.pop(name) for name in ("min_quantity", "max_quantity") if name in fields}
    return job_submit(
        consumer=consumer,
        quant_bits=4,
        workload_tokens=None,
        max_price_per_device_hour=None,
        budget=Decimal(budget),
        elastic={"unit": unit, "utility_weight": Decimal(weight), **bounds},
        **fields,
    )


def escrow(job) -> Decimal:
    return LedgerAccount.objects.get(kind=LedgerAccount.Kind.ESCROW, job=job).balance


class TestElasticSubmission:
    def test_derives_the_bid_from_the_utility_and_holds_the_budget(self):
        consumer = ConsumerFactory(balance=Decimal("100"))

        job = elastic_job(consumer, weight="3", budget="5", min_quantity=Decimal("2"))

        choke = choke_price(weight=3.0, budget=5.0, min_quantity=2.0)  # 3 ln 3 / 2 = 1.6479...
        assert job.max_price_per_device_hour == Decimal(repr(choke)).quantize(
            Decimal("0.000001"), "ROUND_DOWN"
        )
        assert job.device_count == 1
        assert job.elastic["unit"] == "device_hours"
        assert job.elastic["unit_device_hours"] == 1.0
        assert escrow(job) == Decimal("5")

    def test_a_token_unit_prices_a_million_tokens_of_its_model(self):
        consumer = ConsumerFactory(balance=Decimal("100"))

        job = elastic_job(consumer, weight="2", budget="5", unit="million_tokens")

        hours = job.elastic["unit_device_hours"]  # reference device-hours per million tokens of 7B
        assert 0 < hours < 1
        assert job.max_price_per_device_hour == Decimal(repr(2 / hours)).quantize(
            Decimal("0.000001"), "ROUND_DOWN"
        )

    @pytest.mark.parametrize(
        ("overrides", "code"),
        [
            ({"max_price_per_device_hour": Decimal("1")}, "elastic_with_bid"),
            ({"workload_tokens": 1000}, "elastic_with_workload"),
            ({"kind": "FINE_TUNE", "elastic_unit": "million_tokens"}, "elastic_unit_mismatch"),
            ({"min_quantity": Decimal("5"), "max_quantity": Decimal("1")}, "elastic_bounds_inverted"),
            ({"params_billion": Decimal("70"), "quant_bits": 16}, "elastic_multi_device"),
        ],
    )
    def test_refuses_inconsistent_specs_with_stable_codes(self, overrides, code):
        consumer = ConsumerFactory(balance=Decimal("100"))
        bounds = {k: overrides.pop(k) for k in ("min_quantity", "max_quantity") if k in overrides}
        unit = overrides.pop("elastic_unit", "device_hours")
        spec = {
            "quant_bits": 4,
            "workload_tokens": None,
            "max_price_per_device_hour": None,
            "elastic": {"unit": unit, "utility_weight": Decimal("3"), **bounds},
            **overrides,
        }

        with pytest.raises(InvalidInput) as caught:
            job_submit(consumer=consumer, **spec)

        assert caught.value.code == code
        assert not JobRequest.objects.filter(consumer=consumer).exists()


class TestElasticRound:
    def test_buys_each_job_its_best_response_at_the_clearing_price_and_settles_it(self):
        resource = online_resource(device_count=4, ask_per_device_hour=Decimal("0.4"))
        consumer = ConsumerFactory(balance=Decimal("1000"))
        rich = elastic_job(consumer, weight="8", budget="50")
        poor = elastic_job(consumer, weight="8", budget="1")  # the budget binds
        capped = elastic_job(consumer, weight="8", budget="50", max_quantity=Decimal("3"))

        round_obj = round_clear(round_id=round_open(now=NOW).pk, now=NOW)

        speed = float(resource.speed_factor)
        hours_left = 24.0 * speed
        leases = {lease.job_id: lease for lease in Lease.objects.filter(round=round_obj)}
        assert set(leases) == {rich.pk, poor.pk, capped.pk}
        for job, bound in ((rich, None), (poor, None), (capped, 3.0)):
            lease = leases[job.pk]
            price = float(lease.unit_price_paid) / speed  # per reference device-hour (unit: device-hours)
            cap = hours_left if bound is None else min(bound, hours_left)
            expected = best_response(weight=8.0, price=price, budget=float(job.budget), max_quantity=cap)
            assert float(lease.expected_device_hours) == pytest.approx(expected / speed, abs=2e-6)
            assert lease.max_device_hours == lease.expected_device_hours
            job.refresh_from_db()
            assert job.elastic["bought"]["round"] == round_obj.pk
            assert job.elastic["bought"]["quantity"] == pytest.approx(expected, rel=1e-12)
        assert leases[poor.pk].expected_device_hours * leases[poor.pk].unit_price_paid <= Decimal("1")
        assert float(leases[capped.pk].expected_device_hours) * speed == pytest.approx(3.0, abs=1e-5)
        assert round_replay(round_id=round_obj.pk)["match"] is True
        assert round_obj.mechanism["books"][-1] == {"kind": "elastic"}

        lease = leases[rich.pk]
        accepted = lease_accept(provider=lease.provider, lease_id=lease.pk, now=later(minutes=1))
        hours = accepted.max_device_hours
        seconds = (hours * 3600).quantize(Decimal("0.001"), "ROUND_DOWN")
        _, settled = lease_complete(
            provider=lease.provider,
            lease_id=lease.pk,
            tokens_in=0,
            tokens_out=0,
            device_seconds=seconds,
            now=later(hours=23),
        )

        charge = (seconds / 3600 * lease.unit_price_paid).quantize(Decimal("0.000001"))
        assert abs(settled.charge - charge) <= Decimal("0.000001")
        assert settled.refund == Decimal("50") - settled.charge
        assert escrow(rich) == 0

    def test_a_job_whose_minimum_it_cannot_afford_at_the_price_waits_with_a_reason(self):
        resource = online_resource(device_count=2, ask_per_device_hour=Decimal("0.4"))
        consumer = ConsumerFactory(balance=Decimal("1000"))
        buyer = elastic_job(consumer, weight="8", budget="50")
        # Choke price min(8 ln 11 / 10, 1 / 10) = 0.1 per reference device-hour: below the device's.
        choosy = elastic_job(consumer, weight="8", budget="1", min_quantity=Decimal("10"))
        price = float(resource.ask_per_device_hour) / float(resource.speed_factor)
        assert float(choosy.max_price_per_device_hour) < price

        round_obj = round_clear(round_id=round_open(now=NOW).pk, now=NOW)

        matched = set(Lease.objects.filter(round=round_obj).values_list("job_id", flat=True))
        choosy.refresh_from_db()
        assert matched == {buyer.pk}
        assert choosy.status == JobRequest.Status.QUEUED
        assert choosy.waiting_reason["code"] == "bid_below_price"
        assert choosy.waiting_reason["price"] == pytest.approx(price)


class TestProviderAsks:
    def test_each_provider_leads_at_its_own_equilibrium_ask_from_its_floor(self):
        cheap = online_resource(
            ask_per_device_hour=Decimal("0.9"), price_floor=Decimal("0.1"), auto_pricing=True
        )
        dear = online_resource(
            ask_per_device_hour=Decimal("0.9"), price_floor=Decimal("0.3"), auto_pricing=True
        )
        consumer = ConsumerFactory(balance=Decimal("1000"))
        for bid in ("1.0", "0.8", "0.7"):
            job_submit(consumer=consumer, max_price_per_device_hour=Decimal(bid), quant_bits=4)
        elastic_job(consumer, weight="1.2", budget="3")

        quote = price_quotes_update(now=NOW)[0]

        game = quote.inputs["oligopoly"]
        assert game["costs"] == [0.1, 0.3]  # one leader per provider, cost = its floor
        assert sorted(row[0] for row in game["valuations"]) == [0.7, 0.8, 1.0, 1.2]  # elastic: choke price
        assert 3.0 in game["budgets"]
        result = quote.result["oligopoly"]
        assert result["status"] == "verified"
        assert price(game)["prices"] == result["prices"]  # the stored game reproduces the asks
        asks = quote.result["provider_asks"]
        assert asks == {
            str(cheap.provider_id): result["prices"][0],
            str(dear.provider_id): result["prices"][1],
        }
        assert 0.1 < asks[str(cheap.provider_id)] < asks[str(dear.provider_id)]
        cheap.refresh_from_db()
        dear.refresh_from_db()
        assert cheap.ask_per_device_hour == Decimal(repr(result["prices"][0])).quantize(Decimal("0.000001"))
        assert dear.ask_per_device_hour == Decimal(repr(result["prices"][1])).quantize(Decimal("0.000001"))

    def test_a_class_with_one_provider_keeps_the_pooled_stackelberg_quote(self):
        online_resource(ask_per_device_hour=Decimal("0.9"), price_floor=Decimal("0.1"), device_count=2)
        consumer = ConsumerFactory(balance=Decimal("1000"))
        job_submit(consumer=consumer, max_price_per_device_hour=Decimal("1.0"), quant_bits=4)

        quote = price_quotes_update(now=NOW)[0]

        assert "provider_asks" not in quote.result
        assert quote.inputs["game"]["unit_cost"] == 0.1

    def test_the_console_shows_a_provider_its_own_equilibrium_ask(self):
        provider = online_provider(region="eu-west")
        ResourceFactory(
            provider=provider, memory_per_device_gib=Decimal("24"), ask_per_device_hour=Decimal("0.4")
        )
        quote = quote_for("GPU/24G/eu-west", ask="0.3550")
        quote.result = {"provider_asks": {str(provider.pk): 0.2875, str(provider.pk + 1): 0.31}}
        quote.save()

        body = signed_in(provider.user).get(reverse("pages:provider-console")).content.decode()

        assert "0.2875" in body and "0.3550" not in body


class TestElasticJobPage:
    def test_the_job_page_shows_the_utility_and_then_the_purchase(self):
        online_resource(device_count=1, ask_per_device_hour=Decimal("0.4"))
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = elastic_job(consumer, weight="8", budget="50", max_quantity=Decimal("3"))
        page = reverse("pages:job-detail", args=[job.pk])

        before = signed_in(consumer).get(page).content.decode()
        round_clear(round_id=round_open(now=NOW).pk, now=NOW)
        after = signed_in(consumer).get(page).content.decode()

        assert "worth 8 × ln(1 + q)" in before and "buys its best response" in before
        assert "bought <strong>3.000</strong>" in after


class TestElasticWithTiers:
    def test_a_latency_bound_elastic_job_buys_once_from_the_elastic_book_not_the_tiered_one(self):
        for tier, region, ask in (
            (Provider.Tier.EDGE, "eu-west", "0.80"),
            (Provider.Tier.CLOUD, "eu-central", "0.30"),
        ):
            provider = ProviderFactory(region=region, tier=tier)
            Provider.objects.filter(pk=provider.pk).update(last_heartbeat_at=NOW)
            ResourceFactory(
                provider=provider, device_count=4, ask_per_device_hour=Decimal(ask), price_floor=Decimal("0")
            )
        consumer = ConsumerFactory(balance=Decimal("1000"))
        job = elastic_job(consumer, weight="8", budget="50", latency_sla_ms=40)

        round_obj = round_clear(round_id=round_open(now=NOW).pk, now=NOW)

        kinds = [book["kind"] for book in round_obj.mechanism["books"]]
        assert "tiered" not in kinds and kinds[-2:] == ["elastic_posted", "elastic"]
        (lease,) = Lease.objects.filter(job=job)
        # Strict by its SLA: the cheaper cloud device in eu-central lies within 40 ms of eu-west.
        assert lease.unit_price_paid == Decimal("0.30")
        assert round_replay(round_id=round_obj.pk)["match"] is True


class TestProviderAsksReduction:
    def test_many_providers_share_leaders_by_cost_and_each_gets_its_groups_ask(self):
        resources = [{"provider_id": p, "price_floor": Decimal(p) / 10} for p in range(1, 8)]
        followers = [(1.0 + i / 10, None) for i in range(40)]

        answer = class_oligopoly(resources=resources, followers=followers)

        game = answer["game"]
        assert len(game["costs"]) == MAX_LEADERS and len(game["valuations"]) == MAX_FOLLOWERS
        assert game["costs"] == pytest.approx([0.15, 0.35, 0.55, 0.7])  # groups 12, 34, 56, 7: medians
        assert game["valuations"][0][0] == 4.9 and game["valuations"][-1][0] == 1.0  # quantiles, ends kept
        prices = answer["result"]["prices"]
        asks = answer["provider_asks"]
        assert asks["1"] == asks["2"] == prices[0] and asks["7"] == prices[3]
