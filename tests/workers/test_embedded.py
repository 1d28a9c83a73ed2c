"""The embedded default, no Redis: the in-memory broker and the in-process worker thread carry the
whole flow — a job submitted over the API is cleared by a round task, dispatched to a real agent
loop (simulate backend) over HTTP, completed and paid — plus retries and duplicate deliveries
through the worker; and `cpx_demo` and `cpx_serve` (what `make demo` runs) end to end in processes
of their own."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from django.db import OperationalError
from django.utils import timezone

from auctions.models import Lease, Round
from auctions.services.rounds import round_open
from market.models import JobRequest, LedgerAccount, LedgerTransfer, Provider
from market.selectors import ledger_is_balanced
from tests.factories import ConsumerFactory, ResourceFactory, job_body, job_submit
from tests.workers.conftest import ROOT, consumer_key, provider_key, wait_for
from workers import tasks
from workers.agent.backends import SimulateBackend
from workers.agent.client import AgentClient
from workers.agent.runner import Agent

TIMEOUT_S = 30


@pytest.fixture
def agent_for(market_server):
    """Start the real agent loop for a provider in a thread; stopped (cleanly) after the test."""
    started: list[tuple[Agent, threading.Thread]] = []

    def start(provider, *, speedup: float = 3600.0) -> Agent:
        client = AgentClient(market_server.url, provider_key(provider), retries=3, backoff_s=0.05)
        agent = Agent(client, SimulateBackend(speedup=speedup, tick_s=0.05), poll_wait_s=0.2, heartbeat_s=0.2)
        thread = threading.Thread(target=agent.run, name=f"test-agent-{provider.pk}", daemon=True)
        thread.start()
        started.append((agent, thread))
        return agent

    yield start
    for agent, thread in started:
        agent.stop(timeout_s=10)
        thread.join(10)


def submit(server, key: str, **overrides) -> dict:
    response = requests.post(
        f"{server.url}/api/v1/jobs",
        json=job_body(**overrides),
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": str(uuid.uuid4())},
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 201, response.text
    return response.json()


def job_status(server, key: str, job_id: int) -> str:
    response = requests.get(
        f"{server.url}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT_S
    )
    return response.json()["status"]


class TestEmbeddedMarket:
    def test_a_submitted_job_is_cleared_dispatched_to_an_agent_completed_and_paid(
        self, shared_db, embedded_worker, market_server, agent_for
    ):
        resource = ResourceFactory(
            ask_per_device_hour=Decimal("0.30"), price_floor=Decimal("0"), device_count=2
        )
        consumer = ConsumerFactory(balance=Decimal("100"))
        key = consumer_key(consumer)
        agent_for(resource.provider)
        wait_for(
            lambda: shared_db.read(lambda: Provider.objects.get(pk=resource.provider_id).last_heartbeat_at),
            what="the agent's first heartbeat",
        )
        job = submit(market_server, key, requested_device_count=2, latency_sla_ms=None)

        cleared = tasks.open_and_clear_round.delay().get(timeout=TIMEOUT_S)
        wait_for(lambda: job_status(market_server, key, job["id"]) == "COMPLETED", what="the job to complete")
        swept = tasks.sweep_leases.delay().get(timeout=TIMEOUT_S)

        with shared_db.turn():
            assert (cleared["status"], cleared["jobs_matched"]) == ("CLEARED", 1)
            lease = Lease.objects.get(job_id=job["id"])
            assert (lease.round_id, lease.resource_id, lease.status) == (
                cleared["round_id"],
                resource.pk,
                "COMPLETED",
            )
            assert lease.simulated is True
            assert lease.device_seconds == (lease.expected_device_hours * 3600).quantize(Decimal("0.001"))
            payment = LedgerTransfer.objects.get(reference=f"lease:{lease.pk}:payment")
            assert payment.credit.user_id == resource.provider.user_id
            charge = payment.amount + LedgerTransfer.objects.get(reference=f"lease:{lease.pk}:fee").amount
            balance = LedgerAccount.objects.get(kind="CONSUMER", user=consumer).balance
            assert balance == Decimal("100") - charge
            assert LedgerAccount.objects.get(kind="ESCROW", job_id=job["id"]).balance == 0
            assert ledger_is_balanced()
        assert (swept["unstable"], swept["requeued"]) == (0, 0)


class TestEmbeddedWorker:
    def test_a_dropped_database_connection_is_retried_until_the_round_clears(
        self, shared_db, embedded_worker, monkeypatch
    ):
        with shared_db.turn():
            round_obj = round_open(now=timezone.now())
        calls = []
        real = tasks.round_clear

        def flaky(**kwargs):
            calls.append(kwargs["round_id"])
            if len(calls) == 1:
                raise OperationalError("server closed the connection unexpectedly")
            return real(**kwargs)

        monkeypatch.setattr(tasks, "round_clear", flaky)

        result = tasks.clear_round.delay(round_id=round_obj.pk).get(timeout=TIMEOUT_S)

        assert calls == [round_obj.pk, round_obj.pk]
        assert (result["round_id"], result["status"]) == (round_obj.pk, "CLEARED")

    def test_a_domain_error_is_answered_once_and_not_retried(self, shared_db, embedded_worker, monkeypatch):
        calls = []
        real = tasks.round_clear

        def counted(**kwargs):
            calls.append(kwargs["round_id"])
            return real(**kwargs)

        monkeypatch.setattr(tasks, "round_clear", counted)

        result = tasks.clear_round.delay(round_id=987654).get(timeout=TIMEOUT_S)

        assert result["error"] == "round_not_found"
        assert calls == [987654]

    def test_the_same_message_delivered_twice_clears_the_round_once(self, shared_db, embedded_worker):
        with shared_db.turn():
            resource = ResourceFactory(
                ask_per_device_hour=Decimal("0.30"), price_floor=Decimal("0"), device_count=2
            )
            now = timezone.now()
            Provider.objects.filter(pk=resource.provider_id).update(last_heartbeat_at=now)
            consumer = ConsumerFactory(balance=Decimal("100"))
            job = job_submit(
                consumer=consumer, now=now, deadline=now + timedelta(days=1), requested_device_count=2
            )
            round_obj = round_open(now=now)
        task_id = str(uuid.uuid4())

        first = tasks.clear_round.apply_async(kwargs={"round_id": round_obj.pk}, task_id=task_id)
        second = tasks.clear_round.apply_async(kwargs={"round_id": round_obj.pk}, task_id=task_id)
        marker = tasks.sweep_leases.delay()  # one worker, one queue: done after both copies
        marker.get(timeout=TIMEOUT_S)

        assert first.get(timeout=TIMEOUT_S) == second.get(timeout=TIMEOUT_S)
        with shared_db.turn():
            assert Lease.objects.filter(job=job).count() == 1
            assert Round.objects.get(pk=round_obj.pk).jobs_matched == 1
            assert JobRequest.objects.get(pk=job.pk).status == JobRequest.Status.MATCHED


@pytest.fixture(scope="module")
def migrated_sqlite(tmp_path_factory) -> Path:
    """A migrated SQLite file the command tests copy (migrating once saves seconds per test)."""
    path = tmp_path_factory.mktemp("embedded") / "migrated.sqlite3"
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"],
        env=command_env(path),
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    return path


def command_env(database: Path, **extra) -> dict:
    """The embedded default for a command in a process of its own, whatever this run's services."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"sqlite:///{database}",
        "CELERY_BROKER_URL": "memory://",
        "CELERY_RESULT_BACKEND": "cache+memory://",
        "REDIS_URL": "",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


