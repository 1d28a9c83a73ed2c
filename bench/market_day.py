"""A market day in compressed time: the real round service on the database, old rule against new.

    .venv/bin/python bench/market_day.py [--seed 1] [--seeds 3] [--rounds 144] [--json] [--postgres]

Each round is ROUND_MINUTES of simulated time (144 rounds = one day). A seeded provider population
like the demo seed's — end devices (consumer GPUs, Jetson boards), edge servers (L4, T4, L40S) and
cloud GPUs (A100, H100) across six regions — joins and leaves during the day (a provider is in the
book while it heartbeats). Consumer jobs arrive every round (LLM inference of several sizes, a tenth
on several devices, a fifth with a latency SLA) with a bid per reference device-hour spread
log-normally around the going rate of the devices that fit them. Jobs are written QUEUED directly
(as bench/round.py does: the round does not read the ledger), each arrival is first quoted with
`job_quote`, leases complete after their expected run time, and a job whose deadline passes leaves.

The same day (same arrivals, same providers) runs once per rule, on a fresh database each:
"per_class" (McAfee in every resource class, a lone bid to the heterogeneous book: the earlier rule)
and "depth" (the new default: McAfee in thick classes, posted prices elsewhere, any fitting class).
Before each round the bench solves the round's offline optimum on the same book — a welfare MILP
(scipy.optimize.milp, HiGHS) over every job and every free resource that fits it (device class,
memory, devices on one node, latency SLA, deadline), net value bid x reference device-hours - ask x
device-hours — and prints per rule:
- efficient_trade_share: executed trades that add welfare, capped per round at the optimum's count,
  over the optimum's trades (summed over rounds);
- welfare_share: realised welfare (the same net values, for the leases the round made) over the
  optimum's, summed over rounds;
- wait_rounds_p50 / p95: rounds from submission to match (1 = the first round it was in) for jobs
  that a listed resource with a free device could serve at their bid when they arrived; a job that
  never matched counts as never (reported as null when a percentile lands on it).
  wait_rounds_p50_listed / p95_listed count every job some listed resource fits at its bid, free or
  busy, so they add the waits for capacity that no rule can shorten;
- backlog: queued jobs over the day, and backlog_growth = the least-squares slope of the queue over
  the second half of the day (jobs per round; about 0 when bounded);
- utilisation: busy device-rounds over online device-rounds;
- platform_surplus: sum of (paid - received) x expected device-hours over the leases (a negative
  figure would be a platform subsidy);
- quote_calibration: of the arrivals quoted `would_clear_now: true`, the share matched by the next
  round (other arrivals of the same interval come after the quote, so this is not trivially 1).
--seeds N runs seeds seed..seed+N-1 and prints min / median / max of each figure. --json prints one
object {"rules": {rule: {figure: value or {min, median, max}}}, "seeds", "rounds"}.
Embedded SQLite by default (a temporary file); --postgres uses DATABASE_URL's server with its own
database (--database, dropped at the end). MARKET_DAY_DEBUG=1 prints, on standard error, every trade
of the optimum a round missed and every servable job that waited more than 3 rounds.
"""

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RULES = ("per_class", "depth")
ROUND_MINUTES = 10
REGIONS = {  # region: (lat, lon) of a typical site
    "eu-west": (45.76, 4.84),
    "eu-central": (50.11, 8.68),
    "us-east": (39.04, -77.49),
    "us-west": (37.77, -122.42),
    "ap-south": (12.97, 77.59),
    "ap-east": (35.68, 139.69),
}
# (tier, model, devices choices, memory GiB, fp16 TFLOPS, speed, ask range per device-hour, weight)
ARCHETYPES = [
    ("END", "RTX 3060", (1,), 12, 12.7, 0.5, (0.07, 0.12), 4),
    ("END", "RTX 3080", (1, 2), 10, 29.8, 0.8, (0.14, 0.22), 4),
    ("END", "RTX 4090", (1, 2), 24, 82.6, 1.6, (0.35, 0.50), 5),
    ("END", "Jetson AGX Orin 64GB", (2, 4), 64, 10.6, 0.3, (0.05, 0.09), 2),
    ("EDGE", "NVIDIA L4", (4,), 24, 30.3, 1.0, (0.30, 0.42), 3),
    ("EDGE", "NVIDIA T4", (4, 8), 16, 65.0, 0.6, (0.16, 0.24), 3),
    ("EDGE", "NVIDIA L40S", (4,), 48, 362.0, 2.2, (0.85, 1.10), 2),
    ("CLOUD", "A100-80G", (8,), 80, 312.0, 3.0, (1.45, 1.85), 1),
    ("CLOUD", "H100-80G SXM", (8,), 80, 989.0, 6.0, (2.70, 3.10), 1),
]
MODELS = [  # (name, params B, bits, context, weight)
    ("phi-3-mini", 3.8, 16, 4096, 3),
    ("llama-3.1-8b-instruct", 8, 4, 8192, 5),
    ("mistral-7b-instruct", 7.2, 8, 4096, 4),
    ("gemma-2-9b", 9.2, 16, 8192, 2),
    ("qwen2.5-14b", 14.7, 4, 8192, 2),
    ("llama-3.1-70b-instruct", 70, 4, 4096, 1),
]
PROVIDERS_AT_START = 18
JOBS_PER_ROUND = 3.0


