"""Double auctions (`clear` for mcafee, trade_reduction, vcg, sbba, sbba_buyer_lottery, huang).

Reads a BOOK (row or columnar, lists or NumPy arrays), clears it with the rule of its mechanism and
returns the RESULT document of docs/mechanisms.md with plain Python numbers. The unit rules live in
`unit_rules` (McAfee 1992; Segal-Halevi, Hassidim, Aumann 2016), the divisible one in `huang`
(Huang, Scheller-Wolf, Sycara 2002); this module only sorts, draws lotteries and writes the result.
"""

import numpy as np

from auctions.mechanisms import canonical
from auctions.mechanisms.errors import MechanismError
from auctions.mechanisms.huang import clear_huang
from auctions.mechanisms.order_book import Book, Side, read_book
from auctions.mechanisms.unit_rules import LOTTERY_SIDES, RULES, Steps, efficient_quantity, sorted_steps

MECHANISMS = frozenset({*RULES, "huang"})


def clear_double_auction(doc: dict, *, input_sha256: str | None = None) -> dict:
    """Clear one double-auction BOOK and return its RESULT (docs/mechanisms.md, "Double auctions").

    Raises MechanismError: `unknown_mechanism`, or `bad_input` for a malformed book. A book where
    nothing trades (empty, one-sided, not crossing) gives a result with null prices, not an error.
    `input_sha256`, when given, is reported as is; otherwise the canonical hash is computed.
    """
    if not isinstance(doc, dict):
        raise MechanismError("bad_input", "a book must be a JSON object")
    mechanism = doc.get("mechanism")
    if mechanism not in MECHANISMS:
        raise MechanismError("unknown_mechanism", f"unknown mechanism {mechanism!r}")
    if input_sha256 is not None and not isinstance(input_sha256, str):
        raise MechanismError("bad_input", "input_sha256 must be a hex string")
    book = read_book(doc, unit=mechanism != "huang")
    result = _clear_huang(book) if mechanism == "huang" else _clear_unit(book)
    result["input_sha256"] = canonical.input_sha256(doc) if input_sha256 is None else input_sha256
    return result


def _clear_unit(book: Book) -> dict:
    bid_units = int(book.bids.quantities.sum())
    ask_units = int(book.asks.quantities.sum())
    # Orders hold whole units, so the best (other side's units + 1) orders of a side hold every unit
    # that a rule can look at, including b_(k+1) and s_(k+1).
    bids = sorted_steps(book.bids.prices, book.bids.quantities, descending=True, keep=ask_units + 1)
    asks = sorted_steps(book.asks.prices, book.asks.quantities, descending=False, keep=bid_units + 1)
    k = int(efficient_quantity(bids, asks))
    plan = RULES[book.mechanism](k, bids, asks, book.support)
    buyer_steps, buyer_fills = bids.prefix(plan.units)
    seller_steps, seller_fills = asks.prefix(plan.units)
    lottery = None
    if book.mechanism in LOTTERY_SIDES:
        side_name = LOTTERY_SIDES[book.mechanism]
        lottery = {"side": side_name, "pool": [], "drawn": 0, "seed": book.seed}
        if plan.lottery_side is not None:
            steps, side = (bids, book.bids) if side_name == "bids" else (asks, book.asks)
            drawn_steps, drawn_fills, pool = _draw(steps, side, k, plan.units, book.seed)
            lottery.update(pool=pool, drawn=plan.units)
            if side_name == "bids":
                buyer_steps, buyer_fills = drawn_steps, drawn_fills
            else:
                seller_steps, seller_fills = drawn_steps, drawn_fills
    traded = plan.units
    buyer_price, seller_price = (plan.buyer_price, plan.seller_price) if traded else (None, None)
    result = _result(
        book, bids, asks, buyer_steps, buyer_fills, seller_steps, seller_fills, buyer_price, seller_price
    )
    result["efficient_trades"] = k
    result["traded_quantity"] = traded
    result["surplus"] = float((buyer_price - seller_price) * traded) if traded else 0.0
    if lottery is not None:
        result["lottery"] = lottery
    return _ordered(result)


def _draw(steps: Steps, side: Side, pool_size: int, count: int, seed: int):
    """The spec's lottery: `count` of the `pool_size` best units, drawn by default_rng(seed).choice."""
    pool_steps, pool_quantities = steps.prefix(pool_size)
    pool_positions = steps.positions[np.repeat(pool_steps, pool_quantities)]
    pool = side.names(pool_positions)
    drawn = np.random.default_rng(seed).choice(pool_size, size=count, replace=False)
    counts = np.bincount(steps.owners(np.asarray(drawn, dtype=np.int64)), minlength=len(pool_steps))
    drawn_steps = np.flatnonzero(counts)
    return drawn_steps, counts[drawn_steps], pool


def _clear_huang(book: Book) -> dict:
    outcome = clear_huang(book)
    traded = outcome.traded
    result = _result(
        book,
        outcome.bids,
        outcome.asks,
        outcome.buyer_steps,
        outcome.buyer_fills,
        outcome.seller_steps,
        outcome.seller_fills,
        outcome.buyer_price,
        outcome.seller_price,
    )
    result["efficient_trades"] = outcome.efficient
    result["traded_quantity"] = traded
    if traded:
        paid = outcome.buyer_price * float(outcome.buyer_fills.sum())
        received = outcome.seller_price * float(outcome.seller_fills.sum())
        result["surplus"] = paid - received
    else:
        result["surplus"] = 0.0
    return _ordered(result)


def _result(
    book, bids, asks, buyer_steps, buyer_fills, seller_steps, seller_fills, buyer_price, seller_price
):
    fills: dict = {}
    payments: dict = {}
    gains = 0.0
    if buyer_price is not None:
        _record(fills, payments, book.bids, bids, buyer_steps, buyer_fills, buyer_price)
        _record(fills, payments, book.asks, asks, seller_steps, seller_fills, seller_price)
        gains = float(bids.prices[buyer_steps] @ buyer_fills) - float(
            asks.prices[seller_steps] @ seller_fills
        )
    return {
        "mechanism": book.mechanism,
        "buyer_price": buyer_price,
        "seller_price": seller_price,
        "fills": fills,
        "payments": payments,
        "gains_from_trade": gains,
    }


def _record(fills: dict, payments: dict, side: Side, steps: Steps, chosen, quantities, price: float) -> None:
    names = side.names(steps.positions[chosen])
    fills.update(zip(names, quantities.tolist(), strict=True))
    payments.update(zip(names, (quantities * price).tolist(), strict=True))


_KEY_ORDER = (
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
)


def _ordered(result: dict) -> dict:
    return {key: result[key] for key in _KEY_ORDER if key in result}
