"""Batch inference end to end against a real llama.cpp server (issue 10): a consumer uploads a
200-request OpenAI Batch file and submits a job with it, the provider's agent runs every request
against llama-cpp-python's OpenAI-compatible server on a tiny model the test writes, the consumer
downloads 200 results whose custom_ids match, and the charge is the metered tokens × the price.
An agent SIGKILLed mid-file is failed over and another provider finishes only what was left.

Needs llama-cpp-python[server] and gguf (requirements-llm.txt): skipped without them, failed
under CPX_REQUIRE_SERVICES=1 (CI installs them)."""

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from django.conf import settings
from django.utils import timezone

from auctions.models import BatchResult, Lease
from auctions.services.leases import lease_sweep
from market.models import JobRequest, LedgerAccount, LedgerTransfer
from market.selectors import ledger_is_balanced
from market.services.accounts import api_key_create
from tests.batches import MODEL, batch_jsonl, expected_charge
from tests.factories import ConsumerFactory, job_body
from tests.integration.test_leases import make_lease
from tests.live import wait_for
from workers.agent.backends import OpenAIBackend
from workers.agent.client import AgentClient
from workers.agent.runner import Agent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.llm, pytest.mark.services]

REQUESTS = 200


def key(user, role) -> str:
    return api_key_create(user=user, role=role, now=timezone.now())[1]


def submit_batch(live_server, consumer, *, count=REQUESTS, max_tokens=12) -> JobRequest:
    """The consumer's side over HTTP: upload the JSONL file, submit the job with its id."""
    api = live_server.url + "/api/v1"
    headers = {"Authorization": f"Bearer {key(consumer, 'consumer')}"}
    data = batch_jsonl(count, max_tokens=max_tokens)
    uploaded = requests.post(
        api + "/files", headers=headers, files={"file": ("requests.jsonl", data)}, data={"purpose": "batch"}
    )
    assert uploaded.status_code == 201, uploaded.text
    body = job_body(model_name=MODEL, workload_tokens=None, input_file_id=uploaded.json()["id"], budget="50")
    submitted = requests.post(api + "/jobs", headers=headers, json=body)
    assert submitted.status_code == 201, submitted.text
    return JobRequest.objects.get(pk=submitted.json()["id"])


def run_agent(live_server, provider, llm_url, **backend_options) -> tuple[Agent, OpenAIBackend]:
    backend = OpenAIBackend(llm_url, **backend_options)
    client = AgentClient(live_server.url, key(provider.user, "provider"), retries=2, backoff_s=0.05)
    agent = Agent(client, backend, poll_wait_s=1, heartbeat_s=0.5, once=True)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    thread.join(240)
    assert not thread.is_alive()
    return agent, backend


def download(live_server, consumer, job, which) -> list[dict]:
    response = requests.get(
        f"{live_server.url}/api/v1/jobs/{job.pk}/{which}",
        headers={"Authorization": f"Bearer {key(consumer, 'consumer')}"},
    )
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.content.splitlines()]


class TestBatchOnLlamaCpp:
    def test_two_hundred_requests_in_two_hundred_results_out_charged_by_tokens(self, live_server, llm_url):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = submit_batch(live_server, consumer)
        lease = make_lease(job=job, now=timezone.now(), expected_hours=Decimal("0.5"))

        agent, backend = run_agent(live_server, lease.provider, llm_url, concurrency=4)

        assert agent.finished[lease.pk] == "completed"
        lease.refresh_from_db()
        job.refresh_from_db()
        assert (lease.status, job.status) == ("COMPLETED", "COMPLETED")
        output = download(live_server, consumer, job, "output")
        errors = download(live_server, consumer, job, "errors")
        assert [line["custom_id"] for line in output] == [f"request-{i}" for i in range(1, REQUESTS + 1)]
        assert errors == []
        usages = [line["response"]["body"]["usage"] for line in output]
        assert all(line["response"]["status_code"] == 200 for line in output)
        assert all(u["completion_tokens"] >= 1 for u in usages)
        assert lease.tokens_in == sum(u["prompt_tokens"] for u in usages) > REQUESTS
        # billed completion tokens: the server's count, never past each request's max_tokens
        assert lease.tokens_out == sum(min(u["completion_tokens"], 12) for u in usages)
        assert backend.batch_requests_sent == REQUESTS
        charge = expected_charge(lease)
        assert charge > 0
        paid = LedgerTransfer.objects.filter(job=job, kind__in=["PAYMENT", "FEE"]).values_list(
            "amount", flat=True
        )
        assert sum(paid) == charge
        balance = LedgerAccount.objects.get(kind="CONSUMER", user=consumer).balance
        assert balance == Decimal("100") - charge
        assert job.batch_totals["prompt_tokens"] == lease.tokens_in
        assert ledger_is_balanced()

    def test_a_killed_agent_is_failed_over_and_the_next_provider_runs_only_the_rest(
        self, live_server, llm_url
    ):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = submit_batch(live_server, consumer, max_tokens=24)
        first = make_lease(job=job, now=timezone.now(), expected_hours=Decimal("0.5"))
        command = [
            sys.executable,
            "-m",
            "workers.agent",
            "--api",
            live_server.url,
            "--key",
            key(first.provider.user, "provider"),
            "--backend",
            "openai",
            "--openai-url",
            llm_url,
            "--concurrency",
            "1",
            "--poll-wait",
            "1",
            "--heartbeat",
            "0.5",
        ]
        env = {**os.environ, "PYTHONPATH": str(settings.BASE_DIR)}
        process = subprocess.Popen(command, cwd=settings.BASE_DIR, env=env, stderr=subprocess.DEVNULL)
        try:
            wait_for(
                lambda: BatchResult.objects.filter(lease=first).count() >= 30,
                timeout_s=120,
                what="the first agent to record 30 results",
            )
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        carried = BatchResult.objects.filter(lease=first).count()
        assert carried < REQUESTS, "the agent finished before it was killed"
        lease_sweep(now=timezone.now() + timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S + 1))
        first.refresh_from_db()
        assert (first.status, first.close_reason) == ("REASSIGNED", "UNSTABLE")

        second = make_lease(job=job, now=timezone.now(), expected_hours=Decimal("0.5"))
        agent, backend = run_agent(live_server, second.provider, llm_url, concurrency=2)

        assert agent.finished[second.pk] == "completed"
        second.refresh_from_db()
        assert backend.batch_requests_sent == REQUESTS - carried  # resumed after the recorded results
        rows = BatchResult.objects.filter(job=job)
        assert rows.count() == REQUESTS
        assert rows.filter(lease=second).count() == REQUESTS - carried
        output = download(live_server, consumer, job, "output")
        assert sorted(line["custom_id"] for line in output) == sorted(f"request-{i}" for i in range(1, 201))
        # No request paid twice: the completing lease is paid for its own results, the failed one nothing.
        mine = [r for r in rows if r.lease_id == second.pk]
        assert second.tokens_in + second.tokens_out == sum(
            r.prompt_tokens + r.completion_tokens for r in mine
        )
        assert not LedgerTransfer.objects.filter(reference=f"lease:{first.pk}:payment").exists()
        assert LedgerTransfer.objects.filter(job=job, kind="PAYMENT").count() == 1
        balance = LedgerAccount.objects.get(kind="CONSUMER", user=consumer).balance
        assert balance == Decimal("100") - expected_charge(second)
        assert ledger_is_balanced()
        assert Lease.objects.get(pk=first.pk).progress >= 30 / REQUESTS
