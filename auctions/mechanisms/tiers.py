"""Cloud–edge tiers: a Stackelberg game with the cloud as leader prices the tiers, and latency-bound jobs
take edge devices first, overflowing to the cloud at the cloud's price level.

Source: X. Ren, C. Qiu, X. Wang, Z. Han, K. Xu, H. Yao, S. Guo, "AI-Bazaar: a cloud-edge computing power
trading framework for ubiquitous AI services", IEEE Trans. Cloud Comput. 11(3), 2023: computing power is
traded between a cloud tier and an edge tier, prices are set in a Stackelberg game between the tiers,
and the paper learns the strategies with multi-agent reinforcement learning. Here every follower's
profit is strictly concave in its own price and the game is solved exactly (docs/ai-bazaar.md).

The game (one tiered book; prices per reference device-hour, the work of a speed-1 device in an hour).
- Leader: the cloud tier, one price level p_0 for all its devices, unit cost c_0 = the lowest
  ask / speed of its devices.
- Followers: the edge asks j = 1..M (tiers END and EDGE; one follower per ask), unit cost
  c_j = ask_j / speed_j. Each sees p_0 and sets p_j; they play a Bertrand–Nash game among themselves.
- Demand (linear, differentiated; the engine's `linear_oligopoly`, Vives 1999 ch. 6):
  D_j = alpha - beta p_j + gamma sum_{k != j} p_k + delta p_0 for follower j and
  D_0 = alpha_0 - beta_0 p_0 + delta_0 sum_j p_j for the cloud. Profits (p_j - c_j) D_j and
  (p_0 - c_0) D_0.
- Calibration from the book: n = number of bids (latency-bound jobs), r = the demand scale
  (`reference_price` when the caller gives one, else the median bid), theta = `substitution` in
  [0, 1). Each tier's demand vanishes when every price equals r and own-price effects dominate:
  alpha = n / M, gamma = theta beta / (2M), delta = theta beta / 2,
  beta = alpha / (r (1 - theta (M - 1) / (2M) - theta / 2)); alpha_0 = n, delta_0 = theta beta_0 / (2M),
  beta_0 = n / (r (1 - theta / 2)) (n / r when M = 0).
- Followers' equilibrium (given p_0): profit is strictly concave in p_j (second derivative -2 beta),
  so the first-order conditions ((2 beta + gamma) I - gamma 1 1^T) p = alpha + delta p_0 + beta c
  characterise it; the matrix is invertible with eigenvalues 2 beta + gamma and
  2 beta - (M - 1) gamma > 0 (theta < 1), so the equilibrium is unique and exact:
  p_j(p_0) = s_j + t p_0 with t = delta / (2 beta - (M - 1) gamma) (1 is an eigenvector).
- Leader: D_0 along the followers' reaction is A + B p_0 with A = alpha_0 + delta_0 sum_j s_j and
  B = -beta_0 + delta_0 M t = -beta_0 (1 - theta t / 2) < 0, so its profit is a strictly concave
  quadratic and p_0* = max(c_0, (c_0 - A / B) / 2) exactly (the leader never prices below its cost).
- With no edge ask the leader is a monopolist (M = 0, no followers); with no cloud ask the followers
  respond to p_0 = r (the buyers' outside option is the demand scale).
The equilibrium is interior (`interior`) when every follower's demand is positive at it; a follower
whose cost is so high that its demand is not posts its cost. Posted prices: edge ask j sells at
q_j = max(p_j, c_j) per reference device-hour; a cloud device sells at p_0 when its own cost is <= p_0.

Allocation (tier-aware, `tier_aware` true): buyers in the public priority order sha256("<salt>:<id>")
(posted_price.py). Each takes the accepted edge ask with a unit left and q_j <= bid of lowest q_j; when
none is left (`edge_full`) or every one left is priced above the bid (`edge_price`), it overflows to an
accepted willing cloud device with a unit left at p_0 if p_0 <= bid. It pays its price; the seller
receives exactly that (budget balanced). Tier-blind (`tier_aware` false, the baseline of
bench/tiers.py): each buyer takes the accepted ask of lowest cost ask / speed with a unit left and
cost <= bid, whatever its tier, and pays that cost.

Properties (tests/unit/mechanisms/test_tiers.py, Hypothesis): followers' prices are mutual best
responses and the leader's price is optimal along their reaction; individually rational (a buyer pays
<= bid, a seller receives >= its ask); budget balanced; capacities hold; a job is on the cloud only if
every accepted edge device was full or priced above its bid at its turn. With `reference_price`
given, prices read the number of bids, never their values, and the order is a public hash, so a
buyer's only gain from misreporting is the one "edge first" leaves open: a buyer placed on an edge
device priced above the cloud's level can shade its bid below that price and overflow to the cheaper
cloud (the rule takes a latency-bound job to want the edge, which a single bid cannot state; tested
both ways). Sellers' asks are the followers' costs and move their prices, as in any Stackelberg game.

BOOK: {"mechanism": "tiered", "salt": str, "tier_aware": bool, "substitution": theta,
"reference_price"?: r, "bids": [{"id", "price", "accepts": [ask ids]}], "asks": [{"id", "price",
"quantity", "speed", "tier": "END" | "EDGE" | "CLOUD"}]}.
RESULT: {"mechanism", "assignments": {bid: ask}, "tiers": {bid: tier}, "overflow": {bid: cause},
"unit_prices": {bid: price x speed, per device-hour}, "payments": {bid: per reference device-hour},
"prices": {"cloud": p_0 | None, "edge": {ask: q_j}}, "placed_by_tier", "overflow_share",
"traded_quantity", "gains_from_trade", "game": {...}, "input_sha256"}.
"""

