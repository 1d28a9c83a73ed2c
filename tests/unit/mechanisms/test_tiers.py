"""Cloud–edge tiers (auctions/mechanisms/tiers.py): the Stackelberg game with the cloud as leader is an
exact equilibrium, and the tiered book's allocation keeps its promises (Hypothesis), plus worked examples.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auctions.mechanisms import MechanismError, clear
from auctions.mechanisms.canonical import canonical_json
from auctions.mechanisms.tiers import (
    calibrate,
    follower_profit,
    leader_profit,
    solve_tier_game,
)

EXAMPLES = settings(max_examples=200, deadline=None)
EPS = 1e-9
price = st.floats(min_value=0.1, max_value=5.0, allow_nan=False)


@st.composite
def games(draw):
    followers = draw(st.integers(min_value=0, max_value=5))
    scale = draw(st.floats(min_value=1.0, max_value=10.0))
    costs = np.array([draw(st.floats(min_value=0.0, max_value=scale / 2)) for _ in range(followers)])
    cloud_cost = draw(st.floats(min_value=0.0, max_value=scale / 2))
    params = calibrate(
        bids=draw(st.integers(min_value=1, max_value=40)),
        followers=followers,
        scale=scale,
        substitution=draw(st.floats(min_value=0.0, max_value=0.95)),
    )
    return costs, cloud_cost, params


@st.composite
def books(draw):
    asks = [
        {
            "id": f"r{i}",
            "price": draw(st.integers(min_value=0, max_value=8)) / 2,
            "quantity": draw(st.integers(min_value=0, max_value=3)),
            "speed": draw(st.sampled_from([1, 1, 0.5, 2, 1.6])),
            "tier": draw(st.sampled_from(["END", "EDGE", "CLOUD"])),
        }
        for i in range(draw(st.integers(min_value=0, max_value=7)))
    ]
    names = [ask["id"] for ask in asks]
    bids = [
        {
            "id": f"j{i}",
            "price": draw(st.integers(min_value=0, max_value=10) if i % 2 else price),
            "accepts": draw(st.lists(st.sampled_from(names), unique=True)) if names else [],
        }
        for i in range(draw(st.integers(min_value=0, max_value=9)))
    ]
    doc = {
        "mechanism": "tiered",
        "salt": f"round-{draw(st.integers(min_value=0, max_value=10**6))}",
        "tier_aware": draw(st.booleans()),
        "substitution": draw(st.floats(min_value=0.0, max_value=0.9)),
        "bids": bids,
        "asks": asks,
    }
    if draw(st.booleans()):
        doc["reference_price"] = draw(price)
    return doc


class TestTierGame:
    @EXAMPLES
    @given(games())
    def test_no_follower_gains_by_moving_its_price(self, game):
        costs, cloud_cost, params = game
        if len(costs) == 0:
            return
        result = solve_tier_game(costs=costs, cloud_cost=cloud_cost, params=params)
        prices = np.array(result["follower_prices"])
        for j in range(len(costs)):
            best = follower_profit(params, costs, prices, result["cloud_price"], j)
            for candidate in np.linspace(0.0, 3 * params["scale"], 301):
                moved = prices.copy()
                moved[j] = candidate
                assert follower_profit(params, costs, moved, result["cloud_price"], j) <= best + 1e-7 * (
                    1 + abs(best)
                )

    @EXAMPLES
    @given(games())
    def test_the_cloud_price_is_the_leaders_best_along_the_followers_reaction(self, game):
        costs, cloud_cost, params = game
        result = solve_tier_game(costs=costs, cloud_cost=cloud_cost, params=params)
        best = leader_profit(params, costs, cloud_cost, result["cloud_price"])

        grid = np.linspace(cloud_cost, cloud_cost + 3 * params["scale"], 301)

        assert result["cloud_price"] >= cloud_cost
        assert best == pytest.approx(result["leader_profit"])
        for candidate in grid:
            assert leader_profit(params, costs, cloud_cost, candidate) <= best + 1e-7 * (1 + abs(best))

    @EXAMPLES
    @given(games(), st.floats(min_value=0.0, max_value=0.5))
    def test_a_dearer_cloud_never_lowers_the_edge_prices(self, game, rise):
        costs, cloud_cost, params = game
        low = solve_tier_game(costs=costs, cloud_cost=cloud_cost, params=params)
        high = solve_tier_game(costs=costs, cloud_cost=cloud_cost + rise, params=params)

        assert high["cloud_price"] >= low["cloud_price"] - EPS
        for before, after in zip(low["follower_prices"], high["follower_prices"], strict=True):
            assert after >= before - EPS


class TestTieredBook:
    @EXAMPLES
    @given(books())
    def test_individually_rational_budget_balanced_and_within_capacity(self, doc):
        result = clear(doc)
        asks = {a["id"]: a for a in doc["asks"]}
        bids = {b["id"]: b for b in doc["bids"]}

        for bid, ask in result["assignments"].items():
            assert ask in bids[bid]["accepts"]
            assert result["payments"][bid] <= bids[bid]["price"] + EPS
            assert result["payments"][bid] >= asks[ask]["price"] / asks[ask]["speed"] - EPS
            assert result["tiers"][bid] == asks[ask]["tier"]
        for ask in asks.values():
            assert result["fills"].get(ask["id"], 0) <= ask["quantity"]
        assert result["surplus"] == pytest.approx(0.0, abs=1e-9)

    @EXAMPLES
    @given(books())
    def test_a_job_overflows_to_the_cloud_only_when_no_edge_device_could_take_it(self, doc):
        doc = {**doc, "tier_aware": True}
        result = clear(doc)
        asks = {a["id"]: a for a in doc["asks"]}
        bids = {b["id"]: b for b in doc["bids"]}
        edge_prices = result["prices"]["edge"]

        for bid, ask in result["assignments"].items():
            if asks[ask]["tier"] != "CLOUD":
                continue
            assert result["payments"][bid] == result["prices"]["cloud"]
            assert bid in result["overflow"]
            for other in bids[bid]["accepts"]:
                if asks[other]["tier"] != "CLOUD":
                    # Units only ever run out: a device with a unit left at the end had one at its turn.
                    full = result["fills"].get(other, 0) >= asks[other]["quantity"]
                    assert full or edge_prices[other] > bids[bid]["price"]

    @EXAMPLES
    @given(books())
    def test_the_result_is_a_function_of_the_document(self, doc):
        first = clear(json.loads(canonical_json(doc)))

        assert canonical_json(clear(doc)) == canonical_json(first)

    @EXAMPLES
    @given(books())
    def test_prices_read_no_bid_when_a_reference_price_is_given(self, doc):
        doc = {**doc, "reference_price": 3.0, "bids": [{**b, "price": 0} for b in doc["bids"]]}
        raised = {**doc, "bids": [{**b, "price": 10} for b in doc["bids"]]}

        assert clear(doc)["prices"] == clear(raised)["prices"]

    @EXAMPLES
    @given(books(), st.data())
    def test_no_buyer_gains_by_misreporting_when_a_reference_price_is_given(self, doc, data):
        doc = {**doc, "reference_price": 3.0}
        if not doc["bids"]:
            return
        index = data.draw(st.integers(min_value=0, max_value=len(doc["bids"]) - 1))
        name, value = doc["bids"][index]["id"], doc["bids"][index]["price"]
        report = data.draw(st.sampled_from([0, 0.5, 1, 2, 3, 4, 6, 10, value / 2, value * 2]))
        lied = {**doc, "bids": [{**b, "price": report} if b["id"] == name else b for b in doc["bids"]]}

        def utility(result):
            return value - result["payments"][name] if name in result["assignments"] else 0.0

        truth, lie = clear(doc), clear(lied)
        # The one gain "edge first" leaves open: dodging an edge device priced above the cloud's level.
        dodged = (
            truth["tiers"].get(name) in ("END", "EDGE")
            and truth["payments"][name] > (truth["prices"]["cloud"] or math.inf)
            and lie["tiers"].get(name) == "CLOUD"
        )
        assert dodged or utility(lie) <= utility(truth) + EPS

    def test_a_buyer_can_dodge_an_edge_priced_above_the_cloud_by_shading_its_bid(self):
        doc = {
            "mechanism": "tiered",
            "salt": "x",
            "reference_price": 3.0,
            "bids": [{"id": "j", "price": 3.0, "accepts": ["e", "c"]}],
            "asks": [
                {"id": "e", "price": 2.4, "quantity": 1, "speed": 1, "tier": "EDGE"},
                {"id": "c", "price": 0.5, "quantity": 8, "speed": 1, "tier": "CLOUD"},
            ],
        }
        truth = clear(doc)
        shaded = clear({**doc, "bids": [{**doc["bids"][0], "price": 2.0}]})

        assert truth["tiers"]["j"] == "EDGE" and shaded["tiers"]["j"] == "CLOUD"
        assert shaded["payments"]["j"] < truth["payments"]["j"]  # documented: edge first is not free


class TestWorkedExamples:
    def book(self, *, edge_units: int) -> dict:
        return {
            "mechanism": "tiered",
            "salt": "round-1",
            "substitution": 0.5,
            "reference_price": 3.0,
            "bids": [{"id": f"j{i}", "price": 4.0, "accepts": ["edge", "cloud"]} for i in range(3)],
            "asks": [
                {"id": "edge", "price": 1.0, "quantity": edge_units, "speed": 1, "tier": "EDGE"},
                {"id": "cloud", "price": 0.5, "quantity": 10, "speed": 1, "tier": "CLOUD"},
            ],
        }

    def test_latency_bound_jobs_fill_the_edge_then_overflow_at_the_cloud_price(self):
        result = clear(self.book(edge_units=2))

        assert result["placed_by_tier"] == {"END": 0, "EDGE": 2, "CLOUD": 1}
        assert result["overflow_share"] == pytest.approx(1 / 3)
        (overflowed,) = result["overflow"]
        assert result["overflow"][overflowed] == "edge_full"
        assert result["payments"][overflowed] == result["prices"]["cloud"]
        assert result["prices"]["cloud"] > 0.5

    def test_tier_blind_clearing_sends_every_job_to_the_cheaper_cloud(self):
        result = clear({**self.book(edge_units=2), "tier_aware": False})

        assert result["placed_by_tier"] == {"END": 0, "EDGE": 0, "CLOUD": 3}

    def test_refuses_an_unknown_tier_and_a_substitution_of_one(self):
        doc = self.book(edge_units=1)
        with pytest.raises(MechanismError) as error:
            clear({**doc, "asks": [{**doc["asks"][0], "tier": "FOG"}]})
        assert error.value.code == "bad_input"
        with pytest.raises(MechanismError):
            clear({**doc, "substitution": 1.0})
