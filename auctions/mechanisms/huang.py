"""Huang's multi-unit double auction with divisible quantities.

Model (Huang, Scheller-Wolf, Sycara, "Design of a multi-unit double auction e-market",
Computational Intelligence 18(4), 2002): each order is a step of a demand (bids, price descending)
or supply (asks, price ascending) curve with a divisible quantity. The efficient quantity Q* is the
largest quantity at which demand price >= supply price. The price setters are the buyer step and the
seller step holding Q* (the first in sort order whose cumulative quantity reaches it); buyers before
the buyer setter trade and pay its bid, sellers before the seller setter trade and get its ask; the
long side is rationed by constrained equal loss q_i' = max(0, q_i - d) so both sides trade the
short side's total. The setters never trade, which makes the prices independent of one's own report
(truthful in price), individually rational, and budget balanced with surplus >= 0.

Tolerance (docs/mechanisms.md): cumulative quantities are compared with 1e-12 × the total quantity
of the book (both sides); a fill below it is 0 and omitted.
"""

from dataclasses import dataclass

import numpy as np

from auctions.mechanisms.order_book import Book
from auctions.mechanisms.unit_rules import Steps, efficient_quantity, sorted_steps

RELATIVE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class HuangOutcome:
    """Sorted sides, setters' prices, and per-step fills (index into the Steps, quantity)."""

    bids: Steps
    asks: Steps
    efficient: float
    traded: float
    buyer_price: float | None
    seller_price: float | None
    buyer_steps: np.ndarray
    buyer_fills: np.ndarray
    seller_steps: np.ndarray
    seller_fills: np.ndarray


def equal_loss(quantities: np.ndarray, target: float) -> np.ndarray:
    """Constrained equal loss: max(0, q_i - d) with d >= 0 chosen so that the result sums to `target`.

    With q sorted ascending, the loss d lies between two consecutive quantities; the first sorted
    position j whose remaining excess sum_{i>j} (q_i - q_j) is at most `target` fixes the active set.
    """
    ascending = np.sort(quantities)
    count = len(ascending)
    tail = np.cumsum(ascending[::-1])[::-1]  # sum of ascending[j:]
    remaining_at_breakpoints = tail - ascending * np.arange(count, 0, -1)
    first = int(np.searchsorted(-remaining_at_breakpoints, -target, side="left"))
    loss = (tail[first] - target) / (count - first)
    return np.maximum(quantities - max(loss, 0.0), 0.0)


def clear_huang(book: Book) -> HuangOutcome:
    """Run Huang's rule on a validated book (quantities divisible)."""
    bids = sorted_steps(book.bids.prices, book.bids.quantities, descending=True, integer=False)
    asks = sorted_steps(book.asks.prices, book.asks.quantities, descending=False, integer=False)
    tolerance = RELATIVE_TOLERANCE * float(book.bids.quantities.sum() + book.asks.quantities.sum())
    efficient = float(efficient_quantity(bids, asks))
    empty = np.empty(0, dtype=np.intp)
    no_trade = HuangOutcome(bids, asks, efficient, 0.0, None, None, empty, np.empty(0), empty, np.empty(0))
    if efficient <= tolerance:
        return no_trade
    buyer_setter = int(np.searchsorted(bids.cumulative, efficient - tolerance, side="left"))
    seller_setter = int(np.searchsorted(asks.cumulative, efficient - tolerance, side="left"))
    demand = float(bids.cumulative[buyer_setter - 1]) if buyer_setter else 0.0
    supply = float(asks.cumulative[seller_setter - 1]) if seller_setter else 0.0
    traded = min(demand, supply)
    if traded <= tolerance:
        return no_trade
    buyer_fills = bids.quantities[:buyer_setter].astype(np.float64)
    seller_fills = asks.quantities[:seller_setter].astype(np.float64)
    if demand - supply > tolerance:
        buyer_fills = equal_loss(buyer_fills, traded)
    elif supply - demand > tolerance:
        seller_fills = equal_loss(seller_fills, traded)
    buyer_steps = np.flatnonzero(buyer_fills >= tolerance)
    seller_steps = np.flatnonzero(seller_fills >= tolerance)
    return HuangOutcome(
        bids=bids,
        asks=asks,
        efficient=efficient,
        traded=traded,
        buyer_price=float(bids.prices[buyer_setter]),
        seller_price=float(asks.prices[seller_setter]),
        buyer_steps=buyer_steps,
        buyer_fills=buyer_fills[buyer_steps],
        seller_steps=seller_steps,
        seller_fills=seller_fills[seller_steps],
    )
