#!/usr/bin/env python
"""Job submission through the API: throughput and latency on this machine, beside a bare Django view
and the database floor, in one run (targets: >= 500 submissions/s on 2 cores, p99 < 20 ms
at a constant 250/s; no request lost, no duplicate from a retried idempotency key).

    .venv/bin/python bench/api_submit.py              # ~2.5 minutes: 3 repeats of every phase
    .venv/bin/python bench/api_submit.py --quick      # ~30 s: 1 repeat of 3 s phases
    .venv/bin/python bench/api_submit.py --sweep sync:2,sync:3,gthread:2x4   # compare worker setups

One run:
1. creates a fresh PostgreSQL database (--db-name, dropped again at the end), migrates it and makes
   --consumers consumers, each funded by `ledger_deposit` and given a consumer API key by
   `api_key_create` (the key's prefix is then set to b00000000001…, so pgbench can address it;
   the key stays valid: its digest covers the secret only);
2. starts gunicorn (`config.wsgi`, --workers, DEBUG off, the throttle raised out of the way by
   CPX_API_RATE) with bench/_submit_settings.py, whose URLconf adds `POST /bench/bare-jobs`: a bare
   Django view (bench/_submit_urls.py, no DRF) running the same transaction with the same SQL;
3. per repeat, runs for --duration seconds each, in this order: API saturation, API at a constant
   rate, bare saturation, bare at a constant rate, pgbench of the same SQL statements (the floor);
4. verifies: every 2xx answer names a job that exists with that idempotency key, every job row is
   accounted for by a 2xx answer (or by a request whose answer never came), escrow and balances add
   up, a sample of keys replayed returns the same job (200, Idempotent-Replayed), and keys sent
   concurrently on several connections make one job each;
5. prints min/median/max over the repeats and the ratios; stops gunicorn and pgbench and drops the
   database on every exit, Ctrl-C included.

The load generator is one asyncio process speaking raw HTTP/1.1 over `asyncio.open_connection`
(keep-alive when the server allows it; gunicorn's sync workers close after every answer, so the
generator reconnects then). Requests are prebuilt bytes with only the idempotency key spliced in;
answers are kept as bytes and parsed after the phase, so the generator spends a few tens of
microseconds of CPU per request; the table shows its CPU share next to gunicorn's and PostgreSQL's.

Saturation: --connections connections, each sending its next request as soon as the previous one
is answered, for --duration seconds -> answered 2xx per second, errors, latency.
Constant rate (open loop): request i is due at t0 + i / --rate, whatever happened before; a pool
of connections takes due requests in order and latency is measured from the due time (or from the
actual send if that was earlier), so time spent queueing behind a slow answer counts: no
coordinated omission. The `lag` column is how late the generator itself was at sending (its timer
has ~1 ms resolution); it is included in the latency, not hidden.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

API_PATH = "/api/v1/jobs"
BARE_PATH = "/bench/bare-jobs"
DEPOSIT = Decimal("1000000000")  # per consumer: far more than the run can spend
BUDGET = Decimal("5.00")
DESIGN = {"api_rps": 500.0, "p99_ms_at_250": 20.0}
ANCHORS = {"bare": 750.0, "api": 580.0, "pgbench": 2400.0}
GRACE_S = 10.0  # how long in-flight requests may take after a phase ends before they count as lost
CLK_TCK = os.sysconf("SC_CLK_TCK")

_children: list[subprocess.Popen] = []  # processes this run started; stopped on every exit


# --------------------------------------------------------------------------------------------------
# Database and Django set-up


def pg_admin(args, sql: str) -> None:
    import psycopg

    conn = psycopg.connect(host=args.pg_host, port=args.pg_port, user=args.pg_user, dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def database_url(args) -> str:
    return f"postgres://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.db_name}"


def bench_env(args) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(args),
        DJANGO_SETTINGS_MODULE="bench._submit_settings",
        DJANGO_DEBUG="0",
        CPX_API_RATE=args.api_rate_limit,
        CPX_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    if not args.redis:
        env.pop("REDIS_URL", None)
    return env


def django_setup(args) -> None:
    os.environ.update({k: v for k, v in bench_env(args).items() if k != "PYTHONPATH"})
    if not args.redis:
        os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


@dataclass
class Consumer:
    index: int
    user_id: int
    key: str


def make_consumers(count: int) -> list[Consumer]:
    from django.utils import timezone

    from market.models import ApiKey, User
    from market.services.accounts import api_key_create
    from market.services.ledger import ledger_deposit

    now = timezone.now()
    consumers = []
    for index in range(1, count + 1):
        user = User.objects.create(username=f"bench-consumer-{index}", role=User.Role.CONSUMER)
        ledger_deposit(user=user, amount=DEPOSIT, now=now, memo="bench deposit")
        row, raw = api_key_create(user=user, role=User.Role.CONSUMER, now=now, name="bench")
        prefix = f"b{index:011d}"
        ApiKey.objects.filter(pk=row.pk).update(prefix=prefix)
        consumers.append(Consumer(index, user.pk, f"cpx_{prefix}_{raw.split('_', 2)[2]}"))
    return consumers


def job_body(now) -> bytes:
    deadline = (now + timedelta(days=30)).replace(microsecond=0).isoformat()
    spec = {
        "kind": "INFERENCE",
        "model_name": "llama-3-8b",
        "params_billion": "8",
        "quant_bits": 4,
        "context_length": 4096,
        "batch_size": 1,
        "workload_tokens": 200000,
        "max_price_per_device_hour": "0.80",
        "budget": str(BUDGET),
        "deadline": deadline,
        "region": "eu-west",
    }
    return json.dumps(spec, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------------------
# Processes: gunicorn, pgbench, CPU accounting


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parse_workers(spec: str) -> tuple[str, int, int]:
    """`sync:3` -> ("sync", 3, 1); `gthread:2x4` -> ("gthread", 2, 4)."""
    kind, _, size = spec.partition(":")
    if kind not in ("sync", "gthread"):
        raise SystemExit(f"--workers {spec!r}: the worker class is sync or gthread")
    workers, _, threads = size.partition("x")
    return kind, int(workers or 2), int(threads or (4 if kind == "gthread" else 1))


class Gunicorn:
    def __init__(self, args, spec: str):
        self.spec = spec
        self.kind, self.workers, self.threads = parse_workers(spec)
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="cpx-bench-gunicorn-", suffix=".log", delete=False)
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            f"--bind=127.0.0.1:{self.port}",
            f"--workers={self.workers}",
            f"--worker-class={self.kind}",
            "--backlog=2048",
            "--timeout=120",
            "--log-level=warning",
            f"--keep-alive={args.keep_alive}",
        ]
        if self.kind == "gthread":
            command.append(f"--threads={self.threads}")
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=bench_env(args),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches only us; we stop it ourselves
        )
        _children.append(self.proc)

    def wait_ready(self, timeout: float = 60.0) -> None:
        import http.client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"gunicorn exited:\n{self.log_text()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/api/v1/me")
                conn.getresponse().read()
                conn.close()
                if len(self.worker_pids()) >= self.workers:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"gunicorn did not answer in {timeout:.0f} s:\n{self.log_text()}")

    def worker_pids(self) -> list[int]:
        return [pid for pid, ppid in _processes() if ppid == self.proc.pid]

    def cpu_seconds(self) -> float:
        return sum(_cpu_of(pid) for pid in [self.proc.pid, *self.worker_pids()])

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        _stop(self.proc)
        with contextlib.suppress(OSError):
            self.log.close()
            os.unlink(self.log.name)


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process this run started, with its process group (it was started in its own session)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    if proc in _children:
        _children.remove(proc)


def _processes():
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            yield int(entry.name), int(stat.rpartition(")")[2].split()[1])


def _stat_fields(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def _cpu_of(pid: int, children: bool = False) -> float:
    fields = _stat_fields(pid)  # fields[11..14]: utime stime cutime cstime (after the comm field)
    if not fields:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


POSTGRES_SHARED = ("walwriter", "checkpointer", "background writer", "autovacuum")


def postgres_cpu(db_name: str) -> dict[int, float]:
    """CPU seconds per PostgreSQL process working for this run: the backends connected to the bench
    database, and the shared writers (WAL writer, checkpointer, ...). Other databases' backends, of
    other work on the machine, are left out."""
    found = {}
    for pid, _ in _processes():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
                continue
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f" {db_name} " in title or any(name in title for name in POSTGRES_SHARED):
            found[pid] = _cpu_of(pid)
    return found


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK


class CpuMeter:
    """CPU used during a phase, in cores: gunicorn, PostgreSQL for this run, the generator, pgbench,
    and everything else on the machine ("others"). With `poll`, PostgreSQL's processes are sampled
    every 0.2 s from a thread, so backends that exit before the end (pgbench's) are counted; load
    phases do not poll, as the thread would take the GIL from the generator."""

    def __init__(self, gunicorn: Gunicorn | None, db_name: str, poll: bool = False):
        self.gunicorn, self.db_name, self.poll = gunicorn, db_name, poll
        self.seen: dict[int, float] = {}
        self.stopped = threading.Event()

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.start = self._sample()
        self.pg_start = postgres_cpu(self.db_name)
        if self.poll:
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def _poll(self) -> None:
        while not self.stopped.wait(0.2):
            self.seen.update(postgres_cpu(self.db_name))

    def __exit__(self, *exc):
        if self.poll:
            self.stopped.set()
            self.thread.join()
        wall = time.perf_counter() - self.t0
        end = self._sample()
        self.seen.update(postgres_cpu(self.db_name))
        self.cores = {name: (end[name] - self.start[name]) / wall for name in end}
        self.cores["postgres"] = (
            sum(cpu - self.pg_start.get(pid, 0.0) for pid, cpu in self.seen.items()) / wall
        )
        ours = sum(v for k, v in self.cores.items() if k != "machine")
        self.cores["others"] = max(0.0, self.cores["machine"] - ours)

    def _sample(self) -> dict:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for children: pgbench
        busy, _ = machine_cpu()
        return {
            "gunicorn": self.gunicorn.cpu_seconds() if self.gunicorn else 0.0,
            "generator": own.ru_utime + own.ru_stime,
            "pgbench": kids.ru_utime + kids.ru_stime,
            "machine": busy,
        }


def bump_sequences() -> None:
    """Move the id sequences of users, jobs and ledger accounts far apart (5,000,001…, 7,000,001…,
    8,000,001…) before any row is made, so each id in captured SQL names one thing only."""
    from django.db import connection

    with connection.cursor() as cursor:
        for table, start in (
            ("market_user", 5_000_000),
            ("market_jobrequest", 7_000_000),
            ("market_ledgeraccount", 8_000_000),
        ):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {start})")


def pgbench_script(consumers: list[Consumer], body: bytes, ledger: Ledger) -> str:
    """The statements one real `POST /api/v1/jobs` sends, captured from Django on the bench database,
    made into a pgbench script: the key prefix, consumer, balance account, job and escrow account
    of the captured request become pgbench variables (`\\gset` from the statement that yields
    each), and the idempotency key a fresh random one. Captured, not written by hand, so a new
    column or query on the path shows up in the floor as it does in the API."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from market.models import LedgerAccount

    consumer = consumers[0]
    template_key = "pgbench-template-key"
    with CaptureQueriesContext(connection) as captured:
        response = Client().post(
            API_PATH,
            body,
            content_type="application/json",
            headers={"authorization": f"Bearer {consumer.key}", "idempotency-key": template_key},
        )
    if response.status_code != 201:
        raise SystemExit(f"the template submission failed: {response.status_code} {response.content[:300]!r}")
    ledger.add(API_PATH, [(template_key, 0, response.status_code, response.content)])
    job_id = response.json()["id"]
    balance_id = LedgerAccount.objects.get(kind=LedgerAccount.Kind.CONSUMER, user_id=consumer.user_id).pk
    escrow_id = LedgerAccount.objects.get(kind=LedgerAccount.Kind.ESCROW, job_id=job_id).pk
    prefix = consumer.key.split("_")[1]
    variables = {consumer.user_id: ":a_user_id", balance_id: ":b_id", job_id: ":j_id", escrow_id: ":e_id"}
    lines = [
        "-- The statements of one POST /api/v1/jobs, captured from Django; one submission per run.",
        f"\\set c 1 + :client_id % {len(consumers)}",
        "\\set n random(1, 9000000000000000000)",
    ]
    for query in captured.captured_queries:
        sql = " ".join(query["sql"].split("\n"))
        gset = ""
        if f"'{prefix}'" in sql:
            sql, gset = sql.replace(f"'{prefix}'", "'b' || lpad(:c::text, 11, '0')"), "a_"
        elif sql.startswith('INSERT INTO "market_jobrequest"'):
            gset = "j_"
        elif sql.startswith('INSERT INTO "market_ledgeraccount"') and "'ESCROW'" in sql:
            gset = "e_"
        elif sql.startswith("SELECT") and 'FROM "market_ledgeraccount"' in sql and "'CONSUMER'" in sql:
            gset = "b_"
        sql = sql.replace(f"'{template_key}'", "'pgb-' || :n")
        for value, name in variables.items():
            sql = re.sub(rf"(?<![\d.:]){value}(?![\d.])", name, sql)
        lines.append(f"{sql} \\gset {gset}" if gset else f"{sql};")
    return "\n".join(lines) + "\n"


def find_pgbench() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))
    if not candidates:
        raise SystemExit("pgbench not found (it comes with the PostgreSQL client packages)")
    return str(candidates[-1])


