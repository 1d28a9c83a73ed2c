"""Benchmark: heterogeneous clearing — the default welfare MILP (exact, or pruned per provider above
AUTO_PRUNE_PAIRS pairs) against the proven optimum or the LP bound, explicit pruning, and greedy.

Run: `.venv/bin/python bench/welfare.py [--quick] [--seeds N] [--seed S]` from the project root
(default: 3 seeds per size, about 1-2 minutes; `--quick`: 500 x 20 and one 2,000 x 100 book, under
30 s). For each size (jobs x providers) and seed, the book is a seeded random "realistic" edge market:
providers are consumer and datacentre GPU boxes (RTX 4090 24 GB, L40S 48 GB, A100 40/80 GB, H100
80 GB) with 2-16 GPUs, vCPUs and RAM in proportion, a speed relative to an A100 and an hourly ask per
GPU that rises with speed; jobs are LLM fine-tuning / batch-inference jobs needing 1-8 GPUs of 16-80 GB,
running 0.5-12 reference hours with a deadline of 1.2-4x that, and bidding 0.6-2.5x the reference
cost. Demand exceeds supply about 5.5:1 in GPUs (a congested round), so capacity binds everywhere.

Variants per size: `default` (what `clear` does with no options: time_limit_s 30, exact path up to
AUTO_PRUNE_PAIRS compatible pairs, automatic per-provider pruning beyond); `exact` (`pruning: false`,
the reference, run once per seed with a longer limit and cached for the other rows — not at 2,000 x 100,
where the exact MILP did not finish in 10 minutes); `pruned N=8` (`{"per_provider": 8}`, reduced-cost
ranking, exact MILP on the kept pairs); `greedy` (+ critical values).

Printed per variant, over the seeds: time min / median / max (s); welfare as % of the proven optimum
(only for seeds whose reference is proven optimal; "-" otherwise); welfare as % of the LP bound (a lower
bound on the % of the optimum, available for every seed — the bound is a valid upper bound on the
optimum); the reported gap (max over seeds); statuses. Payment rule "none" throughout: VCG needs one
extra solve per winner and is timed on a 150 x 8 book at the end. The machine's load average is printed
first: the solves are single-threaded but the timings move with the load, so each row also gives the
process's CPU seconds (close to the wall time of a quiet machine).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auctions.mechanisms import clear  # noqa: E402
from auctions.mechanisms.welfare_milp import AUTO_PRUNE_PAIRS  # noqa: E402

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


CPU_SECONDS = []  # CPU seconds of every timed `clear`, in order (a loaded machine inflates wall time)


def timed(doc: dict) -> tuple[float, dict]:
    """(seconds, result) of one `clear`, with HiGHS's C++ chatter on file descriptor 1 sent to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        start, cpu = time.perf_counter(), time.process_time()
        result = clear(doc)
        CPU_SECONDS.append(time.process_time() - cpu)
        return time.perf_counter() - start, result
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def mmm(values: list[float], fmt: str = "6.2f") -> str:
    if not values:
        return "-"
    return f"{min(values):{fmt}} / {statistics.median(values):{fmt}} / {max(values):{fmt}}"


PLAN = [  # (jobs, providers, exact reference time limit s or None, pruning levels)
    (500, 20, 60.0, [8]),
    (1000, 50, 25.0, [8]),
    (2000, 100, None, []),
]
QUICK = [(500, 20, 60.0, [8]), (2000, 100, None, [])]


def run_size(n_jobs, n_providers, exact_limit, levels, seeds) -> None:
    label = f"{n_jobs}x{n_providers}"
    books = {seed: realistic_book(n_jobs, n_providers, seed) for seed in seeds}
    optimum = {}
    rows = []
    if exact_limit is not None:  # the reference: exact MILP, once per seed, cached for the other rows
        runs = [timed(dict(books[s], pruning=False, time_limit_s=exact_limit)) for s in seeds]
        for seed, (_, result) in zip(seeds, runs, strict=True):
            if result["status"] == "optimal":
                optimum[seed] = result["welfare"]
        rows.append((f"exact (limit {exact_limit:g} s)", runs, CPU_SECONDS[-len(seeds) :]))
    variants = [("default", {})]
    variants += [(f"pruned N={n}", {"pruning": {"per_provider": n}}) for n in levels]
    variants += [("greedy + critical", {"mechanism": "greedy", "payment_rule": "critical"})]
    for name, change in variants:
        rows.append((name, [timed(dict(books[s], **change)) for s in seeds], CPU_SECONDS[-len(seeds) :]))
    for name, runs, cpu in rows:
        times = [t for t, _ in runs]
        of_optimum = [
            100 * r["welfare"] / optimum[s] for s, (_, r) in zip(seeds, runs, strict=True) if s in optimum
        ]
        of_bound = [100 * r["welfare"] / r["lp_bound"] for _, r in runs if r["lp_bound"]]
        gaps = [r["gap"] for _, r in runs if r["gap"] is not None]
        statuses = "/".join(sorted({r["status"] for _, r in runs}))
        pruning = [r.get("pruning") for _, r in runs]
        kept = ""
        if all(pruning):
            pairs = int(statistics.median(p["pairs"] for p in pruning))
            total = int(statistics.median(p["pairs_total"] for p in pruning))
            kept = f"{pairs}/{total}" + (" auto" if pruning[0].get("automatic") else "")
        print(
            f"{label:>9} {name:>22} {mmm(times):>24} {mmm(of_optimum):>24} {mmm(of_bound):>24}"
            f" {max(gaps) if gaps else float('nan'):8.4%} {statuses:>16} {kept:>17} {mmm(cpu):>24}"
        )
    print(
        f"{'':>9} {len(seeds)} seeds, optimum proven for {len(optimum)};"
        f" automatic pruning above {AUTO_PRUNE_PAIRS:,} pairs"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 x 20 and one 2,000 x 100 book")
    parser.add_argument("--seeds", type=int, default=3, help="books per size (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="first seed")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(
        f"{'size':>9} {'variant':>22} {'time s min/med/max':>24} {'% optimum min/med/max':>24}"
        f" {'% LP bound min/med/max':>24} {'max gap':>8} {'status':>16} {'pairs kept (med)':>17}"
        f" {'CPU s min/med/max':>24}"
    )
    for n_jobs, n_providers, exact_limit, levels in QUICK if args.quick else PLAN:
        count = 1 if args.quick and n_jobs >= 2000 else args.seeds
        seeds = list(range(args.seed, args.seed + count))
        run_size(n_jobs, n_providers, exact_limit, levels, seeds)
    if not args.quick:
        seconds, vcg = timed(realistic_book(150, 8, args.seed, rule="vcg"))
        print(
            f"\n150x8 welfare + VCG: {seconds:.2f} s for {len(vcg['payments'])} winning jobs and"
            f" {len(vcg['receipts'])} hosts (one re-solve each), status {vcg['status']}"
        )
    print(f"total bench time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
