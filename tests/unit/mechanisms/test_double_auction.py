"""Double auctions: the spec's public examples, hand-derived examples per mechanism, every convention."""

import json

import numpy as np
import pytest

from auctions.mechanisms import MechanismError, clear
from auctions.mechanisms.canonical import input_sha256

UNIT_MECHANISMS = ["mcafee", "trade_reduction", "vcg", "sbba", "sbba_buyer_lottery"]
ALL_MECHANISMS = [*UNIT_MECHANISMS, "huang"]


def book(mechanism, bids, asks, **extra):
    """Rows named b0, b1, … and s0, s1, …; a price or a (price, quantity) pair per order."""

    def rows(prefix, orders):
        out = []
        for position, order in enumerate(orders):
            price, quantity = order if isinstance(order, tuple) else (order, None)
            row = {"id": f"{prefix}{position}", "price": price}
            if quantity is not None:
                row["quantity"] = quantity
            out.append(row)
        return out

    return {"mechanism": mechanism, "bids": rows("b", bids), "asks": rows("s", asks), **extra}


PUBLIC_BIDS = [17, 14, 13, 9, 6]
PUBLIC_ASKS = [1, 4, 5, 8, 11]


class TestPublicExamples:
    def test_mcafee_trades_four_units_at_the_midpoint_of_the_first_losers(self):
        doc = book("mcafee", PUBLIC_BIDS, PUBLIC_ASKS)

        result = clear(doc)

        assert result["efficient_trades"] == 4
        assert result["traded_quantity"] == 4
        assert result["buyer_price"] == result["seller_price"] == 8.5
        assert result["surplus"] == 0.0
        assert result["fills"] == {"b0": 1, "b1": 1, "b2": 1, "b3": 1, "s0": 1, "s1": 1, "s2": 1, "s3": 1}
        assert result["gains_from_trade"] == (17 + 14 + 13 + 9) - (1 + 4 + 5 + 8)

    def test_mcafee_reduces_one_trade_when_the_midpoint_leaves_the_kth_pair(self):
        doc = book("mcafee", PUBLIC_BIDS, [1, 4, 5, 8, 13])

        result = clear(doc)

        assert result["efficient_trades"] == 4
        assert result["traded_quantity"] == 3
        assert (result["buyer_price"], result["seller_price"]) == (9.0, 8.0)
        assert result["surplus"] == 3.0
        assert set(result["fills"]) == {"b0", "b1", "b2", "s0", "s1", "s2"}
        assert result["payments"]["b0"] == 9.0 and result["payments"]["s0"] == 8.0


class TestResultDocument:
    def test_lists_the_keys_of_the_spec_in_order_with_plain_python_numbers(self):
        doc = book("sbba", PUBLIC_BIDS, PUBLIC_ASKS)

        result = clear(doc)

        assert list(result) == [
            "mechanism",
            "efficient_trades",
            "traded_quantity",
            "buyer_price",
            "seller_price",
            "fills",
            "payments",
            "surplus",
            "gains_from_trade",
            "lottery",
            "input_sha256",
        ]
        assert type(result["efficient_trades"]) is int and type(result["traded_quantity"]) is int
        assert all(type(v) is int for v in result["fills"].values())
        assert all(type(v) is float for v in result["payments"].values())
        assert json.loads(json.dumps(result, allow_nan=False)) == result

    def test_numpy_columns_give_plain_python_ids_and_numbers(self):
        doc = {
            "mechanism": "huang",
            "bids": {"id": np.array([1, 2]), "price": np.array([9.0, 8.0]), "quantity": np.array([1.5, 1])},
            "asks": {"id": np.array([3, 4]), "price": np.array([1, 2]), "quantity": np.array([1.0, 2.0])},
        }

        result = clear(doc, input_sha256="h")

        for mapping in (result["fills"], result["payments"]):
            assert all(type(key) is int and type(value) is float for key, value in mapping.items())
        assert type(result["efficient_trades"]) is float and type(result["buyer_price"]) is float

    def test_reports_the_hash_it_is_given_and_computes_it_otherwise(self):
        doc = book("mcafee", PUBLIC_BIDS, PUBLIC_ASKS)

        assert clear(doc, input_sha256="abc")["input_sha256"] == "abc"
        assert clear(doc)["input_sha256"] == input_sha256(doc)

    def test_lists_only_traders_with_a_fill(self):
        # k = 2 (10 >= 1, 8 >= 2; 3 < 9): trade reduction trades one pair; b2, s2 never appear.
        doc = book("trade_reduction", [10, 8, 3], [1, 2, 9])

        result = clear(doc)

        assert result["fills"] == {"b0": 1, "s0": 1}
        assert result["payments"] == {"b0": 8.0, "s0": 2.0}