@dataclass
class Result:
    mode: str  # api-sat, api-rate, bare-sat, bare-rate, pgbench
    rps: float
    ok: int
    errors: dict = field(default_factory=dict)
    latencies: list = field(default_factory=list)  # seconds, sorted
    lag_max: float = 0.0
    cpu: dict = field(default_factory=dict)
    extra: str = ""

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        index = min(len(self.latencies) - 1, max(0, round(q / 100 * len(self.latencies)) - 1))
        return self.latencies[index] * 1000


def run_pgbench(args, script_path: str, clients: int, duration: float) -> Result:
    command = [
        find_pgbench(),
        f"--host={args.pg_host}",
        f"--port={args.pg_port}",
        f"--username={args.pg_user}",
        "--no-vacuum",
        f"--client={clients}",
        f"--jobs={min(clients, 2)}",
        f"--time={max(1, round(duration))}",
        "--protocol=simple",  # values inlined in the SQL, as Django's client-side binding sends them
        f"--file={script_path}",
        args.db_name,
    ]
    with CpuMeter(None, args.db_name, poll=True) as meter:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        _children.append(proc)
        out, _ = proc.communicate()
        _children.remove(proc)
    if proc.returncode != 0:
        raise SystemExit(f"pgbench failed ({proc.returncode}):\n{out[-3000:]}")
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    count = int(re.search(r"actually processed: (\d+)", out).group(1))
    failed = re.search(r"failed transactions: (\d+)", out)
    latency = re.search(r"latency average = ([\d.]+) ms", out)
    result = Result("pgbench", tps, count, cpu=meter.cores)
    if failed and int(failed.group(1)):
        result.errors["failed"] = int(failed.group(1))
    if latency:
        result.extra = f"mean {float(latency.group(1)):.2f} ms"
    return result


