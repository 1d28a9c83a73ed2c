"""The provider agent against a live CPX server: a matched job is run by the simulate or the openai
backend and settled; an agent killed mid-job is failed over by the sweeper and a second agent
finishes the job with the consumer charged once; a clean shutdown fails its leases over at once."""

import os
import subprocess
import sys
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from auctions.models import Lease
from auctions.services.leases import lease_sweep
from market.models import JobRequest, LedgerAccount, LedgerTransfer, Provider
from market.selectors import ledger_is_balanced
from market.services.accounts import api_key_create
from tests.factories import ConsumerFactory, ResourceFactory, job_submit
from tests.integration.test_leases import make_lease
from tests.live import wait_for
from tests.unit.test_agent_backends import FakeOpenAIServer
from workers.agent.backends import OpenAIBackend, SimulateBackend
from workers.agent.client import AgentClient
from workers.agent.runner import Agent

pytestmark = pytest.mark.django_db(transaction=True)


def provider_key(provider) -> str:
    _, raw = api_key_create(user=provider.user, role="provider", now=timezone.now())
    return raw


def matched_job(*, resource=None, expected_hours=Decimal("0.01"), **job_overrides) -> Lease:
    now = timezone.now()
    consumer = ConsumerFactory(balance=Decimal("100"))
    job = job_submit(
        consumer=consumer, now=now, budget=Decimal("10"), deadline=now + timedelta(days=1), **job_overrides
    )
    return make_lease(job=job, resource=resource, now=now, expected_hours=expected_hours)


def start_agent(live_server, provider, backend, **options) -> tuple[Agent, threading.Thread]:
    client = AgentClient(live_server.url, provider_key(provider), retries=2, backoff_s=0.05)
    agent = Agent(client, backend, poll_wait_s=options.pop("poll_wait_s", 1), heartbeat_s=0.3, **options)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    return agent, thread


def consumer_balance(job) -> Decimal:
    return LedgerAccount.objects.get(kind="CONSUMER", user_id=job.consumer_id).balance


class TestAgentSimulate:
    def test_logs_each_lease_it_takes_and_finishes(self, live_server, caplog):
        lease = matched_job(expected_hours=Decimal("0.01"))
        caplog.set_level("INFO", logger="cpx.agent")

        _, thread = start_agent(
            live_server, lease.provider, SimulateBackend(speedup=60, tick_s=0.1), once=True
        )
        thread.join(30)

        lines = [record.getMessage() for record in caplog.records if record.name == "cpx.agent"]
        assert any(
            line.startswith(f"took lease {lease.pk}: job {lease.job_id} (INFERENCE") for line in lines
        ), lines
        assert any(line.startswith(f"finished lease {lease.pk}: completed") for line in lines), lines

    def test_runs_a_matched_job_to_completion_and_the_ledger_settles(self, live_server):
        lease = matched_job(expected_hours=Decimal("0.01"))  # 36 s at 60× → 0.6 s

        agent, thread = start_agent(
            live_server, lease.provider, SimulateBackend(speedup=60, tick_s=0.1), once=True
        )
        thread.join(30)

        assert not thread.is_alive()
        lease.refresh_from_db()
        job = JobRequest.objects.get(pk=lease.job_id)
        assert (lease.status, lease.simulated, job.status) == ("COMPLETED", True, "COMPLETED")
        assert lease.device_seconds == Decimal("36.000")
        assert lease.tokens_in + lease.tokens_out == job.workload_tokens
        payment = LedgerTransfer.objects.get(reference=f"lease:{lease.pk}:payment")
        assert payment.credit.user_id == lease.provider.user_id
        assert consumer_balance(job) == Decimal("100") - Decimal("0.008000")  # 0.01 h × 0.80
        assert ledger_is_balanced()


class TestAgentOpenAI:
    def test_forwards_an_inference_job_to_the_providers_server(self, live_server):
        lease = matched_job(workload_tokens=4096)

        with FakeOpenAIServer() as server:
            _, thread = start_agent(
                live_server, lease.provider, OpenAIBackend(server.url, chunk_tokens=1024), once=True
            )
            thread.join(30)

        lease.refresh_from_db()
        assert (lease.status, lease.simulated) == ("COMPLETED", False)
        assert len(server.requests) == 4
        assert lease.tokens_out == 4 * 512
        assert lease.tokens_in == sum(len(body["prompt"].split()) for _, body in server.requests)
        assert ledger_is_balanced()

    def test_a_training_job_fails_as_a_job_error_and_is_refunded(self, live_server):
        lease = matched_job(kind="TRAINING", workload_tokens=None, workload_device_hours=Decimal("1"))

        _, thread = start_agent(live_server, lease.provider, OpenAIBackend("http://127.0.0.1:9"), once=True)
        thread.join(30)

        lease.refresh_from_db()
        job = JobRequest.objects.get(pk=lease.job_id)
        assert (lease.status, lease.close_reason) == ("FAILED", "JOB_ERROR")
        assert lease.close_detail == "backend openai runs inference only"
        assert (job.status, consumer_balance(job)) == ("FAILED", Decimal("100"))