class TestMcAfee:
    def test_takes_the_trade_reduction_branch_when_the_next_pair_is_missing_and_no_support(self):
        # bids 10, 8; asks 2, 4: k = 2 and neither b_3 nor s_3 exists, so k - 1 = 1 trade at b_2 / s_2.
        doc = book("mcafee", [10, 8], [2, 4])

        result = clear(doc)

        assert (result["traded_quantity"], result["buyer_price"], result["seller_price"]) == (1, 8.0, 4.0)

    def test_uses_the_support_for_both_missing_prices(self):
        # p0 = (min_bid 0 + max_ask 12) / 2 = 6 and s_2 = 4 <= 6 <= 8 = b_2: both pairs trade at 6.
        doc = book("mcafee", [10, 8], [2, 4], support={"min_bid": 0, "max_ask": 12})

        result = clear(doc)

        assert (result["traded_quantity"], result["buyer_price"], result["seller_price"]) == (2, 6.0, 6.0)

    def test_uses_the_support_only_for_the_missing_side(self):
        # b_3 = 1 exists, s_3 is missing: p0 = (1 + 12) / 2 = 6.5, inside [4, 8], so two trades at 6.5.
        doc = book("mcafee", [10, 8, 1], [2, 4], support={"min_bid": 0, "max_ask": 12})

        result = clear(doc)

        assert (result["traded_quantity"], result["buyer_price"]) == (2, 6.5)

    def test_falls_back_to_trade_reduction_when_the_support_midpoint_is_outside_the_kth_pair(self):
        # p0 = (0 + 100) / 2 = 50 > b_2 = 8: one trade at 8 / 4.
        doc = book("mcafee", [10, 8], [2, 4], support={"min_bid": 0, "max_ask": 100})

        result = clear(doc)

        assert (result["traded_quantity"], result["buyer_price"], result["seller_price"]) == (1, 8.0, 4.0)


class TestTradeReduction:
    def test_always_drops_the_kth_pair(self):
        # Public book: k = 4, so 3 pairs trade; buyers pay b_4 = 9, sellers get s_4 = 8.
        result = clear(book("trade_reduction", PUBLIC_BIDS, PUBLIC_ASKS))

        assert (result["traded_quantity"], result["buyer_price"], result["seller_price"]) == (3, 9.0, 8.0)
        assert result["surplus"] == 3.0
        assert result["gains_from_trade"] == (17 + 14 + 13) - (1 + 4 + 5)

    def test_trades_nothing_when_only_one_pair_is_efficient(self):
        result = clear(book("trade_reduction", [10], [1]))

        assert result["efficient_trades"] == 1
        assert result["traded_quantity"] == 0
        assert result["buyer_price"] is None and result["seller_price"] is None
        assert result["fills"] == {} and result["payments"] == {}


class TestVcg:
    def test_trades_all_k_pairs_and_runs_a_deficit(self):
        # Public book: buyers pay max(s_4 = 8, b_5 = 6) = 8, sellers get min(b_4 = 9, s_5 = 11) = 9.
        result = clear(book("vcg", PUBLIC_BIDS, PUBLIC_ASKS))

        assert (result["traded_quantity"], result["buyer_price"], result["seller_price"]) == (4, 8.0, 9.0)
        assert result["surplus"] == 4 * (8.0 - 9.0)

    def test_treats_missing_next_prices_as_infinite(self):
        # bids 10, 8; asks 2, 4: buyers pay max(s_2 = 4, -inf) = 4, sellers get min(b_2 = 8, +inf) = 8.
        result = clear(book("vcg", [10, 8], [2, 4]))

        assert (result["buyer_price"], result["seller_price"], result["surplus"]) == (4.0, 8.0, -8.0)