# --------------------------------------------------------------------------------------------------
# The load generator


class Target:
    """Prebuilt request bytes per consumer; only the idempotency key is spliced in per request."""

    def __init__(self, port: int, path: str, consumers: list[Consumer], body: bytes):
        self.port = port
        self.path = path
        self.heads = [
            (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {c.key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nIdempotency-Key: "
            ).encode()
            for c in consumers
        ]
        self.tail = b"\r\n\r\n" + body

    def payload(self, consumer: int, key: str) -> bytes:
        return self.heads[consumer] + key.encode() + self.tail


class Conn:
    """One HTTP/1.1 connection; reconnects when the server closes it (gunicorn's sync workers do)."""

    __slots__ = ("port", "reader", "writer")

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def request(self, payload: bytes) -> tuple[int, bytes, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lower = head.lower()
        start = lower.find(b"\r\ncontent-length:")
        if start < 0:
            body = await self.reader.read()
            self.close()
        else:
            end = lower.find(b"\r\n", start + 2)
            body = await self.reader.readexactly(int(lower[start + 17 : end]))
            if b"\r\nconnection: close" in lower:
                self.close()
        return int(head[9:12]), head, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


NETWORK_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


class Ledger:
    """Every request sent in the run: key -> (target path, consumer, status, job id or None).
    Status 0 is a request whose answer never came (connection error, or still in flight at the end)."""

    def __init__(self):
        self.sent: dict[str, tuple[str, int, int, int | None]] = {}

    def add(self, path: str, records: list[tuple[str, int, int, bytes]]) -> None:
        for key, consumer, status, body in records:
            job_id = json.loads(body)["id"] if 200 <= status < 300 else None
            self.sent[key] = (path, consumer, status, job_id)


async def saturation(target: Target, connections: int, duration: float, tag: str, consumers: int):
    conns = [Conn(target.port) for _ in range(connections)]
    records: list = []
    latencies: list = []
    inflight: dict[int, tuple[str, int]] = {}
    seq = itertools.count()
    last = [0.0]
    start = time.perf_counter()
    stop = start + duration

    async def worker(i: int) -> None:
        conn, consumer = conns[i], i % consumers
        while time.perf_counter() < stop:
            key = f"{tag}-{next(seq)}"
            inflight[i] = (key, consumer)
            t0 = time.perf_counter()
            try:
                status, _, body = await conn.request(target.payload(consumer, key))
            except NETWORK_ERRORS:
                conn.close()
                status, body = 0, b""
            t1 = time.perf_counter()
            del inflight[i]
            latencies.append(t1 - t0)
            records.append((key, consumer, status, body))
            last[0] = t1

    tasks = [asyncio.create_task(worker(i)) for i in range(connections)]
    _, pending = await asyncio.wait(tasks, timeout=duration + GRACE_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    records.extend((key, consumer, 0, b"") for key, consumer in inflight.values())
    for conn in conns:
        conn.close()
    ok = sum(1 for r in records if 200 <= r[2] < 300)
    result = Result("sat", ok / max(last[0] - start, 1e-9), ok, latencies=sorted(latencies))
    return result, records


async def constant_rate(target: Target, rate: float, duration: float, tag: str, consumers: int, pool: int):
    queue: asyncio.Queue = asyncio.Queue()
    records: list = []
    latencies: list = []
    lags: list = []
    inflight: dict[int, tuple[str, int]] = {}
    total = int(rate * duration)
    t0 = time.perf_counter() + 0.05
    last = [t0 + duration]

    async def scheduler() -> None:
        for i in range(total):
            due = t0 + i / rate
            # Wake up to ~1 ms early (the loop's timer rounds up to whole milliseconds); the worker
            # then measures from the earlier of the due time and the real send.
            delay = due - time.perf_counter() - 0.001
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((i, due))
        for _ in range(pool):
            queue.put_nowait(None)

    async def worker(w: int) -> None:
        conn = Conn(target.port)
        try:
            while (item := await queue.get()) is not None:
                i, due = item
                consumer = i % consumers
                key = f"{tag}-{i}"
                inflight[w] = (key, consumer)
                sent = time.perf_counter()
                try:
                    status, _, body = await conn.request(target.payload(consumer, key))
                except NETWORK_ERRORS:
                    conn.close()
                    status, body = 0, b""
                done = last[0] = time.perf_counter()
                del inflight[w]
                latencies.append(done - min(due, sent))
                lags.append(sent - due)
                records.append((key, consumer, status, body))
        finally:
            conn.close()

    tasks = [asyncio.create_task(worker(w)) for w in range(pool)]
    tasks.append(asyncio.create_task(scheduler()))
    _, pending = await asyncio.wait(tasks, timeout=duration + GRACE_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    records.extend((key, consumer, 0, b"") for key, consumer in inflight.values())
    ok = sum(1 for r in records if 200 <= r[2] < 300)
    # Answered per second over the time it took (longer than the schedule when the server fell behind).
    result = Result("rate", ok / max(last[0] - t0, duration), ok)
    result.latencies = sorted(latencies)
    result.lag_max = max(lags, default=0.0)
    return result, records


def run_load(kind: str, target: Target, args, tag: str, gunicorn: Gunicorn, ledger: Ledger) -> Result:
    with CpuMeter(gunicorn, args.db_name) as meter:
        if kind == "sat":
            coro = saturation(target, args.connections, args.duration, tag, args.consumers)
        else:
            coro = constant_rate(target, args.rate, args.duration, tag, args.consumers, args.rate_pool)
        result, records = asyncio.run(coro)
    result.cpu = meter.cores
    ledger.add(target.path, records)
    for _, _, status, _ in records:
        if not 200 <= status < 300:
            result.errors[status] = result.errors.get(status, 0) + 1
    if result.errors.get(0):
        time.sleep(3)  # unanswered requests may still be queued in the server: let it drain first
    return result


def warm_up(target: Target, args, tag: str, ledger: Ledger, seconds: float = 1.0) -> None:
    _, records = asyncio.run(saturation(target, args.connections, seconds, tag, args.consumers))
    ledger.add(target.path, records)


# --------------------------------------------------------------------------------------------------
# Correctness


async def replay(target: Target, items: list[tuple[str, int, int]]) -> list[str]:
    """Send each (key, consumer, job id) again: the answer must be 200, replayed, the same job."""
    problems = []
    conn = Conn(target.port)
    for key, consumer, job_id in items:
        status, head, body = await conn.request(target.payload(consumer, key))
        got = json.loads(body).get("id") if body else None
        if status != 200 or got != job_id or b"idempotent-replayed: true" not in head.lower():
            problems.append(f"replay {key}: status {status}, job {got}, expected job {job_id}")
    conn.close()
    return problems


async def race(target: Target, keys: list[str], copies: int) -> tuple[list[str], dict[str, int]]:
    """Send each new key `copies` times at once on separate connections: one 201, the rest 200s."""
    problems, made = [], {}
    for key in keys:
        conns = [Conn(target.port) for _ in range(copies)]
        answers = await asyncio.gather(*(c.request(target.payload(0, key)) for c in conns))
        for conn in conns:
            conn.close()
        statuses = sorted(status for status, _, _ in answers)
        ids = {json.loads(body)["id"] for status, _, body in answers if 200 <= status < 300}
        if statuses.count(201) != 1 or statuses.count(200) != copies - 1 or len(ids) != 1:
            problems.append(f"race {key}: statuses {statuses}, jobs {sorted(ids)}")
        if ids:
            made[key] = ids.pop()
    return problems, made


def verify(args, api: Target, ledger: Ledger, consumers: list[Consumer]) -> list[str]:
    from django.db import connection

    problems: list[str] = []
    answered = {k: v for k, v in ledger.sent.items() if 200 <= v[2] < 300}
    sample = random.Random(7).sample(
        [(k, v[1], v[3]) for k, v in answered.items() if v[0] == API_PATH],
        min(args.replays, sum(1 for v in answered.values() if v[0] == API_PATH)),
    )
    problems += asyncio.run(replay(api, sample))
    race_keys = [f"race-{i}" for i in range(args.races)]
    race_problems, race_jobs = asyncio.run(race(api, race_keys, copies=min(8, args.connections)))
    problems += race_problems
    for key, job_id in race_jobs.items():
        ledger.sent[key] = (API_PATH, 0, 201, job_id)
    answered = {k: v for k, v in ledger.sent.items() if 200 <= v[2] < 300}

    user_of = {c.index - 1: c.user_id for c in consumers}
    with connection.cursor() as cur:
        cur.execute(
            "SELECT idempotency_key, id, consumer_id FROM market_jobrequest "
            "WHERE idempotency_key IS NOT NULL AND idempotency_key NOT LIKE 'pgb-%%'"
        )
        rows = {key: (job_id, consumer_id) for key, job_id, consumer_id in cur.fetchall()}
        for key, (_, consumer, _, job_id) in answered.items():
            row = rows.get(key)
            if row is None:
                problems.append(f"lost: {key} was answered with job {job_id} but no such job exists")
            elif row != (job_id, user_of[consumer]):
                problems.append(f"mismatch: {key} answered job {job_id}, the database has {row}")
        unanswered = {k for k, v in ledger.sent.items() if v[2] == 0}
        for key in rows.keys() - answered.keys():
            if key not in unanswered:
                problems.append(f"orphan: job for {key} exists though its request was refused")
        if len(set(v[3] for v in answered.values())) != len(answered):
            problems.append("two answered keys name the same job")
        cur.execute(
            """SELECT count(*) FROM market_jobrequest j
               WHERE j.status <> 'QUEUED'
                  OR NOT EXISTS (SELECT 1 FROM market_ledgeraccount e
                                 WHERE e.job_id = j.id AND e.kind = 'ESCROW' AND e.balance = j.budget)
                  OR (SELECT count(*) FROM market_ledgertransfer t
                      WHERE t.job_id = j.id AND t.kind = 'HOLD' AND t.amount = j.budget) <> 1"""
        )
        if (bad := cur.fetchone()[0]) != 0:
            problems.append(f"{bad} jobs without exactly their budget held in escrow by one HOLD transfer")
        cur.execute(
            """SELECT a.user_id, a.balance, (SELECT count(*) FROM market_jobrequest j
                                              WHERE j.consumer_id = a.user_id)
               FROM market_ledgeraccount a WHERE a.kind = 'CONSUMER'"""
        )
        for user_id, balance, jobs in cur.fetchall():
            if balance != DEPOSIT - jobs * BUDGET:
                problems.append(f"consumer {user_id}: balance {balance} after {jobs} jobs")
        cur.execute("SELECT coalesce(sum(balance), 0) FROM market_ledgeraccount")
        if (total := cur.fetchone()[0]) != 0:
            problems.append(f"the ledger does not sum to zero: {total}")
        cur.execute("SELECT count(*) FROM market_jobrequest")
        jobs_total = cur.fetchone()[0]
    created = sum(1 for v in answered.values() if v[2] == 201)
    print(
        f"\nverification: {len(ledger.sent)} requests sent, {len(answered)} answered 2xx "
        f"({created} created), {len(unanswered)} unanswered; {len(rows)} keyed jobs in the database "
        f"(+{jobs_total - len(rows)} from pgbench); {len(sample)} keys replayed; "
        f"{len(race_keys)} keys raced on {min(8, args.connections)} connections each"
    )
    return problems


# --------------------------------------------------------------------------------------------------
# Profile of the hot path, in process


def profile(args, consumers: list[Consumer], body: bytes, count: int) -> None:
    import cProfile
    import pstats

    from django.test import Client

    client = Client()
    headers = {"authorization": f"Bearer {consumers[0].key}"}

    def submit(i: str, path: str = API_PATH):
        response = client.post(
            path, body, content_type="application/json", headers={**headers, "idempotency-key": f"prof-{i}"}
        )
        assert response.status_code == 201, response.content

    for i in range(100):
        submit(f"warm-{i}")
        submit(f"warm-bare-{i}", BARE_PATH)
    timings = {}
    for name, path in (("api", API_PATH), ("bare", BARE_PATH)):
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(count):
            submit(f"{name}-t-{i}", path)
        timings[name] = ((time.perf_counter() - wall) / count, (time.process_time() - cpu) / count)
    # CPU time, not wall time: what limits a 2-core box is the CPU each request burns, and CPU time
    # is also less disturbed by other work on the machine than wall time is.
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for i in range(count):
        submit(f"p-{i}")
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(tt for _, _, tt, _, _ in stats.stats.values())
    layers: dict[str, float] = {}
    for (filename, _, name), (_, _, tt, _, _) in stats.stats.items():
        layers[_layer(filename, name)] = layers.get(_layer(filename, name), 0.0) + tt
    print(f"\nprofile: {count} submissions in process (Django test client, same database, one consumer)")
    for name, (wall, cpu) in timings.items():
        print(f"  {name:<5} {wall * 1e6:7.0f} us wall, {cpu * 1e6:7.0f} us CPU per submission (unprofiled)")
    print(
        f"  own CPU time by layer (cProfile, CPU clock; {total / count * 1e6:.0f} us per request profiled):"
    )
    for layer, tt in sorted(layers.items(), key=lambda item: -item[1]):
        print(f"    {tt / total:6.1%}  {tt / count * 1e6:7.0f} us  {layer}")
    print("  cumulative CPU time per request of the steps of the hot path:")
    wanted = [
        ("rest_framework/views.py", "dispatch"),
        ("rest_framework/views.py", "initial"),
        ("rest_framework/views.py", "perform_authentication"),
        ("market/api/authentication.py", "authenticate"),
        ("rest_framework/views.py", "check_permissions"),
        ("rest_framework/views.py", "check_throttles"),
        ("market/api/views.py", "post"),
        ("rest_framework/request.py", "data"),
        ("rest_framework/serializers.py", "is_valid"),
        ("market/services/jobs.py", "job_request_submit"),
        ("market/services/jobs.py", "_existing"),
        ("market/services/jobs.py", "job_request_size"),
        ("market/services/jobs.py", "_create_funded"),
        ("rest_framework/serializers.py", "data"),
        ("rest_framework/views.py", "finalize_response"),
        ("rest_framework/response.py", "rendered_content"),
        ("django/db/backends/utils.py", "execute"),
    ]
    for suffix, name in wanted:
        for (filename, _, func), (_, calls, _, ct, _) in stats.stats.items():
            if func == name and filename.endswith(suffix):
                print(f"    {ct / count * 1e6:7.0f} us  {calls / count:5.1f} calls  {suffix}:{name}")
    if args.profile_top:
        stats.sort_stats("tottime").print_stats(args.profile_top)


def _layer(filename: str, name: str) -> str:
    if "psycopg" in name or "psycopg" in filename:
        return "psycopg (client side of the round trips)"
    if "rest_framework" in filename:
        return "DRF"
    if "/django/db/" in filename:
        return "Django ORM"
    if "/django/" in filename:
        return "Django request/response, middleware, URLs, test client"
    if any(f"{ROOT}/{pkg}/" in filename for pkg in ("market", "auctions", "config", "bench")):
        return "CPX code"
    if "copy.py" in filename or "deepcopy" in name:
        return "copy.deepcopy (DRF copies serializer fields per instance)"
    if "json" in filename or "json" in name:
        return "json"
    if filename == "~":
        return "other builtins (C)"
    return "other Python stdlib/libraries"


# --------------------------------------------------------------------------------------------------
# Report


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return "/".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def report(args, results: dict[str, list[Result]], spec: str) -> list[str]:
    failures = []
    n = len(next(iter(results.values())))
    print(f"\n== Job submission, {n} repeat(s) of {args.duration:g} s each; figures min/median/max ==")
    print(
        f"gunicorn {spec} (DEBUG off), {args.connections} connections at saturation, {args.rate:g}/s "
        f"open loop on {args.rate_pool} connections, {args.consumers} consumers, PostgreSQL "
        f"{args.pg_host}:{args.pg_port}; {os.cpu_count()} CPUs"
    )
    header = (
        f"{'mode':<23}{'req/s':>14} {'p50 ms':>20} {'p90 ms':>20} {'p99 ms':>20}{'max ms':>9}"
        f"{'errors':>7}  CPU cores: gunicorn/postgres/generator(pgbench)/others"
    )
    print(header)
    print("-" * len(header))
    names = {
        "api-sat": "API saturation",
        "api-rate": f"API @{args.rate:g}/s",
        "bare-sat": "bare Django saturation",
        "bare-rate": f"bare @{args.rate:g}/s",
        "pgbench": "pgbench floor",
    }
    for mode, label in names.items():
        rows = results.get(mode)
        if not rows:
            continue
        errors = sum(sum(r.errors.values()) for r in rows)
        cpu = {k: statistics.median(r.cpu.get(k, 0.0) for r in rows) for k in rows[0].cpu}
        gen = cpu.get("pgbench", 0.0) if mode == "pgbench" else cpu.get("generator", 0.0)
        cores = (
            f"{cpu.get('gunicorn', 0):.2f}/{cpu.get('postgres', 0):.2f}/{gen:.2f}/{cpu.get('others', 0):.2f}"
        )
        if mode == "pgbench":
            lat = f"{'(' + rows[0].extra + ')':>21}{'':>51}"
        else:
            lat = (
                f" {spread([r.pct(50) for r in rows], '{:.1f}'):>20}"
                f" {spread([r.pct(90) for r in rows], '{:.1f}'):>20}"
                f" {spread([r.pct(99) for r in rows], '{:.1f}'):>20}{max(r.pct(100) for r in rows):>9.1f}"
            )
        print(f"{label:<23}{spread([r.rps for r in rows]):>14}{lat}{errors:>7}  {cores}")
    print(
        "\nCPU per request at saturation (ms: gunicorn + PostgreSQL + generator) and what that projects to"
        f" if all {os.cpu_count()} cores served this load alone (other work on the machine excluded):"
    )
    for mode in ("api-sat", "bare-sat", "pgbench"):
        rows = results.get(mode)
        if not rows:
            continue
        per = [
            {k: r.cpu.get(k, 0.0) / r.rps * 1000 for k in ("gunicorn", "postgres", "generator", "pgbench")}
            for r in rows
            if r.rps
        ]
        ms = statistics.median(sum(p.values()) for p in per)
        parts = "/".join(f"{statistics.median(p[k] for p in per):.2f}" for k in ("gunicorn", "postgres"))
        gen = statistics.median(p["pgbench" if mode == "pgbench" else "generator"] for p in per)
        projected = (os.cpu_count() or 1) / ms * 1000
        print(f"  {names[mode]:<22} {ms:6.2f} ms ({parts} + {gen:.2f})  -> ~{projected:.0f}/s")
    lags = [r.lag_max * 1000 for mode in ("api-rate", "bare-rate") for r in results.get(mode, [])]
    if lags:
        print(
            f"(constant rate: requests were sent up to {max(lags):.1f} ms after they were due - the generator"
            " waits for a free connection when the server falls behind; that wait is in the latency)"
        )

    def ratio(a: str, b: str) -> list[float]:
        return [x.rps / y.rps for x, y in zip(results.get(a, []), results.get(b, []), strict=False) if y.rps]

    print("\nratios (per repeat, min/median/max):")
    print(f"  API / bare Django      {spread(ratio('api-sat', 'bare-sat'), '{:.2f}')}")
    print(f"  API / pgbench floor    {spread(ratio('api-sat', 'pgbench'), '{:.2f}')}")
    print(f"  bare / pgbench floor   {spread(ratio('bare-sat', 'pgbench'), '{:.2f}')}")
    api = statistics.median(r.rps for r in results.get("api-sat", [])) if results.get("api-sat") else 0
    bare = statistics.median(r.rps for r in results.get("bare-sat", [])) if results.get("bare-sat") else 0
    floor = statistics.median(r.rps for r in results.get("pgbench", [])) if results.get("pgbench") else 0
    p99 = statistics.median(r.pct(99) for r in results.get("api-rate", [])) if results.get("api-rate") else 0
    print("\nagainst the targets (medians):")
    verdict = "meets" if api >= DESIGN["api_rps"] else "MISSES"
    print(f"  API {api:.0f}/s vs target {DESIGN['api_rps']:.0f}/s: {api / DESIGN['api_rps']:.2f}x, {verdict}")
    verdict = "meets" if p99 < DESIGN["p99_ms_at_250"] else "MISSES"
    print(
        f"  API p99 at {args.rate:g}/s {p99:.1f} ms vs target < {DESIGN['p99_ms_at_250']:.0f} ms: {verdict}"
    )
    print(
        f"  anchors: bare {bare:.0f}/s vs ~{ANCHORS['bare']:.0f} ({bare / ANCHORS['bare']:.2f}x); "
        f"API {api:.0f}/s vs DRF ~{ANCHORS['api']:.0f} ({api / ANCHORS['api']:.2f}x); "
        f"floor {floor:.0f}/s vs ~{ANCHORS['pgbench']:.0f} ({floor / ANCHORS['pgbench']:.2f}x)"
    )
    for mode, rows in results.items():
        for r in rows:
            if r.errors:
                failures.append(f"{mode}: errors {r.errors}")
    return failures


# --------------------------------------------------------------------------------------------------
# Main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--duration", type=float, default=7.0, help="seconds per phase (default 7)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every phase (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 repeat of 3 s phases, fewer checks")
    parser.add_argument("--workers", default="gthread:2x4", help="gunicorn workers: sync:N or gthread:NxT")
    parser.add_argument("--sweep", help="comma-separated worker setups: saturation only, API and bare")
    parser.add_argument(
        "--connections", type=int, default=8, help="connections at saturation (and pgbench clients)"
    )
    parser.add_argument("--rate", type=float, default=250.0, help="constant rate, requests/s (default 250)")
    parser.add_argument("--rate-pool", type=int, default=32, help="connections for the constant rate")
    parser.add_argument(
        "--consumers", type=int, default=8, help="consumers (keys); connection i is consumer i%%N"
    )
    parser.add_argument("--keep-alive", type=int, default=5, help="gunicorn --keep-alive seconds (gthread)")
    parser.add_argument("--api-rate-limit", default="100000000/min", help="CPX_API_RATE for the server")
    parser.add_argument("--redis", action="store_true", help="keep REDIS_URL (throttle cache in Redis)")
    parser.add_argument("--replays", type=int, default=300, help="answered keys replayed in verification")
    parser.add_argument("--races", type=int, default=20, help="keys sent concurrently in verification")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="then profile N submissions")
    parser.add_argument("--profile-top", type=int, default=0, metavar="K", help="print K top functions")
    parser.add_argument("--skip", default="", help="comma-separated phases to skip: bare,pgbench,rate")
    parser.add_argument("--db-name", default="cpx_bench")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--pg-host", default=os.environ.get("PGHOST", "127.0.0.1"))
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("PGPORT", "5432")))
    parser.add_argument("--pg-user", default=os.environ.get("PGUSER", "postgres"))
    parser.add_argument("--json", help="also write the raw figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.repeats = 3.0, 1
        args.replays, args.races = min(args.replays, 100), min(args.races, 5)
    skip = set(filter(None, args.skip.split(",")))

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    busy0, total0 = machine_cpu()
    time.sleep(1.0)
    busy1, total1 = machine_cpu()
    idle_cores = (os.cpu_count() or 1) - (busy1 - busy0) / max(total1 - total0, 1e-9) * (os.cpu_count() or 1)
    print(
        f"before the run: {idle_cores:.2f} of {os.cpu_count()} CPU cores idle, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if idle_cores < (os.cpu_count() or 1) - 0.3:
        print(
            "WARNING: other work is running on this machine; it takes CPU from the server "
            "and skews the figures"
        )
    started = time.monotonic()
    db_created = False
    gunicorn: Gunicorn | None = None
    script = tempfile.NamedTemporaryFile("w", prefix="cpx-bench-", suffix=".pgbench", delete=False)
    try:
        pg_admin(args, f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
        pg_admin(args, f'CREATE DATABASE "{args.db_name}"')
        db_created = True
        django_setup(args)
        bump_sequences()
        consumers = make_consumers(args.consumers)
        from django.db import connection
        from django.utils import timezone

        now = timezone.now()
        body = job_body(now)
        ledger = Ledger()
        script.write(pgbench_script(consumers, body, ledger))
        script.close()
        connection.close()
        print(f"set-up: database {args.db_name} migrated, {len(consumers)} consumers funded and keyed")

        specs = args.sweep.split(",") if args.sweep else [args.workers]
        results: dict[str, list[Result]] = {}
        sweep_rows = []
        for spec in specs:
            gunicorn = Gunicorn(args, spec)
            gunicorn.wait_ready()
            api = Target(gunicorn.port, API_PATH, consumers, body)
            bare = Target(gunicorn.port, BARE_PATH, consumers, body)
            warm_up(api, args, f"warm-api-{spec}", ledger)
            if "bare" not in skip:
                warm_up(bare, args, f"warm-bare-{spec}", ledger)
            if args.sweep:
                row = [spec, run_load("sat", api, args, f"api-{spec}", gunicorn, ledger)]
                if "bare" not in skip:
                    row.append(run_load("sat", bare, args, f"bare-{spec}", gunicorn, ledger))
                sweep_rows.append(row)
                print(f"  {spec}: " + ", ".join(f"{r.rps:.0f}/s" for r in row[1:]), flush=True)
                if spec != specs[-1]:
                    gunicorn.stop()
                continue
            for rep in range(1, args.repeats + 1):
                phases = [("api-sat", api, "sat"), ("api-rate", api, "rate")]
                if "bare" not in skip:
                    phases += [("bare-sat", bare, "sat"), ("bare-rate", bare, "rate")]
                for mode, target, kind in phases:
                    if kind == "rate" and "rate" in skip:
                        continue
                    result = run_load(kind, target, args, f"{mode}-{rep}", gunicorn, ledger)
                    result.mode = mode
                    results.setdefault(mode, []).append(result)
                    print(
                        f"  repeat {rep} {mode:<9} {result.rps:7.1f}/s  p50 {result.pct(50):6.1f} ms  "
                        f"p99 {result.pct(99):6.1f} ms  errors {sum(result.errors.values())}",
                        flush=True,
                    )
                if "pgbench" not in skip:
                    result = run_pgbench(args, script.name, args.connections, args.duration)
                    results.setdefault("pgbench", []).append(result)
                    print(f"  repeat {rep} pgbench   {result.rps:7.1f}/s  {result.extra}", flush=True)

        failures = []
        if args.sweep:
            print(
                "\n== worker sweep: saturation, API then bare; CPU per request shows the cheapest set-up =="
            )
            for row in sweep_rows:
                cells = "  ".join(
                    f"{r.rps:5.0f}/s p50 {r.pct(50):5.1f} ms p99 {r.pct(99):5.1f} ms, CPU ms/req "
                    f"gunicorn {r.cpu['gunicorn'] / r.rps * 1000:.2f} "
                    f"postgres {r.cpu['postgres'] / r.rps * 1000:.2f} "
                    f"generator {r.cpu['generator'] / r.rps * 1000:.2f}"
                    for r in row[1:]
                )
                print(f"  {row[0]:<12} {cells}")
        else:
            failures += report(args, results, args.workers)
        problems = verify(args, Target(gunicorn.port, API_PATH, consumers, body), ledger, consumers)
        for problem in problems[:20]:
            print(f"  PROBLEM {problem}")
        print("  no request lost, no duplicate job" if not problems else f"  {len(problems)} problems")
        failures += problems
        if args.profile:
            profile(args, consumers, body, args.profile)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        mode: [
                            {
                                "rps": r.rps,
                                "p50_ms": r.pct(50),
                                "p90_ms": r.pct(90),
                                "p99_ms": r.pct(99),
                                "max_ms": r.pct(100),
                                "errors": {str(k): v for k, v in r.errors.items()},
                                "cpu_cores": r.cpu,
                            }
                            for r in rows
                        ]
                        for mode, rows in results.items()
                    },
                    indent=2,
                )
            )
        print(f"\ntotal {time.monotonic() - started:.0f} s")
        return 1 if failures else 0
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        for proc in list(_children):
            _stop(proc)
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        with contextlib.suppress(OSError):
            script.close()
            os.unlink(script.name)
        if db_created and not args.keep_db:
            pg_admin(args, f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
