"""Posted-price rule for thin books: properties on random books (Hypothesis) and worked examples.

Prices are small integers so that ties with the posted price (zero gain) are frequent; each bid
accepts a random subset of the asks (cross-class service), so the serial-dictatorship choice among
classes is exercised too.
"""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auctions.mechanisms import MechanismError, clear
from auctions.mechanisms.canonical import canonical_json, input_sha256
from auctions.mechanisms.posted_price import (
    clearing_price_estimate,
    posted_gains_bound,
    priority,
    unit_gains_bound,
)

EXAMPLES = settings(max_examples=300, deadline=None)
EPS = 1e-9
CLASSES = ["GPU/16G/eu-west", "GPU/24G/eu-west", "GPU/24G/us-east"]
small = st.integers(min_value=0, max_value=10)


@st.composite
def books(draw):
    prices = {key: draw(small) for key in CLASSES[: draw(st.integers(min_value=1, max_value=3))]}
    asks = [
        {
            "id": f"r{i}",
            "price": draw(small),
            "quantity": draw(st.integers(min_value=0, max_value=3)),
            "class": draw(st.sampled_from(sorted(prices))),
            "speed": draw(st.sampled_from([1, 1, 0.5, 2, 1.6])),
        }
        for i in range(draw(st.integers(min_value=0, max_value=6)))
    ]
    names = [ask["id"] for ask in asks]
    bids = [
        {"id": f"j{i}", "price": draw(small), "accepts": draw(st.lists(st.sampled_from(names), unique=True))}
        if names
        else {"id": f"j{i}", "price": draw(small), "accepts": []}
        for i in range(draw(st.integers(min_value=0, max_value=8)))
    ]
    return {
        "mechanism": "posted_price",
        "salt": f"round-{draw(st.integers(min_value=0, max_value=10**6))}",
        "prices": prices,
        "bids": bids,
        "asks": asks,
    }


def utility(doc: dict, result: dict, name: str, value: float) -> float:
    """Quasi-linear utility of a trader whose true value (bid) or cost per unit (ask) is `value`."""
    units = result["fills"].get(name, 0)
    payment = result["payments"].get(name, 0.0)
    if name.startswith("j"):
        return value * units - payment
    speed = next(row.get("speed", 1) for row in doc["asks"] if row["id"] == name)
    return payment - value / speed * units


def with_price(doc: dict, name: str, price: float) -> dict:
    side = "bids" if name.startswith("j") else "asks"
    return {**doc, side: [{**row, "price": price} if row["id"] == name else row for row in doc[side]]}


class TestPostedPriceProperties:
    @EXAMPLES
    @given(books())
    def test_is_individually_rational(self, doc):
        result = clear(doc)

        for bid in doc["bids"]:
            if bid["id"] in result["assignments"]:
                assert result["payments"][bid["id"]] <= bid["price"] + EPS
                assert result["assignments"][bid["id"]] in bid["accepts"]
        for ask in doc["asks"]:
            units = result["fills"].get(ask["id"], 0)
            assert units <= ask["quantity"]
            if units:
                assert result["payments"][ask["id"]] >= ask["price"] / ask["speed"] * units - EPS
                assert all(
                    result["unit_prices"][bid] >= ask["price"] - EPS
                    for bid, seller in result["assignments"].items()
                    if seller == ask["id"]
                )

    @EXAMPLES
    @given(books())
    def test_is_exactly_budget_balanced(self, doc):
        result = clear(doc)

        assert result["surplus"] == 0.0
        paid = sum(result["payments"][bid] for bid in result["assignments"])
        received = sum(value for name, value in result["payments"].items() if name.startswith("r"))
        assert paid == pytest.approx(received, abs=EPS)
        assert result["traded_quantity"] == sum(
            units for name, units in result["fills"].items() if name.startswith("r")
        )

    @EXAMPLES
    @given(books(), st.data())
    def test_no_trader_gains_by_misreporting(self, doc, data):
        orders = [row["id"] for row in doc["bids"] + doc["asks"]]
        if not orders:
            return
        name = data.draw(st.sampled_from(orders))
        truth = next(row["price"] for row in doc["bids"] + doc["asks"] if row["id"] == name)
        honest = utility(doc, clear(doc), name, truth)

        for report in {*range(0, 12), truth - 0.5, truth + 0.5}:
            if report < 0:
                continue
            lied = with_price(doc, name, report)
            assert utility(lied, clear(lied), name, truth) <= honest + EPS

    @EXAMPLES
    @given(books())
    def test_replays_to_the_same_result_and_hash(self, doc):
        first = clear(doc)
        again = clear(json.loads(canonical_json(doc)))

        assert canonical_json(first) == canonical_json(again)
        assert input_sha256(first) == input_sha256(again)
        assert first["input_sha256"] == input_sha256(doc)

    @EXAMPLES
    @given(books())
    def test_never_holds_more_gains_than_the_efficient_trades_of_its_book(self, doc):
        result = clear(doc)

        assert result["gains_from_trade"] <= posted_gains_bound(doc) + EPS


