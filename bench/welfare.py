"""Benchmark: heterogeneous clearing, exact welfare MILP vs per-provider pruning vs greedy.

Run: `.venv/bin/python bench/welfare.py [--repeats N] [--quick]` from the project root. For each size
(jobs x providers) and seed, the book is a seeded random "realistic" edge market: providers are
consumer and datacentre GPU boxes (RTX 4090 24 GB, L40S 48 GB, A100 40/80 GB, H100 80 GB) with 2-16
GPUs, vCPUs and RAM in proportion, a speed relative to an A100 and an hourly ask per GPU that rises
with speed; jobs are LLM fine-tuning / batch-inference jobs needing 1-8 GPUs of 16-80 GB, running
0.5-12 reference hours with a deadline of 1.2-4x that, and bidding 0.6-2.5x the reference cost.
Demand exceeds supply about 5.5:1 in GPUs (a congested round), so capacity binds everywhere.

Printed per size: the exact MILP (time, welfare, status), each pruning level (time, welfare as % of
exact, pairs kept), greedy (time, % of exact), the LP bound and the gap of the exact solve;
times as min / median / max over the repeats (the solves are deterministic, so welfare is one value
per seed). Payment rule "none" throughout: VCG needs one extra solve per winner and is measured on
the smallest size only.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auctions.mechanisms import clear  # noqa: E402

GPU_TYPES = [  # (vram GB, speed vs A100, ask per GPU-hour)
    (24.0, 0.7, 0.45),
    (48.0, 0.9, 0.95),
    (40.0, 1.0, 1.20),
    (80.0, 1.0, 1.60),
    (80.0, 2.0, 2.80),
]


def realistic_book(n_jobs: int, n_providers: int, seed: int, *, mechanism="welfare", rule="none") -> dict:
    """A seeded random market as a BOOK document (see the module docstring for the distributions)."""
    rng = np.random.default_rng(seed)
    providers = []
    for k in range(n_providers):
        vram, speed, ask = GPU_TYPES[rng.integers(len(GPU_TYPES))]
        gpus = int(rng.choice([2, 4, 8, 16], p=[0.2, 0.35, 0.3, 0.15]))
        providers.append(
            {
                "id": f"p{k}",
                "gpus": gpus,
                "vram_per_gpu": vram,
                "vcpu": float(gpus * rng.choice([8, 12, 16])),
                "ram": float(gpus * rng.choice([32, 64, 128])),
                "speed": round(speed * rng.uniform(0.9, 1.1), 3),
                "ask_per_gpu_hour": round(ask * rng.uniform(0.8, 1.25), 3),
            }
        )
    jobs = []
    for j in range(n_jobs):
        gpus = int(rng.choice([1, 2, 4, 8], p=[0.55, 0.3, 0.1, 0.05]))
        base = float(rng.uniform(0.5, 12.0))
        reference_cost = 1.2 * gpus * base
        jobs.append(
            {
                "id": f"j{j}",
                "bid": round(reference_cost * rng.uniform(0.6, 2.5), 4),
                "gpus": gpus,
                "vram_per_gpu": float(
                    rng.choice([16.0, 24.0, 40.0, 48.0, 80.0], p=[0.3, 0.3, 0.2, 0.1, 0.1])
                ),
                "vcpu": float(gpus * rng.choice([4, 8])),
                "ram": float(gpus * rng.choice([16, 32, 64])),
                "base_hours": round(base, 3),
                "deadline_hours": round(base * rng.uniform(1.2, 4.0), 3),
            }
        )
    return {"mechanism": mechanism, "payment_rule": rule, "jobs": jobs, "providers": providers}


def timed(doc: dict, repeats: int) -> tuple[list[float], dict]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = clear(doc)
        times.append(time.perf_counter() - start)
    return times, result


def mmm(values: list[float]) -> str:
    return f"{min(values):6.2f} / {statistics.median(values):6.2f} / {max(values):6.2f}"


def row(label: str, variant: str, times: list[float], result: dict, exact: dict | None) -> None:
    welfare = result["welfare"]
    of_exact = (
        f"{100 * welfare / exact['welfare']:8.2f}" if exact and exact["status"] == "optimal" else "       -"
    )
    of_bound = 100 * welfare / result["lp_bound"] if result["lp_bound"] else float("nan")
    pairs = result.get("pruning")
    pairs = f"{pairs['pairs']}/{pairs['pairs_total']}" if pairs else ""
    print(
        f"{label:>9} {variant:>20} {mmm(times):>24} {welfare:10.2f} {of_exact} {of_bound:8.2f}"
        f" {result['status']:>8} {len(result['assignments']):>5} {pairs:>13}"
    )


PLAN = [  # (jobs, providers, repeats, capped time limit s, pruning levels)
    (500, 20, 3, 5.0, [40, 80]),
    (1000, 50, 2, 5.0, [40, 80]),
    (2000, 100, 1, 5.0, [40, 80]),
]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smallest size only")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(
        f"{'size':>9} {'variant':>20} {'time s min/med/max':>24} {'welfare':>10} {'% exact':>8}"
        f" {'% LP':>8} {'status':>8} {'won':>5} {'pairs kept':>13}"
    )
    for n_jobs, n_providers, repeats, capped, levels in PLAN[:1] if args.quick else PLAN:
        label = f"{n_jobs}x{n_providers}"
        doc = realistic_book(n_jobs, n_providers, args.seed)
        times, exact = timed(doc, repeats)
        row(label, "exact (limit 30 s)", times, exact, exact)
        times, result = timed(dict(doc, time_limit_s=capped), repeats)
        row(label, f"exact (limit {capped:g} s)", times, result, exact)
        for per_provider in levels:
            pruned = dict(doc, pruning={"per_provider": per_provider}, time_limit_s=capped)
            times, result = timed(pruned, repeats)
            row(label, f"pruned N={per_provider} ({capped:g} s)", times, result, exact)
        times, result = timed(dict(doc, mechanism="greedy", payment_rule="critical"), repeats)
        row(label, "greedy + critical", times, result, exact)
        print(f"{'':>9} exact: lp_bound {exact['lp_bound']:.2f}, gap {exact['gap']:.5%}")
    doc = realistic_book(150, 8, args.seed, rule="vcg")
    times, vcg = timed(doc, 1)
    print(
        f"\n150x8 welfare + VCG: {times[0]:.2f} s for {len(vcg['payments'])} winning jobs and"
        f" {len(vcg['receipts'])} hosts (one re-solve each), status {vcg['status']}"
    )
    print(f"total bench time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
