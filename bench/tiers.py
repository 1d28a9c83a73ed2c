"""Benchmark: cloud–edge tiers (AI-Bazaar) — tier-aware against tier-blind clearing on the same seeded market.

Run: `.venv/bin/python bench/tiers.py [--seed 1] [--rounds 200] [--json]` from the project root.

A seeded market in four European consumer regions (eu-west, eu-central, eu-south, eu-north). Every
round has fresh supply and demand:
- end devices (tier END: consumer GPUs, speed 1, ask 0.30–0.50 per device-hour) and edge servers (tier
  EDGE: L4 / L40S class, speed 1.5–2, ask 0.75–1.10) in the consumer regions' metros (end devices
  within 10 km of the metro, edge servers within 40 km);
- cloud GPUs (tier CLOUD: A100 class, speed 3, ask 1.20–1.60 per device-hour, 8 devices each) in
  Frankfurt only: cheaper per reference device-hour than most edge devices, farther from most users;
- latency-bound jobs (SLA 15–40 ms from their region), one device each, bids log-normal around 0.75
  per reference device-hour; the count is 0.6–1.6x the edge devices free that round, so the edge is
  sometimes short and sometimes not.
A job accepts the edge devices of its own region and every cloud device within its SLA (estimated
RTT, `auctions.mechanisms.latency`), as the round service builds a tiered book.

The same books clear twice with the engine's `tiered` mechanism (auctions/mechanisms/tiers.py):
tier-aware (edge first at the edge followers' equilibrium prices, the cloud as the overflow at the
cloud leader's Stackelberg price) and tier-blind (every job takes the cheapest device it accepts at
its ask, whatever its tier: all tiers share one book, as CPX cleared before). Printed per mode:
jobs placed, overflow share (jobs placed on the cloud / jobs placed), estimated RTT of the placed
jobs (mean and p95, and mean per tier), mean price paid per reference device-hour per tier, gains
from trade (sum of bid - cost), and the aware / blind ratios. The RTT is the latency model's
estimate, the one clearing checks SLAs with, not a measurement.
"""

import argparse
import json
import math
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auctions.mechanisms import clear  # noqa: E402
from auctions.mechanisms.latency import REGION_CENTROIDS, estimate_rtt_ms  # noqa: E402

REGIONS = ("eu-west", "eu-central", "eu-south", "eu-north")
CLOUD_REGIONS = ("eu-central",)
TIERS = ("END", "EDGE", "CLOUD")