class TestSbba:
    def test_draws_k_minus_one_of_the_k_best_sellers_when_the_next_ask_is_above_bk(self):
        # Public book: s_5 = 11 > b_4 = 9, so p = 9; buyers 1..3 trade; 3 of sellers 1..4 are drawn.
        # default_rng(0).choice(4, size=3, replace=False) = [2, 3, 1]: s0 (ask 1) is left out.
        result = clear(book("sbba", PUBLIC_BIDS, PUBLIC_ASKS))

        assert result["lottery"] == {"side": "asks", "pool": ["s0", "s1", "s2", "s3"], "drawn": 3, "seed": 0}
        assert result["fills"] == {"b0": 1, "b1": 1, "b2": 1, "s1": 1, "s2": 1, "s3": 1}
        assert result["buyer_price"] == result["seller_price"] == 9.0
        assert result["surplus"] == 0.0
        assert result["gains_from_trade"] == (17 + 14 + 13) - (4 + 5 + 8)

    def test_trades_all_k_pairs_at_the_next_ask_when_it_is_below_bk(self):
        # Last ask 8.5: b_5 = 6 < 8.5 so k = 4; s_5 = 8.5 <= b_4 = 9, so all four trade at 8.5.
        result = clear(book("sbba", PUBLIC_BIDS, [1, 4, 5, 8, 8.5]))

        assert (result["traded_quantity"], result["buyer_price"]) == (4, 8.5)
        assert result["lottery"] == {"side": "asks", "pool": [], "drawn": 0, "seed": 0}

    def test_replays_the_draw_an_auditor_can_repeat_from_the_reported_pool(self):
        # bids 10, 9, 8; asks 1 (q=2), 2, 50: units 1, 1, 2 | 50, k = 3; s_4 = 50 > 8: lottery at 8.
        # The pool is s0, s0, s1 (an order of two units appears twice) and two units are drawn.
        for seed in range(6):
            doc = book("sbba", [10, 9, 8], [(1, 2), 2, 50], seed=seed)

            result = clear(doc)

            lottery = result["lottery"]
            assert lottery["pool"] == ["s0", "s0", "s1"] and lottery["drawn"] == 2 and lottery["seed"] == seed
            drawn = np.random.default_rng(seed).choice(len(lottery["pool"]), size=2, replace=False)
            expected: dict = {}
            for index in drawn:
                expected[lottery["pool"][index]] = expected.get(lottery["pool"][index], 0) + 1
            sellers = {key: value for key, value in result["fills"].items() if key.startswith("s")}
            assert sellers == expected
            assert clear(doc) == result

    def test_different_seeds_can_draw_different_sellers(self):
        outcomes = {
            tuple(sorted(clear(book("sbba", [10, 9, 8], [(1, 2), 2, 50], seed=seed))["fills"].items()))
            for seed in range(6)
        }

        assert len(outcomes) > 1

    def test_reports_the_lottery_with_nothing_drawn_when_k_is_one(self):
        # k = 1 and no s_2: p = b_1 = 10, zero pairs trade, the pool is the single best seller.
        result = clear(book("sbba", [10], [3], seed=7))

        assert result["lottery"] == {"side": "asks", "pool": ["s0"], "drawn": 0, "seed": 7}
        assert result["traded_quantity"] == 0 and result["buyer_price"] is None