import math
import statistics

import numpy as np

from auctions.mechanisms.canonical import input_sha256 as _hash
from auctions.mechanisms.oligopoly import solve_linear_oligopoly
from auctions.mechanisms.posted_price import _bad, _name, _number, priority  # one set of field checks

TIERS = ("END", "EDGE", "CLOUD")
EDGE_TIERS = frozenset({"END", "EDGE"})
DEFAULT_SUBSTITUTION = 0.5


def calibrate(*, bids: int, followers: int, scale: float, substitution: float) -> dict:
    """The linear demand of the tier game from the book (module docstring): n bids, M followers,
    demand scale r > 0, substitution theta in [0, 1)."""
    n, m, r, theta = float(bids), followers, scale, substitution
    # With no follower there is no cross effect, and the cloud's demand vanishes at r by itself.
    kappa = 1 - theta / 2 if m else 1.0
    params = {"alpha_0": n, "beta_0": n / (r * kappa), "scale": r, "substitution": theta}
    params["delta_0"] = theta * params["beta_0"] / (2 * m) if m else 0.0
    if m:
        alpha = n / m
        beta = alpha / (r * (1 - theta * (m - 1) / (2 * m) - theta / 2))
        params.update(
            {"alpha": alpha, "beta": beta, "gamma": theta * beta / (2 * m), "delta": theta * beta / 2}
        )
    return params


def followers_respond(params: dict, costs: np.ndarray, cloud_price: float) -> np.ndarray:
    """The edge followers' unique Bertrand–Nash prices given the cloud's price (linear_oligopoly)."""
    if len(costs) == 0:
        return np.zeros(0)
    result = solve_linear_oligopoly(
        {
            "alpha": params["alpha"] + params["delta"] * cloud_price,
            "beta": params["beta"],
            "gamma": params["gamma"],
            "costs": costs,
        }
    )
    return np.asarray(result["prices"], dtype=float)


def follower_profit(params: dict, costs: np.ndarray, prices: np.ndarray, cloud_price: float, j: int) -> float:
    """(p_j - c_j) D_j with the untruncated linear demand."""
    others = float(prices.sum() - prices[j])
    demand = (
        params["alpha"]
        - params["beta"] * prices[j]
        + params["gamma"] * others
        + params["delta"] * cloud_price
    )
    return float((prices[j] - costs[j]) * demand)


