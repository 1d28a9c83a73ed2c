"""Benchmark: MECM's broker tier — social welfare with and without brokers on the same seeded market.

Run: `.venv/bin/python bench/brokers.py [--seeds N] [--seed S] [--users U] [--json]` from the project
root (default: 5 seeds of 200 users, 40 edge servers in 8 regions, 6 brokers; ~20 s).

The market is the three-tier one of the MECM paper (auctions/mechanisms/brokers.py): edge servers in
8 regions (2-8 GPUs each, cost 0.3-1.2 per GPU-hour), users in the same regions (1-4 GPUs, value
0.2-2.0 per GPU-hour, log-normal around 0.8) who reach on their own only the servers of their region,
and brokers that each reach the servers of 3 regions, handle up to 40 GPUs and cost 0.03 per GPU they
route. Each user appoints one or two brokers with probability `--appointed` (0.7). Demand is about
1.5x supply overall but unevenly spread: half the regions are crowded, half idle.

Per seed, on the same servers and users: `direct` clears with every appointment dropped
(`without_brokers`), `brokers` with them. Printed: welfare (and its LP bound), users served, GPUs
used, the mean user price and server price per GPU (duals), what brokers earn, and the ratio
brokers / direct; then min / median / max of the ratio over the seeds. For the brokered market it
also runs the paper's dual decomposition (`dual_decomposition`, 2,000 subgradient steps) and prints
its best dual bound over the LP optimum and the largest gap between its server prices and the LP duals.
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auctions.mechanisms.brokers import (  # noqa: E402
    Broker,
    Server,
    User,
    clear_three_tier,
    dual_decomposition,
    without_brokers,
)

REGIONS = 8
SERVERS_PER_REGION = 5
BROKERS = 6
BROKER_REACH = 3
BROKER_CAPACITY = 40
BROKER_COST = 0.03


def market(seed: int, users: int, appointed: float):
    rng = np.random.default_rng(seed)
    servers = [
        Server(f"s{r}-{i}", float(rng.integers(2, 9)), round(float(rng.uniform(0.3, 1.2)), 3))
        for r in range(REGIONS)
        for i in range(SERVERS_PER_REGION)
    ]
    by_region = {r: [s.id for s in servers if s.id.startswith(f"s{r}-")] for r in range(REGIONS)}
    brokers = []
    for b in range(BROKERS):
        regions = rng.choice(REGIONS, size=BROKER_REACH, replace=False)
        reach = tuple(sorted(s for r in regions for s in by_region[int(r)]))
        brokers.append(Broker(f"b{b}", BROKER_CAPACITY, BROKER_COST, reach))
    crowded = rng.permutation(REGIONS)[: REGIONS // 2]  # where most users are
    out = []
    for j in range(users):
        region = int(rng.choice(crowded)) if rng.random() < 0.85 else int(rng.integers(REGIONS))
        chosen = ()
        if rng.random() < appointed:
            chosen = tuple(
                f"b{int(b)}" for b in rng.choice(BROKERS, size=int(rng.integers(1, 3)), replace=False)
            )
        value = float(np.clip(rng.lognormal(np.log(0.8), 0.45), 0.2, 2.0))
        out.append(
            User(f"u{j}", float(rng.integers(1, 5)), round(value, 3), chosen, tuple(by_region[region]))
        )
    return servers, brokers, out


@contextlib.contextmanager
def quiet_solver():
    """HiGHS's MILP prints a debug line on the process's stdout (C level) now and then: keep it out of
    the table and the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def summary(result, servers) -> dict:
    gpus = sum(r.devices for r in result.routes)
    paid = sum(r.user_pays for r in result.routes)
    to_servers = sum(r.server_receives for r in result.routes)
    return {
        "welfare": result.welfare,
        "lp_bound": result.lp_bound,
        "status": result.status,
        "users_served": len(result.routes),
        "gpus": gpus,
        "brokered_gpus": sum(r.devices for r in result.routes if r.broker),
        "user_price": paid / gpus if gpus else 0.0,
        "server_revenue": to_servers,
        "broker_revenue": sum(r.broker_receives for r in result.routes),
        "mean_server_dual": statistics.fmean(result.server_prices.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--appointed", type=float, default=0.7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rows = []
    for seed in range(args.seed, args.seed + args.seeds):
        servers, brokers, users = market(seed, args.users, args.appointed)
        with quiet_solver():
            started = time.perf_counter()
            direct = summary(clear_three_tier(servers, brokers, without_brokers(users)), servers)
            middle = time.perf_counter()
            full = clear_three_tier(servers, brokers, users)
            brokered = summary(full, servers)
            ended = time.perf_counter()
            dual = dual_decomposition(servers, brokers, users)
        price_gap = max(abs(dual.server_prices[k] - full.server_prices[k]) for k in full.server_prices)
        rows.append(
            {
                "seed": seed,
                "direct": direct,
                "brokers": brokered,
                "welfare_ratio": brokered["welfare"] / direct["welfare"]
                if direct["welfare"]
                else float("inf"),
                "seconds": {"direct": middle - started, "brokers": ended - middle},
                "dual_decomposition": {
                    "bound_over_lp": dual.bound / full.lp_bound,
                    "max_server_price_gap": price_gap,
                    "iterations": dual.iterations,
                },
            }
        )
    ratios = [row["welfare_ratio"] for row in rows]
    if args.json:
        print(
            json.dumps(
                {
                    "seeds": rows,
                    "welfare_ratio": {
                        "min": min(ratios),
                        "median": statistics.median(ratios),
                        "max": max(ratios),
                    },
                }
            )
        )
        return
    capacity = sum(s.capacity for s in market(args.seed, args.users, args.appointed)[0])
    print(
        f"MECM three-tier market: {args.users} users, {REGIONS * SERVERS_PER_REGION} edge servers in "
        f"{REGIONS} regions (~{capacity:.0f} GPUs at seed {args.seed}), {BROKERS} brokers reaching "
        f"{BROKER_REACH} regions each; {args.appointed:.0%} of users appoint brokers"
    )
    columns = ["seed", "variant", "welfare", "LP bound", "served", "GPUs", "via broker", "user $/GPU"]
    print(" ".join(f"{c:>10}" for c in [*columns, "broker rev", "s"]))
    for row in rows:
        for name in ("direct", "brokers"):
            r = row[name]
            cells = [row["seed"], name, f"{r['welfare']:.3f}", f"{r['lp_bound']:.3f}", r["users_served"]]
            cells += [f"{r['gpus']:.0f}", f"{r['brokered_gpus']:.0f}", f"{r['user_price']:.3f}"]
            cells += [f"{r['broker_revenue']:.3f}", f"{row['seconds'][name]:.2f}"]
            print(" ".join(f"{c:>10}" for c in cells))
        dd = row["dual_decomposition"]
        print(
            f"{row['seed']:>10} {'ratio':>10} {row['welfare_ratio']:>10.3f}  (brokers / direct); dual "
            f"decomposition ({dd['iterations']} steps): bound / LP {dd['bound_over_lp']:.4f}, "
            f"largest server price gap to the LP duals {dd['max_server_price_gap']:.3f}"
        )
    low, mid, high = min(ratios), statistics.median(ratios), max(ratios)
    print(f"welfare brokers / direct, {len(rows)} seeds: min {low:.3f} / median {mid:.3f} / max {high:.3f}")


if __name__ == "__main__":
    main()