class TestSbbaBuyerLottery:
    def test_draws_k_minus_one_of_the_k_best_buyers_when_the_next_bid_is_below_sk(self):
        # Public book: b_5 = 6 < s_4 = 8, so p = 8; sellers 1..3 trade; 3 of buyers 1..4 are drawn
        # with default_rng(0).choice(4, 3) = [2, 3, 1]: b0 is left out.
        result = clear(book("sbba_buyer_lottery", PUBLIC_BIDS, PUBLIC_ASKS))

        assert result["lottery"] == {"side": "bids", "pool": ["b0", "b1", "b2", "b3"], "drawn": 3, "seed": 0}
        assert result["fills"] == {"b1": 1, "b2": 1, "b3": 1, "s0": 1, "s1": 1, "s2": 1}
        assert result["buyer_price"] == result["seller_price"] == 8.0

    def test_trades_all_k_pairs_at_the_next_bid_when_it_is_above_sk(self):
        # Last bid 8.5: 8.5 < s_5 = 11 so k = 4; b_5 = 8.5 >= s_4 = 8, all four trade at 8.5.
        result = clear(book("sbba_buyer_lottery", [17, 14, 13, 9, 8.5], PUBLIC_ASKS))

        assert (result["traded_quantity"], result["buyer_price"]) == (4, 8.5)
        assert result["lottery"]["drawn"] == 0 and result["lottery"]["pool"] == []


class TestHuang:
    def test_rations_the_long_buyer_side_and_prices_at_the_setters(self):
        # Demand 10 on (0, 3], 9 on (3, 5], 5 on (5, 6]; supply 1 on (0, 1], 2 on (1, 2.5], 6 on (2.5, 6.5].
        # Q* = 5 (9 >= 6 just below, 5 < 6 above). Setters: bid 9 (cumulative 5), ask 6 (cumulative 6.5).
        # Buyers before: 3 units, sellers before: 2.5, so b1 is cut to 2.5; buyers pay 9, sellers get 6.
        doc = {
            "mechanism": "huang",
            "bids": [
                {"id": 1, "price": 10, "quantity": 3},
                {"id": 2, "price": 9, "quantity": 2},
                {"id": 3, "price": 5},
            ],
            "asks": [
                {"id": 4, "price": 1, "quantity": 1},
                {"id": 5, "price": 2, "quantity": 1.5},
                {"id": 6, "price": 6, "quantity": 4},
            ],
        }

        result = clear(doc)

        assert result["efficient_trades"] == 5.0 and result["traded_quantity"] == 2.5
        assert (result["buyer_price"], result["seller_price"]) == (9.0, 6.0)
        assert result["fills"] == {1: 2.5, 4: 1.0, 5: 1.5}
        assert result["surplus"] == 2.5 * 9 - 2.5 * 6
        assert result["gains_from_trade"] == 25.0 - (1.0 + 3.0)

    def test_rations_sellers_by_equal_loss_down_to_zero(self):
        # Demand 10, 9, 8 (one unit each); supply 1 (q 2), 2 (q 0.5), 3 (q 0.2), 7 (q 5).
        # Q* = 3 (8 >= 7). Setters: bid 8, ask 7. Buyers before: 2, sellers before: 2.7.
        # Equal loss d: 2.7 - 3d = 2 gives d = 0.233 > 0.2, so s2 drops out; 2.5 - 2d = 2 gives d = 0.25.
        doc = book("huang", [10, 9, 8], [(1, 2), (2, 0.5), (3, 0.2), (7, 5)])

        result = clear(doc)

        assert result["traded_quantity"] == 2.0
        assert (result["buyer_price"], result["seller_price"]) == (8.0, 7.0)
        assert result["fills"] == {"b0": 1.0, "b1": 1.0, "s0": 1.75, "s1": 0.25}
        assert result["surplus"] == 16.0 - 14.0
        assert result["gains_from_trade"] == 19.0 - 2.25

    def test_counts_a_float_sum_artefact_as_reaching_the_efficient_quantity(self):
        # 0.1 + 0.2 = 0.30000000000000004 > 0.3, so Q* = 0.30000000000000004. Without the tolerance the
        # ask 0.3 would not reach it and 0.1 would trade; with it, the first ask is the seller setter
        # and nothing trades (the steps end together, as in trade reduction with k = 1).
        doc = book("huang", [(10, 0.1), (9, 0.2), (1, 1)], [(2, 0.3), (8, 1)])

        result = clear(doc)

        assert result["traded_quantity"] == 0.0 and result["fills"] == {}

    def test_omits_a_fill_below_the_tolerance(self):
        # b1 holds 1e-15 (below 1e-12 × total 6): Q* = 2 + 1e-15, setters bid 8 and ask 2; b0 and b1 trade
        # 1 + 1e-15 against s0 rationed to it, and b1's fill is dropped as zero.
        doc = book("huang", [(10, 1), (9, 1e-15), (8, 1)], [(1, 1.5), (2, 1.5), (20, 1)])

        result = clear(doc)

        assert set(result["fills"]) == {"b0", "s0"}
        assert (result["buyer_price"], result["seller_price"]) == (8.0, 2.0)

    def test_equals_trade_reduction_on_unit_orders(self):
        huang = clear(book("huang", PUBLIC_BIDS, PUBLIC_ASKS))
        reduction = clear(book("trade_reduction", PUBLIC_BIDS, PUBLIC_ASKS))

        assert huang["fills"] == reduction["fills"]
        assert (huang["buyer_price"], huang["seller_price"]) == (
            reduction["buyer_price"],
            reduction["seller_price"],
        )


