"""Elastic demand: how much a consumer buys at a price (the follower of EETORP's Stackelberg game).

Model (EETORP, edge computing trading with Stackelberg pricing: edge nodes lead with prices, users
follow by choosing how much to buy; the follower of `stackelberg.py`). Consumer i values q units of
work (reference device-hours, or millions of tokens) at a_i ln(1 + q) (a_i > 0, money), pays P >= 0
per unit out of a budget B_i > 0, and may state the least worth running, q_min >= 0, and the most it
can use, q_max > 0 (a deadline or a dataset bounds it). Its best response maximises

    u_i(q) = a_i ln(1 + q) - P q   over   q in {0} U [q_min, min(q_max, B_i / P)].

u_i is strictly concave, so on the interval its maximiser is the stationary point a_i / P - 1
clipped to the interval; the best response is that point when the interval is non-empty and u_i there
is >= 0 (buying at zero surplus is allowed: individually rational, weakly), else 0 (buy nothing).
With q_min = 0 and no budget this is `stackelberg.log_demand` exactly.

Properties (tests/unit/mechanisms/test_elastic.py, Hypothesis): the best response is a global
maximiser of u_i over the feasible set (checked against a dense grid), spends at most B_i, lies in
{0} U [q_min, q_max], is non-increasing in P, non-decreasing in B_i and in a_i, and is positive iff
P < choke price (P <= choke when q_min > 0).

Choke price: the highest unit price at which the best response is positive; a unit bid at it is the
consumer's truthful bid for its first unit. With q_min = 0 it is a_i (the marginal value of the first
unit); with q_min > 0 it is min(a_i ln(1 + q_min) / q_min, B_i / q_min): above the first, even q_min
leaves a loss, above the second the budget cannot pay for q_min.

BOOK: {"mechanism": "elastic_demand", "followers": [{"id", "weight" (a > 0), "price" (P >= 0),
"budget" (B > 0), "min_quantity" (>= 0, default 0), "max_quantity" (> 0, >= min_quantity)}]}.
RESULT: {"mechanism", "quantities": {id: q}, "spend": {id: P q}, "utilities": {id: u(q)},
"declined": [ids that buy nothing, in input order], "input_sha256"}. The price P = 0 is allowed
(q_max bounds the purchase then).
"""

import math

from auctions.mechanisms.canonical import input_sha256 as _hash
from auctions.mechanisms.errors import MechanismError

MECHANISM = "elastic_demand"


def _bad(message: str) -> MechanismError:
    return MechanismError("bad_input", message)


def _number(value, what: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(f"{what} must be a finite number")
    if value < 0 or (positive and value == 0):
        raise _bad(f"{what} must be {'> 0' if positive else '>= 0'}")
    return float(value)


def utility(weight: float, price: float, quantity: float) -> float:
    """u(q) = a ln(1 + q) - P q."""
    return weight * math.log1p(quantity) - price * quantity


def best_response(
    *, weight: float, price: float, budget: float, min_quantity: float = 0.0, max_quantity: float
) -> float:
    """The quantity maximising a ln(1 + q) - P q over {0} U [q_min, min(q_max, B / P)] (module docstring)."""
    cap = max_quantity if price <= 0 else min(max_quantity, budget / price)
    if cap < min_quantity or cap <= 0:
        return 0.0
    stationary = math.inf if price <= 0 else weight / price - 1.0
    quantity = min(max(stationary, min_quantity), cap)
    if quantity <= 0 or utility(weight, price, quantity) < 0:
        return 0.0
    return quantity


def choke_price(*, weight: float, budget: float, min_quantity: float = 0.0) -> float:
    """The highest unit price at which the best response is positive (the truthful unit bid)."""
    if min_quantity <= 0:
        return weight
    return min(weight * math.log1p(min_quantity) / min_quantity, budget / min_quantity)


def _follower(row, index: int) -> tuple[str, float, float, float, float, float]:
    what = f"followers[{index}]"
    if not isinstance(row, dict):
        raise _bad(f"{what} must be an object")
    name = row.get("id")
    if isinstance(name, bool) or not isinstance(name, int | str) or name == "":
        raise _bad(f"{what} id must be a non-empty string or an integer")
    weight = _number(row.get("weight"), f"{what} weight", positive=True)
    price = _number(row.get("price"), f"{what} price")
    budget = _number(row.get("budget"), f"{what} budget", positive=True)
    low = _number(row.get("min_quantity", 0), f"{what} min_quantity")
    high = _number(row.get("max_quantity"), f"{what} max_quantity", positive=True)
    if low > high:
        raise _bad(f"{what} min_quantity must not exceed max_quantity")
    return str(name), weight, price, budget, low, high


def clear_elastic_demand(doc: dict, *, input_sha256: str | None = None) -> dict:
    """Each follower's best response at its price (module docstring): an `elastic_demand` RESULT."""
    followers = doc.get("followers")
    if not isinstance(followers, list):
        raise _bad("followers must be a list")
    rows = [_follower(row, i) for i, row in enumerate(followers)]
    if len({row[0] for row in rows}) != len(rows):
        raise _bad("follower ids must be unique")
    quantities, spend, utilities, declined = {}, {}, {}, []
    for name, weight, price, budget, low, high in rows:
        quantity = best_response(
            weight=weight, price=price, budget=budget, min_quantity=low, max_quantity=high
        )
        if quantity <= 0:
            declined.append(name)
            continue
        quantities[name] = quantity
        spend[name] = price * quantity
        utilities[name] = utility(weight, price, quantity)
    return {
        "mechanism": MECHANISM,
        "quantities": quantities,
        "spend": spend,
        "utilities": utilities,
        "declined": declined,
        "input_sha256": input_sha256 if input_sha256 is not None else _hash(doc),
    }
