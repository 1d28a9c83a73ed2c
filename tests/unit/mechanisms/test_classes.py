"""Resource classes: keys and memory tiers, grouping a live book, and quotes for a unit job."""

import numpy as np
import pytest

from auctions.mechanisms import MechanismError
from auctions.mechanisms.classes import (
    group_book,
    memory_tier,
    quote_unit_job,
    required_tier,
    resource_class_key,
)


class TestResourceClassKey:
    @pytest.mark.parametrize(
        "memory, key",
        [
            (24, "GPU/24G/eu-west"),
            (20, "GPU/16G/eu-west"),
            (7.5, "GPU/4G/eu-west"),
            (1, "GPU/0G/eu-west"),
            (141, "GPU/96G/eu-west"),
        ],
    )
    def test_puts_a_device_in_the_largest_tier_not_above_its_memory(self, memory, key):
        assert resource_class_key("GPU", memory, "eu-west") == key

    def test_needs_the_smallest_tier_that_guarantees_the_memory(self):
        assert (required_tier(20), required_tier(24), required_tier(0.5), required_tier(3)) == (24, 24, 2, 4)
        assert required_tier(120) is None
        assert memory_tier(80) == 80

    @pytest.mark.parametrize(
        "args",
        [
            ("GPU", -1, "eu"),
            ("GPU", float("nan"), "eu"),
            ("GPU", True, "eu"),
            ("G/PU", 8, "eu"),
            ("GPU", 8, ""),
        ],
    )
    def test_refuses_malformed_parts(self, args):
        with pytest.raises(MechanismError) as caught:
            resource_class_key(*args)

        assert caught.value.code == "bad_input"


def resource(name, memory, devices, ask, region="eu", device_class="GPU"):
    return {
        "id": name,
        "device_class": device_class,
        "memory_per_device_gib": memory,
        "devices": devices,
        "ask": ask,
        "region": region,
    }


def job(name, memory, bid, devices=1, region="eu", device_class="GPU"):
    return {
        "id": name,
        "device_class": device_class,
        "memory_per_device_gib": memory,
        "devices": devices,
        "bid": bid,
        "region": region,
    }


RESOURCES = [
    resource("r24", 24, 2, 1.0),
    resource("r80", 80, 1, 3.0),
    resource("r24-us", 24, 0, 0.5, region="us"),
    resource("r24b", 24.5, 1, 1.5),
]
JOBS = [
    job("j20", 20, 2.0),
    job("j40", 40, 4.0),
    job("j-multi", 16, 9.0, devices=2),
    job("j-us", 16, 2.0, region="us"),
    job("j-huge", 120, 9.0),
    job("j-npu", 8, 1.0, device_class="NPU"),
    job("j8", 8, 1.2),
]


class TestGroupBook:
    def test_builds_one_unit_book_per_class_with_free_devices_as_ask_quantities(self):
        grouped = group_book(JOBS, RESOURCES, mechanism="sbba")

        assert list(grouped["books"]) == ["GPU/24G/eu", "GPU/80G/eu"]
        class_24 = grouped["books"]["GPU/24G/eu"]
        assert class_24["mechanism"] == "sbba"
        assert class_24["asks"] == [
            {"id": "r24", "price": 1.0, "quantity": 2},
            {"id": "r24b", "price": 1.5, "quantity": 1},
        ]

    def test_sends_a_single_device_job_to_the_smallest_fitting_tier_with_supply(self):
        # j20 needs the 24G tier; j40 needs 48G, which has no supply in eu, so it goes to 80G;
        # j8 needs 8G: the smallest tier with supply at or above it is 24G.
        grouped = group_book(JOBS, RESOURCES)

        assert [bid["id"] for bid in grouped["books"]["GPU/24G/eu"]["bids"]] == ["j20", "j8"]
        assert grouped["books"]["GPU/80G/eu"]["bids"] == [{"id": "j40", "price": 4.0, "quantity": 1}]

    def test_returns_multi_device_and_oversized_jobs_as_heterogeneous(self):
        assert group_book(JOBS, RESOURCES)["heterogeneous"] == ["j-multi", "j-huge"]

    def test_leaves_jobs_without_fitting_supply_in_their_region_unplaced(self):
        # j-us: the only us resource has no free device; j-npu: no NPU anywhere.
        assert group_book(JOBS, RESOURCES)["unplaced"] == ["j-us", "j-npu"]

    def test_gives_books_the_clearing_engine_accepts(self):
        from auctions.mechanisms import clear

        results = [clear(book) for book in group_book(JOBS, RESOURCES)["books"].values()]

        # 24G: bids 2.0 (j20), 1.2 (j8) against asks 1.0, 1.0 (r24 × 2), 1.5: k = 2, no b_3, so McAfee
        # reduces to one trade; 80G: one bid and one ask, k = 1, nothing trades.
        assert [result["traded_quantity"] for result in results] == [1, 0]

    @pytest.mark.parametrize(
        "jobs, resources",
        [
            ([job("x", 8, 1.0)], [resource("x", 24, 1, 1.0)]),
            ([job("a", 8, 1.0), job("a", 8, 1.0)], []),
            ([job("a", 8, -1.0)], []),
            ([job("a", 8, 1.0, devices=1.5)], []),
            ([{"id": "a", "bid": 1.0}], []),
            ([], [resource("r", 24, 1, float("inf"))]),
        ],
        ids=[
            "id shared by a job and a resource",
            "repeated job",
            "negative bid",
            "fractional devices",
            "missing fields",
            "infinite ask",
        ],
    )
    def test_refuses_malformed_records(self, jobs, resources):
        with pytest.raises(MechanismError) as caught:
            group_book(jobs, resources)

        assert caught.value.code == "bad_input"


