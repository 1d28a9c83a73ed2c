"""The jobs API: submit (idempotent), list, detail, cancel; every refusal in the one error shape."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from market.models import JobRequest, LedgerAccount, LedgerTransfer, Role
from market.services.accounts import api_key_create
from market.services.jobs import job_request_transition
from tests.conftest import NOW, assert_error, bearer_client, run_together
from tests.factories import ConsumerFactory, OperatorFactory, job_body, job_submit

pytestmark = pytest.mark.django_db

JOBS = "/api/v1/jobs"


def post_raw(client, body: str, **headers):
    return client.generic("POST", JOBS, body, content_type="application/json", **headers)


def jobs_of(consumer):
    return JobRequest.objects.filter(consumer=consumer)


@pytest.fixture
def consumer():
    return ConsumerFactory(balance=Decimal("1000"))


@pytest.fixture
def client(consumer):
    return bearer_client(consumer)


class TestJobSubmit:
    def test_sizes_holds_and_queues_a_job(self, client, consumer):
        response = client.post(JOBS, job_body(budget="25.5"), format="json")

        assert response.status_code == 201, response.json()
        body = response.json()
        job = JobRequest.objects.get(pk=body["id"], consumer=consumer)
        assert body["status"] == job.status == "QUEUED"
        assert body["budget"] == "25.500000"
        assert body["device_count"] == job.device_count >= 1
        assert body["sizing"]["weights_gb"] == pytest.approx(3.5)
        assert LedgerAccount.objects.get(job=job).balance == Decimal("25.5")

    def test_replays_the_same_job_for_a_retried_idempotency_key(self, client, consumer):
        body = job_body()
        first = client.post(JOBS, body, format="json", HTTP_IDEMPOTENCY_KEY="order-1")

        again = client.post(JOBS, body, format="json", HTTP_IDEMPOTENCY_KEY="order-1")

        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        assert jobs_of(consumer).count() == 1
        assert LedgerTransfer.objects.filter(job_id=first.json()["id"], kind="HOLD").count() == 1

    def test_refuses_a_reused_idempotency_key_with_another_spec(self, client, consumer):
        client.post(JOBS, job_body(), format="json", HTTP_IDEMPOTENCY_KEY="order-1")

        response = client.post(JOBS, job_body(budget="11"), format="json", HTTP_IDEMPOTENCY_KEY="order-1")

        assert_error(response, 409, "idempotency_key_reused")
        assert jobs_of(consumer).count() == 1

    def test_refuses_an_unfunded_job_and_writes_nothing(self):
        poor = ConsumerFactory(balance=Decimal("5"))

        response = bearer_client(poor).post(JOBS, job_body(budget="10"), format="json")

        assert_error(response, 409, "insufficient_funds")
        assert not jobs_of(poor).exists()
        assert not LedgerAccount.objects.filter(job__consumer=poor).exists()

    @pytest.mark.parametrize(
        "raw",
        [
            '{"kind": "INFERENCE",',
            "not json",
            '{"budget": NaN}',
            '{"budget": Infinity}',
            '{"budget": -Infinity}',
            '{"context_length": NaN, "kind": "INFERENCE"}',
        ],
        ids=["truncated", "not-json", "nan", "infinity", "minus-infinity", "nan-int-field"],
    )
    def test_refuses_malformed_json(self, client, consumer, raw):
        response = post_raw(client, raw)

        assert_error(response, 400, "malformed_request")
        assert not jobs_of(consumer).exists()

    def test_refuses_nan_written_into_an_otherwise_valid_body(self, client, consumer):
        raw = json.dumps(job_body(budget=0.5)).replace("0.5", "NaN")

        response = post_raw(client, raw)

        assert_error(response, 400, "malformed_request")
        assert not jobs_of(consumer).exists()

    def test_refuses_a_body_that_is_not_json(self, client, consumer):
        response = client.generic("POST", JOBS, "kind=INFERENCE", content_type="text/plain")

        assert_error(response, 415, "unsupported_media_type")
        assert not jobs_of(consumer).exists()

    @pytest.mark.parametrize("raw", ["[]", '"a job"', "42", "null"])
    def test_refuses_json_that_is_not_an_object(self, client, consumer, raw):
        response = post_raw(client, raw)

        assert_error(response, 400, "invalid")
        assert not jobs_of(consumer).exists()

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            # wrong types
            ("budget", [1]),
            ("budget", {"amount": 1}),
            ("budget", True),
            ("context_length", "long"),
            ("context_length", 1.5),
            ("batch_size", True),
            ("quant_bits", "sixteen"),
            ("deadline", 12345),
            ("deadline", "tomorrow"),
            ("kind", 1),
            ("model_name", None),
            ("region", {"name": "eu"}),
            ("params_billion", "seven"),
            # negative and zero
            ("budget", "-1"),
            ("budget", -1),
            ("budget", "0"),
            ("max_price_per_device_hour", "-0.5"),
            ("context_length", -1),
            ("batch_size", -3),
            ("workload_tokens", -1),
            ("params_billion", "-7"),
            ("latency_sla_ms", -5),
            ("requested_device_count", 0),
            # huge
            ("budget", 1e30),
            ("budget", "1e30"),
            ("budget", 10**40),
            ("budget", "1000000.000001"),
            ("max_price_per_device_hour", 10**40),
            ("context_length", 10**40),
            ("batch_size", 10**40),
            ("workload_tokens", 10**40),
            ("params_billion", 1e300),
            ("requested_device_count", 10**40),
            ("requested_memory_per_device_gib", 10**40),
            ("latency_sla_ms", 10**40),
            ("budget", "0.0000001"),
            # NaN and Infinity as strings
            ("budget", "NaN"),
            ("budget", "Infinity"),
            ("budget", "-Infinity"),
            ("params_billion", "nan"),
            ("requested_memory_per_device_gib", "Infinity"),
            # unknown enum values
            ("kind", "QUANTUM"),
            ("kind", "inference"),
            ("quant_bits", 7),
            ("device_class", "QPU"),
            # over-long strings
            ("model_name", "m" * 101),
            ("model_name", "m" * 100_000),
            ("region", "r" * 33),
            # rules across fields
            ("deadline", "2000-01-01T00:00:00Z"),
            ("workload_tokens", None),
            ("workload_tokens", 0),
        ],
        ids=lambda v: repr(v)[:40],
    )
    def test_refuses_an_invalid_field_and_writes_nothing(self, client, consumer, field, value):
        body = {**job_body(), field: value}

        response = client.post(JOBS, body, format="json")

        error = assert_error(response, 400, "invalid")
        assert error["extra"].get("field") or error["extra"].get("fields")
        assert not jobs_of(consumer).exists()

    def test_refuses_a_job_no_device_could_hold(self, client, consumer):
        body = job_body(
            kind="TRAINING",
            workload_tokens=None,
            workload_device_hours="1",
            params_billion="100000",
            context_length=10_000_000,
            batch_size=100_000,
        )

        response = client.post(JOBS, body, format="json")

        error = assert_error(response, 400, "invalid")
        assert error["extra"]["field"] == "sizing"
        assert not jobs_of(consumer).exists()

    @pytest.mark.parametrize("extra", [{"budgett": "10"}, {"status": "COMPLETED"}, {"consumer": 1}])
    def test_refuses_unknown_fields(self, client, consumer, extra):
        response = client.post(JOBS, {**job_body(), **extra}, format="json")

        error = assert_error(response, 400, "invalid")
        assert set(extra) <= set(error["extra"]["fields"])
        assert not jobs_of(consumer).exists()

    @pytest.mark.parametrize("key", ["k" * 129, "", "ключ", "caf\u00e9", "tab\there", "new\nline"], ids=repr)
    def test_refuses_a_bad_idempotency_key(self, client, consumer, key):
        response = client.post(JOBS, job_body(), format="json", HTTP_IDEMPOTENCY_KEY=key)

        error = assert_error(response, 400, "invalid")
        assert error["extra"]["field"] == "Idempotency-Key"
        assert not jobs_of(consumer).exists()

    def test_accepts_a_128_character_idempotency_key(self, client, consumer):
        response = client.post(JOBS, job_body(), format="json", HTTP_IDEMPOTENCY_KEY="k" * 128)

        assert response.status_code == 201
        assert jobs_of(consumer).get().idempotency_key == "k" * 128


class TestJobList:
    def test_lists_only_the_callers_jobs_newest_first(self, client, consumer):
        mine = [job_submit(consumer=consumer, now=NOW + timedelta(minutes=i)) for i in range(3)]
        job_submit(consumer=ConsumerFactory(balance=Decimal("100")))

        response = client.get(JOBS)

        assert response.status_code == 200
        assert [row["id"] for row in response.json()["results"]] == [j.pk for j in reversed(mine)]
        assert response.json()["count"] == 3

    def test_filters_by_status_and_paginates(self, client, consumer):
        jobs = [job_submit(consumer=consumer, now=NOW + timedelta(minutes=i)) for i in range(4)]
        job_request_transition(job=jobs[0], from_statuses=("QUEUED",), to="MATCHED", now=NOW)

        queued = client.get(JOBS, {"status": "QUEUED", "limit": 2, "offset": 1})

        assert queued.json()["count"] == 3
        assert [row["id"] for row in queued.json()["results"]] == [jobs[2].pk, jobs[1].pk]

    @pytest.mark.parametrize(
        "query", [{"status": "DONE"}, {"kind": "QUANTUM"}, {"created_after": "yesterday"}], ids=str
    )
    def test_refuses_an_unknown_filter_value(self, client, query):
        response = client.get(JOBS, query)

        assert_error(response, 400, "invalid")

    def test_costs_the_same_few_queries_for_5_or_30_jobs(
        self, client, consumer, django_assert_max_num_queries
    ):
        for _ in range(5):
            job_submit(consumer=consumer)
        with CaptureQueriesContext(connection) as five:
            client.get(JOBS)
        for _ in range(25):
            job_submit(consumer=consumer)

        with django_assert_max_num_queries(4):
            response = client.get(JOBS)

        assert len(response.json()["results"]) == 30
        with CaptureQueriesContext(connection) as thirty:
            client.get(JOBS)
        assert len(thirty) == len(five)


class TestJobDetail:
    def test_shows_the_callers_job(self, client, consumer):
        job = job_submit(consumer=consumer)

        response = client.get(f"{JOBS}/{job.pk}")

        assert response.status_code == 200
        assert response.json()["id"] == job.pk

    def test_answers_not_found_for_another_consumers_job(self, client):
        other = job_submit(consumer=ConsumerFactory(balance=Decimal("100")))

        response = client.get(f"{JOBS}/{other.pk}")

        assert_error(response, 404, "not_found")

    def test_answers_not_found_for_a_missing_job(self, client):
        response = client.get(f"{JOBS}/999999999")

        assert_error(response, 404, "not_found")

    def test_answers_not_found_for_an_id_too_big_for_the_database(self, client):
        response = client.get(f"{JOBS}/{10**40}")

        assert_error(response, 404, "not_found")


class TestJobCancel:
    def test_cancels_and_releases_the_escrow(self, client, consumer):
        job = job_submit(consumer=consumer, budget=Decimal("40"))

        response = client.post(f"{JOBS}/{job.pk}/cancel")

        assert response.status_code == 200
        assert response.json()["status"] == "CANCELLED"
        assert LedgerAccount.objects.get(job=job).balance == 0
        assert client.get("/api/v1/balance").json()["available"] == "1000.000000"

    def test_refuses_after_dispatch(self, client, consumer):
        job = job_submit(consumer=consumer)
        job_request_transition(job=job, from_statuses=("QUEUED",), to="DISPATCHED", now=NOW)

        response = client.post(f"{JOBS}/{job.pk}/cancel")

        error = assert_error(response, 409, "conflict")
        assert error["extra"]["status"] == "DISPATCHED"
        assert LedgerAccount.objects.get(job=job).balance == Decimal("10")

    def test_answers_not_found_for_another_consumers_job(self, client):
        owner = ConsumerFactory(balance=Decimal("100"))
        other = job_submit(consumer=owner)

        response = client.post(f"{JOBS}/{other.pk}/cancel")

        assert_error(response, 404, "not_found")
        other.refresh_from_db()
        assert other.status == "QUEUED"

    def test_refuses_get(self, client, consumer):
        job = job_submit(consumer=consumer)

        response = client.get(f"{JOBS}/{job.pk}/cancel")

        assert_error(response, 405, "method_not_allowed")


class TestOperatorJobList:
    def test_lists_every_consumers_jobs(self):
        jobs = [job_submit(consumer=ConsumerFactory(balance=Decimal("100"))) for _ in range(2)]
        client = bearer_client(OperatorFactory())

        response = client.get("/api/v1/operator/jobs", {"limit": 500})

        ids = {row["id"] for row in response.json()["results"]}
        assert response.status_code == 200
        assert {j.pk for j in jobs} <= ids

    def test_costs_the_same_few_queries_for_5_or_30_jobs(self, django_assert_max_num_queries):
        client = bearer_client(OperatorFactory())
        consumer = ConsumerFactory(balance=Decimal("1000"))
        for _ in range(5):
            job_submit(consumer=consumer)
        with CaptureQueriesContext(connection) as five:
            client.get("/api/v1/operator/jobs")
        for _ in range(25):
            job_submit(consumer=consumer)

        with django_assert_max_num_queries(4):  # key, count, page (with `spent`), leases
            response = client.get("/api/v1/operator/jobs")

        assert len(response.json()["results"]) == 30
        with CaptureQueriesContext(connection) as thirty:
            client.get("/api/v1/operator/jobs")
        assert len(thirty) == len(five)

    def test_says_whose_job_each_is(self):
        client = bearer_client(OperatorFactory())
        consumer = ConsumerFactory(balance=Decimal("1000"), username="acme")
        job = job_submit(consumer=consumer)

        response = client.get("/api/v1/operator/jobs")

        row = next(row for row in response.json()["results"] if row["id"] == job.pk)
        assert row["consumer"] == "acme"


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
class TestConcurrentSubmission:
    def test_one_idempotency_key_sent_at_once_from_many_clients_makes_one_job(self, require_postgres):
        consumer = ConsumerFactory(balance=Decimal("1000"))
        _, raw = api_key_create(user=consumer, role=Role.CONSUMER, now=timezone.now())
        body = job_body(budget="50")
        count = 8

        def submit(i):
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
            return client.post(JOBS, body, format="json", HTTP_IDEMPOTENCY_KEY="same-order")

        responses = run_together(count, submit)

        statuses = sorted(getattr(r, "status_code", r) for r in responses)
        assert statuses == [200] * (count - 1) + [201]
        assert len({r.json()["id"] for r in responses}) == 1
        job = jobs_of(consumer).get()
        assert LedgerTransfer.objects.filter(job=job, kind="HOLD").count() == 1
        assert LedgerAccount.objects.get(user=consumer, kind="CONSUMER").balance == Decimal("950")
