"""Money: one quantum everywhere (6 decimal places, the base unit of a 6-decimal stablecoin).

Amounts are `Decimal` in the database, the API and the ledger; floats exist only inside the
clearing engine and cross the boundary through `to_money`.
"""

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django.db import models

DECIMAL_PLACES = 6
MAX_DIGITS = 24
QUANTUM = Decimal(1).scaleb(-DECIMAL_PLACES)
# The largest amount a column can hold (18 integer digits); the API refuses more.
MAX_AMOUNT = Decimal(10) ** (MAX_DIGITS - DECIMAL_PLACES) - QUANTUM


def to_money(value) -> Decimal:
    """Round a Decimal, int, str or engine float to the quantum (banker's rounding)."""
    if isinstance(value, float):
        value = repr(value)  # the shortest decimal that round-trips, not the binary expansion
    try:
        amount = Decimal(value).quantize(QUANTUM, rounding=ROUND_HALF_EVEN)
    except InvalidOperation as error:
        raise ValueError(f"not an amount of money: {value!r}") from error
    if not amount.is_finite():
        raise ValueError(f"not a finite amount of money: {value!r}")
    return amount


class MoneyField(models.DecimalField):
    """A DecimalField at the one quantum."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_digits", MAX_DIGITS)
        kwargs.setdefault("decimal_places", DECIMAL_PLACES)
        super().__init__(*args, **kwargs)
