"""The agent's side of a batch job (issue 10): the input read with a live lease only, results
recorded once per request with their usage checked, completion metered by tokens, and the
consumer's output and error files."""

import json
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from auctions.models import BatchResult, Lease
from auctions.services.batches import lease_batch_metered
from market.models import JobRequest, LedgerAccount, LedgerTransfer
from market.money import to_money
from market.selectors import ledger_is_balanced
from market.services.files import file_upload
from tests.batches import answer, batch_job, batch_jsonl
from tests.conftest import NOW, assert_error, bearer_client
from tests.factories import ConsumerFactory, ResourceFactory, job_submit
from tests.integration.test_leases import make_lease

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def far_deadlines(settings):
    """These jobs run through views that read the real clock, so their deadlines lie far ahead
    (2099) of the fixed test time, past the 30-day bound a submission has."""
    settings.CPX_MAX_JOB_DEADLINE_DAYS = 36500


BASE = "/api/v1"


@pytest.fixture
def setup(file_storage):
    consumer = ConsumerFactory(balance=Decimal("100"))
    data = batch_jsonl(4, max_tokens=8)
    job = batch_job(consumer=consumer, data=data, now=NOW, deadline=NOW.replace(year=2099))
    lease = make_lease(job=job, now=NOW, expected_hours=Decimal("0.5"))
    agent = bearer_client(lease.provider.user, "provider")
    return consumer, job, lease, agent, data


def accept(agent, lease):
    response = agent.post(f"{BASE}/agent/leases/{lease.pk}/accept", {}, format="json")
    assert response.status_code == 200, response.json()


def results(agent, lease, lines):
    return agent.post(f"{BASE}/agent/leases/{lease.pk}/results", {"results": lines}, format="json")


class TestLeaseInput:
    def test_the_provider_with_a_live_lease_reads_the_input(self, setup):
        _, job, lease, agent, data = setup

        response = agent.get(f"{BASE}/agent/leases/{lease.pk}/input")
        state = agent.get(f"{BASE}/agent/leases/{lease.pk}/batch").json()

        assert response.status_code == 200
        assert b"".join(response.streaming_content) == data
        assert response["X-CPX-SHA256"] == job.input_file.sha256 == state["input_file"]["sha256"]
        assert (state["input_file"]["lines"], state["done"]) == (4, [])

    def test_another_provider_gets_404(self, setup):
        _, _, lease, _, _ = setup
        stranger = bearer_client(ResourceFactory().provider.user, "provider")

        assert_error(stranger.get(f"{BASE}/agent/leases/{lease.pk}/input"), 404, "not_found")

    def test_a_provider_whose_lease_closed_cannot_read_it(self, setup):
        _, _, lease, agent, _ = setup
        Lease.objects.filter(pk=lease.pk).update(status=Lease.Status.REASSIGNED)

        assert_error(agent.get(f"{BASE}/agent/leases/{lease.pk}/input"), 403, "lease_not_live")
        assert_error(agent.get(f"{BASE}/agent/leases/{lease.pk}/batch"), 403, "lease_not_live")

    def test_the_consumer_key_cannot_use_the_agent_endpoint(self, setup):
        consumer, _, lease, _, _ = setup

        response = bearer_client(consumer).get(f"{BASE}/agent/leases/{lease.pk}/input")

        assert response.status_code == 403


class TestLeaseResults:
    def test_records_each_request_once(self, setup):
        _, job, lease, agent, _ = setup
        accept(agent, lease)

        first = results(agent, lease, [answer("request-1"), answer("request-2")])
        again = results(agent, lease, [answer("request-2", completion_tokens=1), answer("request-3")])

        assert first.json() == {"recorded": 2, "duplicates": 0, "done": 2, "lines": 4}
        assert again.json() == {"recorded": 1, "duplicates": 1, "done": 3, "lines": 4}
        assert BatchResult.objects.get(job=job, custom_id="request-2").completion_tokens == 8
        lease.refresh_from_db()
        assert (lease.progress, lease.tokens_in, lease.tokens_out) == (0.75, 30, 24)
        assert agent.get(f"{BASE}/agent/leases/{lease.pk}/batch").json()["done"] == [
            "request-1",
            "request-2",
            "request-3",
        ]

    @pytest.mark.parametrize(
        ("line", "code"),
        [
            (answer("request-2", prompt_tokens=10_000), "usage_implausible"),  # above the prompt bound
            (answer("request-2", prompt_tokens=0), "usage_implausible"),
            ({**answer("request-2"), "response": {"status_code": 200, "body": {}}}, "usage_implausible"),
            (answer("request-99"), "invalid"),
        ],
    )
    def test_an_implausible_result_refuses_the_whole_upload(self, setup, line, code):
        _, job, lease, agent, _ = setup
        accept(agent, lease)

        response = results(agent, lease, [answer("request-1"), line])

        assert_error(response, 422 if code == "usage_implausible" else 400, code)
        assert not BatchResult.objects.filter(job=job).exists()

    def test_completion_tokens_past_max_tokens_are_never_billed(self, setup):
        # llama.cpp goes on past max_tokens while its text ends inside a UTF-8 character.
        _, job, lease, agent, _ = setup
        accept(agent, lease)

        response = results(agent, lease, [answer("request-1", completion_tokens=11)])

        assert response.status_code == 200
        assert BatchResult.objects.get(job=job, custom_id="request-1").completion_tokens == 8
        assert BatchResult.objects.get(job=job, custom_id="request-1").reported_completion_tokens == 11
        assert JobRequest.objects.get(pk=job.pk).batch_totals["completion_tokens_reported"] == 11

    def test_results_need_a_running_lease(self, setup):
        _, _, lease, agent, _ = setup

        assert_error(results(agent, lease, [answer("request-1")]), 403, "lease_not_live")


