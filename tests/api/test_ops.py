"""The operator's endpoints: /healthz, /readyz, /metrics; request ids and JSON log lines; static files."""

import json
import logging
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from celery import shared_task
from django.test import Client
from django.utils import timezone

from auctions.models import Round
from contracts.models import ChainDeployment, ReconciliationIssue, SettlementBatch
from market.models import Provider
from ops.logs import ContextFilter, JsonFormatter
from tests.factories import ConsumerFactory, ResourceFactory, job_submit

pytestmark = pytest.mark.django_db

CLOSED_PORT = "redis://127.0.0.1:1/0"


def cleared_round(*, age_s: float, **fields) -> Round:
    cleared_at = timezone.now() - timedelta(seconds=age_s)
    return Round.objects.create(
        status=Round.Status.CLEARED, active_slot=None, opened_at=cleared_at, cleared_at=cleared_at, **fields
    )


class TestHealthz:
    def test_answers_ok_without_touching_anything(self, django_assert_num_queries):
        with django_assert_num_queries(0):
            response = Client().get("/healthz")

        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


class TestReadyz:
    def test_is_ready_when_every_component_is_up_and_a_round_cleared_recently(self):
        cleared_round(age_s=3)

        response = Client().get("/readyz")

        body = response.json()
        assert response.status_code == 200, body
        assert body["status"] == "ready"
        assert set(body["components"]) == {"database", "redis", "broker", "rounds"}
        assert body["components"]["database"]["status"] == "up"
        assert body["components"]["rounds"]["status"] == "up"
        assert body["components"]["rounds"]["age_s"] < 60

    def test_is_not_ready_before_any_round_has_cleared(self):
        response = Client().get("/readyz")

        assert response.status_code == 503
        assert response.json()["components"]["rounds"]["status"] == "down"

    def test_is_not_ready_when_the_last_round_is_older_than_the_limit(self, settings):
        settings.CPX_READY_ROUND_MAX_AGE_S = 60
        cleared_round(age_s=61)

        response = Client().get("/readyz")

        assert response.status_code == 503
        rounds = response.json()["components"]["rounds"]
        assert rounds["status"] == "down" and rounds["max_age_s"] == 60

    def test_is_not_ready_when_redis_is_down(self, settings):
        settings.REDIS_URL = CLOSED_PORT
        cleared_round(age_s=1)

        response = Client().get("/readyz")

        body = response.json()
        assert response.status_code == 503
        assert body["components"]["redis"]["status"] == "down"
        assert "ConnectionError" in body["components"]["redis"]["error"]
        assert body["components"]["database"]["status"] == "up"

    def test_is_not_ready_when_the_broker_is_down(self, settings):
        settings.CELERY_BROKER_URL = CLOSED_PORT
        cleared_round(age_s=1)

        response = Client().get("/readyz")

        assert response.status_code == 503
        assert response.json()["components"]["broker"]["status"] == "down"