class TestPostedPriceRule:
    def test_trades_the_only_efficient_trade_that_mcafee_drops(self):
        book = {"bids": [{"id": "j1", "price": 2.0}], "asks": [{"id": "r1", "price": 1.0, "quantity": 1}]}

        mcafee = clear({"mechanism": "mcafee", **book})
        posted = clear(
            {
                "mechanism": "posted_price",
                "salt": "round-1",
                "prices": {"GPU/24G/eu-west": 1.5},
                "bids": [{**book["bids"][0], "accepts": ["r1"]}],
                "asks": [{**book["asks"][0], "class": "GPU/24G/eu-west"}],
            }
        )

        assert mcafee["traded_quantity"] == 0
        assert posted["assignments"] == {"j1": "r1"}
        assert posted["payments"] == {"j1": 1.5, "r1": 1.5}
        assert posted["gains_from_trade"] == 1.0

    def test_prices_are_per_reference_device_hour_whatever_the_speed(self):
        doc = {
            "mechanism": "posted_price",
            "salt": "s",
            "prices": {"c": 0.5},
            "bids": [
                {"id": "j1", "price": 1.5, "accepts": ["fast"]},
                {"id": "j2", "price": 1.5, "accepts": ["slow"]},
            ],
            "asks": [
                {"id": "fast", "price": 0.9, "quantity": 1, "class": "c", "speed": 2.0},
                {"id": "slow", "price": 0.2, "quantity": 1, "class": "c", "speed": 0.25},
            ],
        }

        result = clear(doc)

        # fast: 0.9 / 2 = 0.45 <= 0.5, willing, paid 0.5 x 2 = 1.0 per device-hour; slow: 0.2 / 0.25 = 0.8
        # per reference device-hour is above the posted 0.5, so it does not sell.
        assert result["assignments"] == {"j1": "fast"}
        assert result["payments"] == {"j1": 0.5, "fast": 0.5}
        assert result["unit_prices"] == {"j1": 1.0}

    def test_a_job_takes_the_cheapest_class_that_fits_it(self):
        doc = {
            "mechanism": "posted_price",
            "salt": "s",
            "prices": {"GPU/24G/eu-west": 1.2, "GPU/48G/eu-west": 0.9},
            "bids": [{"id": "j1", "price": 2.0, "accepts": ["r1", "r2"]}],
            "asks": [
                {"id": "r1", "price": 1.0, "quantity": 1, "class": "GPU/24G/eu-west"},
                {"id": "r2", "price": 0.5, "quantity": 1, "class": "GPU/48G/eu-west"},
            ],
        }

        assert clear(doc)["assignments"] == {"j1": "r2"}

    def test_rations_the_long_side_by_the_published_hash(self):
        doc = {
            "mechanism": "posted_price",
            "salt": "round-7",
            "prices": {"c": 1.0},
            "bids": [{"id": f"j{i}", "price": 5.0, "accepts": ["r1"]} for i in range(5)],
            "asks": [{"id": "r1", "price": 0.5, "quantity": 2, "class": "c"}],
        }

        winners = sorted(clear(doc)["assignments"])

        expected = sorted(sorted((f"j{i}" for i in range(5)), key=lambda n: priority("round-7", n))[:2])
        assert winners == expected

    def test_an_unwilling_seller_and_a_low_bid_do_not_trade(self):
        doc = {
            "mechanism": "posted_price",
            "salt": "s",
            "prices": {"c": 1.0},
            "bids": [
                {"id": "j1", "price": 0.9, "accepts": ["r1", "r2"]},
                {"id": "j2", "price": 3.0, "accepts": ["r1"]},
            ],
            "asks": [
                {"id": "r1", "price": 1.5, "quantity": 1, "class": "c"},
                {"id": "r2", "price": 0.1, "quantity": 1, "class": "c"},
            ],
        }

        assert clear(doc)["assignments"] == {}

    @pytest.mark.parametrize(
        "change",
        [
            {"prices": {"c": -1}},
            {"salt": 3},
            {"asks": [{"id": "r1", "price": 1, "quantity": 1, "class": "unknown"}]},
            {"bids": [{"id": "j1", "price": 1, "accepts": ["r9"]}]},
            {"bids": [{"id": "r1", "price": 1, "accepts": []}]},
            {"bids": [{"id": "j1", "price": 1, "quantity": 2, "accepts": []}]},
        ],
    )
    def test_refuses_a_malformed_book(self, change):
        doc = {
            "mechanism": "posted_price",
            "salt": "s",
            "prices": {"c": 1.0},
            "bids": [],
            "asks": [{"id": "r1", "price": 1, "quantity": 1, "class": "c"}],
        } | change

        with pytest.raises(MechanismError) as error:
            clear(doc)

        assert error.value.code == "bad_input"


class TestClearingPriceEstimate:
    def test_is_the_lowest_price_at_which_the_book_clears(self):
        assert clearing_price_estimate([3.0, 2.5, 2.0], [(1.0, 1)]) == 2.5  # the best losing bid
        assert clearing_price_estimate([2.0], [(1.0, 1), (1.1, 1)]) == 1.0  # the marginal seller
        assert clearing_price_estimate([0.5], [(1.0, 1)]) == 1.0  # nothing crosses: the lowest ask
        assert clearing_price_estimate([], [(1.0, 1)]) is None

    def test_bound_counts_the_efficient_trades_only(self):
        assert unit_gains_bound([3.0, 2.0, 0.5], [(1.0, 2), (4.0, 1)]) == 3.0
