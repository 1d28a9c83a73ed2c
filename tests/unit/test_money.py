"""market.money.to_money: the one door from engine floats and strings to ledger Decimals."""

import math
from decimal import Decimal

import pytest

from market.money import MAX_AMOUNT, QUANTUM, to_money


class TestToMoney:
    def test_takes_a_float_by_its_shortest_repr_not_its_binary_expansion(self):
        amount = to_money(0.1)

        assert amount == Decimal("0.100000")
        assert Decimal(0.1) != Decimal("0.1")  # the binary expansion it must not use

    def test_keeps_the_sum_a_float_engine_produces(self):
        amount = to_money(0.1 + 0.2)

        assert amount == Decimal("0.300000")

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("0.0000005", "0.000000"),
            ("0.0000015", "0.000002"),
            ("0.0000025", "0.000002"),
            ("-0.0000025", "-0.000002"),
            ("1.2345675", "1.234568"),
            ("1.23456751", "1.234568"),
        ],
    )
    def test_rounds_half_to_even_at_the_quantum(self, value, expected):
        amount = to_money(value)

        assert amount == Decimal(expected)
        assert amount.as_tuple().exponent == -6

    @pytest.mark.parametrize("value", [Decimal("12.5"), 12, "12.5", 12.5])
    def test_gives_every_amount_the_one_quantum(self, value):
        amount = to_money(value)

        assert amount.as_tuple().exponent == QUANTUM.as_tuple().exponent
        assert amount == Decimal("12.5") or amount == Decimal(12)

    def test_keeps_the_largest_column_amount_exact(self):
        amount = to_money(str(MAX_AMOUNT))

        assert amount == MAX_AMOUNT

    @pytest.mark.parametrize(
        "value", [math.nan, math.inf, -math.inf, "NaN", "Infinity", "-inf", Decimal("NaN"), Decimal("Inf")]
    )
    def test_refuses_what_is_not_a_finite_amount(self, value):
        with pytest.raises(ValueError):
            to_money(value)

    @pytest.mark.parametrize("value", ["", "ten", "1,5", None, [1]])
    def test_refuses_what_is_not_a_number(self, value):
        with pytest.raises((ValueError, TypeError)):
            to_money(value)
