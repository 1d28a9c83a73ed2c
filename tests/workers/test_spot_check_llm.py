"""Spot-check verification against real llama.cpp servers (issue 10): a completed batch lease is
re-run in part by another provider serving the same model at temperature 0 and compared exactly.
An honest provider passes; one whose server runs other weights under the model's name, or that
uploads fabricated text, fails: it loses reputation and stake, and the consumer is refunded.

Needs requirements-llm.txt (skipped without it, failed under CPX_REQUIRE_SERVICES=1)."""

import json
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from auctions.models import Verification
from market.models import LedgerAccount, LedgerTransfer, Provider
from market.selectors import ledger_is_balanced
from market.services.accounts import api_key_create
from tests.batches import batch_job, batch_jsonl
from tests.conftest import bearer_client
from tests.factories import ConsumerFactory, OperatorFactory, ResourceFactory
from tests.integration.pages import signed_in
from tests.integration.test_leases import make_lease
from workers.agent.backends import OpenAIBackend
from workers.agent.client import AgentClient
from workers.agent.runner import Agent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.llm, pytest.mark.services]


@pytest.fixture(autouse=True)
def always_check(settings, file_storage):
    settings.CPX_VERIFY_FRACTION = 1.0
    settings.CPX_VERIFY_SAMPLE = 3


def agent(live_server, provider, url, **options) -> Agent:
    _, key = api_key_create(user=provider.user, role="provider", now=timezone.now())
    client = AgentClient(live_server.url, key, retries=2, backoff_s=0.05)
    return Agent(
        client, OpenAIBackend(url, concurrency=2), poll_wait_s=0.5, heartbeat_s=0.5, once=True, **options
    )


def run(one: Agent) -> Agent:
    thread = threading.Thread(target=one.run, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    return one


def greedy_batch_lease(count=10):
    consumer = ConsumerFactory(balance=Decimal("100"))
    now = timezone.now()
    job = batch_job(
        consumer=consumer,
        data=batch_jsonl(count, max_tokens=12, temperature=0),
        now=now,
        deadline=now + timedelta(days=7),
    )
    lease = make_lease(job=job, now=now, expected_hours=Decimal("0.5"))
    Provider.objects.filter(pk=lease.provider_id).update(stake=Decimal("10"))
    return consumer, job, lease


def verify(live_server, url) -> Verification:
    verifier = ResourceFactory().provider
    checker = run(agent(live_server, verifier, url, verify_models=("tiny-llama",)))
    assert checker.verified == 1
    return Verification.objects.get(verifier=verifier)


def balance(user) -> Decimal:
    return LedgerAccount.objects.get(kind="CONSUMER", user=user).balance


class TestSpotChecks:
    def test_an_honest_provider_passes(self, live_server, llm_url, llm_url_verifier):
        consumer, job, lease = greedy_batch_lease()
        run(agent(live_server, lease.provider, llm_url))
        opened = Verification.objects.get(lease=lease)
        assert opened.status == "PENDING" and len(opened.custom_ids) == 3
        charged = Decimal("100") - balance(consumer)

        decided = verify(live_server, llm_url_verifier)

        assert (decided.pk, decided.status, decided.mismatches) == (opened.pk, "PASSED", [])
        provider = Provider.objects.get(pk=lease.provider_id)
        assert (provider.reputation, provider.stake) == (Decimal("1"), Decimal("10"))
        assert Decimal("100") - balance(consumer) == charged > 0
        assert LedgerTransfer.objects.filter(reference=f"verification:{decided.pk}:payment").exists()
        assert ledger_is_balanced()

    def test_a_provider_running_another_model_is_caught_penalised_and_the_consumer_refunded(
        self, live_server, llm_url_other_model, llm_url_verifier
    ):
        consumer, job, lease = greedy_batch_lease()
        run(agent(live_server, lease.provider, llm_url_other_model))
        assert balance(consumer) < Decimal("100")

        decided = verify(live_server, llm_url_verifier)

        assert decided.status == "FAILED" and decided.mismatches
        provider = Provider.objects.get(pk=lease.provider_id)
        assert (provider.reputation, provider.stake) == (Decimal("0.75"), Decimal("5"))
        assert balance(consumer) == Decimal("100")  # the whole charge came back
        assert decided.refunded > 0
        assert ledger_is_balanced()

    def test_fabricated_text_is_caught(self, live_server, llm_url_verifier):
        consumer, job, lease = greedy_batch_lease(count=4)
        provider_api = bearer_client(lease.provider.user, "provider")
        provider_api.post(f"/api/v1/agent/leases/{lease.pk}/accept", {}, format="json")
        made_up = []
        for line in batch_jsonl(4, max_tokens=12, temperature=0).splitlines():
            custom_id = json.loads(line)["custom_id"]
            body = {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Plausible prose."}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 3, "total_tokens": 103},
            }
            made_up.append(
                {"custom_id": custom_id, "response": {"status_code": 200, "body": body}, "error": None}
            )
        provider_api.post(f"/api/v1/agent/leases/{lease.pk}/results", {"results": made_up}, format="json")
        done = provider_api.post(
            f"/api/v1/agent/leases/{lease.pk}/complete",
            {"tokens_in": 0, "tokens_out": 0, "device_seconds": "0"},
            format="json",
        )
        assert done.status_code == 200, done.json()

        decided = verify(live_server, llm_url_verifier)

        assert decided.status == "FAILED" and sorted(decided.mismatches) == sorted(decided.custom_ids)
        assert balance(consumer) == Decimal("100")
        assert Provider.objects.get(pk=lease.provider_id).reputation == Decimal("0.75")


def test_operators_see_the_checks(live_server, llm_url, llm_url_verifier):
    consumer, job, lease = greedy_batch_lease(count=3)
    run(agent(live_server, lease.provider, llm_url))
    decided = verify(live_server, llm_url_verifier)
    operator_user = OperatorFactory()
    operator = bearer_client(operator_user)

    listed = operator.get("/api/v1/operator/verifications?status=PASSED").json()["results"]

    assert [(v["id"], v["lease"], v["status"]) for v in listed] == [(decided.pk, lease.pk, "PASSED")]
    assert bearer_client(consumer).get("/api/v1/operator/verifications").status_code == 403
    page = signed_in(operator_user).get(reverse("ops:market-live")).content.decode()
    assert 'id="spot-checks"' in page and f"#{decided.pk}" in page and "Passed" in page