class TestConventions:
    def test_breaks_price_ties_by_input_order_on_both_sides(self):
        # Three bids at 10 and two asks at 1: k = 2, trade reduction trades one pair, the earliest of each.
        forward = clear(book("trade_reduction", [10, 10, 10], [1, 1]))
        doc = book("trade_reduction", [10, 10, 10], [1, 1])
        doc["bids"].reverse()
        doc["asks"].reverse()
        backward = clear(doc)

        assert forward["fills"] == {"b0": 1, "s0": 1}
        assert backward["fills"] == {"b2": 1, "s1": 1}

    def test_counts_a_zero_gain_pair_in_k(self):
        # bids 10, 5; asks 1, 5: b_2 = s_2 = 5, so k = 2 and VCG trades both pairs.
        result = clear(book("vcg", [10, 5], [1, 5]))

        assert result["efficient_trades"] == 2 and result["traded_quantity"] == 2

    def test_expands_an_integer_quantity_into_unit_orders_of_one_id(self):
        # Bid 10 × 3 against asks 1, 2, 3, 20: units 10, 10, 10 | 1, 2, 3, 20, k = 3.
        # Trade reduction: 2 units at b_3 = 10 / s_3 = 3; the bid's fill is reported once, as 2.
        result = clear(book("trade_reduction", [(10, 3)], [1, 2, 3, 20]))

        assert result["fills"] == {"b0": 2, "s0": 1, "s1": 1}
        assert result["payments"] == {"b0": 20.0, "s0": 3.0, "s1": 3.0}

    def test_uses_the_support_when_expanded_units_leave_no_next_bid(self):
        # Same book, McAfee with min_bid 0: b_4 is missing, p0 = (0 + 20) / 2 = 10 in [3, 10]: 3 trades.
        result = clear(book("mcafee", [(10, 3)], [1, 2, 3, 20], support={"min_bid": 0, "max_ask": 30}))

        assert result["fills"] == {"b0": 3, "s0": 1, "s1": 1, "s2": 1}
        assert result["buyer_price"] == 10.0

    def test_ignores_orders_of_zero_quantity(self):
        result = clear(book("vcg", [(50, 0), 10], [(0, 0), 1]))

        assert result["fills"] == {"b1": 1, "s1": 1}

    @pytest.mark.parametrize("mechanism", ALL_MECHANISMS)
    @pytest.mark.parametrize(
        "bids, asks",
        [([], []), ([10, 9], []), ([], [1, 2]), ([1, 2], [5, 6])],
        ids=["empty", "bids only", "asks only", "not crossing"],
    )
    def test_answers_no_trade_for_books_where_nothing_can_trade(self, mechanism, bids, asks):
        result = clear(book(mechanism, bids, asks))

        assert result["traded_quantity"] == 0 and result["efficient_trades"] == 0
        assert result["buyer_price"] is None and result["seller_price"] is None
        assert result["fills"] == {} and result["payments"] == {}
        assert result["surplus"] == 0.0 and result["gains_from_trade"] == 0.0
        if mechanism.startswith("sbba"):
            assert result["lottery"]["pool"] == [] and result["lottery"]["drawn"] == 0

    @pytest.mark.parametrize("mechanism", ALL_MECHANISMS)
    def test_gives_the_same_result_for_rows_list_columns_and_numpy_columns(self, mechanism):
        rows = book(mechanism, [(17, 2), 14, 13, 9, 6], [1, (4, 3), 5, 8, 11], seed=3)
        columns = {
            "mechanism": mechanism,
            "seed": 3,
            "bids": {"id": ["b0", "b1", "b2", "b3", "b4"], "price": PUBLIC_BIDS, "quantity": [2, 1, 1, 1, 1]},
            "asks": {"id": ["s0", "s1", "s2", "s3", "s4"], "price": PUBLIC_ASKS, "quantity": [1, 3, 1, 1, 1]},
        }
        arrays = {
            "mechanism": mechanism,
            "seed": 3,
            "bids": {key: np.asarray(value) for key, value in columns["bids"].items()},
            "asks": {key: np.asarray(value) for key, value in columns["asks"].items()},
        }

        results = [clear(doc) for doc in (rows, columns, arrays)]

        hashes = [result.pop("input_sha256") for result in results]
        assert results[0] == results[1] == results[2]
        assert hashes[0] != hashes[1] and hashes[1] == hashes[2]


