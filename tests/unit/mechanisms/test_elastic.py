"""Elastic demand (the EETORP follower): properties of the best response on random inputs (Hypothesis)
and worked examples of the `elastic_demand` book."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from auctions.mechanisms import MechanismError, clear
from auctions.mechanisms.elastic import best_response, choke_price, utility
from auctions.mechanisms.stackelberg import log_demand

EXAMPLES = settings(max_examples=300, deadline=None)
positive = st.floats(min_value=0.01, max_value=100.0, allow_nan=False, allow_infinity=False)
prices = st.floats(min_value=0.0, max_value=100.0, allow_nan=False, allow_infinity=False)
minimums = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=20.0))


@st.composite
def followers(draw):
    low = draw(minimums)
    high = low + draw(st.floats(min_value=0.01, max_value=200.0))
    return {
        "weight": draw(positive),
        "budget": draw(positive),
        "min_quantity": low,
        "max_quantity": high,
    }


def _feasible_grid(f: dict, price: float) -> np.ndarray:
    cap = f["max_quantity"] if price <= 0 else min(f["max_quantity"], f["budget"] / price)
    points = [0.0]
    if cap >= f["min_quantity"]:
        points.extend(np.linspace(f["min_quantity"], cap, 4001).tolist())
    return np.array(points)


class TestBestResponse:
    @EXAMPLES
    @given(followers(), prices)
    def test_maximises_the_followers_utility_over_the_feasible_set(self, f, price):
        chosen = best_response(price=price, **f)

        grid = _feasible_grid(f, price)
        values = f["weight"] * np.log1p(grid) - price * grid
        assert utility(f["weight"], price, chosen) >= values.max() - 1e-9 * max(1.0, abs(values.max()))

    @EXAMPLES
    @given(followers(), prices)
    def test_stays_within_budget_and_bounds(self, f, price):
        chosen = best_response(price=price, **f)

        assert price * chosen <= f["budget"] * (1 + 1e-12)
        assert chosen == 0 or f["min_quantity"] <= chosen <= f["max_quantity"]
        assert utility(f["weight"], price, chosen) >= 0

    @EXAMPLES
    @given(followers(), prices, prices)
    def test_is_non_increasing_in_price(self, f, p1, p2):
        low, high = sorted((p1, p2))

        assert best_response(price=high, **f) <= best_response(price=low, **f)

    @EXAMPLES
    @given(followers(), prices, positive)
    def test_is_non_decreasing_in_budget_and_weight(self, f, price, extra):
        base = best_response(price=price, **f)

        assert best_response(price=price, **{**f, "budget": f["budget"] + extra}) >= base
        assert best_response(price=price, **{**f, "weight": f["weight"] + extra}) >= base

    @EXAMPLES
    @given(followers(), st.floats(min_value=0.001, max_value=10.0))
    def test_buys_below_the_choke_price_and_nothing_above_it(self, f, factor):
        choke = choke_price(weight=f["weight"], budget=f["budget"], min_quantity=f["min_quantity"])
        assume(choke > 1e-6)

        below = best_response(price=choke / (1 + factor), **f)
        above = best_response(price=choke * (1 + factor), **f)

        assert below > 0
        assert above == 0

    @EXAMPLES
    @given(positive, st.floats(min_value=0.01, max_value=100.0))
    def test_without_bounds_is_the_stackelberg_followers_demand(self, weight, price):
        chosen = best_response(weight=weight, price=price, budget=1e12, max_quantity=1e12)

        expected = float(log_demand(np.array([weight]), np.array([price]))[0])
        assert chosen == pytest.approx(expected, rel=1e-12, abs=1e-12)


class TestElasticDemandBook:
    def test_reports_each_followers_purchase_spend_and_utility(self):
        doc = {
            "mechanism": "elastic_demand",
            "followers": [
                {"id": "j1", "weight": 10.0, "price": 2.0, "budget": 100.0, "max_quantity": 50.0},
                {"id": "j2", "weight": 10.0, "price": 2.0, "budget": 4.0, "max_quantity": 50.0},
                {"id": "j3", "weight": 1.0, "price": 2.0, "budget": 4.0, "max_quantity": 50.0},
                {
                    "id": "j4",
                    "weight": 10.0,
                    "price": 2.0,
                    "budget": 100.0,
                    "min_quantity": 1,
                    "max_quantity": 3,
                },
            ],
        }

        result = clear(doc)

        assert result["quantities"] == {"j1": 4.0, "j2": 2.0, "j4": 3.0}  # 10/2 - 1; budget 4/2; capped
        assert result["spend"] == {"j1": 8.0, "j2": 4.0, "j4": 6.0}
        assert result["utilities"]["j1"] == pytest.approx(10 * math.log(5) - 8)
        assert result["declined"] == ["j3"]  # its first unit is worth 1 < 2
        assert clear(doc) == result  # deterministic: a replay gives the same result

    def test_declines_when_the_minimum_is_not_worth_its_price(self):
        # a ln(1 + 4) / 4 = 0.402 a: at price 0.5 a, even the minimum leaves a loss.
        doc = {
            "mechanism": "elastic_demand",
            "followers": [
                {"id": 1, "weight": 2.0, "price": 1.0, "budget": 100.0, "min_quantity": 4, "max_quantity": 9}
            ],
        }

        assert clear(doc)["declined"] == ["1"]

    @pytest.mark.parametrize(
        "row",
        [
            {"id": "a", "weight": 0, "price": 1, "budget": 1, "max_quantity": 1},
            {"id": "a", "weight": 1, "price": -1, "budget": 1, "max_quantity": 1},
            {"id": "a", "weight": 1, "price": 1, "budget": 0, "max_quantity": 1},
            {"id": "a", "weight": 1, "price": 1, "budget": 1, "max_quantity": 1, "min_quantity": 2},
            {"id": "a", "weight": True, "price": 1, "budget": 1, "max_quantity": 1},
            {"id": "", "weight": 1, "price": 1, "budget": 1, "max_quantity": 1},
            {"id": "a", "weight": 1, "price": float("nan"), "budget": 1, "max_quantity": 1},
        ],
    )
    def test_refuses_bad_followers(self, row):
        with pytest.raises(MechanismError) as caught:
            clear({"mechanism": "elastic_demand", "followers": [row]})

        assert caught.value.code == "bad_input"

    def test_refuses_repeated_ids(self):
        row = {"id": "a", "weight": 1, "price": 1, "budget": 1, "max_quantity": 1}

        with pytest.raises(MechanismError):
            clear({"mechanism": "elastic_demand", "followers": [row, row]})
