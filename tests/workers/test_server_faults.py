"""Faults only a real server shows (issue 9): a request that kills a gunicorn worker process, and long
requests that hold every thread of the pool. Skipped without PostgreSQL; a failure when required."""

import uuid
from decimal import Decimal

import pytest
import requests
from django.db import connection

from tests.conftest import run_together, service_unavailable
from tests.factories import ConsumerFactory, job_body
from tests.workers.conftest import consumer_key
from tests.workers.gunicorn import Gunicorn

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

NESTED = '{"leases":' + "[" * 100_000 + "]" * 100_000 + "}"


@pytest.fixture
def gunicorn(transactional_db, tmp_path):
    if connection.vendor != "postgresql":
        service_unavailable("needs PostgreSQL (DATABASE_URL=postgres://…): gunicorn is a process of its own")
    server = Gunicorn(tmp_path, workers=1, threads=4)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


class TestANestedJsonBody:
    def test_is_refused_and_the_worker_lives_on_while_normal_requests_succeed(self, gunicorn):
        key = consumer_key(ConsumerFactory(balance=Decimal("100")))
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        workers_before = gunicorn.worker_pids()

        def request(i: int):
            if i % 2 == 0:
                return requests.post(
                    f"{gunicorn.url}/api/v1/jobs",
                    data=NESTED,
                    headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
                    timeout=30,
                )
            return requests.get(f"{gunicorn.url}/api/v1/me", headers=headers, timeout=30)

        answers = run_together(8, request)
        submitted = requests.post(
            f"{gunicorn.url}/api/v1/jobs",
            json=job_body(),
            headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
            timeout=30,
        )

        errors = [a for a in answers if isinstance(a, Exception)]
        assert not errors, f"{errors}\n{gunicorn.errors()[-3000:]}"
        deep = [a for i, a in enumerate(answers) if i % 2 == 0]
        normal = [a for i, a in enumerate(answers) if i % 2 == 1]
        assert [(a.status_code, a.json()["code"]) for a in deep] == [(400, "json_too_deep")] * 4
        assert [a.status_code for a in normal] == [200] * 4
        assert submitted.status_code == 201, submitted.text
        assert gunicorn.worker_pids() == workers_before, gunicorn.errors()[-3000:]
        assert "SIGSEGV" not in gunicorn.errors() and "exited with code" not in gunicorn.errors()