class TestAgentFailover:
    def test_a_killed_agent_is_failed_over_and_the_consumer_charged_once(self, live_server):
        first = matched_job(expected_hours=Decimal("1"))  # 3600 s at 360× → 10 s: killed long before
        job = first.job
        agent, thread = start_agent(live_server, first.provider, SimulateBackend(speedup=360, tick_s=0.1))
        assert agent.started.wait(20)
        wait_for(lambda: Lease.objects.get(pk=first.pk).progress > 0)

        agent.kill()
        thread.join(10)
        summary = lease_sweep(now=timezone.now() + timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S + 1))

        first.refresh_from_db()
        assert (first.status, first.close_reason) == ("REASSIGNED", "UNSTABLE")
        assert JobRequest.objects.get(pk=job.pk).status == "QUEUED"
        assert summary.unstable == 1
        assert Provider.objects.get(pk=first.provider_id).reputation < 1
        # The next round gives the job to another provider (the backup pool); its agent finishes it.
        second = make_lease(job=job, now=timezone.now(), expected_hours=Decimal("0.01"))
        _, thread = start_agent(
            live_server, second.provider, SimulateBackend(speedup=60, tick_s=0.1), once=True
        )
        thread.join(30)
        second.refresh_from_db()
        assert second.status == "COMPLETED"
        assert JobRequest.objects.get(pk=job.pk).status == "COMPLETED"
        assert LedgerTransfer.objects.filter(job=job, kind="PAYMENT").count() == 1
        assert not LedgerTransfer.objects.filter(reference=f"lease:{first.pk}:payment").exists()
        assert consumer_balance(job) == Decimal("100") - Decimal("0.008000")
        assert ledger_is_balanced()

    def test_a_clean_shutdown_fails_running_leases_over_at_once(self, live_server):
        lease = matched_job(expected_hours=Decimal("1"))
        agent, thread = start_agent(live_server, lease.provider, SimulateBackend(speedup=360, tick_s=0.1))
        assert agent.started.wait(20)

        agent.stop()
        thread.join(10)

        lease.refresh_from_db()
        assert (lease.status, lease.close_reason) == ("REASSIGNED", "PROVIDER_FAULT")
        assert lease.close_detail == "the agent was shut down"
        assert JobRequest.objects.get(pk=lease.job_id).status == "QUEUED"

    @pytest.mark.services
    def test_an_agent_stops_a_lease_the_exchange_gave_away(self, live_server, require_postgres):
        # The sweep runs while the agent talks to the server: on SQLite's in-memory test database
        # both threads would share one connection and its transactions, so this needs PostgreSQL.
        lease = matched_job(expected_hours=Decimal("1"))
        agent, thread = start_agent(live_server, lease.provider, SimulateBackend(speedup=360, tick_s=0.1))
        assert agent.started.wait(20)
        # The exchange decided the lease was lost (e.g. a sweep while the network was partitioned).
        lease_sweep(now=timezone.now() + timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S + 1))

        wait_for(lambda: lease.pk in agent.finished)
        agent.stop()
        thread.join(10)

        assert agent.finished[lease.pk] == "abandoned"
        assert Lease.objects.get(pk=lease.pk).status == "REASSIGNED"


class TestAgentProcess:
    def _spawn(self, live_server, provider, *extra):
        command = [
            sys.executable,
            "-m",
            "workers.agent",
            "--api",
            live_server.url,
            "--key",
            provider_key(provider),
        ]
        command += ["--backend", "simulate", "--poll-wait", "1", "--heartbeat", "0.5", *extra]
        env = {**os.environ, "PYTHONPATH": str(settings.BASE_DIR)}
        return subprocess.Popen(command, cwd=settings.BASE_DIR, env=env, stderr=subprocess.PIPE, text=True)

    def test_the_command_runs_one_poll_with_once(self, live_server):
        lease = matched_job(expected_hours=Decimal("0.01"))

        process = self._spawn(live_server, lease.provider, "--once", "--speedup", "120")
        _, stderr = process.communicate(timeout=60)

        assert process.returncode == 0, stderr
        assert Lease.objects.get(pk=lease.pk).status == "COMPLETED"

    def test_sigterm_shuts_down_cleanly(self, live_server):
        import signal

        lease = matched_job(expected_hours=Decimal("1"))
        process = self._spawn(live_server, lease.provider, "--speedup", "10")
        wait_for(lambda: Lease.objects.get(pk=lease.pk).status == "RUNNING", timeout_s=30)

        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)

        assert process.returncode == 0, stderr
        lease.refresh_from_db()
        assert (lease.status, lease.close_reason) == ("REASSIGNED", "PROVIDER_FAULT")

    def test_a_wrong_key_exits_with_an_error(self, live_server):
        provider = ResourceFactory().provider
        command = [sys.executable, "-m", "workers.agent", "--api", live_server.url, "--key", "cpx_nope_nope"]
        command += ["--backend", "simulate", "--once"]

        result = subprocess.run(command, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60)

        assert result.returncode == 2
        assert Provider.objects.get(pk=provider.pk).last_heartbeat_at is None
