"""Pricing games against the public example, brute-force price grids and first-order conditions.
Hypothesis settings: 60 examples for the uniform grid check, 40 for per-user capacity."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auctions.mechanisms import MechanismError, price


def stackelberg(valuations, cost, capacity=None, pricing="uniform"):
    return {
        "game": "stackelberg",
        "valuations": valuations,
        "unit_cost": cost,
        "capacity": capacity,
        "pricing": pricing,
    }


def grid_revenue(valuations, cost, capacity, points=200_001):
    """Best revenue over a dense grid of uniform prices in (0, max a], capacity respected."""
    a = np.asarray(valuations, dtype=float)
    grid = np.linspace(max(cost, 1e-9), max(a.max(), cost) + 1e-9, points)
    demand = np.maximum(0.0, a[None, :] / grid[:, None] - 1.0).sum(axis=1)
    revenue = (grid - cost) * demand
    if capacity is not None:
        revenue = np.where(demand <= capacity + 1e-12, revenue, -np.inf)
    return float(revenue.max())


def is_plain_json(value):
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(is_plain_json(v) for v in value)
    return value is None or type(value) in (str, float, int, bool)


valuation_lists = st.lists(
    st.floats(0.0, 20.0, allow_nan=False).map(lambda x: round(x, 3)), min_size=1, max_size=8
)


class TestStackelbergUniform:
    def test_matches_the_public_example(self):
        doc = stackelberg([4, 6, 8, 10], 1)

        result = price(doc)

        assert result["price"] == pytest.approx(math.sqrt(7), abs=1e-10)
        assert result["price"] == pytest.approx(2.6457513111, abs=1e-10)
        assert result["leader_revenue"] == pytest.approx((math.sqrt(28) - 2) ** 2, abs=1e-9)
        assert result["leader_revenue"] == pytest.approx(10.8339895115, abs=1e-9)
        assert result["capacity_binding"] is False

    def test_derives_demands_utilities_and_welfare_from_the_price(self):
        doc = stackelberg([4, 6, 8, 10], 1)

        result = price(doc)

        p = math.sqrt(7)
        assert result["demands"] == pytest.approx([a / p - 1 for a in (4, 6, 8, 10)])
        assert result["follower_utilities"][3] == pytest.approx(10 * math.log(10 / p) - p * (10 / p - 1))
        assert result["welfare"] == pytest.approx(
            sum(a * math.log(a / p) for a in (4, 6, 8, 10)) - 1 * result["total_demand"]
        )
        assert 0 < result["efficiency"] < 1

    @settings(max_examples=60, deadline=None)
    @given(
        valuation_lists,
        st.floats(0.05, 10.0).map(lambda x: round(x, 3)),
        st.one_of(st.none(), st.floats(0.0, 10.0).map(lambda x: round(x, 3))),
    )
    def test_no_price_on_a_dense_grid_earns_more(self, valuations, cost, capacity):
        doc = stackelberg(valuations, cost, capacity)

        result = price(doc)

        assert result["leader_revenue"] >= grid_revenue(valuations, cost, capacity) - 1e-9
        assert result["leader_revenue"] <= grid_revenue(valuations, cost, capacity) + 1e-3 * (
            1 + max(valuations)
        )
        if capacity is not None:
            assert result["total_demand"] <= capacity + 1e-9

    def test_checks_every_band_because_revenue_is_only_piecewise_concave(self):
        # Band 1 (only a = 100 served) has stationary price 10, revenue 81; band 2 (both served) has
        # stationary price sqrt(101/2) = 7.1 but the clip to [0, 1] leaves price 1, revenue 0.
        doc = stackelberg([100, 1], 1)

        result = price(doc)

        assert result["price"] == pytest.approx(10.0)
        assert result["leader_revenue"] == pytest.approx(81.0)

    def test_sells_exactly_the_capacity_when_it_binds(self):
        # Unconstrained demand at sqrt(7) is 6.58 > 2, so the price rises to a capacity price. Band 4's,
        # 28 / 6 = 4.67, lies above a = 4, outside its band; band 3's, 24 / (3 + 2) = 4.8, lies in [4, 6]
        # and beats band 3's stationary price sqrt(24 / 3) = 2.83, which the clip raises to it.
        doc = stackelberg([4, 6, 8, 10], 1, capacity=2)

        result = price(doc)

        assert result["price"] == pytest.approx(4.8)
        assert result["leader_revenue"] == pytest.approx(3.8 * 2)
        assert result["total_demand"] == pytest.approx(2.0)
        assert result["capacity_binding"] is True

    def test_prices_at_market_clearing_with_zero_cost_and_a_capacity(self):
        # c = 0: revenue sum (a_i - p)+ falls with p, so the leader sells exactly C at the clearing price.
        # Serving 6, 8, 10: 24 / p - 3 = 2 gives p = 4.8, where a = 4 buys nothing.
        doc = stackelberg([4, 6, 8, 10], 0, capacity=2)

        result = price(doc)

        assert result["price"] == pytest.approx(4.8)
        assert result["leader_revenue"] == pytest.approx(9.6)
        assert result["capacity_binding"] is True
        assert result["efficiency"] == pytest.approx(1.0)

    def test_sells_nothing_when_cost_exceeds_every_valuation(self):
        doc = stackelberg([1, 2], 3)

        result = price(doc)

        assert result["total_demand"] == 0.0
        assert result["leader_revenue"] == 0.0
        assert result["price"] == 3.0

    @pytest.mark.parametrize("pricing", ["uniform", "per_user"])
    def test_has_no_equilibrium_with_zero_cost_and_no_capacity(self, pricing):
        doc = stackelberg([4, 6], 0, None, pricing)

        with pytest.raises(MechanismError) as raised:
            price(doc)

        assert raised.value.code == "no_equilibrium"

    def test_returns_plain_json_and_the_input_hash(self):
        doc = stackelberg(np.array([4.0, 6.0, 8.0, 10.0]), 1.0)

        result = price(doc, input_sha256="h")

        assert is_plain_json(result)
        json.dumps(result, allow_nan=False)
        assert result["input_sha256"] == "h"


class TestStackelbergPerUser:
    def test_charges_sqrt_of_cost_times_valuation_when_capacity_is_slack(self):
        doc = stackelberg([4, 9], 1, None, "per_user")

        result = price(doc)

        assert result["prices"] == pytest.approx([2.0, 3.0])
        assert result["demands"] == pytest.approx([1.0, 2.0])
        assert result["leader_revenue"] == pytest.approx(1 * 1 + 2 * 2)

    def test_raises_every_price_by_the_same_multiplier_until_capacity_holds(self):
        # Demand at level L = c + lambda: sqrt(4/L) + sqrt(9/L) - 2 = 1 gives sqrt L = 5/3, L = 25/9.
        doc = stackelberg([4, 9], 1, 1, "per_user")

        result = price(doc)

        assert result["prices"] == pytest.approx([math.sqrt(4 * 25 / 9), math.sqrt(9 * 25 / 9)])
        assert result["total_demand"] == pytest.approx(1.0)
        assert result["capacity_binding"] is True

    def test_quotes_a_price_at_or_above_valuation_to_users_it_does_not_serve(self):
        doc = stackelberg([1, 16], 2, None, "per_user")

        result = price(doc)

        assert result["prices"][0] >= 1.0
        assert result["demands"][0] == 0.0

    @settings(max_examples=40, deadline=None)
    @given(valuation_lists, st.floats(0.0, 5.0).map(lambda x: round(x, 3)), st.floats(0.01, 5.0))
    def test_never_sells_more_than_the_capacity(self, valuations, cost, capacity):
        doc = stackelberg(valuations, cost, capacity, "per_user")

        result = price(doc)

        assert result["total_demand"] <= capacity * (1 + 1e-12) + 1e-12
        assert result["efficiency"] <= 1 + 1e-9


class TestLinearOligopoly:
    def test_solves_the_symmetric_duopoly_by_hand(self):
        # FOC with c = 0: 10 - 4p + p = 0, so p = 10/3, D = 10 - 2p + p = 20/3.
        doc = {"game": "linear_oligopoly", "alpha": 10, "beta": 2, "gamma": 1, "costs": [0, 0]}

        result = price(doc)

        assert result["prices"] == pytest.approx([10 / 3, 10 / 3])
        assert result["demands"] == pytest.approx([20 / 3, 20 / 3])
        assert result["profits"] == pytest.approx([200 / 9, 200 / 9])

    def test_satisfies_every_first_order_condition(self):
        alpha, beta, gamma, costs = 20.0, 3.0, 1.0, [1.0, 2.5, 4.0]
        doc = {"game": "linear_oligopoly", "alpha": alpha, "beta": beta, "gamma": gamma, "costs": costs}

        result = price(doc)

        prices = np.array(result["prices"])
        for j, c in enumerate(costs):

            def profit(p, j=j, c=c):
                others = prices.sum() - prices[j]
                return (p - c) * (alpha - beta * p + gamma * others)

            h = 1e-5
            assert (profit(prices[j] + h) - profit(prices[j] - h)) / (2 * h) == pytest.approx(0.0, abs=1e-6)
            assert result["profits"][j] == pytest.approx(profit(prices[j]))

    def test_refuses_an_unstable_market(self):
        # 2 beta = 2 is not above (M - 1) gamma = 2.
        doc = {"game": "linear_oligopoly", "alpha": 10, "beta": 1, "gamma": 1, "costs": [0, 0, 0]}

        with pytest.raises(MechanismError) as raised:
            price(doc)

        assert raised.value.code == "unstable_market"


class TestBudgetOligopoly:
    def test_verifies_independent_monopolies_when_budgets_never_bind(self):
        # With slack budgets each leader is a Stackelberg monopolist on its own column.
        valuations = [[10, 8], [6, 9], [12, 4]]
        doc = {"game": "budget_oligopoly", "valuations": valuations, "budgets": [1e3] * 3, "costs": [1, 1]}

        result = price(doc)

        assert result["status"] == "verified"
        for j in range(2):
            column = [row[j] for row in valuations]
            monopoly = price(stackelberg(column, 1))
            assert result["prices"][j] == pytest.approx(monopoly["price"], rel=1e-6)
            assert result["profits"][j] == pytest.approx(monopoly["leader_revenue"], rel=1e-9)
        assert result["max_deviation_gain"] <= 1e-6

    def test_followers_spend_exactly_their_binding_budgets(self):
        doc = {
            "game": "budget_oligopoly",
            "valuations": [[10, 8], [6, 9]],
            "budgets": [0.5, 100],
            "costs": [1, 1],
        }

        result = price(doc)

        x, p = np.array(result["demands"]), np.array(result["prices"])
        assert float(x[0] @ p) == pytest.approx(0.5, rel=1e-9)
        bought = x[0] > 0
        marginal = np.array([10, 8])[bought] / ((1 + x[0][bought]) * p[bought])
        assert marginal == pytest.approx(np.full(bought.sum(), marginal[0]))

    def test_is_honest_when_best_responses_cycle(self):
        # Budgets switch between slack and binding around the responses: the dynamics settle into a cycle.
        doc = {
            "game": "budget_oligopoly",
            "valuations": [[10, 8], [6, 9], [12, 4]],
            "budgets": [3, 2, 4],
            "costs": [1, 1],
        }

        result = price(doc)

        assert result["status"] == "unverified"
        assert result["max_deviation_gain"] > 1e-6
        assert result["rounds"] == 200

    def test_is_honest_when_stopped_early(self):
        doc = {
            "game": "budget_oligopoly",
            "valuations": [[10, 8], [6, 9], [12, 4]],
            "budgets": [3, 2, 4],
            "costs": [1, 1],
            "max_rounds": 1,
        }

        result = price(doc)

        assert (result["status"], result["rounds"]) == ("unverified", 1)
        assert is_plain_json(result)


class TestValidation:
    @pytest.mark.parametrize(
        "doc",
        [
            {"game": "stackelberg", "unit_cost": 1},
            {"game": "stackelberg", "valuations": [], "unit_cost": 1},
            {"game": "stackelberg", "valuations": [1, "2"], "unit_cost": 1},
            {"game": "stackelberg", "valuations": [1, True], "unit_cost": 1},
            {"game": "stackelberg", "valuations": [1, float("nan")], "unit_cost": 1},
            {"game": "stackelberg", "valuations": [1, -2], "unit_cost": 1},
            {"game": "stackelberg", "valuations": [1, 2], "unit_cost": float("inf")},
            {"game": "stackelberg", "valuations": [1, 2], "unit_cost": 1, "capacity": -1},
            {"game": "stackelberg", "valuations": [1, 2], "unit_cost": 1, "pricing": "auction"},
            {"game": "linear_oligopoly", "alpha": 1, "beta": 0, "gamma": 0, "costs": [1]},
            {"game": "linear_oligopoly", "alpha": 1, "beta": 1, "gamma": 0},
            {"game": "budget_oligopoly", "valuations": [[1, 2], [3]], "budgets": [1, 1], "costs": [1, 1]},
            {"game": "budget_oligopoly", "valuations": [[1, 2]], "budgets": [1, 1], "costs": [1, 1]},
            {
                "game": "budget_oligopoly",
                "valuations": [[1, 2]],
                "budgets": [1],
                "costs": [1, 1],
                "max_rounds": 0,
            },
        ],
        ids=[
            "missing valuations",
            "empty valuations",
            "string valuation",
            "boolean valuation",
            "NaN valuation",
            "negative valuation",
            "infinite cost",
            "negative capacity",
            "unknown pricing",
            "zero beta",
            "missing costs",
            "ragged valuations",
            "budgets of the wrong length",
            "zero max rounds",
        ],
    )
    def test_refuses_bad_games_with_bad_input(self, doc):
        with pytest.raises(MechanismError) as raised:
            price(doc)

        assert raised.value.code == "bad_input"
