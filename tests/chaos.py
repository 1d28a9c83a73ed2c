"""The chaos suite: a live market on PostgreSQL and a Redis of its own, hit by faults, checked after each.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/cpx_chaos python -m tests.chaos [--duration 120]

It (re)creates the database named by DATABASE_URL (so give it one of its own), migrates it, seeds
providers and funded consumers, and starts in processes of their own: a redis-server on a free port
(or --redis-port), gunicorn (2 workers x 4 threads, access log), a Celery worker (prefork) and beat,
and one simulated agent per provider (`python -m workers.agent --backend simulate`). A thread
submits jobs over the API (each with an Idempotency-Key, retried on connection errors and 5xx).
Until --duration has passed it injects, in turn:

- worker_kill: SIGKILL the worker while it is inside a round's transaction (caught there by holding
  the lease table's write lock until the worker's INSERT waits on it), then start a new worker;
- redis_restart: SIGKILL Redis while rounds run, start it again 1-2 s later (the worker must ride it
  out; if it died it is counted and restarted);
- agent_kill: SIGKILL an agent whose provider has a RUNNING lease, start it again a few seconds later;
- cancel_race: with the worker inside a round's transaction, POST /jobs/{id}/cancel for queued jobs.

After each fault it checks the invariants of scripts/ledger_invariants.sql. Then it stops the
submissions and the faults and lets the market drain: every job must reach a final state within
--drain-sweeps sweeps. It prints the counts (faults per kind, jobs submitted / ended / lost / doubled,
invariant checks run / failed, 5xx answers in the access log) and exits 1 if any check failed, a job
was lost, doubled or never ended, or the API answered 500.
"""

import argparse
import collections
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "EXPIRED")
# The market's clocks, fast: a round and a sweep every second, failover after 4 s of silence.
MARKET_ENV = {
    "CPX_ROUND_INTERVAL_S": "1",
    "CPX_SWEEP_INTERVAL_S": "1",
    "CPX_PRICING_INTERVAL_S": "10",
    "CPX_HEARTBEAT_TIMEOUT_S": "4",
    "CPX_OFFER_TIMEOUT_S": "6",
    "CPX_BROKER_VISIBILITY_TIMEOUT_S": "20",
    "CPX_SETTLEMENT_ON_CHAIN": "false",
    "CPX_AGENT_LONG_POLL_S": "2",
    "CPX_API_RATE": "100000/min",
    "CPX_LOG_LEVEL": "WARNING",
}


@dataclass
class Counts:
    faults: collections.Counter = field(default_factory=collections.Counter)
    submissions: int = 0
    submission_retries: int = 0
    submission_failures: int = 0
    cancels: collections.Counter = field(default_factory=collections.Counter)
    checks_run: int = 0
    checks_failed: int = 0
    failed_checks: collections.Counter = field(default_factory=collections.Counter)
    worker_deaths_on_redis_restart: int = 0


