"""Benchmark: large-model jobs with gangs against without, on the same seeded books, side by side.

Run: `.venv/bin/python bench/gang.py [--seeds N] [--seed S]` from the project root (default 5 seeds,
well under a minute).

Each seed draws an edge market of consumer GPUs (RTX 3080 10/12 GB, 4060 Ti 16 GB, 3090/4090 24 GB;
1-4 per box; asks 0.15-0.45 per device-hour, speed 0.5-1.1 of the reference) at sites across
Europe, and, in the "mixed" market, a few datacentre nodes too (4-8 x A100 80 GB at 1.4-2.0 per
device-hour, speed 1.0-1.2). Jobs are LLM inference of 7B / 13B / 34B / 70B models at fp16, 8 or 4
bits (sized by `auctions.mechanisms.llm_sizing`, 4,096-token context), 5-60 M tokens, bidding
0.6-2.5 per reference device-hour with a deadline of 24 h. A job is "> any device" when its memory
exceeds every single device of the market, "> any node" when it exceeds every box's devices together.

Four ways to clear the same jobs:
- without gangs: every job is a heterogeneous job (greedy + critical values, the round's default)
  on ONE node, sized for the smallest device memory whose largest box has the devices it then
  needs (a power of two of them: what a consumer stating `requested_memory_per_device_gib` gets);
- gangs > node / gangs > device (what a CPX round does when those jobs opt in): the jobs no node
  holds, or no device holds, bid in the gang book (`auctions.mechanisms.gang`; at most 4 members
  within 30 ms of each other, layers split into pipeline stages), cleared first; the rest clear on
  one node over the devices left;
- all gangs: every job in the gang book (to show what a gang costs a job that fits on one node).

Printed per market, summed over seeds: jobs > any device and > any node cleared / offered; all jobs
cleared; welfare
(sum of value - cost); the mean price the consumer pays per base device-hour (payment / the job's
reference device-hours; the same unit for both); the mean hours to finish (the pipeline's slowest
stage for a gang, base hours / speed / devices for one node); for gangs, the mean members and the
largest RTT between two members. Every ratio to one node is measured in the same run.
"""

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auctions.mechanisms import clear  # noqa: E402
from auctions.mechanisms.gang import stage_plan  # noqa: E402
from auctions.mechanisms.latency import great_circle_km, rtt_from_distance_ms  # noqa: E402
from auctions.mechanisms.llm_sizing import GIB, size_llm_job  # noqa: E402
from auctions.mechanisms.throughput import base_device_hours  # noqa: E402

CONSUMER_GPUS = [
    (10.0, 0.5, 0.15),
    (12.0, 0.55, 0.18),
    (16.0, 0.6, 0.22),
    (24.0, 0.9, 0.35),
    (24.0, 1.1, 0.45),
]
SITES = [
    (48.86, 2.35),
    (50.11, 8.68),
    (51.51, -0.13),
    (52.37, 4.90),
    (50.85, 4.35),
    (45.46, 9.19),
    (48.14, 11.58),
]
MODELS = [(7, 0.35), (13, 0.25), (34, 0.2), (70, 0.2)]
BITS = [(16, 0.5), (8, 0.25), (4, 0.25)]
MAX_MEMBERS = 4
MAX_LATENCY_MS = 30.0