def _bad(mutate):
    doc = book("mcafee", PUBLIC_BIDS, PUBLIC_ASKS)
    mutate(doc)
    return doc


BAD_BOOKS = {
    "no bids": _bad(lambda d: d.pop("bids")),
    "no asks": _bad(lambda d: d.pop("asks")),
    "bids not a list": _bad(lambda d: d.update(bids=5)),
    "row not an object": _bad(lambda d: d["bids"].append(7)),
    "row without price": _bad(lambda d: d["bids"][0].pop("price")),
    "row without id": _bad(lambda d: d["asks"][1].pop("id")),
    "price as string": _bad(lambda d: d["bids"][0].update(price="17")),
    "price as bool": _bad(lambda d: d["bids"][0].update(price=True)),
    "price null": _bad(lambda d: d["bids"][0].update(price=None)),
    "price nan": _bad(lambda d: d["asks"][0].update(price=float("nan"))),
    "price inf": _bad(lambda d: d["asks"][0].update(price=float("inf"))),
    "price too large for a float": _bad(lambda d: d["asks"][0].update(price=10**400)),
    "negative quantity": _bad(lambda d: d["asks"][0].update(quantity=-1)),
    "fractional quantity": _bad(lambda d: d["asks"][0].update(quantity=1.5)),
    "quantity as string": _bad(lambda d: d["asks"][0].update(quantity="1")),
    "quantity as bool": _bad(lambda d: d["asks"][0].update(quantity=True)),
    "id repeated within a side": _bad(lambda d: d["bids"][1].update(id="b0")),
    "id repeated across sides": _bad(lambda d: d["asks"][0].update(id="b0")),
    "id a float": _bad(lambda d: d["asks"][0].update(id=1.5)),
    "id a bool": _bad(lambda d: d["asks"][0].update(id=True)),
    "id a list": _bad(lambda d: d["asks"][0].update(id=[1])),
    "support not an object": _bad(lambda d: d.update(support=[0, 10])),
    "support without max_ask": _bad(lambda d: d.update(support={"min_bid": 0})),
    "support with a string": _bad(lambda d: d.update(support={"min_bid": "0", "max_ask": 10})),
    "seed a float": _bad(lambda d: d.update(seed=1.0)),
    "seed a bool": _bad(lambda d: d.update(seed=True)),
    "seed negative": _bad(lambda d: d.update(seed=-1)),
    "columns of different lengths": _bad(lambda d: d.update(bids={"id": [1, 2], "price": [1.0]})),
    "column without price": _bad(lambda d: d.update(bids={"id": [1, 2]})),
    "column not a list": _bad(lambda d: d.update(bids={"id": [1], "price": 3})),
    "numpy column of bools": _bad(lambda d: d.update(bids={"id": [1], "price": np.array([True])})),
    "numpy column of strings": _bad(lambda d: d.update(bids={"id": [1], "price": np.array(["1"])})),
    "numpy column with nan": _bad(lambda d: d.update(bids={"id": [1], "price": np.array([np.nan])})),
    "numpy float ids": _bad(lambda d: d.update(bids={"id": np.array([1.0]), "price": [1]})),
    "numpy ids repeated within a side": _bad(
        lambda d: d.update(bids={"id": np.array([5, 6, 5]), "price": np.ones(3)}, asks=[])
    ),
    "numpy ids repeated across sides": _bad(
        lambda d: d.update(
            bids={"id": np.arange(4), "price": np.ones(4)}, asks={"id": np.array([3]), "price": [1]}
        )
    ),
    "sparse numpy ids repeated": _bad(
        lambda d: d.update(bids={"id": np.array([10**15, 7, 10**15]), "price": np.ones(3)}, asks=[])
    ),
    "numpy string ids repeated": _bad(
        lambda d: d.update(
            bids={"id": np.array(["x", "y"]), "price": np.ones(2)}, asks=[{"id": "x", "price": 1}]
        )
    ),
    "two-dimensional column": _bad(lambda d: d.update(bids={"id": [1], "price": np.ones((1, 1))})),
}