def leader_profit(params: dict, costs: np.ndarray, cloud_cost: float, cloud_price: float) -> float:
    """(p_0 - c_0) D_0 along the followers' reaction to p_0."""
    edge = followers_respond(params, costs, cloud_price)
    demand = params["alpha_0"] - params["beta_0"] * cloud_price + params["delta_0"] * float(edge.sum())
    return (cloud_price - cloud_cost) * demand


def solve_tier_game(*, costs: np.ndarray, cloud_cost: float | None, params: dict) -> dict:
    """The Stackelberg equilibrium with the cloud as leader (module docstring), exactly."""
    m = len(costs)
    if cloud_cost is None:
        cloud_price = None
        edge = followers_respond(params, costs, params["scale"])
    else:
        if m:
            base = followers_respond(params, costs, 0.0)
            slope = params["delta"] / (2 * params["beta"] - (m - 1) * params["gamma"])
            intercept = params["alpha_0"] + params["delta_0"] * float(base.sum())
            gradient = -params["beta_0"] + params["delta_0"] * m * slope
        else:
            intercept, gradient = params["alpha_0"], -params["beta_0"]
        cloud_price = max(cloud_cost, (cloud_cost - intercept / gradient) / 2)
        edge = followers_respond(params, costs, cloud_price)
    outside = params["scale"] if cloud_price is None else cloud_price
    demands = [
        params["alpha"]
        - params["beta"] * edge[j]
        + params["gamma"] * float(edge.sum() - edge[j])
        + params["delta"] * outside
        for j in range(m)
    ]
    return {
        "cloud_price": cloud_price,
        "follower_prices": [float(p) for p in edge],
        "follower_demands": [float(d) for d in demands],
        "interior": all(d > 0 for d in demands),
        "leader_profit": None
        if cloud_cost is None
        else leader_profit(params, costs, cloud_cost, cloud_price),
    }


def _validate(doc: dict) -> tuple:
    salt = doc.get("salt")
    if not isinstance(salt, str):
        raise _bad("salt must be a string")
    aware = doc.get("tier_aware", True)
    if not isinstance(aware, bool):
        raise _bad("tier_aware must be true or false")
    theta = _number(doc.get("substitution", DEFAULT_SUBSTITUTION), "substitution")
    if theta >= 1:
        raise _bad("substitution must be < 1 (own-price effects dominate)")
    reference = doc.get("reference_price")
    if reference is not None and _number(reference, "reference_price") <= 0:
        raise _bad("reference_price must be > 0")
    bids, asks = doc.get("bids"), doc.get("asks")
    if not isinstance(bids, list) or not isinstance(asks, list):
        raise _bad("bids and asks must be lists")
    seen: set = set()
    clean_asks = []
    for index, row in enumerate(asks):
        what = f"asks[{index}]"
        if not isinstance(row, dict):
            raise _bad(f"{what} must be an object")
        name = _name(row.get("id"), f"{what} id")
        if name in seen:
            raise _bad(f"id {name!r} is repeated")
        seen.add(name)
        quantity = row.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            raise _bad(f"{what} quantity must be an integer >= 0")
        speed = _number(row.get("speed", 1), f"{what} speed")
        if speed <= 0:
            raise _bad(f"{what} speed must be > 0")
        tier = row.get("tier")
        if tier not in TIERS:
            raise _bad(f"{what} tier must be one of {', '.join(TIERS)}")
        clean_asks.append((name, _number(row.get("price"), f"{what} price"), quantity, speed, tier))
    names = {row[0] for row in clean_asks}
    clean_bids = []
    for index, row in enumerate(bids):
        what = f"bids[{index}]"
        if not isinstance(row, dict):
            raise _bad(f"{what} must be an object")
        name = _name(row.get("id"), f"{what} id")
        if name in seen:
            raise _bad(f"id {name!r} is repeated")
        seen.add(name)
        accepts = row.get("accepts")
        if not isinstance(accepts, list) or any(_name(a, f"{what} accepts") not in names for a in accepts):
            raise _bad(f"{what} accepts must list ask ids of this book")
        clean_bids.append((name, _number(row.get("price"), f"{what} price"), [str(a) for a in accepts]))
    return salt, aware, theta, reference, clean_bids, clean_asks


