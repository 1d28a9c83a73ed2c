"""Whole rounds on real Celery workers (Redis + PostgreSQL), with 1 and 2 workers side by side.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres CELERY_BROKER_URL=redis://127.0.0.1:6379/0 \
        .venv/bin/python bench/round.py [--quick] [--sizes 10000x1000,100000x10000] [--workers 1,2]

For each size it creates its own database (`cpx_bench_round`, or CPX_BENCH_DB; dropped at the end
unless --keep), migrates it, inserts the book in bulk (jobs are written QUEUED directly, without escrow
holds: the round does not read the ledger), then for each worker count N starts N `celery worker
--pool=solo` processes with CPX_ROUND_SHARDS=N and clears rounds by sending `auctions.clear_round`,
re-queueing between repeats (leases deleted, jobs back to QUEUED). Prints min / median / max of the
wall time from send to result, and the median of each phase the round records (snapshot, clear,
write), N workers against 1 in one table, against the targets (10k x 1k under 1.5 s; 100k x 10k
under 10 s with 2 workers). --quick: 1,000 jobs x 100 resources, 2 repeats.
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = os.environ.get("CPX_BENCH_DB", "cpx_bench_round")
QUEUE = "cpx-bench-round"
ROUND_LIMIT_S = 1500
# Targets of issue 13 (median wall time of a round, seconds).
TARGETS = {(10_000, 1_000): 1.5, (100_000, 10_000): 10.0}
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
                # Online for the whole run: a round of the large book outlasts the heartbeat timeout.
                last_heartbeat_at=now + timedelta(days=1),
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


class Workers:
    """N `celery worker --pool=solo` processes on the bench database, CPX_ROUND_SHARDS=N."""

    def __init__(self, count: int, *, broker: str, database_url: str, log_dir: Path):
        self.processes = []
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker,
            "CELERY_RESULT_BACKEND": broker,
            "CELERY_TASK_DEFAULT_QUEUE": QUEUE,
            "CPX_ROUND_SHARDS": str(count),
            "CPX_ROUND_SHARD_TIMEOUT_S": "600",
            "PYTHONPATH": str(ROOT),
        }
        for i in range(count):
            log = log_dir / f"worker-{count}-{i}.log"
            argv = [str(Path(sys.executable).parent / "celery"), "-A", "config", "worker", "--pool=solo"]
            argv += ["--concurrency=1", f"--hostname=bench{i}@%h", f"--queues={QUEUE}", "--loglevel=WARNING"]
            argv += ["--without-mingle", "--without-gossip"]
            with open(log, "wb") as out:
                self.processes.append(
                    subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
                )

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def producer(broker: str):
    from celery import Celery

    app = Celery("cpx-bench-round", broker=broker, backend=broker)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    return app


def clear_on_workers(app, round_id: int) -> dict:
    result = app.send_task(
        "auctions.clear_round",
        kwargs={"round_id": round_id},
        queue=QUEUE,
        soft_time_limit=ROUND_LIMIT_S,
        time_limit=ROUND_LIMIT_S + 30,
    )
    try:
        return result.get(timeout=ROUND_LIMIT_S + 60)
    finally:
        result.forget()


def run_size(
    *,
    base: str,
    broker: str,
    jobs: int,
    resources: int,
    workers: list[int],
    repeats: int,
    warmup: int,
    log_dir,
):
    """Populate one book, then clear it `repeats` times with each worker count; {workers: phases}."""
    from django.core.management import call_command
    from django.db import connection

    from auctions.models import Round
    from auctions.services.rounds import round_open

    connection.close()
    recreate_database(base)
    call_command("migrate", verbosity=0)
    now = datetime.now(UTC)
    started = time.perf_counter()
    populate(jobs=jobs, resources=resources, now=now, rng=random.Random(4))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(
        f"book: {jobs} queued jobs x {resources} resources "
        f"(inserted in {time.perf_counter() - started:.1f} s)"
    )
    app = producer(broker)
    figures = {}
    for count in workers:
        pool = Workers(count, broker=broker, database_url=os.environ["DATABASE_URL"], log_dir=log_dir)
        try:
            # The first rounds warm each worker (imports, SciPy, connections); they are not counted.
            phases: dict[str, list[float]] = {"total": [], "snapshot": [], "clear": [], "write": []}
            for repeat in range(1 - warmup, repeats + 1):
                round_id = round_open(now=now).pk
                started = time.perf_counter()
                answer = clear_on_workers(app, round_id)
                total = time.perf_counter() - started
                round_obj = Round.objects.get(pk=round_id)
                if round_obj.status != Round.Status.CLEARED:
                    raise RuntimeError(f"round {round_id} did not clear: {answer} {round_obj.error}")
                label = "warm-up" if repeat < 1 else f"repeat {repeat}"
                print(
                    f"  {count} worker(s) {label}: matched {round_obj.jobs_matched} of "
                    f"{round_obj.jobs_in_book}, {len(round_obj.mechanism['books'])} books, {total:.3f} s"
                )
                if repeat >= 1:
                    phases["total"].append(total)
                    for name in ("snapshot", "clear", "write"):
                        phases[name].append(round_obj.timings_ms[name] / 1000)
                requeue(round_id)
            figures[count] = phases
        finally:
            pool.stop()
    app.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 jobs x 100 resources, 2 repeats")
    parser.add_argument("--sizes", default="10000x1000,100000x10000", help="JOBSxRESOURCES,...")
    parser.add_argument("--workers", default="1,2", help="worker counts, side by side")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds first (imports, SciPy)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    sizes = [(1_000, 100)] if args.quick else [tuple(map(int, s.split("x"))) for s in args.sizes.split(",")]
    workers = [int(n) for n in args.workers.split(",")]
    repeats = args.repeats or (2 if args.quick else 3)

    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not base.startswith("postgres") or not broker.startswith("redis"):
        print(
            "bench/round.py needs PostgreSQL and Redis: DATABASE_URL=postgres://… CELERY_BROKER_URL=redis://…"
        )
        return 2
    os.environ["DATABASE_URL"] = database_url(base, BENCH_DB)
    os.environ["CELERY_RESULT_BACKEND"] = broker
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    recreate_database(base)
    import django

    django.setup()
    from django.db import connection

    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="cpx-bench-round-") as log_dir:
            for jobs, resources in sizes:
                figures = run_size(
                    base=base,
                    broker=broker,
                    jobs=jobs,
                    resources=resources,
                    workers=workers,
                    repeats=repeats,
                    warmup=args.warmup,
                    log_dir=Path(log_dir),
                )
                rows += [(jobs, resources, count, phases) for count, phases in figures.items()]
    finally:
        connection.close()
        if not args.keep:
            drop_database(base)

    print(
        f"\n{'book':<16}{'workers':>8}{'min s':>9}{'median s':>10}{'max s':>9}{'vs 1':>7}"
        f"{'snapshot':>10}{'clear':>8}{'write':>8}{'target':>9}"
    )
    for jobs, resources, count, phases in rows:
        total = phases["total"]
        one = next(p for j, r, c, p in rows if (j, r, c) == (jobs, resources, workers[0]))
        ratio = statistics.median(one["total"]) / statistics.median(total)
        target = TARGETS.get((jobs, resources))
        verdict = "" if target is None else ("met" if statistics.median(total) < target else "MISSED")
        print(
            f"{jobs}x{resources:<10}{count:>8}{min(total):>9.3f}{statistics.median(total):>10.3f}"
            f"{max(total):>9.3f}{ratio:>6.2f}x"
            + "".join(
                f"{statistics.median(phases[n]):>{w}.3f}"
                for n, w in (("snapshot", 10), ("clear", 8), ("write", 8))
            )
            + (f"{'< ' + format(target, 'g') + ' s ' + verdict:>16}" if target else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