class TestValidation:
    @pytest.mark.parametrize("doc", BAD_BOOKS.values(), ids=BAD_BOOKS.keys())
    def test_refuses_a_malformed_book_with_bad_input(self, doc):
        with pytest.raises(MechanismError) as caught:
            clear(doc)

        assert caught.value.code == "bad_input"

    def test_names_the_repeated_id(self):
        with pytest.raises(MechanismError, match="'b0' is repeated"):
            clear(BAD_BOOKS["id repeated across sides"])

    def test_accepts_fractional_quantities_in_huang_only(self):
        doc = book("huang", [(10, 1.5)], [(1, 0.5), (2, 2)])

        assert clear(doc)["mechanism"] == "huang"
        with pytest.raises(MechanismError):
            clear(dict(doc, mechanism="vcg"))

    def test_accepts_whole_floats_as_unit_quantities(self):
        result = clear(book("vcg", [(10, 2.0)], [(1, 2.0), 20]))

        assert result["fills"] == {"b0": 2, "s0": 2}

    def test_tells_integer_ids_from_string_ids(self):
        doc = {
            "mechanism": "vcg",
            "bids": {"id": np.array([1, 2]), "price": [5, 4]},
            "asks": [{"id": "1", "price": 1}],
        }

        assert clear(doc)["fills"] == {1: 1, "1": 1}

    def test_accepts_distinct_integer_id_arrays_in_a_sparse_range(self):
        doc = {
            "mechanism": "vcg",
            "bids": {"id": np.array([10**15, 3]), "price": [5, 4]},
            "asks": {"id": np.array([-(10**12)]), "price": [1]},
        }

        assert clear(doc)["fills"] == {10**15: 1, -(10**12): 1}

    def test_accepts_an_empty_numpy_side_whatever_its_dtype(self):
        doc = {"mechanism": "sbba", "bids": {"id": np.array([]), "price": np.array([])}, "asks": []}

        assert clear(doc)["traded_quantity"] == 0

    def test_refuses_an_unknown_mechanism(self):
        with pytest.raises(MechanismError) as caught:
            clear(book("english", PUBLIC_BIDS, PUBLIC_ASKS))

        assert caught.value.code == "unknown_mechanism"

    def test_refuses_a_whole_list_when_one_book_is_bad(self):
        with pytest.raises(MechanismError):
            clear([book("mcafee", PUBLIC_BIDS, PUBLIC_ASKS), BAD_BOOKS["negative quantity"]])

    def test_clears_a_list_in_order(self):
        docs = [book("mcafee", PUBLIC_BIDS, PUBLIC_ASKS), book("vcg", PUBLIC_BIDS, PUBLIC_ASKS)]

        results = clear(docs)

        assert [result["mechanism"] for result in results] == ["mcafee", "vcg"]
