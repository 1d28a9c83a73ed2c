"""Harness of the worker tests: the embedded default in this process, and real Celery worker
processes on Redis + PostgreSQL.

Embedded (`embedded_market`): a Celery app on the in-memory broker, its worker thread
(workers.embedded), the web app behind the demo's threaded server, and agents in threads. On
SQLite's in-memory test database every thread must share the test's one connection (as Django's
live server does), and Django keeps transaction state on that connection, so on SQLite each HTTP
request, each task and each read of the test holds one lock (`market.db`): the threads take turns,
the code paths are the real ones. On PostgreSQL every thread has its own connection and nothing is
serialised.

Real (`real_celery`): `celery -A config worker --pool=solo --concurrency=1` and `celery -A config
beat` subprocesses with DATABASE_URL pointing at pytest-django's test database (tests using them
are `django_db(transaction=True)`, so what the test writes is committed and visible to them), on a
dedicated Redis database (CPX_TEST_REDIS_DB, default 13) and a queue unique to the run, purged
before and after. Without PostgreSQL + Redis these tests skip — and fail under CPX_REQUIRE_SERVICES=1.
Every wait is bounded; every subprocess is killed in a finaliser.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from celery import Celery
from celery.backends.redis import RedisBackend
from celery.result import AsyncResult
from django.conf import settings
from django.db import connection
from django.utils import timezone

from config.celery import app as cpx_app
from market.services.accounts import api_key_create
from tests.conftest import service_unavailable
from tests.live import wait_for
from workers.embedded import EmbeddedCelery
from workers.simulation import WebServer

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TASK_TIMEOUT_S = 60


def provider_key(provider) -> str:
    _, raw = api_key_create(user=provider.user, role="provider", now=timezone.now(), name="test agent")
    return raw


def consumer_key(user) -> str:
    _, raw = api_key_create(user=user, role="consumer", now=timezone.now(), name="test consumer")
    return raw


# --- the embedded default


@pytest.fixture
def embedded_app():
    """A Celery app of the embedded default whatever CELERY_BROKER_URL says: in-memory broker,
    in-process results, the project's tasks (shared tasks bind to every app)."""
    app = Celery("cpx-embedded-test")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(
        broker_url="memory://",
        result_backend="cache+memory://",
        broker_transport_options={"polling_interval": 0.05},
        task_default_queue=f"embedded-{uuid.uuid4().hex[:8]}",
    )
    app.autodiscover_tasks(["workers"], force=True)
    yield app
    cpx_app.set_current()
    cpx_app.set_default()


@pytest.fixture
def embedded_worker(embedded_app, shared_db):
    """The in-process worker thread (no beat: the tests send the ticks), one task at a time."""
    from celery.signals import task_postrun, task_prerun

    def take_turn(**_):
        if shared_db.shared:
            shared_db.lock.acquire()

    def give_turn(**_):
        if shared_db.shared:
            shared_db.lock.release()

    task_prerun.connect(take_turn, weak=False)
    task_postrun.connect(give_turn, weak=False)
    worker = EmbeddedCelery(embedded_app, beat=False, on_thread_start=shared_db.adopt).start()
    try:
        yield worker
    finally:
        worker.stop(timeout=30)
        task_prerun.disconnect(take_turn)
        task_postrun.disconnect(give_turn)


@pytest.fixture
def market_server(shared_db, settings):
    """The demo's threaded web server on a free port (the live server of these tests)."""
    # The tests' simulated agents run up to this many times faster than real time; the server
    # bounds a simulated lease's metering by it (auctions.services.leases).
    settings.CPX_SIMULATION_SPEEDUP = 36000
    override = {"default": shared_db.connection} if shared_db.shared else None
    server = WebServer("127.0.0.1", 0, connections_override=override, wrap_app=shared_db.wsgi).start()
    yield server
    server.stop()


# --- real services: PostgreSQL + Redis + worker processes


def _postgres_url(settings_dict: dict) -> str:
    user = quote(settings_dict.get("USER") or "", safe="")
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


