"""Fixtures shared by every layer, and the rule for tests that need a real service.

A test that needs PostgreSQL (or Redis, a node, …) is marked `services` and asks for it through
`require_postgres` (or calls `service_unavailable`). On the embedded default it skips with the
reason; with CPX_REQUIRE_SERVICES=1 (CI's PostgreSQL pass) the skip becomes a failure, so a
service-backed test can never pass by not running.
"""

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from market.api import throttling
from market.services.accounts import api_key_create
from tests.llm import MODEL, llama_cpp_available, llama_server, write_tiny_gguf

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def services_required() -> bool:
    return os.environ.get("CPX_REQUIRE_SERVICES", "").strip().lower() in {"1", "true", "yes", "on"}


def service_unavailable(reason: str) -> None:
    """Skip for `reason`, or fail when CPX_REQUIRE_SERVICES=1 demands the service."""
    if services_required():
        pytest.fail(f"CPX_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    # Belt and braces: a `services` test skipped by any other route (a skipif, a skip inside a
    # fixture) is reported as failed when the services are required.
    report = yield
    if report.skipped and services_required() and item.get_closest_marker("services") is not None:
        report.outcome = "failed"
        report.longrepr = f"CPX_REQUIRE_SERVICES=1 but the service-backed test was skipped: {report.longrepr}"
    return report


@pytest.fixture
def require_postgres(db):
    """For tests whose threads share the database: SQLite's in-memory test database cannot."""
    if connection.vendor != "postgresql":
        service_unavailable(
            f"needs PostgreSQL (DATABASE_URL=postgres://…): threads cannot share the {connection.vendor} "
            "in-memory test database"
        )


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    # Rate-limit counters live in the cache; one test's requests must not throttle the next.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def now():
    return NOW


@pytest.fixture
def api_client():
    return APIClient()


def bearer_client(user, role: str | None = None) -> APIClient:
    """An APIClient authenticated by a fresh API key of `user` in `role` (its own role by default)."""
    _, raw = api_key_create(user=user, role=role or user.role, now=NOW)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def client_for():
    return bearer_client


def later(**delta) -> datetime:
    return NOW + timedelta(**delta)


def assert_error(response, status: int, code: str) -> dict:
    """The one error body: exactly code, message and extra, with the expected status and code."""
    body = response.json()
    assert response.status_code == status, body
    assert set(body) == {"code", "message", "extra"}, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["extra"], dict)
    return body


def run_together(count: int, work) -> list:
    """Run `work(i)` in `count` threads released at once; returns results (or exceptions) by index."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def target(i):
        try:
            barrier.wait(timeout=10)
            results[i] = work(i)
        except Exception as error:  # noqa: BLE001 - reported to the test, not swallowed
            results[i] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.fixture
def shared_db(transactional_db):
    """The live-market harnesses' database access (tests/live.SharedDatabase): a committed database
    that every thread of the test may use, taking turns on SQLite's in-memory one."""
    from tests.live import SharedDatabase

    db = SharedDatabase()
    if db.shared:
        db.connection.inc_thread_sharing()
    yield db
    if db.shared:
        db.connection.dec_thread_sharing()


@pytest.fixture
def file_storage(settings, tmp_path):
    """Files (issue 10) go to a temporary directory of this test, through the default storage."""
    location = tmp_path / "files"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": location},
        },
    }
    return location


# --- a real LLM inference server (issue 10): llama-cpp-python's server on tiny models the tests write


def _llm_server(tmp_path_factory, *, seed: int, name: str):
    if not llama_cpp_available():
        service_unavailable("needs llama-cpp-python[server] and gguf (pip install -r requirements-llm.txt)")
    folder = tmp_path_factory.mktemp(name)
    model = write_tiny_gguf(folder / "tiny.gguf", seed=seed)
    return llama_server(model, alias=MODEL, log=folder / "server.log")


@pytest.fixture(scope="session")
def llm_url(tmp_path_factory):
    """The provider's server: the tiny model (seed 1) served as tests.batches.MODEL."""
    with _llm_server(tmp_path_factory, seed=1, name="llm") as url:
        yield url


@pytest.fixture(scope="session")
def llm_url_verifier(tmp_path_factory):
    """Another provider's server with the same weights (seed 1): an honest verifier."""
    with _llm_server(tmp_path_factory, seed=1, name="llm-verifier") as url:
        yield url


@pytest.fixture(scope="session")
def llm_url_other_model(tmp_path_factory):
    """A server answering under the same name with other weights (seed 2): a cheaper model."""
    with _llm_server(tmp_path_factory, seed=2, name="llm-other") as url:
        yield url


@pytest.fixture
def three_per_minute(settings, monkeypatch):
    """API keys limited to 3 requests a minute, with the throttle's clock held mid-minute: the counters
    are fixed windows, so a test straddling a minute's end would see its count start again at 0."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "3/min"}}
    # DRF's setting_changed handler reloads api_settings, but SimpleRateThrottle copied the rates
    # into a class attribute when it was imported: point that copy at the new rate too.
    monkeypatch.setattr(throttling.ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "3/min"})
    monkeypatch.setattr(
        throttling, "time", SimpleNamespace(time=lambda: 1_800_000_030.0, monotonic=time.monotonic)
    )
