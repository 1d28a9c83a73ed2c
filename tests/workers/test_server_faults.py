"""Faults only a real server shows (issue 9): a request that kills a gunicorn worker process, and long
requests that hold every thread of the pool. Skipped without PostgreSQL; a failure when required."""

import threading
import uuid
from decimal import Decimal

import pytest
import requests
from django.db import connection

from tests.conftest import run_together, service_unavailable
from tests.factories import ConsumerFactory, ProviderFactory, job_body
from tests.live import wait_for
from tests.workers.conftest import consumer_key, provider_key
from tests.workers.gunicorn import Gunicorn

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

NESTED = '{"leases":' + "[" * 100_000 + "]" * 100_000 + "}"


@pytest.fixture
def start_gunicorn(transactional_db, tmp_path):
    if connection.vendor != "postgresql":
        service_unavailable("needs PostgreSQL (DATABASE_URL=postgres://…): gunicorn is a process of its own")
    servers = []

    def start(**env) -> Gunicorn:
        servers.append(Gunicorn(tmp_path, workers=1, threads=4, **env))
        return servers[-1].wait_ready()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def gunicorn(start_gunicorn):
    return start_gunicorn()


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


class TestLongPolls:
    def test_beyond_the_caps_answer_at_once_and_the_rest_of_the_api_keeps_its_threads(self, start_gunicorn):
        # One worker with 4 threads, default caps (1 held poll per key, 2 per process).
        server = start_gunicorn(CPX_AGENT_LONG_POLL_S=15)
        one_key = provider_key(ProviderFactory())
        two_more = [provider_key(ProviderFactory()) for _ in range(2)]
        consumer = {"Authorization": f"Bearer {consumer_key(ConsumerFactory())}"}
        answers: dict[int, requests.Response | Exception] = {}

        def poll(i: int, key: str):
            try:
                answers[i] = requests.get(
                    f"{server.url}/api/v1/agent/leases",
                    params={"wait": 20},
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=60,
                )
            except requests.RequestException as error:
                answers[i] = error

        keys = [one_key] * 8 + two_more
        threads = [threading.Thread(target=poll, args=(i, key)) for i, key in enumerate(keys)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(answers) >= 8, timeout_s=30, what=lambda: f"8 polls refused at once: {answers}")
        me = [requests.get(f"{server.url}/api/v1/me", headers=consumer, timeout=10) for _ in range(3)]
        still_held = 10 - len(answers)
        for thread in threads:
            thread.join(60)

        refused = [a for a in answers.values() if a.status_code == 429]
        held = [a for a in answers.values() if a.status_code == 200]
        assert [r.status_code for r in me] == [200, 200, 200]
        assert still_held == 2  # /me was answered while both held polls were still waiting
        assert (len(refused), len(held)) == (8, 2), answers
        assert all(r.headers["Retry-After"] == "1" and r.json()["code"] == "rate_limited" for r in refused)
        assert all(h.json() == [] for h in held)
        assert "500" not in server.statuses()