def near(rng: random.Random, region: str, km: float) -> tuple[float, float]:
    """A point within `km` of the region's metro (flat-earth offset, fine at this scale)."""
    lat, lon = REGION_CENTROIDS[region]
    distance, bearing = km * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
    dlat = distance * math.cos(bearing) / 111.0
    dlon = distance * math.sin(bearing) / (111.0 * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


def market_round(rng: random.Random, index: int) -> tuple[dict, dict]:
    """One round's book and the RTT of each (job, device) pair it accepts."""
    devices = []
    for region in REGIONS:
        for _ in range(rng.randint(1, 4)):
            devices.append(("END", region, near(rng, region, 10), rng.uniform(0.30, 0.50), 1.0, 1))
        for _ in range(rng.randint(0, 2)):
            speed = rng.choice([1.5, 2.0])
            devices.append(("EDGE", region, near(rng, region, 40), rng.uniform(0.75, 1.10), speed, 2))
    for region in CLOUD_REGIONS:
        devices.append(("CLOUD", region, REGION_CENTROIDS[region], rng.uniform(1.20, 1.60), 3.0, 8))
    asks = [
        {"id": f"r{i}", "price": round(ask, 4), "quantity": units, "speed": speed, "tier": tier}
        for i, (tier, _, _, ask, speed, units) in enumerate(devices)
    ]
    edge_units = sum(a["quantity"] for a in asks if a["tier"] != "CLOUD")
    bids, rtt = [], {}
    for j in range(max(1, round(edge_units * rng.uniform(0.6, 1.6)))):
        region = rng.choice(REGIONS)
        sla = rng.choice([15, 20, 25, 30, 40])
        accepts = []
        for i, (_, provider_region, (lat, lon), *_rest) in enumerate(devices):
            value = estimate_rtt_ms(
                consumer_region=region, provider_region=provider_region, provider_lat=lat, provider_lon=lon
            )
            local = devices[i][0] == "CLOUD" or provider_region == region  # a job's edge is local
            if local and value is not None and value <= sla:
                accepts.append(f"r{i}")
                rtt[(f"j{j}", f"r{i}")] = value
        bids.append(
            {"id": f"j{j}", "price": round(rng.lognormvariate(math.log(0.75), 0.35), 4), "accepts": accepts}
        )
    doc = {"mechanism": "tiered", "salt": f"bench-{index}", "substitution": 0.5, "bids": bids, "asks": asks}
    return doc, rtt


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def run(seed: int, rounds: int) -> dict:
    rng = random.Random(seed)
    figures = {
        mode: {"jobs": 0, "placed": dict.fromkeys(TIERS, 0), "rtt": [], "gains": 0.0}
        for mode in ("aware", "blind")
    }
    for mode in figures:
        figures[mode]["rtt_by_tier"] = {tier: [] for tier in TIERS}
        figures[mode]["price_by_tier"] = {tier: [] for tier in TIERS}
    for index in range(rounds):
        doc, rtt = market_round(rng, index)
        tiers = {a["id"]: a["tier"] for a in doc["asks"]}
        for mode, aware in (("aware", True), ("blind", False)):
            result = clear({**doc, "tier_aware": aware})
            out = figures[mode]
            out["jobs"] += len(doc["bids"])
            out["gains"] += result["gains_from_trade"]
            for job, ask in result["assignments"].items():
                tier = tiers[ask]
                out["placed"][tier] += 1
                out["rtt"].append(rtt[(job, ask)])
                out["rtt_by_tier"][tier].append(rtt[(job, ask)])
                out["price_by_tier"][tier].append(result["payments"][job])
    report = {}
    for mode, out in figures.items():
        placed = sum(out["placed"].values())
        report[mode] = {
            "jobs": out["jobs"],
            "placed": placed,
            "placed_by_tier": out["placed"],
            "overflow_share": out["placed"]["CLOUD"] / placed if placed else None,
            "rtt_mean_ms": statistics.fmean(out["rtt"]) if out["rtt"] else None,
            "rtt_p95_ms": percentile(out["rtt"], 0.95),
            "rtt_mean_ms_by_tier": {
                t: statistics.fmean(v) if v else None for t, v in out["rtt_by_tier"].items()
            },
            "price_mean_by_tier": {
                t: statistics.fmean(v) if v else None for t, v in out["price_by_tier"].items()
            },
            "gains_from_trade": out["gains"],
        }
    aware, blind = report["aware"], report["blind"]
    report["ratios_aware_over_blind"] = {
        "rtt_mean": aware["rtt_mean_ms"] / blind["rtt_mean_ms"],
        "rtt_p95": aware["rtt_p95_ms"] / blind["rtt_p95_ms"],
        "placed": aware["placed"] / blind["placed"],
        "gains_from_trade": aware["gains_from_trade"] / blind["gains_from_trade"],
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args.seed, args.rounds)
    if args.json:
        print(json.dumps({"seed": args.seed, "rounds": args.rounds, **report}, indent=1))
        return

    def fmt(value, digits=3):
        return "—" if value is None else f"{value:.{digits}f}"

    print(f"cloud–edge tiers, seed {args.seed}, {args.rounds} rounds (same books, both modes)")
    print(f"{'figure':<34}{'tier-aware':>14}{'tier-blind':>14}")
    rows = [
        ("latency-bound jobs", "jobs", 0),
        ("placed", "placed", 0),
        ("overflow share (cloud / placed)", "overflow_share", 3),
        ("RTT mean ms", "rtt_mean_ms", 2),
        ("RTT p95 ms", "rtt_p95_ms", 2),
        ("gains from trade", "gains_from_trade", 2),
    ]
    for label, key, digits in rows:
        print(f"{label:<34}{fmt(report['aware'][key], digits):>14}{fmt(report['blind'][key], digits):>14}")
    for tier in TIERS:
        print(
            f"{'placed on ' + tier:<34}{report['aware']['placed_by_tier'][tier]:>14}"
            f"{report['blind']['placed_by_tier'][tier]:>14}"
        )
        aware_rtt = report["aware"]["rtt_mean_ms_by_tier"][tier]
        blind_rtt = report["blind"]["rtt_mean_ms_by_tier"][tier]
        print(f"{'  RTT mean ms on ' + tier:<34}{fmt(aware_rtt, 2):>14}{fmt(blind_rtt, 2):>14}")
        aware_price = report["aware"]["price_mean_by_tier"][tier]
        blind_price = report["blind"]["price_mean_by_tier"][tier]
        print(f"{'  price / ref. device-h on ' + tier:<34}{fmt(aware_price, 4):>14}{fmt(blind_price, 4):>14}")
    print("aware / blind: " + ", ".join(f"{k} {v:.3f}" for k, v in report["ratios_aware_over_blind"].items()))


if __name__ == "__main__":
    main()