def unit_book(mechanism, bids, asks, **extra):
    return {
        "mechanism": mechanism,
        "bids": [{"id": f"b{i}", "price": p} for i, p in enumerate(bids)],
        "asks": [{"id": f"s{i}", "price": p} for i, p in enumerate(asks)],
        **extra,
    }


class TestQuoteUnitJob:
    def test_quotes_the_price_a_winning_bid_would_pay(self):
        # Trade reduction on bids 20 (quote), 10, 9 and asks 1, 2: k = 2, one trade, the quote pays b_2 = 10.
        # It keeps winning down to just above 10 (at 10 it ties with b0, which came first).
        quote = quote_unit_job(unit_book("trade_reduction", [10, 9], [1, 2]), 20)

        assert (quote["trades"], quote["price"], quote["reason"], quote["probability"]) == (
            True,
            10.0,
            None,
            1.0,
        )
        assert quote["min_bid"] == pytest.approx(10.0, rel=1e-8) and quote["min_bid"] > 10.0
        assert quote["clearing_price"] == 9.0

    def test_names_an_efficient_bid_that_the_rule_gives_up(self):
        # Bids 10, 9.5 (quote), 9: k = 2 and the quote is the second unit, the one trade reduction drops.
        quote = quote_unit_job(unit_book("trade_reduction", [10, 9], [1, 2]), 9.5)

        assert (quote["trades"], quote["price"], quote["reason"]) == (False, None, "reduced_trade")
        assert quote["min_bid"] == pytest.approx(10.0, rel=1e-8)

    def test_names_a_bid_outside_the_efficient_trades(self):
        quote = quote_unit_job(unit_book("trade_reduction", [10, 9], [1, 2]), 1)

        assert quote["reason"] == "bid_below_clearing"

    def test_finds_mcafees_threshold_between_book_prices(self):
        # Public book plus the quote x in [9, 13]: b_4 = x, b_5 = 9, s_5 = 11, p0 = 10; all four trade
        # at 10 iff x >= 10, so 9.9 is reduced and the lowest winning bid is 10 itself.
        book = unit_book("mcafee", [17, 14, 13, 9, 6], [1, 4, 5, 8, 11])

        low, high = quote_unit_job(book, 9.9), quote_unit_job(book, 20)

        assert low["reason"] == "reduced_trade" and high["price"] == 10.0
        assert low["min_bid"] == pytest.approx(10.0, abs=1e-7)

    def test_reports_no_supply(self):
        quote = quote_unit_job(unit_book("mcafee", [5], []), 50)

        assert (quote["trades"], quote["reason"], quote["min_bid"]) == (False, "no_supply", None)

    def test_reports_a_thin_market_where_no_bid_can_trade(self):
        # One ask and no other bid: k = 1 with no b_2, s_2 or support, so McAfee reduces to zero trades.
        quote = quote_unit_job(unit_book("mcafee", [], [3]), 50)

        assert (quote["reason"], quote["min_bid"]) == ("thin_market", None)

    def test_reports_a_buyers_lottery_with_its_probability(self):
        # Bids 17, 15 (quote), 14, 13, 6; asks 1, 4, 5, 8, 11: k = 4, b_5 = 6 < s_4 = 8, so three of the
        # four best buyers are drawn at p = 8: the quote is drawn with probability 3/4, depending on the seed.
        quotes = [
            quote_unit_job(unit_book("sbba_buyer_lottery", [17, 14, 13, 6], [1, 4, 5, 8, 11], seed=s), 15)
            for s in range(12)
        ]

        assert {q["probability"] for q in quotes} == {0.75}
        assert {q["reason"] for q in quotes} == {None, "lottery_not_drawn"}
        assert {q["price"] for q in quotes if q["trades"]} == {8.0}

    def test_quotes_columnar_and_numpy_books_like_rows(self):
        rows = unit_book("vcg", [10, 9], [1, 2, 12])
        columns = {
            "mechanism": "vcg",
            "bids": {"id": np.array(["b0", "b1"]), "price": np.array([10.0, 9.0])},
            "asks": {"id": ["s0", "s1", "s2"], "price": [1, 2, 12], "quantity": [1, 1, 1]},
        }

        assert quote_unit_job(columns, 9.5) == quote_unit_job(rows, 9.5)

    def test_does_not_collide_with_an_order_named_like_the_quote(self):
        book = unit_book("vcg", [10], [1, 2])
        book["bids"][0]["id"] = "__quote__"

        assert quote_unit_job(book, 5)["trades"] is True

    def test_refuses_a_bid_that_is_not_a_finite_number(self):
        with pytest.raises(MechanismError):
            quote_unit_job(unit_book("vcg", [10], [1]), float("nan"))