class TestBatchCompletion:
    def test_refuses_to_complete_before_every_request_is_answered(self, setup):
        _, _, lease, agent, _ = setup
        accept(agent, lease)
        results(agent, lease, [answer("request-1")])

        response = agent.post(
            f"{BASE}/agent/leases/{lease.pk}/complete",
            {"tokens_in": 10, "tokens_out": 8, "device_seconds": "1"},
            format="json",
        )

        assert_error(response, 409, "batch_incomplete")
        assert Lease.objects.get(pk=lease.pk).status == "RUNNING"

    def test_meters_by_tokens_and_hands_the_consumer_its_files(self, setup):
        consumer, job, lease, agent, _ = setup
        accept(agent, lease)
        lines = [answer(f"request-{i}", prompt_tokens=10 + i, completion_tokens=i) for i in (1, 2, 3)]
        results(agent, lease, [*lines, answer("request-4", status_code=400)])

        response = agent.post(
            f"{BASE}/agent/leases/{lease.pk}/complete",
            {"tokens_in": 999, "tokens_out": 999, "device_seconds": "3000"},  # ignored: metered by results
            format="json",
        )

        assert response.status_code == 200, response.json()
        lease.refresh_from_db()
        job.refresh_from_db()
        assert (lease.tokens_in, lease.tokens_out) == (36, 6)
        # billable device-hours = expected 0.5 h × 42 tokens / workload_tokens; charge = price × that
        hours = (Decimal("0.5") * 3600 * 42 / job.workload_tokens).quantize(
            Decimal("0.001"), "ROUND_DOWN"
        ) / 3600
        charge = to_money(lease.unit_price_paid * hours.quantize(Decimal("0.000001")))
        assert lease_batch_metered(lease)[:2] == (36, 6)
        assert Decimal(response.json()["settlement"]["charge"]) == charge
        assert LedgerAccount.objects.get(kind="CONSUMER", user=consumer).balance == Decimal("100") - charge
        assert ledger_is_balanced()
        assert job.status == "COMPLETED" and job.batch_totals["succeeded"] == 3
        owner = bearer_client(consumer)
        output = owner.get(f"{BASE}/jobs/{job.pk}/output")
        errors = owner.get(f"{BASE}/jobs/{job.pk}/errors")
        out_lines = [json.loads(x) for x in b"".join(output.streaming_content).splitlines()]
        err_lines = [json.loads(x) for x in b"".join(errors.streaming_content).splitlines()]
        assert [x["custom_id"] for x in out_lines] == ["request-1", "request-2", "request-3"]
        assert out_lines[0]["response"]["body"]["usage"]["prompt_tokens"] == 11
        assert [(x["custom_id"], x["response"]["status_code"]) for x in err_lines] == [("request-4", 400)]
        assert output["X-CPX-SHA256"] == job.output_file.sha256
        detail = owner.get(f"{BASE}/jobs/{job.pk}").json()
        assert (detail["output_sha256"], detail["error_sha256"]) == (
            job.output_file.sha256,
            job.error_file.sha256,
        )
        assert_error(bearer_client(ConsumerFactory()).get(f"{BASE}/jobs/{job.pk}/output"), 404, "not_found")
        payment = LedgerTransfer.objects.get(reference=f"lease:{lease.pk}:payment")
        assert payment.memo.endswith(f"results sha256 {job.output_file.sha256}")
        assert JobRequest.objects.get(pk=job.pk).output_file.owner_id == consumer.pk


class TestTrainingArtifact:
    @pytest.fixture
    def training(self, file_storage):
        consumer = ConsumerFactory(balance=Decimal("100"))
        dataset = file_upload(
            owner=consumer,
            purpose="dataset",
            upload=SimpleUploadedFile("train.bin", b"\x00\x01" * 512),
            now=NOW,
        )
        job = job_submit(
            consumer=consumer,
            now=NOW,
            kind="TRAINING",
            workload_tokens=None,
            workload_device_hours=Decimal("1"),
            input_file_id=dataset.public_id,
            deadline=NOW.replace(year=2099),
        )
        lease = make_lease(job=job, now=NOW, expected_hours=Decimal("1"))
        return consumer, job, lease, bearer_client(lease.provider.user, "provider")

    def post_artifact(self, agent, lease, data: bytes):
        return agent.generic(
            "POST",
            f"{BASE}/agent/leases/{lease.pk}/artifact",
            data,
            content_type="application/octet-stream",
            HTTP_X_FILENAME="adapter.safetensors",
        )

    def test_the_dataset_is_read_with_the_lease_and_the_artifact_goes_to_the_consumer(self, training):
        consumer, job, lease, agent = training
        accept(agent, lease)

        dataset = agent.get(f"{BASE}/agent/leases/{lease.pk}/input")
        stored = self.post_artifact(agent, lease, b"LoRA" * 100)
        output = bearer_client(consumer).get(f"{BASE}/jobs/{job.pk}/output")

        assert b"".join(dataset.streaming_content) == b"\x00\x01" * 512
        assert stored.status_code == 201 and stored.json()["purpose"] == "artifact"
        assert b"".join(output.streaming_content) == b"LoRA" * 100
        assert output["X-CPX-SHA256"] == stored.json()["sha256"]

    def test_an_artifact_needs_a_running_lease_and_fits_the_limit(self, training, settings):
        _, job, lease, agent = training
        assert_error(self.post_artifact(agent, lease, b"x"), 403, "lease_not_live")
        accept(agent, lease)
        settings.CPX_FILE_MAX_BYTES = 10

        assert_error(self.post_artifact(agent, lease, b"x" * 11), 413, "file_too_large")
        assert JobRequest.objects.get(pk=job.pk).output_file is None