def sample(text: str, name: str, **labels) -> float | None:
    """The value of one sample of the exposition `text` (labels in any order), or None when absent."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, label_text = key.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if metric == name and found == {k: str(v) for k, v in labels.items()}:
            return float(value)
    return None


class TestMetrics:
    def test_exposes_the_market_state_read_from_the_database(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job_submit(consumer=consumer, now=timezone.now(), deadline=timezone.now() + timedelta(days=1))
        resource = ResourceFactory(device_count=3)
        Provider.objects.filter(pk=resource.provider_id).update(last_heartbeat_at=timezone.now())
        cleared_round(
            age_s=2, timings_ms={"snapshot": 150.0, "clear": 1720.0, "write": 170.0}, jobs_matched=7
        )
        deployment = ChainDeployment.objects.create(
            network="rpc:1", address="0x" + "1" * 40, created_at=timezone.now()
        )
        batch = SettlementBatch.objects.create(
            deployment=deployment,
            batch_key="0x" + "a" * 64,
            merkle_root="0x" + "b" * 64,
            leaves=[],
            leaf_count=1,
            lease_count=1,
            total_wei=1,
            total=Decimal("0"),
            status=SettlementBatch.Status.FAILED,
            created_at=timezone.now(),
        )
        ReconciliationIssue.objects.create(
            deployment=deployment,
            kind=ReconciliationIssue.Kind.ROOT_MISMATCH,
            key="k",
            batch=batch,
            detail="d",
            first_seen_at=timezone.now(),
            last_seen_at=timezone.now(),
        )
        Client().get("/api/v1/jobs")  # one observed request

        response = Client().get("/metrics")

        text = response.content.decode()
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain; version=")
        assert sample(text, "cpx_backlog_jobs", status="QUEUED") == 1
        assert sample(text, "cpx_book_depth", side="bid", device_class="GPU") == 1
        assert sample(text, "cpx_book_depth", side="ask", device_class="GPU") == 3
        assert sample(text, "cpx_agents_connected") == 1
        assert sample(text, "cpx_round_last_phase_seconds", phase="clear") == pytest.approx(1.72)
        assert sample(text, "cpx_round_last_jobs", kind="matched") == 7
        assert 0 < sample(text, "cpx_round_last_cleared_age_seconds") < 60
        assert sample(text, "cpx_settlement_batches_failed") == 1
        assert sample(text, "cpx_reconciliation_issues_open", kind="ROOT_MISMATCH") == 1
        assert (
            sample(
                text,
                "cpx_http_request_duration_seconds_count",
                method="GET",
                route="api/v1/jobs",
                status="401",
            )
            >= 1
        )
        families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
        # ours are cpx_; the rest is the client library's own process and runtime collectors
        assert all(name.startswith(("cpx_", "python_", "process_")) for name in families), families

    def test_an_unknown_path_is_counted_under_one_label(self):
        Client().get("/api/v1/no-such-thing/12345")

        text = Client().get("/metrics").content.decode()

        assert "no-such-thing" not in text
        assert (
            sample(
                text, "cpx_http_request_duration_seconds_count", method="GET", route="unmatched", status="404"
            )
            >= 1
        )

    def test_demands_the_bearer_token_when_one_is_set(self, settings):
        settings.CPX_METRICS_TOKEN = "scrape-secret"

        refused = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong")
        allowed = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")

        assert refused.status_code == 401
        assert allowed.status_code == 200


class TestRequestIds:
    def test_a_request_gets_an_id_in_its_answer(self):
        response = Client().get("/healthz")

        assert len(response["X-Request-ID"]) == 32

    def test_the_proxys_id_is_kept_when_it_is_a_safe_token(self):
        response = Client().get("/healthz", HTTP_X_REQUEST_ID="edge-42.abc")

        assert response["X-Request-ID"] == "edge-42.abc"

    def test_an_unsafe_id_is_replaced(self):
        response = Client().get("/healthz", HTTP_X_REQUEST_ID="bad id\nwith newline")

        assert response["X-Request-ID"] != "bad id\nwith newline"
        assert len(response["X-Request-ID"]) == 32


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.addFilter(ContextFilter())
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture
def captured():
    handler = _Capture()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


@shared_task(name="tests.ops.log_a_line")
def log_a_line():
    logging.getLogger("tests.ops").warning("inside a task", extra={"round_id": 5})


class TestJsonLogs:
    def test_a_request_line_carries_the_request_id(self, captured, settings):
        settings.CPX_ACCESS_LOG = True

        response = Client().get("/healthz", HTTP_X_REQUEST_ID="req-1")

        lines = [json.loads(line) for line in captured.lines if '"cpx.request"' in line]
        assert response.status_code == 200
        assert lines, captured.lines
        assert lines[-1]["request_id"] == "req-1"
        assert lines[-1]["status"] == 200 and lines[-1]["path"] == "/healthz"
        assert lines[-1]["duration_ms"] >= 0

    def test_a_task_line_carries_the_task_id_and_its_extra_fields(self, captured):
        # apply() runs the task body in this process with its request (id) pushed, as a worker does.
        log_a_line.apply(task_id="task-77")

        line = json.loads(next(line for line in captured.lines if "inside a task" in line))
        assert line["task_id"] == "task-77"
        assert line["round_id"] == 5
        assert line["level"] == "WARNING" and line["logger"] == "tests.ops"


class TestStaticFiles:
    def test_css_is_served_without_debug(self, settings):
        settings.DEBUG = False

        response = Client().get("/static/css/cpx.css")

        assert response.status_code == 200
        assert b"".join(response.streaming_content if response.streaming else [response.content])