# --- processes


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Every child in a process group of its own, logging to a file in `logs`; all killed at exit."""

    def __init__(self, logs: Path, env: dict):
        self.logs = logs
        self.env = env
        self.children: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, argv: list[str], **env) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed after the fork
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.children[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alive(self, name: str) -> bool:
        return name in self.children and self.children[name].poll() is None

    def kill(self, name: str) -> None:
        process = self.children.get(name)
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(15)

    def kill_all(self) -> None:
        for name in list(self.children):
            self.kill(name)


def wait_until(condition, timeout_s: float, step_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step_s)
    return None


class Market:
    def __init__(self, args, logs: Path):
        self.args = args
        self.database_url = os.environ["DATABASE_URL"]
        self.redis_port = args.redis_port or free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}"
        self.web_port = free_port()
        self.url = f"http://127.0.0.1:{self.web_port}"
        env = {
            **os.environ,
            **MARKET_ENV,
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "DATABASE_URL": self.database_url,
            "DATABASE_CONN_MAX_AGE": "0",
            "CELERY_BROKER_URL": f"{self.redis_url}/0",
            "CELERY_RESULT_BACKEND": f"{self.redis_url}/0",
            "REDIS_URL": f"{self.redis_url}/1",
            "CELERY_TASK_DEFAULT_QUEUE": "chaos",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        self.procs = Processes(logs, env)
        self.access_log = logs / "access.log"
        self.agent_names: dict[int, str] = {}  # provider id -> process name
        self.agent_keys: dict[int, str] = {}
        self.worker_generation = 0

    # redis
    def start_redis(self) -> None:
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port)]
        self.procs.spawn("redis", [*argv, "--save", "", "--appendonly", "no"])
        import redis

        def answers():
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis(port=self.redis_port, socket_connect_timeout=0.5)
                try:
                    return client.ping()
                finally:
                    client.close()

        if not wait_until(answers, 10):
            raise SystemExit(f"redis-server on {self.redis_port} did not start:\n{self.procs.log('redis')}")

    # web
    def start_web(self) -> None:
        argv = [
            sys.executable, "-m", "gunicorn", "config.wsgi:application", f"--bind=127.0.0.1:{self.web_port}",
            "--workers=2", "--worker-class=gthread", "--threads=4", "--timeout=60",
            f"--access-logfile={self.access_log}", "--access-logformat=%(s)s %(m)s %(U)s",
        ]  # fmt: skip
        self.procs.spawn("gunicorn", argv)

        def answers():
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"{self.url}/api/v1/me", timeout=2).status_code == 401
            return False

        if not wait_until(answers, 60, 0.2):
            raise SystemExit(f"gunicorn did not answer:\n{self.procs.log('gunicorn')[-3000:]}")

    # celery
    def start_worker(self) -> None:
        self.worker_generation += 1
        # Four processes: sweeps blocked behind a fault's lease-table lock must leave a round room to run.
        argv = [str(VENV_BIN / "celery"), "-A", "config", "worker", "--concurrency=4", "--loglevel=INFO"]
        name = "worker"
        self.procs.spawn(name, [*argv, f"--hostname=chaos{self.worker_generation}@%h"])
        if not wait_until(lambda: self.procs.log(name).count(" ready.") >= self.worker_generation, 60, 0.2):
            raise SystemExit(f"the worker did not start:\n{self.procs.log(name)[-3000:]}")

    def start_beat(self) -> None:
        schedule = self.procs.logs / "beat-schedule"
        self.procs.spawn("beat", [str(VENV_BIN / "celery"), "-A", "config", "beat", "-s", str(schedule)])

    # agents
    def start_agent(self, provider_id: int) -> None:
        name = f"agent-{provider_id}"
        argv = [
            sys.executable, "-m", "workers.agent", f"--api={self.url}",
            f"--key={self.agent_keys[provider_id]}", "--backend=simulate", f"--speedup={self.args.speedup}",
            "--poll-wait=1", "--heartbeat=0.5", "--log-level=WARNING",
        ]  # fmt: skip
        self.procs.spawn(name, argv)
        self.agent_names[provider_id] = name

    def statuses(self) -> collections.Counter:
        if not self.access_log.exists():
            return collections.Counter()
        return collections.Counter(line.split(" ", 1)[0] for line in self.access_log.read_text().splitlines())


# --- database


def recreate_database(url: str) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name or name in {"postgres", "template0", "template1"}:
        raise SystemExit(
            "DATABASE_URL must name a database of the chaos suite's own: it is dropped and recreated"
        )
    admin = psycopg.connect(urlunsplit(("postgresql", parts.netloc, "/postgres", "", "")), autocommit=True)
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()


def seed(market: Market, *, providers: int, consumers: int) -> list[str]:
    """Providers with a 2-device resource each (agents' keys), funded consumers; the consumers' keys."""
    from django.utils import timezone

    from market.services.accounts import api_key_create
    from tests.factories import ConsumerFactory, ResourceFactory

    now = timezone.now()
    for _ in range(providers):
        resource = ResourceFactory(
            device_count=2,
            ask_per_device_hour=Decimal("0.30"),
            price_floor=Decimal("0"),
            memory_per_device_gib=24,
        )
        _, key = api_key_create(user=resource.provider.user, role="provider", now=now, name="chaos agent")
        market.agent_keys[resource.provider_id] = key
    keys = []
    for _ in range(consumers):
        user = ConsumerFactory(balance=Decimal("100000"))
        keys.append(api_key_create(user=user, role="consumer", now=now, name="chaos")[1])
    return keys


# --- the stream of submissions


class Submitter(threading.Thread):
    def __init__(
        self, market: Market, keys: list[str], counts: Counts, interval_s: float, rng: random.Random
    ):
        super().__init__(name="submitter", daemon=True)
        self.market, self.keys, self.counts, self.interval_s, self.rng = market, keys, counts, interval_s, rng
        self.stopping = threading.Event()
        self.accepted: dict[str, int] = {}  # idempotency key -> job id

    def body(self) -> dict:
        from django.utils import timezone

        devices = self.rng.choice([1, 2])
        return {
            "kind": "INFERENCE",
            "model_name": "llama-2-7b",
            "params_billion": "7",
            "quant_bits": 4,
            "context_length": 4096,
            "batch_size": 1,
            "workload_tokens": self.rng.randint(200_000, 2_000_000),
            "max_price_per_device_hour": "1.00",
            "budget": "10.00",
            "deadline": (timezone.now() + timedelta(seconds=self.market.args.job_deadline_s)).isoformat(),
            "region": "eu-west",
            "requested_device_count": devices,
        }

    def submit_one(self) -> None:
        key = self.rng.choice(self.keys)
        idempotency = str(uuid.uuid4())
        body = self.body()
        for _attempt in range(20):
            try:
                response = requests.post(
                    f"{self.market.url}/api/v1/jobs",
                    json=body,
                    headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency},
                    timeout=30,
                )
            except requests.RequestException:
                response = None
            if response is not None and response.status_code in (200, 201):
                self.accepted[idempotency] = response.json()["id"]
                self.counts.submissions += 1
                return
            if response is not None and response.status_code < 500 and response.status_code != 429:
                self.counts.submission_failures += 1
                print(f"  submission refused: {response.status_code} {response.text[:200]}", flush=True)
                return
            self.counts.submission_retries += 1
            time.sleep(0.5)
        self.counts.submission_failures += 1

    def run(self) -> None:
        while not self.stopping.is_set():
            self.submit_one()
            self.stopping.wait(self.interval_s)


# --- faults


@contextlib.contextmanager
def lease_writes_held(database_url: str):
    """Hold the lease table's write lock (EXCLUSIVE: reads pass) in a connection of our own."""
    conn = psycopg.connect(database_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute('LOCK TABLE "auctions_lease" IN EXCLUSIVE MODE')
        yield conn
    finally:
        conn.rollback()
        conn.close()


def round_waiting_to_write(lock_conn) -> bool:
    """A worker is inside a round's transaction, waiting: on the INSERT of its leases (the lock held
    here), or on the snapshot's FOR UPDATE of the QUEUED jobs (behind a sweep that the lock stalls)."""
    with lock_conn.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # activity is read once per transaction otherwise
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND (query LIKE 'INSERT INTO \"auctions_lease\"%%'"
            " OR (query LIKE 'SELECT %%FROM \"market_jobrequest\"%%' AND query LIKE '%%''QUEUED''%%'))"
        )
        return cursor.fetchone()[0] > 0


def query(database_url: str, sql: str, params=()) -> list[tuple]:
    conn = psycopg.connect(database_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        conn.close()


class Chaos:
    def __init__(self, market: Market, submitter: Submitter, counts: Counts, consumer_keys, rng):
        self.market, self.submitter, self.counts, self.rng = market, submitter, counts, rng
        self.consumer_keys = consumer_keys

    def round_would_match(self) -> bool:
        """A queued job and free devices: the next round will write leases."""
        [(yes,)] = query(
            self.market.database_url,
            "SELECT EXISTS (SELECT 1 FROM market_jobrequest WHERE status = 'QUEUED')"
            " AND (SELECT sum(device_count) FROM market_resource)"
            " >= 2 + (SELECT coalesce(sum(devices), 0) FROM auctions_lease"
            "         WHERE status IN ('DISPATCHED', 'RUNNING'))",
        )
        return yes

    @contextlib.contextmanager
    def inside_a_round(self):
        """Yield True with the worker inside a round's transaction (its INSERT of leases waiting on the
        lock held here), or False if no round was caught in a few tries. Holding the lock stalls the
        agents' writes too, so each try is short and starts when a round will have something to write."""
        for _ in range(6):
            wait_until(self.round_would_match, 10, 0.1)
            with lease_writes_held(self.market.database_url) as lock:
                if wait_until(lambda: round_waiting_to_write(lock), 4, 0.05):  # noqa: B023 - used at once
                    yield True
                    return
        yield False

    def worker_kill(self) -> None:
        with self.inside_a_round() as mid_round:
            self.market.procs.kill("worker")
        self.counts.faults["worker_kill_mid_round" if mid_round else "worker_kill_not_mid_round"] += 1
        self.market.start_worker()

    def redis_restart(self) -> None:
        self.market.procs.kill("redis")
        time.sleep(self.rng.uniform(1.0, 2.0))
        self.market.start_redis()
        self.counts.faults["redis_restart"] += 1
        time.sleep(8)  # the worker reconnects (kombu backs off) and must still be there
        if not self.market.procs.alive("worker"):
            self.counts.worker_deaths_on_redis_restart += 1
            print(
                "  the worker died on the Redis restart:\n" + self.market.procs.log("worker")[-2500:],
                flush=True,
            )
            self.market.start_worker()

    def agent_kill(self) -> None:
        running = query(
            self.market.database_url,
            "SELECT DISTINCT provider_id FROM auctions_lease WHERE status = 'RUNNING'",
        )
        candidates = [pid for (pid,) in running if pid in self.market.agent_names]
        if not candidates:
            self.counts.faults["agent_kill_missed"] += 1
            return
        provider_id = self.rng.choice(candidates)
        name = self.market.agent_names[provider_id]
        self.market.procs.kill(name)
        self.counts.faults["agent_kill_mid_lease"] += 1
        time.sleep(self.rng.uniform(2.0, 6.0))
        self.market.start_agent(provider_id)

    def cancel_race(self) -> None:
        threads = []
        with self.inside_a_round() as mid_round:
            if mid_round:
                queued = query(
                    self.market.database_url,
                    "SELECT id FROM market_jobrequest WHERE status IN ('QUEUED', 'MATCHED')"
                    " ORDER BY id DESC LIMIT 6",
                )
                threads = [threading.Thread(target=self._cancel, args=(job_id,)) for (job_id,) in queued]
                for thread in threads:
                    thread.start()
                time.sleep(0.3)  # the cancels reach the database while the round's transaction is open
        for thread in threads:
            thread.join(30)
        self.counts.faults["cancel_race" if mid_round else "cancel_race_missed"] += 1

    def _cancel(self, job_id: int) -> None:
        # The job's owner is one of the consumers; the others answer 404 (tenancy), which is fine.
        for key in self.consumer_keys:
            with contextlib.suppress(requests.RequestException):
                response = requests.post(
                    f"{self.market.url}/api/v1/jobs/{job_id}/cancel",
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=30,
                )
                if response.status_code != 404:
                    self.counts.cancels[response.status_code] += 1
                    return


def check_invariants(counts: Counts, when: str) -> None:
    from django.db import connection

    from workers.management.commands.cpx_check_ledger import invariants_run

    outcomes = invariants_run()
    connection.close()
    counts.checks_run += len(outcomes)
    for outcome in outcomes:
        if outcome.violations:
            counts.checks_failed += 1
            counts.failed_checks[outcome.name] += 1
            print(
                f"  after {when}: FAIL {outcome.name}: {outcome.violations} rows, e.g. {outcome.sample[:2]}",
                flush=True,
            )


# --- the run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=150, help="seconds of faults (default 150)")
    parser.add_argument(
        "--redis-port", type=int, default=0, help="the chaos Redis' port (default: a free one)"
    )
    parser.add_argument("--providers", type=int, default=6)
    parser.add_argument("--consumers", type=int, default=3)
    parser.add_argument("--submit-interval", type=float, default=0.5, help="seconds between submissions")
    parser.add_argument("--speedup", type=float, default=600, help="the agents' simulation speed-up")
    parser.add_argument(
        "--job-deadline-s", type=float, default=86400, help="each job's deadline (real hours are checked)"
    )
    parser.add_argument(
        "--drain-sweeps", type=int, default=90, help="sweeps every job gets to end in, at most"
    )
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--logs", default="", help="directory for the processes' logs (default: a temp dir)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    logs = Path(args.logs or tempfile.mkdtemp(prefix="cpx-chaos-"))
    logs.mkdir(parents=True, exist_ok=True)

    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        parser.error(
            "DATABASE_URL=postgres://…/<a database of its own> is required (it is dropped and recreated)"
        )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ.update({k: v for k, v in MARKET_ENV.items() if k not in os.environ})
    recreate_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    market = Market(args, logs)
    counts = Counts()
    started = time.monotonic()
    try:
        consumer_keys = seed(market, providers=args.providers, consumers=args.consumers)
        market.start_redis()
        market.start_web()
        market.start_worker()
        market.start_beat()
        for provider_id in market.agent_keys:
            market.start_agent(provider_id)
        submitter = Submitter(market, consumer_keys, counts, args.submit_interval, rng)
        submitter.start()
        chaos = Chaos(market, submitter, counts, consumer_keys, rng)
        faults = [chaos.worker_kill, chaos.redis_restart, chaos.agent_kill, chaos.cancel_race]
        print(f"chaos: market at {market.url}, Redis on {market.redis_port}, logs in {logs}", flush=True)
        time.sleep(5)
        turn = 0
        while time.monotonic() - started < args.duration:
            fault = faults[turn % len(faults)]
            turn += 1
            fault()
            time.sleep(2)
            check_invariants(counts, fault.__name__)
        submitter.stopping.set()
        submitter.join(60)

        # Drain: every job must end within the bound (their deadlines included).
        sweep_s = float(MARKET_ENV["CPX_SWEEP_INTERVAL_S"])
        drain_started = time.monotonic()

        def open_jobs() -> int:
            return query(
                market.database_url,
                "SELECT count(*) FROM market_jobrequest WHERE status <> ALL(%s)",
                (list(FINAL),),
            )[0][0]

        wait_until(lambda: open_jobs() == 0, args.drain_sweeps * sweep_s, 1.0)
        drain_sweeps = (time.monotonic() - drain_started) / sweep_s
        check_invariants(counts, "the drain")
        never_ended = open_jobs()
        accepted = submitter.accepted
        rows = query(
            market.database_url,
            "SELECT idempotency_key, count(*) FROM market_jobrequest WHERE idempotency_key = ANY(%s)"
            " GROUP BY idempotency_key",
            (list(accepted),),
        )
        found = dict(rows)
        lost = sum(1 for key in accepted if key not in found)
        doubled = sum(1 for n in found.values() if n > 1)
        ended = dict(
            query(market.database_url, "SELECT status, count(*) FROM market_jobrequest GROUP BY status")
        )
        statuses = market.statuses()
    finally:
        market.procs.kill_all()
    five_hundreds = sum(n for status, n in statuses.items() if status.startswith("5"))

    print("\n== chaos suite")
    print(f"  run: {time.monotonic() - started:.0f} s ({args.duration:.0f} s of faults), logs in {logs}")
    print("  faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.faults.items())))
    print(f"  worker deaths on a Redis restart: {counts.worker_deaths_on_redis_restart}")
    print(
        f"  jobs: submitted {counts.submissions} (retried {counts.submission_retries}, refused "
        f"{counts.submission_failures}), ended {sum(n for s, n in ended.items() if s in FINAL)} "
        f"({', '.join(f'{s} {n}' for s, n in sorted(ended.items()))}), lost {lost}, doubled {doubled}, "
        f"never ended {never_ended} (drain: {drain_sweeps:.0f} sweeps, bound {args.drain_sweeps})"
    )
    print(
        "  cancels in a clearing round: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.cancels.items()))
    )
    print(
        f"  invariant checks: run {counts.checks_run}, failed {counts.checks_failed}"
        + (f" ({dict(counts.failed_checks)})" if counts.failed_checks else "")
    )
    print(f"  HTTP answers: {dict(sorted(statuses.items()))}; 5xx: {five_hundreds}")
    failed = (
        counts.checks_failed
        or lost
        or doubled
        or never_ended
        or five_hundreds
        or counts.submission_failures
        or counts.worker_deaths_on_redis_restart
    )
    print("  result: " + ("FAILED" if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
