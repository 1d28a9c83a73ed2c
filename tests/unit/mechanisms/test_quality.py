"""Quality-adjusted asks (auctions.mechanisms.quality): the properties its docstring states, checked
on random books cleared by McAfee with the asks adjusted by fixed, known reputation factors."""

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from auctions.mechanisms import clear
from auctions.mechanisms.quality import QualityRule, adjusted_ask, quality_factor, receipt

EXAMPLES = settings(max_examples=150, deadline=None)
prices = st.floats(min_value=1.0, max_value=100.0, allow_nan=False).map(lambda x: round(x, 2))
reputations = st.floats(min_value=0.0, max_value=1.0, allow_nan=False).map(lambda x: round(x, 3))


@st.composite
def markets(draw):
    bids = draw(st.lists(prices, min_size=2, max_size=8))
    costs = draw(st.lists(prices, min_size=2, max_size=8))
    reps = draw(st.lists(reputations, min_size=len(costs), max_size=len(costs)))
    weight = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]))
    return bids, costs, reps, QualityRule(weight)


def _clear(bids, asks, factors, mechanism="mcafee"):
    doc = {
        "mechanism": mechanism,
        "bids": {"id": [f"b{i}" for i in range(len(bids))], "price": bids, "quantity": [1] * len(bids)},
        "asks": {
            "id": [f"s{i}" for i in range(len(asks))],
            "price": [adjusted_ask(a, f) for a, f in zip(asks, factors, strict=True)],
            "quantity": [1] * len(asks),
        },
    }
    return clear(doc)


def _utility(result, seller: int, cost: float, factor: float) -> float:
    if not result["fills"].get(f"s{seller}"):
        return 0.0
    return receipt(result["seller_price"], factor) - cost


class TestQualityFactor:
    def test_a_spotless_provider_clears_on_its_own_ask(self):
        assert adjusted_ask(12.5, quality_factor(1.0, QualityRule(0.5))) == 12.5

    def test_lost_reputation_raises_the_effective_ask_by_the_weight(self):
        assert quality_factor(0.0, QualityRule(0.5)) == 1.5
        assert quality_factor(0.6, QualityRule(0.5)) == pytest.approx(1.2)

    def test_refuses_a_negative_or_infinite_weight(self):
        for weight in (-0.1, math.inf, math.nan):
            with pytest.raises(ValueError):
                QualityRule(weight)


class TestQualityAdjustedMcAfee:
    @EXAMPLES
    @given(markets())
    def test_every_filled_seller_is_paid_at_least_its_reported_ask(self, market):
        bids, costs, reps, rule = market
        factors = [quality_factor(r, rule) for r in reps]

        result = _clear(bids, costs, factors)

        for i, cost in enumerate(costs):
            if result["fills"].get(f"s{i}"):
                assert receipt(result["seller_price"], factors[i]) >= cost - 1e-9

    @EXAMPLES
    @given(markets())
    def test_no_trade_runs_a_deficit(self, market):
        bids, costs, reps, rule = market
        factors = [quality_factor(r, rule) for r in reps]

        result = _clear(bids, costs, factors)

        for i in range(len(costs)):
            if result["fills"].get(f"s{i}"):
                assert receipt(result["seller_price"], factors[i]) <= result["buyer_price"] + 1e-9

    @EXAMPLES
    @given(markets(), st.data())
    def test_no_seller_gains_by_misreporting_its_price(self, market, data):
        bids, costs, reps, rule = market
        factors = [quality_factor(r, rule) for r in reps]
        seller = data.draw(st.integers(min_value=0, max_value=len(costs) - 1))
        lie = data.draw(prices)
        assume(lie != costs[seller])
        truthful = _utility(_clear(bids, costs, factors), seller, costs[seller], factors[seller])

        reported = list(costs)
        reported[seller] = lie
        deviated = _utility(_clear(bids, reported, factors), seller, costs[seller], factors[seller])

        assert deviated <= truthful + 1e-9

    @EXAMPLES
    @given(markets())
    def test_the_book_prefers_the_better_record_at_equal_asks(self, market):
        bids, costs, reps, rule = market
        assume(rule.weight > 0)
        asks = [costs[0]] * len(costs)
        factors = [quality_factor(r, rule) for r in reps]

        result = _clear(bids, asks, factors)

        filled = [i for i in range(len(asks)) if result["fills"].get(f"s{i}")]
        unfilled = [i for i in range(len(asks)) if not result["fills"].get(f"s{i}")]
        for i in filled:
            for j in unfilled:
                assert reps[i] >= reps[j] or factors[i] == factors[j]
