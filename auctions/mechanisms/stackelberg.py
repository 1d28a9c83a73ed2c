"""Stackelberg pricing of one resource to logarithmic followers, exactly (docs/mechanisms.md).

Model (leader-follower pricing of edge computing capacity in the style of the EETORP-type
leader-follower models: the provider moves first, users best-respond). Follower i has utility
u_i = a_i ln(1 + x_i) - p x_i (a_i in money, x_i in resource units), so it buys
x_i(p) = max(0, a_i / p - 1). The leader sells at unit cost c and maximises
(p - c) sum_i x_i(p) subject to sum_i x_i(p) <= C (C = None: no capacity).

Uniform price, exactly: with a sorted descending and A_m the sum of the top m, the price band
a_(m+1) <= p <= a_(m) serves exactly the top m, revenue R_m(p) = (p - c)(A_m / p - m) is concave there
with stationary point sqrt(c A_m / m), and capacity holds iff p >= A_m / (m + C). So every band's
optimum is that stationary point clipped to [max(a_(m+1), A_m / (m + C)), a_(m)]; revenue is only
piecewise concave, so all bands are evaluated (vectorised) and the best is taken. With c = 0 and a
capacity, R_m decreases in p and the optimum is the market-clearing price (the capacity binds); with
c = 0 and no capacity revenue tends to sum a_i as p -> 0 and no price attains it: `no_equilibrium`.

Per-user prices: maximising sum_i (p_i - c - lambda) x_i(p_i) gives p_i = sqrt((c + lambda) a_i),
served iff a_i > c + lambda; the multiplier lambda >= 0 is found by bisection on the (decreasing)
total demand so that it is <= C, and is 0 when the capacity is slack.

Welfare = sum_i a_i ln(1 + x_i) - c sum_i x_i; efficiency compares it with the welfare at the
competitive price max(c, p_C), p_C the market-clearing price (p_C = max_m A_m / (m + C)), which is the
welfare optimum under the capacity (its KKT conditions are the followers' demand at c + lambda).
"""

import numpy as np

from auctions.mechanisms.errors import MechanismError
from auctions.mechanisms.game_fields import floats, number, vector

BISECTION_STEPS = 400


def solve_stackelberg(doc: dict) -> dict:
    """Solve a `stackelberg` GAME (uniform or per-user pricing) and return its RESULT."""
    valuations = vector(doc, "valuations")
    cost = number(doc, "unit_cost")
    capacity = doc.get("capacity")
    if capacity is not None:
        capacity = number(doc, "capacity")
    pricing = doc.get("pricing", "uniform")
    if pricing not in ("uniform", "per_user"):
        raise MechanismError("bad_input", f'pricing must be "uniform" or "per_user", not {pricing!r}')
    if cost == 0 and capacity is None:
        raise MechanismError(
            "no_equilibrium", "with unit_cost 0 and no capacity the leader's revenue has no maximum"
        )
    top = np.sort(valuations[valuations > 0])[::-1]  # sorted once, shared by both solvers below
    if pricing == "uniform":
        price = uniform_price(top, cost, capacity)
        prices = np.full_like(valuations, price)
        result = {"price": float(price)}
    else:
        prices, multiplier = per_user_prices(valuations, cost, capacity)
        result = {"prices": floats(prices), "capacity_multiplier": float(multiplier)}
    demands = log_demand(valuations, prices)
    total = float(demands.sum())
    gross = valuations * np.log1p(demands)
    utilities = gross - prices * demands
    welfare = float(gross.sum() - cost * total)
    reference = competitive_welfare(valuations, top, cost, capacity)
    result.update(
        {
            "demands": floats(demands),
            "total_demand": total,
            "leader_revenue": float(np.sum((prices - cost) * demands)),
            "follower_utilities": floats(utilities),
            "capacity_binding": bool(capacity is not None and total >= capacity * (1 - 1e-9)),
            "welfare": welfare,
            "efficiency": welfare / reference if reference > 1e-300 else 1.0,
        }
    )
    return result


def uniform_price(top: np.ndarray, cost: float, capacity: float | None) -> float:
    """The revenue-maximising uniform price, band by band (exact), from the positive valuations sorted
    in descending order."""
    if len(top) == 0:
        return max(cost, 0.0)
    served = np.arange(1, len(top) + 1, dtype=float)
    total = np.cumsum(top)
    high = top
    low = np.append(top[1:], 0.0)
    if capacity is not None:
        low = np.maximum(low, total / (served + capacity))
    price = np.clip(np.sqrt(cost * total / served), low, high)
    with np.errstate(divide="ignore", invalid="ignore"):
        revenue = (price - cost) * (total / price - served)
    revenue = np.where((low <= high) & (price > 0), revenue, -np.inf)
    best = int(np.argmax(revenue))
    if not revenue[best] > 0:
        return max(cost, float(top[0]))  # nothing worth selling: the lowest price at which nobody buys
    return float(price[best])


def per_user_prices(valuations: np.ndarray, cost: float, capacity: float | None) -> tuple[np.ndarray, float]:
    """p_i = sqrt((c + lambda) a_i) with lambda >= 0 by bisection so that total demand <= capacity."""
    peak = float(valuations.max())

    def demand(level: float) -> float:
        served = valuations > level
        return float(np.sum(np.sqrt(valuations[served] / level) - 1.0)) if level > 0 else np.inf

    level = cost
    if capacity is not None and peak > cost and demand(cost) > capacity:
        low, high = cost, peak  # demand(low) > capacity >= demand(high) = 0
        for _ in range(BISECTION_STEPS):
            middle = 0.5 * (low + high)
            if middle <= low or middle >= high:
                break
            if demand(middle) > capacity:
                low = middle
            else:
                high = middle
        level = high  # the feasible end: capacity holds
    return np.sqrt(level * valuations), level - cost


def competitive_welfare(
    valuations: np.ndarray, top: np.ndarray, cost: float, capacity: float | None
) -> float:
    """Welfare at the competitive price max(c, market-clearing price): the welfare optimum."""
    clearing = 0.0
    if capacity is not None and len(top):
        served = np.arange(1, len(top) + 1, dtype=float)
        clearing = float(np.max(np.cumsum(top) / (served + capacity)))
    price = max(cost, clearing)
    if price <= 0:
        return 0.0
    demands = log_demand(valuations, np.full_like(valuations, price))
    return float(np.sum(valuations * np.log1p(demands)) - cost * demands.sum())


def log_demand(valuations: np.ndarray, prices) -> np.ndarray:
    """Followers with u = a ln(1 + x) - p x buy x = max(0, a / p - 1); a zero valuation buys nothing."""
    prices = np.asarray(prices, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(valuations > 0, valuations / prices, 0.0)
    return np.maximum(0.0, ratio - 1.0)
