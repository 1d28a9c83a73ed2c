"""A whole round on PostgreSQL: 10,000 queued jobs and 1,000 resources, timed per phase.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/round.py [--quick]

Creates its own database (`cpx_bench_round`, dropped at the end unless --keep), migrates it, inserts
the book in bulk (jobs are written QUEUED directly, without escrow holds: the round does not read
the ledger), then runs `round_clear` a few times, re-queueing between repeats (leases deleted, jobs
back to QUEUED). Prints min / median / max of each phase the round records (snapshot, clear, write)
and of the wall time of the whole call, against the 5 s target (DESIGN.md). --quick: 1,000 jobs,
100 resources, 2 repeats.
"""

import argparse
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = os.environ.get("CPX_BENCH_DB", "cpx_bench_round")
TARGET_S = 5.0
REGIONS = ["eu-west", "eu-central", "us-east", "us-west", "ap-south", "ap-east"]
# (model, memory GiB, fp16 TFLOPS, speed factor, ask range per device-hour)
DEVICES = [
    ("RTX 3060", 12, 12.7, 0.5, (0.05, 0.15)),
    ("RTX 3080", 10, 29.8, 0.8, (0.10, 0.25)),
    ("RTX 4090", 24, 82.6, 1.6, (0.30, 0.60)),
    ("NVIDIA L4", 24, 30.3, 1.0, (0.25, 0.50)),
    ("NVIDIA T4", 16, 65.0, 0.6, (0.15, 0.30)),
    ("RTX A6000", 48, 38.7, 1.0, (0.45, 0.80)),
    ("A100-80G", 80, 312.0, 3.0, (1.20, 2.00)),
]
MODELS = [
    ("llama-3.1-8b", 8, 4, 9.0),
    ("mistral-7b", 7.2, 8, 10.5),
    ("qwen2.5-14b", 14.7, 4, 11.5),
    ("phi-3-mini", 3.8, 16, 9.5),
    ("gemma-2-9b", 9.2, 16, 23.0),
    ("llama-3.1-70b", 70, 4, 44.0),
]


def database_url(base: str, name: str) -> str:
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def admin_connection(base: str):
    import psycopg

    return psycopg.connect(database_url(base, "postgres"), autocommit=True)


def _admin(base: str, *statements: str) -> None:
    # Not `with connection:` — it would close the connection on exit; autocommit, since DROP
    # DATABASE refuses to run inside a transaction.
    connection = admin_connection(base)
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()


def recreate_database(base: str) -> None:
    _admin(base, f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)", f"CREATE DATABASE {BENCH_DB}")


