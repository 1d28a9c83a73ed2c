#!/usr/bin/env python
"""A fleet of provider agents on loopback against the production-style server, in one run: the async
offer channel (`GET /agent/offers`, gunicorn + uvicorn workers on config.asgi) and, for the ratio,
the previous sync long-poll (`GET /agent/leases?wait=S`, gunicorn gthread on config.wsgi).

    .venv/bin/python bench/agents.py --agents 1000 --json
    .venv/bin/python bench/agents.py --agents 5000 --json --rounds 5 --offers 200

One run:
1. recreates the PostgreSQL database --db-name (default cpx_bench_agents: give it one of your own),
   migrates it, and makes --agents providers, each a provider user with a real API key (the digest
   the server checks), a provider profile and one listed GPU; and one funded consumer (the probe's key);
2. per phase (async, then sync), starts the server under config/gunicorn.py (2 workers) with REDIS_URL
   (--redis-url), starts the agents — asyncio clients in this process, one connection each, each
   waiting for offers and accepting and completing every lease it gets (POST accept, POST complete)
   — waits until they are connected, then clears --rounds rounds in a process of its own (as the
   Celery worker would): --offers queued jobs each, the round's commit publishes the offers (Redis
   pub/sub);
3. meanwhile a probe, in a process of its own too (a consumer is not inside the fleet's event loop),
   calls ordinary API endpoints (GET /me, GET /jobs?limit=5) every 20 ms.

Figures per phase: `connected` (agents whose wait was open at the round's commit, lowest over the
rounds), `offer_latency_p50_ms` / `_p99_ms` (the round's commit — the moment the offers are
published — to the agent holding the answer, over every lease offered; a lease never received counts
as an error), `api_p99_ms` (the probe), `errors` (non-2xx but the sync path's 429 refusals, which are
counted apart as `refused_429`, timeouts, connection errors, unreceived offers) and how long each
round's offers took to be completed. The sync agents honour Retry-After as workers/agent does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HEADLINE = ("connected", "offer_latency_p50_ms", "offer_latency_p99_ms", "api_p99_ms", "errors")
TARGETS = {"connected": 5000, "offer_latency_p99_ms": 1000.0, "api_p99_ms": 100.0, "errors": 0}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--offers", type=int, default=100, help="jobs queued (leases offered) per round")
    parser.add_argument("--wait", type=float, default=25.0, help="the agents' wait per request (s)")
    parser.add_argument("--phases", default="async,sync")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--db-name", default="cpx_bench_agents")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/1")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    if args.agents < 1 or args.offers < 1 or args.rounds < 1 or args.offers > args.agents:
        parser.error("need 1 <= --offers <= --agents and --rounds >= 1")
    return args


def raise_open_files(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def environment(args) -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"{args.pg}/{args.db_name}",
        "REDIS_URL": args.redis_url,
        "CELERY_BROKER_URL": args.redis_url,
        "DJANGO_DEBUG": "0",
        "CPX_LOG_LEVEL": "WARNING",
        "CPX_API_RATE": "1000000/min",
        "DATABASE_POOL_MAX_SIZE": "16",  # as scripts/production.sh sets it
        "PYTHONPATH": str(ROOT),
    }


def setup_database(args) -> None:
    import psycopg

    with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.db_name}"')
    os.environ.update({k: v for k, v in environment(args).items() if k != "PYTHONPATH"})
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def make_fleet(count: int) -> tuple[list[str], str, object]:
    """`count` providers with a key, a profile and one listed GPU each (bulk: the rows the services
    would write); the consumer's user and key. Returns (provider keys, consumer key, consumer)."""
    from django.utils import timezone

    from market.models import ApiKey, Provider, Resource, User
    from market.services.accounts import api_key_create, api_key_digest
    from market.services.ledger import ledger_deposit

    now = timezone.now()
    tag = secrets.token_hex(3)
    users = User.objects.bulk_create(
        [User(username=f"bench-agent-{tag}-{i}", role=User.Role.PROVIDER) for i in range(count)],
        batch_size=2000,
    )
    secrets_ = [secrets.token_urlsafe(32) for _ in users]
    prefixes = [f"a{tag}{i:07d}" for i in range(count)]
    ApiKey.objects.bulk_create(
        [
            ApiKey(
                user=u,
                role=User.Role.PROVIDER,
                name="bench",
                prefix=p,
                digest=api_key_digest(s),
                created_at=now,
            )
            for u, p, s in zip(users, prefixes, secrets_, strict=True)
        ],
        batch_size=2000,
    )
    providers = Provider.objects.bulk_create(
        [
            Provider(
                user=u,
                display_name=f"bench edge {i}",
                wallet_address="0x" + secrets.token_hex(20),
                region="eu-west",
                last_heartbeat_at=now,
            )
            for i, u in enumerate(users)
        ],
        batch_size=2000,
    )
    Resource.objects.bulk_create(
        [
            Resource(
                provider=p,
                device_class="GPU",
                model_name="RTX 4090",
                device_count=1,
                memory_per_device_gib=Decimal("24.00"),
                host_ram_gib=Decimal("64.00"),
                vcpu=16,
                fp16_tflops=Decimal("82.60"),
                ask_per_device_hour=Decimal("0.400000"),
                price_floor=Decimal("0.100000"),
            )
            for p in providers
        ],
        batch_size=2000,
    )
    consumer = User.objects.create(username=f"bench-consumer-{tag}", role=User.Role.CONSUMER)
    ledger_deposit(user=consumer, amount=Decimal("100000000"), now=now, memo="bench deposit")
    _, consumer_key = api_key_create(user=consumer, role=User.Role.CONSUMER, now=now, name="bench probe")
    keys = [f"cpx_{p}_{s}" for p, s in zip(prefixes, secrets_, strict=True)]
    return keys, consumer_key, consumer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """gunicorn -c config/gunicorn.py, as scripts/production.sh starts it (async: config.asgi on
    uvicorn workers; sync: config.wsgi on gthread, the deployment of before)."""

    def __init__(self, args, phase: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = environment(args) | {
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_WORKERS": str(args.workers),
            "GUNICORN_THREADS": str(args.threads),
        }
        app = "config.asgi"
        if phase == "sync":
            env["GUNICORN_WORKER_CLASS"] = "gthread"
            app = "config.wsgi"
        self.log = open(f"/tmp/cpx-bench-agents-{phase}-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "config/gunicorn.py", app],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 60) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited; log {self.log.name}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.url}/healthz", timeout=2)
                return
            time.sleep(0.2)
        raise SystemExit(f"server not ready; log {self.log.name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log.close()


class Fleet:
    def __init__(self, phase: str, url: str, keys: list[str], wait: float):
        self.phase = phase
        self.url = url
        self.keys = keys
        self.wait = wait
        self.path = "/api/v1/agent/offers" if phase == "async" else "/api/v1/agent/leases"
        self.waiting = 0  # waits open now
        self.received: dict[int, float] = {}  # lease id -> time.time() its offer arrived
        self.completed: dict[int, float] = {}
        self.errors: list[str] = []
        self.refused = 0
        self.stopping = False

    def error(self, what: str) -> None:
        if len(self.errors) < 10_000:
            self.errors.append(what)

    async def agent(self, session, key: str) -> None:
        import aiohttp

        headers = {"Authorization": f"Bearer {key}"}
        timeout = aiohttp.ClientTimeout(total=self.wait + 60)
        while not self.stopping:
            self.waiting += 1
            try:
                async with session.get(
                    self.url + self.path, params={"wait": str(self.wait)}, headers=headers, timeout=timeout
                ) as response:
                    body = await response.read()
                    arrived = time.time()
                    status = response.status
                    retry_after = response.headers.get("Retry-After", "1")
            except (aiohttp.ClientError, TimeoutError) as error:
                if not self.stopping:
                    self.error(f"wait: {type(error).__name__}: {error}")
                    await asyncio.sleep(1)
                continue
            finally:
                self.waiting -= 1
            if status == 429:
                self.refused += 1
                await asyncio.sleep(float(retry_after) if retry_after.isdigit() else 1.0)
                continue
            if status != 200:
                self.error(f"wait: HTTP {status} {body[:200]!r}")
                await asyncio.sleep(1)
                continue
            for lease in json.loads(body):
                if lease["id"] in self.received:
                    continue  # offered again before our accept landed: once is enough
                self.received[lease["id"]] = arrived
                await self.run_lease(session, headers, lease["id"])

    async def run_lease(self, session, headers: dict, lease_id: int) -> None:
        import aiohttp

        base = f"{self.url}/api/v1/agent/leases/{lease_id}"
        usage = {"tokens_in": 10, "tokens_out": 10, "device_seconds": "0"}
        for step, body in (("accept", {"simulated": True}), ("complete", usage)):
            try:
                async with session.post(f"{base}/{step}", json=body, headers=headers) as response:
                    if response.status != 200:
                        self.error(f"{step}: HTTP {response.status} {(await response.read())[:200]!r}")
                        return
            except (aiohttp.ClientError, TimeoutError) as error:
                self.error(f"{step}: {type(error).__name__}: {error}")
                return
        self.completed[lease_id] = time.time()


async def probe(url: str, key: str, latencies: list[float], errors: list[str], stop: asyncio.Event) -> None:
    """Ordinary API calls every 20 ms on a connection of its own, beside the fleet."""
    import aiohttp

    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as session:
        paths = ["/api/v1/me", "/api/v1/jobs?limit=5"]
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            try:
                async with session.get(url + paths[i % 2], headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors.append(f"probe: HTTP {response.status}")
            except (aiohttp.ClientError, TimeoutError) as error:
                errors.append(f"probe: {type(error).__name__}")
            latencies.append((time.perf_counter() - started) * 1000)
            i += 1
            await asyncio.sleep(max(0.0, 0.02 - (time.perf_counter() - started)))


def queue_jobs(consumer, count: int) -> None:
    from django.utils import timezone

    from market.models import JobRequest
    from market.services.jobs import job_request_submit

    now = timezone.now()
    for _ in range(count):
        spec = {
            "kind": JobRequest.Kind.INFERENCE,
            "model_name": "llama-2-7b",
            "params_billion": Decimal("7.000"),
            "quant_bits": 16,
            "context_length": 4096,
            "batch_size": 1,
            "workload_tokens": 100_000,
            "device_class": "GPU",
            "max_price_per_device_hour": Decimal("1.000000"),
            "budget": Decimal("10.000000"),
            "deadline": now + timedelta(days=1),
            "region": "eu-west",
        }
        job_request_submit(consumer=consumer, spec=spec, now=now)


def clear_round() -> tuple[int, list[int], float | None]:
    """Open and clear one round, as the Celery worker does; (round id, lease ids, publish time)."""
    from django.db import close_old_connections
    from django.utils import timezone

    from auctions.models import Lease
    from auctions.services import offers
    from auctions.services.rounds import round_clear, round_open
    from market.models import Provider

    published = []
    publish = offers.offers_publish

    def timed_publish(**kwargs):  # the commit time: when the round's on_commit publishes its offers
        published.append(time.time())
        publish(**kwargs)

    offers.offers_publish = timed_publish
    try:
        now = timezone.now()
        # The agents' heartbeat loop (POST /agent/heartbeat, not simulated here) keeps them online.
        Provider.objects.update(last_heartbeat_at=now)
        round_obj = round_clear(round_id=round_open(now=now).pk, now=now)
        lease_ids = list(Lease.objects.filter(round=round_obj).values_list("id", flat=True))
    finally:
        offers.offers_publish = publish
        close_old_connections()
    return round_obj.pk, lease_ids, published[0] if published else None


def round_worker(connection, environ: dict) -> None:
    """A process of its own playing the Celery worker (queue jobs, clear a round) on request, so its
    CPU and GIL are not the fleet's or the probe's, as in production."""
    os.environ.update(environ)
    import django

    django.setup()
    from market.models import User

    while (request := connection.recv()) is not None:
        command, argument = request
        if command == "queue":
            queue_jobs(User.objects.get(pk=argument["consumer"]), argument["count"])
            connection.send(None)
        else:
            connection.send(clear_round())


def probe_process(url: str, key: str, stop, answers) -> None:
    """The probe in a process of its own (a consumer or an operator is not inside the fleet): its
    latencies are the server's, not the fleet's event loop's."""
    latencies: list[float] = []
    errors: list[str] = []

    async def run():
        stopped = asyncio.Event()
        task = asyncio.create_task(probe(url, key, latencies, errors, stopped))
        while not stop.is_set():
            await asyncio.sleep(0.05)
        stopped.set()
        await task

    asyncio.run(run())
    answers.send((latencies, errors))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 1)


async def run_phase(args, phase: str, keys: list[str], consumer_key: str, consumer) -> dict:
    import aiohttp

    context = multiprocessing.get_context("spawn")
    worker, worker_end = context.Pipe()
    worker_process = context.Process(target=round_worker, args=(worker_end, environment(args)), daemon=True)
    worker_process.start()

    def on_worker(command: str, argument=None):
        worker.send((command, argument))
        return worker.recv()

    server = Server(args, phase)
    await asyncio.to_thread(server.wait_ready)
    fleet = Fleet(phase, server.url, keys, args.wait)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False)
    rounds = []
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            agents = [asyncio.create_task(fleet.agent(session, key)) for key in keys]
            started = time.monotonic()
            # Connected: every agent's wait open (the sync phase never gets there: its caps refuse).
            while fleet.waiting < len(keys) and time.monotonic() - started < 60:
                await asyncio.sleep(0.2)
            connect_s = time.monotonic() - started
            await asyncio.sleep(2)
            probe_stop, (probe_answers, probe_end) = context.Event(), context.Pipe()
            probing = context.Process(
                target=probe_process, args=(server.url, consumer_key, probe_stop, probe_end), daemon=True
            )
            probing.start()
            for _ in range(args.rounds):
                await asyncio.to_thread(on_worker, "queue", {"consumer": consumer.pk, "count": args.offers})
                await asyncio.sleep(1)
                waiting_at_commit = fleet.waiting
                round_id, lease_ids, committed = await asyncio.to_thread(on_worker, "clear")
                committed = committed or time.time()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not all(i in fleet.completed for i in lease_ids):
                    await asyncio.sleep(0.05)
                latencies = [(fleet.received[i] - committed) * 1000 for i in lease_ids if i in fleet.received]
                missing = [i for i in lease_ids if i not in fleet.received]
                for lease_id in missing:
                    fleet.error(f"offer of lease {lease_id} not received within 30 s")
                done = [fleet.completed[i] for i in lease_ids if i in fleet.completed]
                rounds.append(
                    {
                        "round": round_id,
                        "offered": len(lease_ids),
                        "connected": waiting_at_commit,
                        "latencies": latencies,
                        "all_completed_s": round(max(done) - committed, 2) if done else None,
                    }
                )
                # Jobs left unmatched (none expected) would be matched next round: queue fresh ones.
            probe_stop.set()
            api_ms, probe_errors = await asyncio.to_thread(probe_answers.recv)
            probing.join(10)
            fleet.stopping = True
            for task in agents:
                task.cancel()
            await asyncio.gather(*agents, return_exceptions=True)
    finally:
        worker.send(None)
        worker_process.join(10)
        server.stop()
    latencies = [ms for r in rounds for ms in r["latencies"]]
    return {
        "phase": phase,
        "server": "uvicorn workers, config.asgi" if phase == "async" else "gthread, config.wsgi",
        "endpoint": fleet.path,
        "agents": len(keys),
        "connected": min(r["connected"] for r in rounds),
        "connect_s": round(connect_s, 1),
        "offers": sum(r["offered"] for r in rounds),
        "offer_latency_p50_ms": percentile(latencies, 0.5),
        "offer_latency_p99_ms": percentile(latencies, 0.99),
        "offer_latency_max_ms": percentile(latencies, 1.0),
        "api_p99_ms": percentile(api_ms, 0.99),
        "api_p50_ms": percentile(api_ms, 0.5),
        "api_calls": len(api_ms),
        "errors": len(fleet.errors) + len(probe_errors),
        "refused_429": fleet.refused,
        "offer_latency_p99_ms_per_round": [percentile(r["latencies"], 0.99) for r in rounds],
        "rounds_all_completed_s": [r["all_completed_s"] for r in rounds],
        "error_samples": sorted(set(fleet.errors + probe_errors))[:5],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    open_files = raise_open_files(args.agents * 2 + 1000)
    if open_files < args.agents + 200:
        raise SystemExit(f"ulimit -n is {open_files}: too few for {args.agents} agents")
    started = time.monotonic()
    setup_database(args)
    keys, consumer_key, consumer = make_fleet(args.agents)
    setup_s = time.monotonic() - started
    results = {}
    for phase in args.phases.split(","):
        results[phase] = asyncio.run(run_phase(args, phase, keys, consumer_key, consumer))
    report = {
        "agents": args.agents,
        "rounds": args.rounds,
        "offers_per_round": args.offers,
        "wait_s": args.wait,
        "server_workers": args.workers,
        "cpus": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "setup_s": round(setup_s, 1),
        "targets": TARGETS,
        # The headline figures are the async channel's (the sync phase is the comparison).
        **{k: results.get("async", {}).get(k) for k in HEADLINE},
        "phases": results,
    }
    if "async" in results and "sync" in results:
        a, s = results["async"], results["sync"]
        report["ratio_sync_over_async"] = {
            key: round(s[key] / a[key], 1) if a[key] and s[key] is not None else None
            for key in ("offer_latency_p50_ms", "offer_latency_p99_ms", "api_p99_ms")
        } | {"connected": f"{a['connected']} vs {s['connected']}"}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for phase in results.values():
            print(" ".join(f"{k}={v}" for k, v in phase.items() if k != "error_samples"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
