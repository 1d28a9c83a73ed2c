"""Benchmark: elastic demand (EETORP) against fixed sizes on the same market, side by side.

Run: `.venv/bin/python bench/elastic.py [--seeds S] [--consumers N] [--providers M]` from the project
root. Seeded and deterministic: the same arguments print the same figures.

The market (per seed): M providers (the leaders), each with DEVICES devices of speed 1 and a unit cost
c_j (its price floor) drawn from U(0.10, 0.40) per device-hour; N consumers, consumer i valuing q
device-hours at a_i ln(1 + q) with a_i ~ U(0.5, 4.0) (its first device-hour's worth), a budget
B_i ~ U(1, 6), and a deadline of HOURS hours (at most HOURS device-hours on one device). A device
serves one job per round, as in CPX.

Prices: the providers' asks are the equilibrium of the engine's `budget_oligopoly` game with these
costs and consumers (what CPX recommends to auto-priced providers, `auctions/services/provider_asks.py`,
with the same reduction to at most 16 quantile followers and 15 rounds); both markets clear at these
asks, with the round's rule for elastic jobs: the engine's `posted_price` book with one price per
device (each buyer, in the public hash order, takes the cheapest fitting device priced at or below
its bid).

- elastic: each consumer bids its choke price (a_i) and, once it has a device at price p, buys its
  best response (`elastic_demand` book): q = min(a_i / p - 1, B_i / p, HOURS).
- fixed: each consumer states a size before the round, its best response at the price it expects,
  p_hat_i = (median ask) x exp(N(0, SIGMA)) (a forecast error of SIGMA in log terms), and bids its
  average value per device-hour over that size, a_i ln(1 + s_i) / s_i (the most the whole job is worth
  per device-hour); a trade whose job the budget cannot pay at the price (p s_i > B_i) is refused, as
  CPX refuses a lease its escrow cannot cover.
- fixed, no forecast error: the same with SIGMA = 0: every consumer sizes its job at the median ask,
  and still misses the price of the device it gets (asks differ between providers).

Figures per market: provider revenue sum p q, provider profit sum (p - c) q, consumer surplus
sum (a ln(1 + q) - p q), device-hours sold, jobs served; then the ratios elastic / fixed.
"""

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auctions.mechanisms import clear, price  # noqa: E402
from auctions.mechanisms.elastic import best_response  # noqa: E402

DEVICES = 5
HOURS = 8.0
SIGMA = 0.5
MAX_FOLLOWERS = 16  # as auctions/services/provider_asks.py (MAX_LEADERS 4: --providers at most 4)


def market(seed: int, consumers: int, providers: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "costs": rng.uniform(0.10, 0.40, providers).round(4).tolist(),
        "weights": rng.uniform(0.5, 4.0, consumers).round(4).tolist(),
        "budgets": rng.uniform(1.0, 6.0, consumers).round(4).tolist(),
        "forecast": rng.normal(0.0, 1.0, consumers).tolist(),
    }


def equilibrium_asks(m: dict) -> tuple[list[float], str]:
    rows = sorted(zip(m["weights"], m["budgets"], strict=True), reverse=True)
    if len(rows) > MAX_FOLLOWERS:
        step = (len(rows) - 1) / (MAX_FOLLOWERS - 1)
        rows = [rows[round(i * step)] for i in range(MAX_FOLLOWERS)]
    leaders = len(m["costs"])
    result = price(
        {
            "game": "budget_oligopoly",
            "valuations": [[a] * leaders for a, _ in rows],
            "budgets": [b for _, b in rows],
            "costs": m["costs"],
            "max_rounds": 15,
        }
    )
    return result["prices"], result["status"]


def posted_book(asks: list[float], bids: list[float], seed: int) -> dict:
    return {
        "mechanism": "posted_price",
        "salt": f"bench-{seed}",
        "prices": {f"p{j}": ask for j, ask in enumerate(asks)},
        "bids": [
            {"id": f"c{i}", "price": bid, "accepts": [f"p{j}" for j in range(len(asks))]}
            for i, bid in enumerate(bids)
            if bid > 0
        ],
        "asks": [
            {"id": f"p{j}", "price": ask, "quantity": DEVICES, "class": f"p{j}"} for j, ask in enumerate(asks)
        ],
    }


