"""Benchmark: exact Stackelberg uniform pricing for 100,000 followers vs a grid polished band by band.

Run: `.venv/bin/python bench/stackelberg.py [--followers N] [--repeats R]` from the project root.

Ours: `price(doc, input_sha256=h)` (the hash passed in, as the round service does), i.e. validation,
the vectorised band search, and the result document with 100,000 demands and utilities.

Reference (independent of our band formula): a dense grid of GRID prices over [c, max a] evaluates the
revenue exactly through sorted valuations and prefix sums; the bands holding the TOP best grid points
(and their neighbours) are then each polished with `scipy.optimize.minimize_scalar(method="bounded")`
on the band's capacity-feasible interval, whose two ends are evaluated too (bounded Brent never
evaluates them, and a binding capacity puts the optimum on one). Both revenues must agree to 1e-9
(relative to the revenue). Cases: lognormal valuations with c = 1 and no capacity, and the same with
a capacity at 20 % of the unconstrained demand (the capacity binds). Times: min / median / max.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auctions.mechanisms import price  # noqa: E402
from auctions.mechanisms.canonical import input_sha256  # noqa: E402

GRID = 1_000_001
TOP = 25


def grid_and_polish(valuations: np.ndarray, cost: float, capacity: float | None) -> tuple[float, float]:
    """(price, revenue) by a dense grid, then bounded Brent per band around the best grid points."""
    top = np.sort(valuations)[::-1]
    total = np.concatenate([[0.0], np.cumsum(top)])
    ascending = top[::-1]

    def served(p):
        return len(top) - np.searchsorted(ascending, p, side="right")  # followers with a > p

    def revenue(p):
        m = served(p)
        demand = total[m] / p - m
        value = (p - cost) * demand
        if capacity is not None:
            value = np.where(demand <= capacity * (1 + 1e-12), value, -np.inf)
        return value

    grid = np.linspace(max(cost, 1e-12), top[0], GRID)
    values = revenue(grid)
    best_price, best_revenue = float(grid[np.argmax(values)]), float(values.max())
    bands = set()
    for index in np.argsort(values)[-TOP:]:
        m = int(served(grid[index]))
        bands.update({m - 1, m, m + 1})
    for m in sorted(b for b in bands if 1 <= b <= len(top)):
        low, high = (top[m] if m < len(top) else 0.0), top[m - 1]
        if capacity is not None:
            low = max(low, total[m] / (m + capacity))
        low = max(low, cost, 1e-12)
        if low >= high:
            continue
        polished = minimize_scalar(
            lambda p, m=m: -(p - cost) * (total[m] / p - m),
            bounds=(low, high),
            method="bounded",
            options={"xatol": 1e-13 * high},
        )
        # Bounded Brent never evaluates the interval's ends, where a binding capacity puts the optimum.
        for candidate in (float(polished.x), low, high):
            value = (candidate - cost) * (total[m] / candidate - m)
            if value > best_revenue:
                best_price, best_revenue = candidate, value
    return best_price, best_revenue


def stats(values: list[float]) -> str:
    ms = [1000 * v for v in values]
    return f"{min(ms):8.2f} / {statistics.median(ms):8.2f} / {max(ms):8.2f} ms"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--followers", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(7)
    valuations = rng.lognormal(mean=1.0, sigma=1.0, size=args.followers)
    cost = 1.0
    free = price({"game": "stackelberg", "valuations": valuations, "unit_cost": cost, "pricing": "uniform"})
    for label, capacity in (("no capacity", None), ("capacity 20%", 0.2 * free["total_demand"])):
        doc = {
            "game": "stackelberg",
            "valuations": valuations,
            "unit_cost": cost,
            "capacity": capacity,
            "pricing": "uniform",
        }
        digest = input_sha256(doc)
        ours, theirs = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = price(doc, input_sha256=digest)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            reference_price, reference_revenue = grid_and_polish(valuations, cost, capacity)
            theirs.append(time.perf_counter() - start)
        difference = abs(result["leader_revenue"] - reference_revenue) / max(1.0, reference_revenue)
        print(f"{args.followers:,} followers, c = {cost}, {label}:")
        print(
            f"  ours          {stats(ours)} price {result['price']:.12f}"
            f"  revenue {result['leader_revenue']:.9f}"
        )
        print(
            f"  grid+polish   {stats(theirs)} price {reference_price:.12f}  revenue {reference_revenue:.9f}"
        )
        print(
            f"  ratio (median)  {statistics.median(theirs) / statistics.median(ours):8.1f}x faster;"
            f" relative revenue difference {difference:.2e} ({'OK' if difference <= 1e-9 else 'MISMATCH'});"
            f" capacity binding {result['capacity_binding']}"
        )


if __name__ == "__main__":
    main()