def market(seed: int, *, mixed: bool, n_boxes: int = 40, n_jobs: int = 30):
    rng = np.random.default_rng(seed)
    providers = []
    for k in range(n_boxes):
        vram, speed, ask = CONSUMER_GPUS[rng.integers(len(CONSUMER_GPUS))]
        site = SITES[rng.integers(len(SITES))]
        providers.append(
            {
                "id": f"r{k}",
                "gpus": int(rng.integers(1, 5)),
                "vram_per_gpu": vram,
                "speed": round(speed * rng.uniform(0.9, 1.1), 3),
                "ask_per_gpu_hour": round(ask * rng.uniform(0.85, 1.15), 3),
                "lat": site[0] + float(rng.uniform(-0.2, 0.2)),
                "lon": site[1] + float(rng.uniform(-0.2, 0.2)),
            }
        )
    if mixed:
        for k in range(3):
            site = SITES[rng.integers(len(SITES))]
            providers.append(
                {
                    "id": f"dc{k}",
                    "gpus": int(rng.choice([4, 8])),
                    "vram_per_gpu": 80.0,
                    "speed": round(float(rng.uniform(1.0, 1.2)), 3),
                    "ask_per_gpu_hour": round(float(rng.uniform(1.4, 2.0)), 3),
                    "lat": site[0],
                    "lon": site[1],
                }
            )
    jobs = []
    for j in range(n_jobs):
        params = MODELS[rng.choice(len(MODELS), p=[p for _, p in MODELS])][0]
        bits = BITS[rng.choice(len(BITS), p=[p for _, p in BITS])][0]
        sizing = size_llm_job(kind="INFERENCE", params_billion=params, quant_bits=bits, context_length=4096)
        node = _one_node(params, bits, providers)
        tokens = int(rng.uniform(5e6, 60e6))
        work = base_device_hours(
            kind="INFERENCE", params_billion=params, workload_tokens=tokens, workload_device_hours=None
        )
        price = float(rng.uniform(0.6, 2.5))
        jobs.append(
            {
                "id": f"j{j}",
                "sizing": sizing,
                "node": node,
                "total_gib": sizing.total_gb * 1e9 / GIB,
                "work": work,
                "value": price * work,
            }
        )
    return jobs, providers


def _one_node(params: int, bits: int, providers: list):
    """The job's best single-node sizing: for the smallest device memory of the market whose
    largest box has the devices it then needs (else the largest device memory)."""
    boxes: dict[float, int] = {}
    for p in providers:
        boxes[p["vram_per_gpu"]] = max(boxes.get(p["vram_per_gpu"], 0), p["gpus"])
    sizing = None
    for vram in sorted(boxes):
        sizing = size_llm_job(
            kind="INFERENCE",
            params_billion=params,
            quant_bits=bits,
            context_length=4096,
            max_device_memory_gib=vram,
        )
        if sizing.device_count <= boxes[vram]:
            return sizing
    return sizing


def one_node_book(jobs, providers) -> dict:
    return {
        "mechanism": "greedy",
        "payment_rule": "critical",
        "jobs": [
            {
                "id": job["id"],
                "bid": job["value"],
                "gpus": job["node"].device_count,
                "vram_per_gpu": job["node"].memory_per_device_gib,
                "vcpu": 0,
                "ram": 0,
                "base_hours": job["work"] / job["node"].device_count,
                "deadline_hours": 24.0,
            }
            for job in jobs
        ],
        "providers": [
            {
                **{k: p[k] for k in ("id", "gpus", "vram_per_gpu", "speed", "ask_per_gpu_hour")},
                "vcpu": 0,
                "ram": 0,
            }
            for p in providers
        ],
    }


def gang_book(jobs, providers) -> dict:
    ids = [p["id"] for p in providers]
    return {
        "mechanism": "gang",
        "jobs": [
            {
                "id": job["id"],
                "bid": job["value"],
                **stage_plan(layers=job["sizing"].layers, total_gib=job["total_gib"]),
                "work_hours": job["work"],
                "deadline_hours": 24.0,
                "max_members": MAX_MEMBERS,
                "max_latency_ms": MAX_LATENCY_MS,
                "providers": ids,
            }
            for job in jobs
        ],
        "providers": providers,
    }


VARIANTS = ("one node", "gangs > node", "gangs > device", "all gangs")


def _opt_in(jobs, providers, opted: set) -> list[tuple[dict, str]]:
    """What the round does when the jobs in `opted` opt in: they clear first in the gang book, the
    rest on one node over the devices the gangs left."""
    gang = clear(gang_book([j for j in jobs if j["id"] in opted], providers))
    left = {p["id"]: p["gpus"] for p in providers}
    for members in gang["assignments"].values():
        for member in members:
            left[member["provider"]] -= member["devices"]
    rest = [{**p, "gpus": left[p["id"]]} for p in providers]
    one = clear(one_node_book([j for j in jobs if j["id"] not in opted], rest))
    return [(one, "one"), (gang, "gang")]


def _row() -> dict:
    return {"large": 0, "large_cleared": 0, "huge": 0, "huge_cleared": 0, "cleared": 0, "welfare": 0.0}