def clear_tiered(doc: dict, *, input_sha256: str | None = None) -> dict:
    """Clear a `tiered` book (module docstring) and return its RESULT document."""
    salt, aware, theta, reference, bids, asks = _validate(doc)
    digest = input_sha256 if input_sha256 is not None else _hash(doc)
    cost = {name: price / speed for name, price, _, speed, _ in asks}
    speed_of = {name: speed for name, _, _, speed, _ in asks}
    tier_of = {name: tier for name, _, _, _, tier in asks}
    left = {name: quantity for name, _, quantity, _, _ in asks}
    edge_names = [name for name, *_ in asks if tier_of[name] in EDGE_TIERS]
    cloud_costs = [cost[name] for name, *_ in asks if tier_of[name] == "CLOUD"]
    scale = reference if reference is not None else (statistics.median(b[1] for b in bids) if bids else 0.0)
    scale = max(scale, 1e-9)  # all bids 0: any positive scale prices them out alike
    params = calibrate(bids=max(len(bids), 1), followers=len(edge_names), scale=scale, substitution=theta)
    edge_costs = np.array([cost[name] for name in edge_names], dtype=float)
    game = solve_tier_game(
        costs=edge_costs, cloud_cost=min(cloud_costs) if cloud_costs else None, params=params
    )
    cloud_price = game["cloud_price"]
    posted = {
        name: max(price, cost[name]) for name, price in zip(edge_names, game["follower_prices"], strict=True)
    }
    rank = {name: priority(salt, name) for name in left}
    assignments: dict[str, str] = {}
    tiers: dict[str, str] = {}
    overflow: dict[str, str] = {}
    paid: dict[str, float] = {}
    gains = []
    for name, bid, accepts in sorted(bids, key=lambda row: (priority(salt, row[0]), row[0])):
        choice = None
        if not aware:
            options = [(cost[a], rank[a], a) for a in accepts if left[a] > 0 and cost[a] <= bid]
            choice = min(options) if options else None
        else:
            edge_room = [a for a in accepts if tier_of[a] in EDGE_TIERS and left[a] > 0]
            options = [(posted[a], rank[a], a) for a in edge_room if posted[a] <= bid]
            if options:
                choice = min(options)
            elif cloud_price is not None and cloud_price <= bid:
                cloud = [
                    (rank[a], a)
                    for a in accepts
                    if tier_of[a] == "CLOUD" and left[a] > 0 and cost[a] <= cloud_price
                ]
                if cloud:
                    choice = (cloud_price, *min(cloud))
                    overflow[name] = "edge_price" if edge_room else "edge_full"
        if choice is None:
            continue
        price, _, ask = choice
        left[ask] -= 1
        assignments[name] = ask
        tiers[name] = tier_of[ask]
        paid[name] = price
        gains.append(bid - cost[ask])
    placed = {tier: sum(1 for t in tiers.values() if t == tier) for tier in TIERS}
    fills: dict[str, int] = {}
    receipts: dict[str, list[float]] = {}
    for name, ask in assignments.items():
        fills[name] = 1
        fills[ask] = fills.get(ask, 0) + 1
        receipts.setdefault(ask, []).append(paid[name])
    return {
        "mechanism": "tiered",
        "tier_aware": aware,
        "assignments": assignments,
        "tiers": tiers,
        "overflow": overflow,
        "fills": fills,
        "payments": {**paid, **{ask: math.fsum(values) for ask, values in receipts.items()}},
        "unit_prices": {name: paid[name] * speed_of[ask] for name, ask in assignments.items()},
        "prices": {"cloud": cloud_price, "edge": posted},
        "placed_by_tier": placed,
        "overflow_share": placed["CLOUD"] / len(assignments) if assignments else 0.0,
        "traded_quantity": len(assignments),
        "surplus": math.fsum(paid.values()) - math.fsum(p for values in receipts.values() for p in values),
        "gains_from_trade": math.fsum(gains),
        "game": {**game, "params": params},
        "input_sha256": digest,
    }
