"""Unit double auctions on sorted steps: McAfee, trade reduction, VCG and the two SBBA lotteries.

Model: every buyer wants, and every seller offers, indivisible units; an order of integer quantity q
is q unit orders of one id. Bids are sorted by price descending and asks ascending, ties in input
order; b_(i) and s_(i) are the i-th best unit prices; k = max{k : b_(k) >= s_(k)} is the number of
efficient trades (a zero-gain pair counts). Units are never materialised: each side is kept as
sorted steps with cumulative quantities, and the unit at position j is found by binary search.

Sources: McAfee, "A dominant strategy double auction", J. Econ. Theory 56 (1992) — the McAfee rule
and trade reduction; Vickrey-Clarke-Groves payments for the efficient k trades; Segal-Halevi,
Hassidim, Aumann, "SBBA: a strongly-budget-balanced double-auction mechanism", SAGT 2016.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Steps:
    """The orders of one side that can matter, best first: input positions, prices, quantities."""

    positions: np.ndarray
    prices: np.ndarray
    quantities: np.ndarray
    cumulative: np.ndarray

    @property
    def total(self):
        return self.cumulative[-1] if len(self.cumulative) else 0

    def price_at(self, unit) -> float | None:
        """Price of the unit at 1-based position `unit` in sort order, None beyond the side."""
        if unit < 1 or unit > self.total:
            return None
        return float(self.prices[np.searchsorted(self.cumulative, unit, side="left")])

    def prefix(self, units) -> tuple[np.ndarray, np.ndarray]:
        """Step indices and quantities filled by the first `units` units (all steps with a fill)."""
        if units <= 0:
            return np.empty(0, dtype=np.intp), self.quantities[:0]
        count = int(np.searchsorted(self.cumulative, units, side="left")) + 1
        filled = self.quantities[:count].copy()
        filled[-1] = units - (self.cumulative[count - 2] if count > 1 else 0)
        return np.arange(count), filled

    def owners(self, units: np.ndarray) -> np.ndarray:
        """Step index of each 0-based unit position."""
        return np.searchsorted(self.cumulative, units + 1, side="left")


def sorted_steps(prices, quantities, *, descending: bool, keep=None, integer: bool = True) -> Steps:
    """Orders with a positive quantity in stable price order; only the best `keep` orders and their ties.

    Cutting to the best `keep` orders (found in linear time by np.partition) is exact when each order
    holds at least one unit and `keep` exceeds the other side's units: no later order can be among the
    k + 1 best units, and every order tied with the cut-off price is kept so ties stay in input order.
    """
    if len(quantities) and quantities.min() > 0:
        positions = np.arange(len(quantities))
        key = -prices if descending else prices
    else:
        positions = np.flatnonzero(quantities > 0)
        key = -prices[positions] if descending else prices[positions]
    if keep is not None and keep < len(positions):
        cutoff = np.partition(key, keep - 1)[keep - 1]
        chosen = np.flatnonzero(key <= cutoff)
        positions, key = positions[chosen], key[chosen]
    order = np.argsort(key, kind="stable")
    positions = positions[order]
    steps_q = quantities[positions].astype(np.int64) if integer else quantities[positions]
    return Steps(
        positions=positions, prices=prices[positions], quantities=steps_q, cumulative=np.cumsum(steps_q)
    )


def efficient_quantity(bids: Steps, asks: Steps):
    """max{x : b(x) >= s(x)} over unit (or divisible) positions: max over ask steps of min(S_i, B(s_i)).

    B(p) is the bid quantity priced at least p. Each candidate is feasible and the step holding the
    optimum attains it, so the maximum is exact without expanding units.
    """
    if len(bids.prices) == 0 or len(asks.prices) == 0:
        return 0
    reaching = np.searchsorted(-bids.prices, -asks.prices, side="right")
    bid_cumulative = np.concatenate((np.zeros(1, dtype=bids.cumulative.dtype), bids.cumulative))
    return max(np.minimum(asks.cumulative, bid_cumulative[reaching]).max(), 0)


@dataclass(frozen=True)
class Plan:
    """Units each side trades, the two prices, and the side whose units are drawn by lottery (if any)."""

    units: int
    buyer_price: float | None
    seller_price: float | None
    lottery_side: str | None = None


def mcafee(k: int, bids: Steps, asks: Steps, support) -> Plan:
    """McAfee (1992): p0 = (b_(k+1) + s_(k+1)) / 2 for all k if s_(k) <= p0 <= b_(k), else trade reduction.

    A missing b_(k+1) or s_(k+1) is taken from `support` (min_bid, max_ask) when the book gives it;
    otherwise the trade-reduction branch applies.
    """
    if k == 0:
        return Plan(0, None, None)
    bk, sk = bids.price_at(k), asks.price_at(k)
    next_bid, next_ask = bids.price_at(k + 1), asks.price_at(k + 1)
    if support is not None:
        next_bid = support[0] if next_bid is None else next_bid
        next_ask = support[1] if next_ask is None else next_ask
    if next_bid is not None and next_ask is not None:
        p0 = (next_bid + next_ask) / 2
        if sk <= p0 <= bk:
            return Plan(k, p0, p0)
    return Plan(k - 1, bk, sk)


def trade_reduction(k: int, bids: Steps, asks: Steps, support) -> Plan:
    """Trade reduction (McAfee 1992): k - 1 pairs; buyers pay b_(k), sellers get s_(k)."""
    if k == 0:
        return Plan(0, None, None)
    return Plan(k - 1, bids.price_at(k), asks.price_at(k))


def vcg(k: int, bids: Steps, asks: Steps, support) -> Plan:
    """VCG for unit traders: all k pairs; buyers pay max(s_(k), b_(k+1)), sellers get min(b_(k), s_(k+1))."""
    if k == 0:
        return Plan(0, None, None)
    bk, sk = bids.price_at(k), asks.price_at(k)
    next_bid, next_ask = bids.price_at(k + 1), asks.price_at(k + 1)
    buyer_price = sk if next_bid is None else max(sk, next_bid)
    seller_price = bk if next_ask is None else min(bk, next_ask)
    return Plan(k, buyer_price, seller_price)


def sbba(k: int, bids: Steps, asks: Steps, support) -> Plan:
    """SBBA (Segal-Halevi, Hassidim, Aumann 2016): p = min(b_(k), s_(k+1)); sellers drawn when p = b_(k)."""
    if k == 0:
        return Plan(0, None, None)
    bk, next_ask = bids.price_at(k), asks.price_at(k + 1)
    if next_ask is not None and next_ask <= bk:
        return Plan(k, next_ask, next_ask)
    return Plan(k - 1, bk, bk, lottery_side="asks")


def sbba_buyer_lottery(k: int, bids: Steps, asks: Steps, support) -> Plan:
    """The mirror of SBBA: p = max(s_(k), b_(k+1)); when p = s_(k), k - 1 of buyers 1..k are drawn."""
    if k == 0:
        return Plan(0, None, None)
    sk, next_bid = asks.price_at(k), bids.price_at(k + 1)
    if next_bid is not None and next_bid >= sk:
        return Plan(k, next_bid, next_bid)
    return Plan(k - 1, sk, sk, lottery_side="bids")


RULES = {
    "mcafee": mcafee,
    "trade_reduction": trade_reduction,
    "vcg": vcg,
    "sbba": sbba,
    "sbba_buyer_lottery": sbba_buyer_lottery,
}
LOTTERY_SIDES = {"sbba": "asks", "sbba_buyer_lottery": "bids"}