def measure(seeds: list[int], *, mixed: bool) -> dict:
    rows = {name: {**_row(), "price": [], "hours": [], "members": [], "rtts": []} for name in VARIANTS}
    for seed in seeds:
        jobs, providers = market(seed, mixed=mixed)
        biggest = max(p["vram_per_gpu"] for p in providers)
        node = max(p["vram_per_gpu"] * p["gpus"] for p in providers)
        large = {job["id"] for job in jobs if job["total_gib"] > biggest}
        huge = {job["id"] for job in jobs if job["total_gib"] > node}
        by_id = {job["id"]: job for job in jobs}
        place = {p["id"]: p for p in providers}
        runs = {
            "one node": [(clear(one_node_book(jobs, providers)), "one")],
            "gangs > node": _opt_in(jobs, providers, huge),
            "gangs > device": _opt_in(jobs, providers, large),
            "all gangs": [(clear(gang_book(jobs, providers)), "gang")],
        }
        for name, results in runs.items():
            row = rows[name]
            row["large"] += len(large)
            row["huge"] += len(huge)
            for result, kind in results:
                row["cleared"] += len(result["assignments"])
                row["large_cleared"] += len(large & set(result["assignments"]))
                row["huge_cleared"] += len(huge & set(result["assignments"]))
                row["welfare"] += result["welfare"]
                for job_id, paid in result["payments"].items():
                    row["price"].append(paid / by_id[job_id]["work"])
                for job_id, assigned in result["assignments"].items():
                    if kind == "one":
                        job = by_id[job_id]
                        row["hours"].append(job["work"] / job["node"].device_count / place[assigned]["speed"])
                        continue
                    row["hours"].append(result["hours"][job_id])
                    row["members"].append(len(assigned))
                    spots = [place[m["provider"]] for m in assigned]
                    row["rtts"].extend(
                        rtt_from_distance_ms(great_circle_km((a["lat"], a["lon"]), (b["lat"], b["lon"])))
                        for i, a in enumerate(spots)
                        for b in spots[i + 1 :]
                    )
    return rows


def _mean(values) -> float:
    return statistics.mean(values) if values else float("nan")


def report(title: str, rows: dict) -> None:
    base = rows["one node"]
    print(f"\n{title}  (each gang column: value and its ratio to one node)")
    print(f"{'':24}" + "".join(f"{name:>22}" for name in VARIANTS))
    lines = [
        ("> any device: cleared", "large_cleared", f"of {base['large']}"),
        ("> any node: cleared", "huge_cleared", f"of {base['huge']}"),
        ("all jobs cleared", "cleared", ""),
        ("welfare", "welfare", ""),
        ("price / base dev-hour", "price", ""),
        ("hours to finish", "hours", ""),
    ]
    for label, key, note in lines:
        cells = []
        for name in VARIANTS:
            value = rows[name][key]
            value = _mean(value) if isinstance(value, list) else value
            reference = _mean(base[key]) if isinstance(base[key], list) else base[key]
            text = f"{value:,.0f}" if isinstance(value, int) else f"{value:,.3f}"
            if name != "one node":
                text += f" ({value / reference:.2f})" if reference else " (-)"
            cells.append(f"{text:>22}")
        print(f"{label:24}{''.join(cells)}  {note}")
    members = "".join(f"{_mean(rows[name]['members']):>22.2f}" for name in VARIANTS[1:])
    rtt = "".join(f"{max(rows[name]['rtts'], default=0):>22.1f}" for name in VARIANTS[1:])
    print(f"{'gang members (mean)':24}{'':>22}{members}")
    print(f"{'max RTT in a gang, ms':24}{'':>22}{rtt}  (bound {MAX_LATENCY_MS:g})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    seeds = [args.seed + i for i in range(args.seeds)]
    print(f"seeds {seeds[0]}..{seeds[-1]}; 40 consumer GPU boxes and 30 jobs per seed")
    report("consumer GPUs only", measure(seeds, mixed=False))
    report("consumer GPUs + 3 datacentre nodes (A100 80 GB)", measure(seeds, mixed=True))


if __name__ == "__main__":
    main()