def _redis_db_url(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", "", ""))


class CeleryProcesses:
    """Worker and beat subprocesses on the test database and a queue of this run's own."""

    def __init__(self, tmp_path: Path):
        self.redis_url = _redis_db_url(
            settings.CELERY_BROKER_URL, int(os.environ.get("CPX_TEST_REDIS_DB", "13"))
        )
        self.queue = f"cpx-test-{uuid.uuid4().hex[:12]}"
        self.database_url = _postgres_url(connection.settings_dict)
        self.tmp_path = tmp_path
        self.processes: dict[str, subprocess.Popen] = {}
        # The producer talks to the dedicated database explicitly: CELERY_BROKER_URL in the
        # environment would override an app's broker_url setting.
        self.producer = Celery("cpx-test-producer")
        self.producer.conf.update(
            task_serializer="json",
            result_serializer="json",
            accept_content=["json"],
            task_default_queue=self.queue,
            broker_connection_retry_on_startup=True,
        )
        self.connection = self.producer.connection_for_write(self.redis_url)
        self.backend = RedisBackend(app=self.producer, url=self.redis_url)
        self.sent: list[str] = []

    def env(self, **overrides) -> dict:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "DATABASE_URL": self.database_url,
            "DATABASE_CONN_MAX_AGE": "0",
            "CELERY_BROKER_URL": self.redis_url,
            "CELERY_RESULT_BACKEND": self.redis_url,
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        env.update({name: str(value) for name, value in overrides.items()})
        return env

    def _spawn(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}.log", "wb")  # noqa: SIM115 — closed with the process
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.tmp_path / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_worker(
        self, name: str, *, queue: str | None = None, app: str = "config", timeout_s: float = 60, **env
    ) -> subprocess.Popen:
        argv = [
            str(VENV_BIN / "celery"),
            "-A",
            app,
            "worker",
            "--pool=solo",
            "--concurrency=1",
            f"--hostname={name}-{self.queue}@%h",
            f"--queues={queue or self.queue}",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=INFO",
        ]
        process = self._spawn(name, argv, self.env(**env))
        wait_for(
            lambda: " ready." in self.log(name) or process.poll() is not None,
            timeout_s=timeout_s,
            what=f"worker {name} to be ready",
        )
        assert process.poll() is None, f"worker {name} exited:\n{self.log(name)[-3000:]}"
        return process

    def start_beat(self, name: str = "beat", **env) -> subprocess.Popen:
        argv = [str(VENV_BIN / "celery"), "-A", "config", "beat", "--loglevel=INFO"]
        process = self._spawn(name, argv, self.env(**env))
        wait_for(lambda: "beat: Starting" in self.log(name), timeout_s=60, what="beat to start")
        return process

    def start_agent(self, name: str, *, api: str, key: str, speedup: float) -> subprocess.Popen:
        argv = [
            sys.executable,
            "-m",
            "workers.agent",
            f"--api={api}",
            f"--key={key}",
            "--backend=simulate",
            f"--speedup={speedup}",
            "--poll-wait=1",
            "--heartbeat=0.5",
        ]
        return self._spawn(name, argv, self.env())

    def kill(self, name: str, sig=signal.SIGKILL) -> None:
        process = self.processes[name]
        if process.poll() is None:
            os.killpg(process.pid, sig)
            process.wait(15)

    def send(
        self, task: str, *, queue: str | None = None, task_id: str | None = None, **kwargs
    ) -> AsyncResult:
        task_id = task_id or str(uuid.uuid4())
        with self.connection.Producer() as producer:
            self.producer.send_task(
                task, kwargs=kwargs, queue=queue or self.queue, task_id=task_id, producer=producer
            )
        self.sent.append(task_id)
        return self.result(task_id)

    def result(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, backend=self.backend, app=self.producer)

    def purge(self) -> None:
        """Delete this run's queues, bindings, results and unacknowledged messages — only this
        run's: another run may share the dedicated database."""
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            for pattern in (
                f"{self.queue}*",
                f"_kombu.binding.{self.queue}*",
                f"_kombu.binding_permanent.{self.queue}*",
            ):
                for key in client.scan_iter(pattern):
                    client.delete(key)
            for task_id in self.sent:
                client.delete(f"celery-task-meta-{task_id}")
            for tag, raw in client.hgetall("unacked").items():
                if self.queue in raw.decode(errors="replace"):
                    client.hdel("unacked", tag)
                    client.zrem("unacked_index", tag)
        finally:
            client.close()

    def close(self) -> None:
        for name in list(self.processes):
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                self.kill(name)
        self.purge()
        self.connection.release()
        self.backend.client.close()
        self.producer.close()


def _redis_reachable(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture
def real_celery(transactional_db, tmp_path):
    """Real worker processes need PostgreSQL and Redis: skip without them (fail when required)."""
    if connection.vendor != "postgresql":
        service_unavailable(
            "needs PostgreSQL (DATABASE_URL=postgres://…): worker processes cannot share the "
            f"{connection.vendor} test database"
        )
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        service_unavailable(
            "needs Redis (CELERY_BROKER_URL=redis://…): the memory broker lives in one process"
        )
    processes = CeleryProcesses(tmp_path)
    if not _redis_reachable(processes.redis_url):
        service_unavailable(f"Redis at {processes.redis_url} does not answer")
    processes.purge()
    try:
        yield processes
    finally:
        processes.close()


def result_of(async_result, timeout_s: float = TASK_TIMEOUT_S) -> dict:
    return async_result.get(timeout=timeout_s, propagate=True)


def dump(value) -> str:
    return json.dumps(value, default=str, indent=1)