class TestCpxDemo:
    def test_runs_rounds_headless_and_reports_a_balanced_ledger(self, tmp_path, migrated_sqlite):
        database = tmp_path / "demo.sqlite3"
        shutil.copy(migrated_sqlite, database)
        env = command_env(database)
        manage = [sys.executable, str(ROOT / "manage.py")]

        done = subprocess.run(
            [
                *manage,
                "cpx_demo",
                "--rounds=2",
                "--interval=0.5",
                "--drain=5",
                "--seed-jobs=12",
                "--speedup=36000",
                "--json",
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )

        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout)
        assert [r["status"] for r in summary["rounds"]] == ["CLEARED", "CLEARED"]
        assert summary["jobs"]["matched"] > 0
        assert summary["leases"]["completed"] > 0
        assert summary["leases"]["simulated"] == summary["leases"]["matched"]
        assert summary["ledger_balanced"] is True
        assert summary["chain"]["rounds"]["committed"] == 2  # issue 12: both rounds' hashes on chain
        assert summary["chain"]["rounds"]["replay_on_chain"] == "match"


class TestCpxServe:
    def test_serves_the_market_moving_and_stops_cleanly_on_ctrl_c(self, tmp_path, migrated_sqlite):
        database = tmp_path / "serve.sqlite3"
        shutil.copy(migrated_sqlite, database)
        env = command_env(
            database, CPX_ROUND_INTERVAL_S="1", CPX_SWEEP_INTERVAL_S="1", CPX_SIMULATION_SPEEDUP="36000"
        )
        manage = [sys.executable, str(ROOT / "manage.py")]
        seeded = subprocess.run(
            [*manage, "cpx_seed", "--jobs=12"],
            env=env,
            cwd=ROOT,
            check=True,
            timeout=120,
            capture_output=True,
            text=True,
        )
        operator_key = next(
            line.split()[-1] for line in seeded.stdout.splitlines() if "operator  key" in line
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        log = tmp_path / "serve.log"
        with open(log, "wb") as out:
            serve = subprocess.Popen(
                [*manage, "cpx_serve", f"127.0.0.1:{port}", "--traffic-interval=0.5", "--status-every=1"],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            api = f"http://127.0.0.1:{port}/api/v1"
            headers = {"Authorization": f"Bearer {operator_key}"}

            def completed_jobs() -> int:
                try:
                    answer = requests.get(
                        f"{api}/operator/jobs?status=COMPLETED", headers=headers, timeout=10
                    )
                except requests.ConnectionError:
                    return 0
                return answer.json()["count"] if answer.status_code == 200 else 0

            wait_for(completed_jobs, timeout_s=90, what=lambda: "completed jobs\n" + log.read_text()[-3000:])
            rounds = requests.get(f"{api}/rounds", headers=headers, timeout=10).json()["results"]
            serve.send_signal(signal.SIGINT)
            serve.wait(60)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait(10)

        output = log.read_text()
        assert serve.returncode == 0, output[-3000:]
        assert any(r["status"] == "CLEARED" and r["jobs_matched"] > 0 for r in rounds), rounds
        assert "SIMULATED provider agents" in output and "SIMULATED consumer traffic" in output
        assert output.rstrip().endswith("stopped.")