def tally(m: dict, asks: list[float], bought: dict[int, tuple[int, float]]) -> dict:
    """bought: consumer -> (provider, device-hours)."""
    revenue = profit = surplus = hours = 0.0
    for i, (j, q) in bought.items():
        p = asks[j]
        revenue += p * q
        profit += (p - m["costs"][j]) * q
        surplus += m["weights"][i] * math.log1p(q) - p * q
        hours += q
    return {"revenue": revenue, "profit": profit, "surplus": surplus, "hours": hours, "served": len(bought)}


def run_elastic(m: dict, asks: list[float], seed: int) -> dict:
    trades = clear(posted_book(asks, m["weights"], seed))["assignments"]
    doc = {
        "mechanism": "elastic_demand",
        "followers": [
            {
                "id": bid,
                "weight": m["weights"][int(bid[1:])],
                "price": asks[int(ask[1:])],
                "budget": m["budgets"][int(bid[1:])],
                "max_quantity": HOURS,
            }
            for bid, ask in sorted(trades.items())
        ],
    }
    quantities = clear(doc)["quantities"] if doc["followers"] else {}
    return tally(m, asks, {int(b[1:]): (int(trades[b][1:]), q) for b, q in quantities.items()})


def run_fixed(m: dict, asks: list[float], seed: int, sigma: float) -> dict:
    reference = statistics.median(asks)
    sizes, bids = [], []
    for a, budget, z in zip(m["weights"], m["budgets"], m["forecast"], strict=True):
        expected = reference * math.exp(sigma * z)
        s = best_response(weight=a, price=expected, budget=budget, max_quantity=HOURS)
        sizes.append(s)
        bids.append(a * math.log1p(s) / s if s > 0 else 0.0)
    trades = clear(posted_book(asks, bids, seed))["assignments"]
    bought = {}
    for bid, ask in trades.items():
        i, j = int(bid[1:]), int(ask[1:])
        if asks[j] * sizes[i] <= m["budgets"][i]:  # else refused: its escrow cannot pay the job
            bought[i] = (j, sizes[i])
    return tally(m, asks, bought)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--consumers", type=int, default=40)
    parser.add_argument("--providers", type=int, default=4)
    args = parser.parse_args()
    print(
        f"{args.consumers} consumers, {args.providers} providers x {DEVICES} devices, deadline {HOURS:g} h, "
        f"forecast error sigma {SIGMA} (log); asks = budget_oligopoly equilibrium\n"
    )
    header = (
        f"{'seed':>4} {'market':<15} {'revenue':>9} {'profit':>9} {'surplus':>9} {'dev-h':>8} {'served':>6}"
    )
    print(header)
    totals: dict[str, dict[str, float]] = {}
    for seed in range(args.seeds):
        m = market(seed, args.consumers, args.providers)
        asks, status = equilibrium_asks(m)
        runs = {
            "elastic": run_elastic(m, asks, seed),
            "fixed": run_fixed(m, asks, seed, SIGMA),
            "fixed, no error": run_fixed(m, asks, seed, 0.0),
        }
        for name, figures in runs.items():
            print(
                f"{seed:>4} {name:<15} {figures['revenue']:>9.3f} {figures['profit']:>9.3f} "
                f"{figures['surplus']:>9.3f} {figures['hours']:>8.2f} {figures['served']:>6d}"
            )
            for key, value in figures.items():
                totals.setdefault(name, {}).setdefault(key, 0.0)
                totals[name][key] += value
        print(f"{'':>4} asks {', '.join(f'{a:.3f}' for a in asks)} ({status})")
    print("\ntotals over seeds, and ratios elastic / fixed:")
    print(header.replace("seed", "    "))
    for name, figures in totals.items():
        print(
            f"{'':>4} {name:<15} {figures['revenue']:>9.3f} {figures['profit']:>9.3f} "
            f"{figures['surplus']:>9.3f} {figures['hours']:>8.2f} {figures['served']:>6.0f}"
        )
    for base in ("fixed", "fixed, no error"):
        ratios = {key: totals["elastic"][key] / totals[base][key] for key in ("revenue", "profit", "surplus")}
        print(
            f"elastic / {base:<15} revenue x{ratios['revenue']:.3f}  profit x{ratios['profit']:.3f}  "
            f"consumer surplus x{ratios['surplus']:.3f}"
        )


if __name__ == "__main__":
    main()
