"""Double auctions: invariants on random books (Hypothesis, 300 examples per property).

Prices are small integers so that ties, zero-gain pairs and missing k+1 prices are frequent.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auctions.mechanisms import clear
from auctions.mechanisms.double_auction_reference import clear_reference

UNIT_MECHANISMS = ["mcafee", "trade_reduction", "vcg", "sbba", "sbba_buyer_lottery"]
ALL_MECHANISMS = [*UNIT_MECHANISMS, "huang"]
EXAMPLES = settings(max_examples=300, deadline=None)
EPS = 1e-9

prices = st.integers(min_value=0, max_value=12)
unit_quantities = st.integers(min_value=0, max_value=3)
divisible_quantities = st.sampled_from([0, 0.25, 0.5, 1, 1.5, 2, 3.75])


@st.composite
def books(draw, mechanisms=ALL_MECHANISMS, unit_demand=False):
    mechanism = draw(st.sampled_from(mechanisms))
    quantity = (
        st.just(1) if unit_demand else divisible_quantities if mechanism == "huang" else unit_quantities
    )
    bids = draw(st.lists(st.tuples(prices, quantity), max_size=8))
    asks = draw(st.lists(st.tuples(prices, quantity), max_size=8))
    doc = {
        "mechanism": mechanism,
        "bids": [{"id": f"b{i}", "price": p, "quantity": q} for i, (p, q) in enumerate(bids)],
        "asks": [{"id": f"s{i}", "price": p, "quantity": q} for i, (p, q) in enumerate(asks)],
        "seed": draw(st.integers(min_value=0, max_value=2**32)),
    }
    if draw(st.booleans()):
        doc["support"] = {"min_bid": 0, "max_ask": 12}
    return doc


def close(left, right) -> bool:
    """Equal, with floats compared to 1e-9 (sums are ordered differently in NumPy and plain Python)."""
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(close(left[key], right[key]) for key in left)
    if isinstance(left, float) or isinstance(right, float):
        if left is None or right is None:
            return False
        return math.isclose(left, right, rel_tol=EPS, abs_tol=EPS)
    return left == right


def orders(doc):
    return {row["id"]: ("bids", row) for row in doc["bids"]} | {
        row["id"]: ("asks", row) for row in doc["asks"]
    }


class TestAgainstThePlainPythonReference:
    @EXAMPLES
    @given(books())
    def test_the_vectorised_engine_equals_the_reference_on_random_books(self, doc):
        assert close(clear(doc, input_sha256="h"), clear_reference(doc, input_sha256="h"))


class TestIndividualRationality:
    @EXAMPLES
    @given(books())
    def test_no_buyer_pays_above_its_bid_and_no_seller_gets_below_its_ask(self, doc):
        result = clear(doc)

        for name, (side, row) in orders(doc).items():
            fill = result["fills"].get(name, 0)
            paid = result["payments"].get(name, 0.0)
            if side == "bids":
                assert paid <= row["price"] * fill + EPS
            else:
                assert paid >= row["price"] * fill - EPS


class TestBudgetBalance:
    @EXAMPLES
    @given(books())
    def test_the_surplus_has_the_sign_each_mechanism_promises(self, doc):
        result = clear(doc)

        paid = sum(result["payments"].get(row["id"], 0.0) for row in doc["bids"])
        received = sum(result["payments"].get(row["id"], 0.0) for row in doc["asks"])
        assert math.isclose(result["surplus"], paid - received, abs_tol=1e-7)
        if doc["mechanism"] in ("mcafee", "trade_reduction", "huang"):
            assert result["surplus"] >= -EPS
        elif doc["mechanism"] == "vcg":
            assert result["surplus"] <= EPS
        else:
            assert abs(result["surplus"]) <= EPS


class TestFills:
    @EXAMPLES
    @given(books())
    def test_fills_never_exceed_quantities_and_both_sides_trade_the_same_amount(self, doc):
        result = clear(doc)

        for name, fill in result["fills"].items():
            assert 0 < fill <= orders(doc)[name][1]["quantity"] + EPS
        bought = sum(result["fills"].get(row["id"], 0) for row in doc["bids"])
        sold = sum(result["fills"].get(row["id"], 0) for row in doc["asks"])
        assert math.isclose(bought, result["traded_quantity"], abs_tol=1e-9)
        assert math.isclose(sold, result["traded_quantity"], abs_tol=1e-9)
        assert set(result["payments"]) == set(result["fills"])


class TestRepresentations:
    @EXAMPLES
    @given(books())
    def test_rows_list_columns_and_numpy_columns_agree_except_for_the_hash(self, doc):
        def columns(rows, as_array):
            column = {key: [row[key] for row in rows] for key in ("id", "price", "quantity")}
            return {key: np.asarray(value) for key, value in column.items()} if as_array else column

        listed = dict(doc, bids=columns(doc["bids"], False), asks=columns(doc["asks"], False))
        arrays = dict(doc, bids=columns(doc["bids"], True), asks=columns(doc["asks"], True))
        if not doc["bids"] or not doc["asks"]:
            # An empty NumPy array of ids is float by default: give it an integer-free string dtype.
            for side in ("bids", "asks"):
                if not doc[side]:
                    arrays[side] = {"id": np.array([], dtype=str), "price": np.array([]), "quantity": []}

        results = [clear(item, input_sha256="h") for item in (doc, listed, arrays)]

        assert results[0] == results[1] == results[2]

    @EXAMPLES
    @given(books(), st.randoms(use_true_random=False))
    def test_input_order_does_not_matter_when_prices_within_a_side_are_distinct(self, doc, random):
        for side in ("bids", "asks"):
            seen: set = set()
            doc[side] = [row for row in doc[side] if not (row["price"] in seen or seen.add(row["price"]))]
        shuffled = dict(doc, bids=random.sample(doc["bids"], len(doc["bids"])))
        shuffled["asks"] = random.sample(doc["asks"], len(doc["asks"]))

        assert clear(doc, input_sha256="h") == clear(shuffled, input_sha256="h")


class TestHuang:
    @EXAMPLES
    @given(books(mechanisms=["trade_reduction"], unit_demand=True))
    def test_huang_on_one_unit_orders_equals_trade_reduction(self, doc):
        reduction = clear(doc)
        huang = clear(dict(doc, mechanism="huang"))

        assert huang["fills"] == reduction["fills"]
        assert huang["buyer_price"] == reduction["buyer_price"]
        assert huang["seller_price"] == reduction["seller_price"]
        assert huang["efficient_trades"] == reduction["efficient_trades"]


def expected_utility(doc, result, name, value) -> float:
    """Exact expected utility of a unit trader: a lottery pool member trades with probability drawn/pool."""
    side = orders(doc)[name][0]
    lottery = result.get("lottery")
    if lottery and lottery["side"] == side and name in lottery["pool"]:
        probability = lottery["drawn"] / len(lottery["pool"])
        price = result["buyer_price"] if side == "bids" else result["seller_price"]
        if price is None:
            return 0.0
        gain = value - price if side == "bids" else price - value
        return probability * gain
    fill = result["fills"].get(name, 0)
    paid = result["payments"].get(name, 0.0)
    return fill * value - paid if side == "bids" else paid - fill * value


class TestTruthfulness:
    @EXAMPLES
    @given(books(mechanisms=UNIT_MECHANISMS, unit_demand=True), st.data())
    def test_no_unit_trader_gains_in_expectation_by_misreporting(self, doc, data):
        traders = [row["id"] for row in doc["bids"] + doc["asks"]]
        if not traders:
            return
        name = data.draw(st.sampled_from(traders))
        side, row = orders(doc)[name]
        value = row["price"]
        truthful = expected_utility(doc, clear(doc, input_sha256="h"), name, value)
        # Every price that can change the outcome is an integer of the book or a half between two;
        # the support (0, 12) bounds the reports McAfee's rule is defined for.
        for report in [x / 2 for x in range(0, 25)]:
            lie = {**doc, side: [dict(r, price=report) if r["id"] == name else r for r in doc[side]]}

            lying = expected_utility(doc, clear(lie, input_sha256="h"), name, value)

            assert lying <= truthful + EPS, f"{name} gains by reporting {report} instead of {value}"


class TestLargeBooks:
    @pytest.mark.parametrize("mechanism", ALL_MECHANISMS)
    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_a_tied_columnar_book_of_thousands_of_orders_equals_the_reference(self, mechanism, seed):
        # Integer prices in 0..100 make long runs of ties, and 10 bids per ask make the engine cut the
        # bid side to its best orders before sorting: both must keep input order among ties.
        rng = np.random.default_rng(seed)
        quantities = rng.integers(0, 4, 3300)
        if mechanism == "huang":
            quantities = quantities * 0.75
        doc = {
            "mechanism": mechanism,
            "seed": seed,
            "bids": {
                "id": np.arange(3000),
                "price": rng.integers(0, 101, 3000),
                "quantity": quantities[:3000],
            },
            "asks": {
                "id": np.arange(3000, 3300),
                "price": rng.integers(0, 101, 300),
                "quantity": quantities[3000:],
            },
        }

        assert close(clear(doc, input_sha256="h"), clear_reference(doc, input_sha256="h"))