def _weighted(rng: random.Random, rows: list, weight_index: int):
    return rng.choices(rows, weights=[row[weight_index] for row in rows], k=1)[0]


def plan_day(*, seed: int, rounds: int) -> dict:
    """Everything random about the day, drawn up front so both rules see the same day."""
    rng = random.Random(seed)
    providers = []
    for index in range(PROVIDERS_AT_START + rounds // 12):
        archetype = _weighted(rng, ARCHETYPES, 7)
        joins = 0 if index < PROVIDERS_AT_START else rng.randrange(rounds)
        stays = rng.randrange(rounds // 3, 2 * rounds)
        providers.append(
            {
                "index": index,
                "archetype": archetype,
                "region": rng.choice(list(REGIONS)),
                "devices": rng.choice(archetype[2]),
                "ask": round(rng.uniform(*archetype[6]), 4),
                "online": (joins, joins + stays),
            }
        )
    arrivals = []
    for round_index in range(rounds):
        count = _poisson(rng, JOBS_PER_ROUND * (1.3 if 36 <= round_index % 144 < 108 else 0.7))
        for _ in range(count):
            name, params, bits, context, _ = _weighted(rng, MODELS, 4)
            devices = rng.choice([2, 4]) if rng.random() < 0.1 else None
            arrivals.append(
                {
                    "round": round_index,
                    "model": (name, params, bits, context),
                    "devices": devices,
                    "tokens": int(rng.lognormvariate(math.log(1_500_000), 0.8)),
                    "region": rng.choice(list(REGIONS)),
                    "sla": 60 if rng.random() < 0.2 else None,
                    "value": rng.lognormvariate(0.35, 0.55),  # bid / going rate
                    "deadline_h": rng.uniform(2, 12),
                }
            )
    return {"providers": providers, "arrivals": arrivals}


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


# --- the database


def setup_django(args) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    if args.postgres:
        base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
        if not base.startswith("postgres"):
            raise SystemExit("--postgres needs DATABASE_URL=postgres://…")
        from bench.round import database_url

        args.base_url = base
        os.environ["DATABASE_URL"] = database_url(base, args.database)
        # Each rule gets a fresh database (DROP … WITH (FORCE)): a pool would keep killed connections.
        os.environ["DATABASE_POOL"] = "false"
    else:
        args.tmp = tempfile.mkdtemp(prefix="cpx-market-day-")
        os.environ["DATABASE_URL"] = f"sqlite:///{args.tmp}/market_day.sqlite3"
    import django

    django.setup()


def fresh_database(args) -> None:
    from django.core.management import call_command
    from django.db import connection

    connection.close()
    if args.postgres:
        from bench.round import _admin

        _admin(
            args.base_url,
            f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)",
            f"CREATE DATABASE {args.database}",
        )
    else:
        Path(os.environ["DATABASE_URL"].removeprefix("sqlite:///")).unlink(missing_ok=True)
    call_command("migrate", verbosity=0)


def drop_database(args) -> None:
    from django.db import connection

    connection.close()
    if args.postgres:
        from bench.round import _admin

        _admin(args.base_url, f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
    else:
        import shutil

        shutil.rmtree(args.tmp, ignore_errors=True)


def populate(plan: dict, start: datetime) -> dict:
    """Users, providers and resources of the whole day (a provider is in the book while it heartbeats)."""
    from market.models import Provider, Resource, Role, User

    users = User.objects.bulk_create(
        [User(username=f"p{p['index']}", role=Role.PROVIDER) for p in plan["providers"]]
        + [User(username="consumer", role=Role.CONSUMER)]
    )
    providers = Provider.objects.bulk_create(
        [
            Provider(
                user=user,
                display_name=f"provider {p['index']}",
                wallet_address="0x" + f"{p['index'] + 1:040x}",
                tier=p["archetype"][0],
                region=p["region"],
                latitude=REGIONS[p["region"]][0],
                longitude=REGIONS[p["region"]][1],
                last_heartbeat_at=None,
            )
            for user, p in zip(users, plan["providers"], strict=False)
        ]
    )
    Resource.objects.bulk_create(
        [
            Resource(
                provider=provider,
                device_class="GPU",
                model_name=p["archetype"][1],
                device_count=p["devices"],
                memory_per_device_gib=Decimal(p["archetype"][3]),
                host_ram_gib=Decimal(64),
                vcpu=16,
                fp16_tflops=Decimal(str(p["archetype"][4])),
                speed_factor=Decimal(str(p["archetype"][5])),
                ask_per_device_hour=Decimal(str(p["ask"])),
                price_floor=Decimal(0),
                auto_pricing=False,
            )
            for provider, p in zip(providers, plan["providers"], strict=True)
        ]
    )
    return {"providers": [p.pk for p in providers], "consumer": users[-1]}


def job_spec(arrival: dict, now: datetime, going_rate: float) -> dict:
    name, params, bits, context = arrival["model"]
    spec = {
        "kind": "INFERENCE",
        "model_name": name,
        "params_billion": Decimal(str(params)),
        "quant_bits": bits,
        "context_length": context,
        "batch_size": 1,
        "workload_tokens": arrival["tokens"],
        "device_class": "GPU",
        "max_price_per_device_hour": Decimal(str(round(going_rate * arrival["value"], 4))),
        "budget": Decimal("500"),
        "deadline": now + timedelta(hours=arrival["deadline_h"]),
        "region": arrival["region"],
    }
    if arrival["sla"] is not None:
        spec["latency_sla_ms"] = arrival["sla"]
    if arrival["devices"]:
        spec["requested_device_count"] = arrival["devices"]
    return spec


def going_rate(memory: float, listed: list[dict]) -> float:
    """The median ask per reference device-hour (ask / speed) of the listed devices that fit."""
    fitting = [
        float(r["ask_per_device_hour"]) / float(r["speed_factor"])
        for r in listed
        if float(r["memory_per_device_gib"]) >= memory
    ]
    return statistics.median(fitting) if fitting else 0.5


# --- the offline optimum and the realised welfare


def net_value(job: dict, resource: dict) -> float:
    """bid x reference device-hours - ask x device-hours on this resource (the engine's convention)."""
    return (
        job["bid"] * job["base_device_hours"] - resource["ask"] * job["base_device_hours"] / resource["speed"]
    )


def fits(job: dict, resource: dict, *, free: bool) -> bool:
    from auctions.mechanisms import latency
    from auctions.services.round_books import device_hours_on

    devices = resource["free"] if free else resource["device_count"]
    if job["device_class"] != resource["device_class"] or job["memory"] > resource["memory"] + 1e-9:
        return False
    if job["device_count"] > devices:
        return False
    if job["latency_sla_ms"] is not None:
        rtt = latency.estimate_rtt_ms(
            consumer_region=job["region"],
            provider_region=resource["region"],
            provider_lat=resource["provider__latitude"],
            provider_lon=resource["provider__longitude"],
        )
        if rtt is None or rtt > job["latency_sla_ms"]:
            return False
    return device_hours_on(job, resource) / job["device_count"] <= job["hours_left"]


def optimum(jobs: list[dict], resources: list[dict]) -> tuple[float, int, list]:
    """The welfare MILP over every job and free resource that fits it: (welfare, trades, pairs)."""
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    pairs = [
        (j, k, w)
        for j, job in enumerate(jobs)
        for k, resource in enumerate(resources)
        if fits(job, resource, free=True) and (w := net_value(job, resource)) > 1e-12
    ]
    if not pairs:
        return 0.0, 0, []
    n = len(pairs)
    weights = np.array([w for _, _, w in pairs])
    rows = [j for j, _, _ in pairs] + [len(jobs) + k for _, k, _ in pairs]
    values = [1.0] * n + [float(jobs[j]["device_count"]) for j, _, _ in pairs]
    matrix = coo_matrix((values, (rows, list(range(n)) * 2)), shape=(len(jobs) + len(resources), n))
    upper = np.array([1.0] * len(jobs) + [float(r["free"]) for r in resources])
    result = milp(
        -weights,
        constraints=LinearConstraint(matrix.tocsr(), -np.inf, upper),
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
        options={"mip_rel_gap": 0, "time_limit": 30},
    )
    if result.x is None:
        return 0.0, 0, []
    chosen = result.x > 0.5
    picked = [(jobs[j]["id"], resources[k]["id"]) for (j, k, _), c in zip(pairs, chosen, strict=True) if c]
    return float(weights[chosen].sum()), int(chosen.sum()), picked


# --- one day under one rule


def run_day(plan: dict, *, rule: str, rounds: int, quotes: bool) -> dict:
    from django.conf import settings
    from django.db import transaction

    from auctions.models import Lease
    from auctions.selectors import rounds as selectors
    from auctions.services import round_books as books
    from auctions.services.pricing import job_quote
    from auctions.services.rounds import round_clear, round_open
    from market.models import JobRequest, Provider
    from market.services.jobs import job_request_size

    settings.CPX_CLEARING_RULE = rule
    settings.CPX_BOOK_INCLUDE_UNSEEN_PROVIDERS = False
    start = datetime(2026, 1, 5, tzinfo=UTC)
    ids = populate(plan, start)
    arrivals_by_round: dict[int, list] = {}
    for arrival in plan["arrivals"]:
        arrivals_by_round.setdefault(arrival["round"], []).append(arrival)
    arrived: dict[int, int] = {}  # job id -> round it arrived
    servable: set = set()  # a free listed device fits it at its bid when it arrives
    servable_listed: set = set()  # some listed device fits it at its bid, free or busy
    quoted_true: dict[int, int] = {}  # job id -> round it was quoted to clear in
    matched_in: dict[int, int] = {}
    opt_seen: dict[int, int] = {}  # job id -> rounds in which the per-round optimum matched it
    totals = {"opt_welfare": 0.0, "opt_trades": 0, "welfare": 0.0, "trades": 0, "surplus": Decimal(0)}
    backlog, busy_rounds, online_rounds = [], 0, 0
    for r in range(rounds):
        now = start + timedelta(minutes=ROUND_MINUTES * r)
        online = [
            pk
            for pk, p in zip(ids["providers"], plan["providers"], strict=True)
            if p["online"][0] <= r < p["online"][1]
        ]
        Provider.objects.filter(pk__in=online).update(last_heartbeat_at=now)
        _complete_leases(now)
        listed = selectors.round_book_resources(
            now=now,
            heartbeat_timeout_s=settings.CPX_HEARTBEAT_TIMEOUT_S,
            include_unseen=False,
            only_free=False,
        )
        for resource in listed:
            _resource_fields(resource)
        for arrival in arrivals_by_round.get(r, []):
            sized = job_request_size(spec=job_spec(arrival, now, 1.0), now=now)
            rate = going_rate(float(sized["memory_per_device_gib"]), listed)
            spec = job_spec(arrival, now, rate)
            would_clear = False
            if quotes:
                would_clear = bool(job_quote(spec=spec, now=now)["would_clear_now"])
            fields = job_request_size(spec=spec, now=now)
            job = JobRequest.objects.create(
                consumer=ids["consumer"],
                status=JobRequest.Status.QUEUED,
                created_at=now,
                updated_at=now,
                **fields,
            )
            arrived[job.pk] = r
            row = _job_row(job, now)
            if any(fits(row, res, free=False) and net_value(row, res) > 0 for res in listed):
                servable_listed.add(job.pk)
            if any(fits(row, res, free=True) and net_value(row, res) > 0 for res in listed):
                servable.add(job.pk)
            if would_clear:
                quoted_true[job.pk] = r
        with transaction.atomic():
            snapshot = books.snapshot_book(now=now, include_unseen=False, lock=True)
        opt_welfare, opt_trades, opt_pairs = optimum(snapshot.jobs, snapshot.resources)
        for job_id, _ in opt_pairs:
            opt_seen[job_id] = opt_seen.get(job_id, 0) + 1
        round_obj = round_clear(round_id=round_open(now=now).pk, now=now)
        if DEBUG:
            _debug_round(round_obj, snapshot, opt_pairs)
        jobs_by_id = {job["id"]: job for job in snapshot.jobs}
        resources_by_id = {res["id"]: res for res in snapshot.resources}
        welfare, useful = 0.0, 0
        for lease in Lease.objects.filter(round=round_obj):
            w = net_value(jobs_by_id[lease.job_id], resources_by_id[lease.resource_id])
            welfare += w
            useful += w > 0
            matched_in[lease.job_id] = r
            totals["surplus"] += (
                lease.unit_price_paid - lease.unit_price_received
            ) * lease.expected_device_hours
        totals["opt_welfare"] += opt_welfare
        totals["opt_trades"] += opt_trades
        totals["welfare"] += welfare
        totals["trades"] += min(useful, opt_trades)
        backlog.append(JobRequest.objects.filter(status=JobRequest.Status.QUEUED, deadline__gt=now).count())
        listed_free = selectors.round_book_resources(
            now=now,
            heartbeat_timeout_s=settings.CPX_HEARTBEAT_TIMEOUT_S,
            include_unseen=False,
            only_free=False,
        )
        busy_rounds += sum(min(r_["busy"], r_["device_count"]) for r_ in listed_free)
        online_rounds += sum(r_["device_count"] for r_ in listed_free)

    def waits_of(jobs: set) -> list[float]:
        return [
            (matched_in[job] - arrived[job] + 1) if job in matched_in else math.inf
            for job in sorted(jobs)
            if arrived[job] < rounds - 3
        ]

    waits = waits_of(servable)
    waits_listed = waits_of(servable_listed)
    if DEBUG:
        for job in sorted(servable):
            if arrived[job] < rounds - 3 and (matched_in.get(job, 10**6) - arrived[job] + 1) > 3:
                print(
                    f"long wait j{job} arrived r{arrived[job]} matched {matched_in.get(job)} "
                    f"optimum matched it in {opt_seen.get(job, 0)} rounds",
                    file=sys.stderr,
                )
    half = backlog[len(backlog) // 2 :]
    calibration = [matched_in.get(job) == r for job, r in quoted_true.items()]
    return {
        "efficient_trade_share": totals["trades"] / totals["opt_trades"] if totals["opt_trades"] else None,
        "welfare_share": totals["welfare"] / totals["opt_welfare"] if totals["opt_welfare"] else None,
        "wait_rounds_p50": _percentile(waits, 50),
        "wait_rounds_p95": _percentile(waits, 95),
        "never_matched_share": sum(1 for w in waits if w == math.inf) / len(waits) if waits else None,
        "wait_rounds_p50_listed": _percentile(waits_listed, 50),
        "wait_rounds_p95_listed": _percentile(waits_listed, 95),
        "backlog_growth": _slope(half),
        "backlog_max": max(backlog),
        "backlog_end": backlog[-1],
        "backlog_quartiles": [backlog[min(len(backlog) - 1, i * len(backlog) // 4)] for i in range(5)],
        "utilisation": busy_rounds / online_rounds if online_rounds else None,
        "platform_surplus": float(totals["surplus"]),
        "quote_calibration": sum(calibration) / len(calibration) if calibration else None,
        "quoted_would_clear": len(calibration),
        "jobs": len(arrived),
        "servable_jobs": len(servable),
        "servable_listed_jobs": len(servable_listed),
        "rule": rule,
    }


DEBUG = os.environ.get("MARKET_DAY_DEBUG") == "1"


def _debug_round(round_obj, snapshot, opt_pairs) -> None:
    from auctions.models import Lease

    leased = dict(Lease.objects.filter(round=round_obj).values_list("job_id", "resource_id"))
    jobs = {j["id"]: j for j in snapshot.jobs}
    res = {r["id"]: r for r in snapshot.resources}
    posted = round_obj.mechanism.get("posted_prices", {})
    for job_id, resource_id in opt_pairs:
        if job_id in leased:
            continue
        job, r = jobs[job_id], res[resource_id]
        print(
            f"r{round_obj.pk} missed j{job_id} dev={job['device_count']} mem={job['memory']:.1f} "
            f"{job['region']} sla={job['latency_sla_ms']} bid={job['bid']:.3f} -> r{resource_id} "
            f"{r['class']} ask={r['ask']:.3f} speed={r['speed']} posted={posted.get(r['class'])} "
            f"books={[b['kind'] for b in round_obj.mechanism['books']]}",
            file=sys.stderr,
        )


def _resource_fields(resource: dict) -> None:
    from auctions.mechanisms import throughput

    resource["free"] = resource["device_count"] - resource["busy"]
    resource["memory"] = float(resource["memory_per_device_gib"])
    resource["ask"] = float(resource["ask_per_device_hour"])
    resource["speed"] = float(resource["speed_factor"])
    tflops = float(resource["fp16_tflops"])
    resource["tflops"] = tflops if tflops > 0 else throughput.REFERENCE_FP16_TFLOPS * resource["speed"]
    resource["region"] = resource["provider__region"]


def _job_row(job, now: datetime) -> dict:
    from auctions.mechanisms import throughput

    row = {
        "id": job.pk,
        "kind": job.kind,
        "params_billion": job.params_billion,
        "workload_tokens": job.workload_tokens,
        "workload_device_hours": job.workload_device_hours,
        "device_class": job.device_class,
        "latency_sla_ms": job.latency_sla_ms,
        "region": job.region,
        "device_count": job.device_count,
        "memory": float(job.memory_per_device_gib),
        "bid": float(job.max_price_per_device_hour),
        "hours_left": (job.deadline - now).total_seconds() / 3600,
    }
    row["base_device_hours"] = throughput.base_device_hours(
        kind=job.kind,
        params_billion=float(job.params_billion),
        workload_tokens=job.workload_tokens,
        workload_device_hours=None if job.workload_device_hours is None else float(job.workload_device_hours),
    )
    return row


def _complete_leases(now: datetime) -> None:
    """Leases whose expected run time has passed complete (the agent's part, compressed)."""
    from auctions.models import Lease
    from market.models import JobRequest

    done, jobs = [], []
    for lease in Lease.objects.filter(status__in=Lease.ACTIVE).only(
        "id", "job_id", "devices", "dispatched_at", "expected_device_hours"
    ):
        hours = float(lease.expected_device_hours) / lease.devices
        if lease.dispatched_at + timedelta(hours=hours) <= now:
            done.append(lease.pk)
            jobs.append(lease.job_id)
    Lease.objects.filter(pk__in=done).update(status=Lease.Status.COMPLETED, ended_at=now, progress=1)
    JobRequest.objects.filter(pk__in=jobs).update(status=JobRequest.Status.COMPLETED, updated_at=now)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    value = ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]
    return None if value == math.inf else float(value)


def _slope(values: list[int]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return num / sum((i - mean_x) ** 2 for i in range(n))


# --- report

FIGURES = [
    ("efficient_trade_share", "efficient trades executed", "{:.1%}", ">= 90%"),
    ("welfare_share", "welfare / per-round optimum", "{:.1%}", ">= 90%"),
    ("wait_rounds_p50", "wait rounds p50 (servable)", "{:.0f}", "<= 1"),
    ("wait_rounds_p95", "wait rounds p95 (servable)", "{:.0f}", "<= 3"),
    ("never_matched_share", "servable, never matched", "{:.1%}", ""),
    ("wait_rounds_p50_listed", "wait p50 (any listed fits)", "{:.0f}", ""),
    ("wait_rounds_p95_listed", "wait p95 (any listed fits)", "{:.0f}", ""),
    ("backlog_growth", "backlog growth (jobs/round)", "{:+.3f}", "~0"),
    ("backlog_max", "backlog max (jobs)", "{:.0f}", ""),
    ("utilisation", "provider utilisation", "{:.1%}", ""),
    ("platform_surplus", "platform surplus (money)", "{:+.4f}", ">= 0"),
    ("quote_calibration", "quote calibration", "{:.1%}", ">= 95%"),
]


def summarise(runs: list[dict]) -> dict:
    """min / median / max of each figure over seeds (the value itself for one seed)."""
    out = {}
    for key in runs[0]:
        values = [run[key] for run in runs]
        if key == "rule" or key == "backlog_quartiles":
            out[key] = values[0] if len(runs) == 1 else values
            continue
        numbers = [v for v in values if v is not None]
        if len(runs) == 1:
            out[key] = values[0]
        elif len(numbers) < len(values):
            out[key] = {"min": None, "median": None, "max": None, "values": values}
        else:
            out[key] = {"min": min(numbers), "median": statistics.median(numbers), "max": max(numbers)}
    return out


def _cell(value, fmt: str, missing: str = "n/a") -> str:
    if value is None:
        return missing
    if isinstance(value, dict):
        if value["median"] is None:
            return "/".join(_cell(v, fmt, missing) for v in value["values"])
        return "/".join(fmt.format(value[k]) for k in ("min", "median", "max"))
    return fmt.format(value)


def print_table(report: dict) -> None:
    rules = report["rules"]
    seeds = report["seeds"]
    note = "min/median/max over seeds " + ",".join(map(str, seeds)) if len(seeds) > 1 else f"seed {seeds[0]}"
    print(f"market day: {report['rounds']} rounds of {ROUND_MINUTES} min, {note}")
    print(f"{'figure':<30}{'per_class (old)':>26}{'depth (new)':>26}  target")
    for key, label, fmt, target in FIGURES:
        missing = "never" if key.startswith("wait_rounds") else "n/a"
        cells = [_cell(rules[rule][key], fmt, missing) for rule in RULES]
        print(f"{label:<30}{cells[0]:>26}{cells[1]:>26}  {target}")
    for rule in RULES:
        print(f"backlog quartiles ({rule}): {rules[rule]['backlog_quartiles']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1, help="run this many seeds: min/median/max")
    parser.add_argument("--rounds", type=int, default=144, help="rounds in the day (144 x 10 min)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL at DATABASE_URL's server")
    parser.add_argument("--database", default="cpx_bench_market_day", help="database --postgres creates")
    parser.add_argument("--no-quotes", action="store_true", help="skip quoting arrivals (faster)")
    args = parser.parse_args()
    setup_django(args)
    seeds = list(range(args.seed, args.seed + args.seeds))
    runs: dict[str, list] = {rule: [] for rule in RULES}
    try:
        for seed in seeds:
            plan = plan_day(seed=seed, rounds=args.rounds)
            for rule in RULES:
                fresh_database(args)
                runs[rule].append(run_day(plan, rule=rule, rounds=args.rounds, quotes=not args.no_quotes))
                if not args.json:
                    print(f"seed {seed} {rule}: done", file=sys.stderr)
    finally:
        drop_database(args)
    report = {
        "rounds": args.rounds,
        "seeds": seeds,
        "rules": {rule: summarise(runs[rule]) for rule in RULES},
    }
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