def drop_database(base: str) -> None:
    _admin(base, f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


def populate(*, jobs: int, resources: int, now: datetime, rng: random.Random) -> None:
    """Users, providers, resources and queued jobs, each kind in one bulk insert."""
    from market.models import JobRequest, Provider, Resource, Role, User

    n_providers = max(1, resources // 2)
    users = User.objects.bulk_create(
        [User(username=f"p{i}", role=Role.PROVIDER) for i in range(n_providers)]
        + [User(username=f"c{i}", role=Role.CONSUMER) for i in range(100)]
    )
    provider_users, consumers = users[:n_providers], users[n_providers:]
    providers = Provider.objects.bulk_create(
        [
            Provider(
                user=user,
                display_name=f"provider {i}",
                wallet_address="0x" + f"{i:040x}",
                region=REGIONS[i % len(REGIONS)],
                last_heartbeat_at=now,
            )
            for i, user in enumerate(provider_users)
        ]
    )
    rows = []
    for i in range(resources):
        model, memory, tflops, speed, (low, high) = DEVICES[rng.randrange(len(DEVICES))]
        ask = Decimal(str(round(rng.uniform(low, high), 4)))
        rows.append(
            Resource(
                provider=providers[i % n_providers],
                device_class="GPU",
                model_name=model,
                device_count=rng.choice([1, 1, 2, 4, 8]),
                memory_per_device_gib=Decimal(memory),
                host_ram_gib=Decimal(64),
                vcpu=16,
                fp16_tflops=Decimal(str(tflops)),
                speed_factor=Decimal(str(speed)),
                ask_per_device_hour=ask,
                price_floor=Decimal(0),
            )
        )
    Resource.objects.bulk_create(rows, batch_size=2000)
    rows = []
    for i in range(jobs):
        name, params, bits, memory = MODELS[rng.randrange(len(MODELS))]
        devices = 1 if rng.random() < 0.95 else rng.choice([2, 4])
        rows.append(
            JobRequest(
                consumer=consumers[i % len(consumers)],
                kind="INFERENCE",
                model_name=name,
                params_billion=Decimal(str(params)),
                quant_bits=bits,
                context_length=4096,
                workload_tokens=rng.randrange(100_000, 5_000_000),
                device_class="GPU",
                max_price_per_device_hour=Decimal(str(round(rng.uniform(0.05, 2.5), 4))),
                budget=Decimal("50"),
                deadline=now + timedelta(days=1),
                latency_sla_ms=rng.choice([None] * 9 + [60]),
                region=REGIONS[rng.randrange(len(REGIONS))],
                memory_per_device_gib=Decimal(str(memory / devices if devices > 1 else memory)),
                device_count=devices,
                status=JobRequest.Status.QUEUED,
                created_at=now - timedelta(seconds=jobs - i),
                updated_at=now,
            )
        )
    JobRequest.objects.bulk_create(rows, batch_size=2000)


def requeue(round_id: int) -> None:
    from auctions.models import Lease
    from market.models import JobRequest

    Lease.objects.filter(round_id=round_id).delete()
    JobRequest.objects.filter(status=JobRequest.Status.MATCHED).update(status=JobRequest.Status.QUEUED)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, 100 resources, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--resources", type=int, default=None)
    args = parser.parse_args()
    jobs, resources = (1_000, 100) if args.quick else (10_000, 1_000)
    jobs, resources = args.jobs or jobs, args.resources or resources
    repeats = args.repeats or (2 if args.quick else 5)

    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    if not base.startswith("postgres"):
        print("bench/round.py needs PostgreSQL: DATABASE_URL=postgres://…", file=sys.stderr)
        return 2
    recreate_database(base)
    os.environ["DATABASE_URL"] = database_url(base, BENCH_DB)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    try:
        call_command("migrate", verbosity=0)
        from auctions.services.rounds import round_clear, round_open

        now = datetime.now(UTC)
        rng = random.Random(4)
        started = time.perf_counter()
        populate(jobs=jobs, resources=resources, now=now, rng=rng)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        inserted = time.perf_counter() - started
        print(f"book: {jobs} queued jobs, {resources} resources (inserted in {inserted:.1f} s)")

        phases: dict[str, list[float]] = {"snapshot": [], "clear": [], "write": [], "total": []}
        for repeat in range(repeats):
            round_obj = round_open(now=now)
            started = time.perf_counter()
            round_obj = round_clear(round_id=round_obj.pk, now=now)
            total = time.perf_counter() - started
            for name in ("snapshot", "clear", "write"):
                phases[name].append(round_obj.timings_ms[name] / 1000)
            phases["total"].append(total)
            print(
                f"  repeat {repeat + 1}: {round_obj.status}, matched {round_obj.jobs_matched} of "
                f"{round_obj.jobs_in_book}, books {len(round_obj.mechanism['books'])}, total {total:.3f} s"
            )
            requeue(round_obj.pk)

        print(f"{'phase':<10}{'min s':>10}{'median s':>10}{'max s':>10}")
        for name, values in phases.items():
            print(f"{name:<10}{min(values):>10.3f}{statistics.median(values):>10.3f}{max(values):>10.3f}")
        median_total = statistics.median(phases["total"])
        verdict = "within" if median_total < TARGET_S else "OVER"
        print(
            f"median total {median_total:.3f} s: {verdict} the {TARGET_S:.0f} s target "
            f"({median_total / TARGET_S:.2f}x of it)"
        )
    finally:
        connection.close()
        if not args.keep:
            drop_database(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
