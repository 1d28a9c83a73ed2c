"""Per-provider recommended asks: the multi-leader game of a resource class (EETORP's leaders, the
engine's `budget_oligopoly`; docs/eetorp.md).

EETORP has several edge nodes lead with prices and users follow; CPX plays it per resource class with
the class's real providers as leaders. Leader j's unit cost c_j is the median price floor of its
listings in the class (what it says a device-hour costs it). The followers are the class's demand as
the pooled quote reads it (`services/pricing.py`: the queued single-device jobs routed there and the
jobs recent rounds leased there), follower i valuing device-hours from leader j at a_i ln(1 + x_ij),
a_i its bid (for an elastic job, its choke price: the marginal value of its first unit), with its
budget B_i (a job's escrowed budget; for a recent lease's job, a_i x leaders, which never binds since
a log follower spends a_i - p_j < a_i per leader). The engine's damped best-response dynamics find
the equilibrium prices; each provider's auto-priced listings in the class move to its own price
(never below their floors), and the provider console shows it.

Departures, and why: (1) a class with many providers or followers is reduced before it is solved, so
a pricing tick stays within a second or so on a small machine: followers to at most MAX_FOLLOWERS
evenly spaced quantiles of the bids (each quantile standing for the same number of followers, which
scales every leader's profit alike and so leaves best responses unchanged when followers are alike),
leaders to at most MAX_LEADERS groups of providers adjacent in cost (a group plays as one leader at
its median cost and each member gets the group's price); (2) the game has no capacity: a leader's
devices bound what it can sell in a round, which the clearing enforces, not the price; (3) in the game
each follower buys from every leader (separable log utility: providers differ in place, latency and
reliability), while a round gives a job one device, the cheapest that fits it.
"""

import statistics
from collections import defaultdict

from auctions.mechanisms import MechanismError, price
from market.money import MAX_AMOUNT, to_money

MAX_FOLLOWERS = 16
MAX_LEADERS = 4
MAX_ROUNDS = 15


def class_oligopoly(*, resources: list[dict], followers: list[tuple[float, float | None]]) -> dict | None:
    """The class's multi-leader game and its answer: {"game", "result", "provider_asks": {provider id
    (str): price}}; None for a class with fewer than two providers (the pooled Stackelberg quote is
    then the one-leader game) or a game the engine cannot answer."""
    floors: dict[int, list[float]] = defaultdict(list)
    for resource in resources:
        floors[resource["provider_id"]].append(float(resource["price_floor"]))
    if len(floors) < 2 or not followers:
        return None
    costs = {provider: statistics.median(values) for provider, values in floors.items()}
    providers = sorted(costs, key=lambda provider: (costs[provider], provider))
    groups = _split(providers, MAX_LEADERS)
    leaders = len(groups)
    sample = _quantiles(sorted(followers, key=lambda row: (-row[0], row[1] is None, row[1] or 0)))
    game = {
        "game": "budget_oligopoly",
        "valuations": [[bid] * leaders for bid, _ in sample],
        "budgets": [bid * leaders if budget is None else budget for bid, budget in sample],
        "costs": [statistics.median(costs[p] for p in group) for group in groups],
        "max_rounds": MAX_ROUNDS,
    }
    try:
        result = price(game)
    except MechanismError:
        return None
    asks = {str(p): result["prices"][g] for g, group in enumerate(groups) for p in group}
    return {"game": game, "result": result, "provider_asks": dict(sorted(asks.items()))}


def provider_recommended_ask(quote, provider_id: int):
    """The ask a quote recommends to one provider: its own equilibrium ask when the class's providers
    led (`provider_asks`), else the class's pooled recommended ask; None without a quote."""
    if quote is None:
        return None
    own = (quote.result or {}).get("provider_asks", {}).get(str(provider_id))
    return quote.recommended_ask if own is None else min(MAX_AMOUNT, to_money(own))


def _split(items: list, parts: int) -> list[list]:
    """Consecutive groups of near-equal size, at most `parts` of them."""
    if len(items) <= parts:
        return [[item] for item in items]
    size, extra = divmod(len(items), parts)
    groups, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        groups.append(items[start:end])
        start = end
    return groups


def _quantiles(rows: list) -> list:
    """At most MAX_FOLLOWERS rows, evenly spaced through `rows` (first and last kept)."""
    if len(rows) <= MAX_FOLLOWERS:
        return rows
    step = (len(rows) - 1) / (MAX_FOLLOWERS - 1)
    return [rows[round(i * step)] for i in range(MAX_FOLLOWERS)]
