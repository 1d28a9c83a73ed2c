"""Harness of the browser tests: Debian's Chromium driven by Playwright against a live, moving market.

- Chromium is /usr/bin/chromium (`apt-get install -y chromium`; .ci/run installs it), launched with
  the flags Debian's Chromium needs here (no sandbox as root, no background networking) through
  pytest-playwright's `browser_type_launch_args`; never `playwright install`. Without it these tests
  skip — and fail under CPX_REQUIRE_SERVICES=1.
- The market (`live_market`) is the embedded default, the way tests/workers does it: the demo's
  threaded WSGI server on a free port, the in-process Celery worker AND beat (a round every second,
  sweeps and prices every few), and real agent loops with the simulate backend in threads.
- On SQLite's in-memory test database every thread shares the test's one connection, so each HTTP
  request, each task and each read of the test takes one lock in turn (`SharedDatabase`); on
  PostgreSQL nothing is serialised. A simulated agent's long-poll waits outside the server (see
  `PoliteClient`) so it never holds that lock while it sleeps.
- Playwright's sync API runs an event loop in the test thread: DJANGO_ALLOW_ASYNC_UNSAFE lets the
  test use the ORM beside it.
"""

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from celery import Celery
from celery.signals import task_postrun, task_prerun
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application
from django.utils import timezone

from config.celery import app as cpx_app
from market.models import Provider, User
from market.services.accounts import api_key_create
from tests.conftest import service_unavailable
from tests.live import SharedDatabase, wait_for
from workers.agent.backends import SimulateBackend
from workers.agent.client import AgentClient
from workers.agent.runner import Agent
from workers.embedded import EmbeddedCelery

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "browser-test-passphrase-7"
TIMEOUT_S = 60


@pytest.fixture(scope="session", autouse=True)
def _chromium_installed():
    if not Path(CHROMIUM).exists():
        service_unavailable(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS, "headless": True}


@pytest.fixture
def page(page, live_market):
    """pytest-playwright's page on the live market, with every console error collected: a page that
    breaks its Content-Security-Policy or loses a script says so in `page.problems`. The browser
    context closes before the market stops, so no poll or keep-alive connection outlives the server."""
    page.problems = []
    page.on("console", lambda message: message.type == "error" and page.problems.append(message.text))
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.set_default_timeout(TIMEOUT_S * 1000)
    yield page
    page.context.close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 — the stdlib's signature
        pass


class PoliteClient(AgentClient):
    """Long-polls by asking without waiting and sleeping here: on the shared SQLite connection a
    request that sleeps in the server would hold everyone's turn."""

    def poll(self, wait: float = 0.0):
        offers = super().poll(wait=0)
        if not offers and wait:
            time.sleep(wait)
        return offers


@dataclass
class LiveMarket:
    url: str
    db: SharedDatabase
    agents: list = field(default_factory=list)

    def start_agent(self, provider: Provider, *, speedup: float = 3600.0, backend=None) -> Agent:
        """The real agent loop (simulate backend, or `backend`) for `provider`, in a thread, with a
        fresh key."""
        with self.db.turn():
            _, raw = api_key_create(
                user=provider.user, role="provider", now=timezone.now(), name="browser test"
            )
        client = PoliteClient(self.url, raw, retries=3, backoff_s=0.05)
        backend = backend or SimulateBackend(speedup=speedup, tick_s=0.05)
        agent = Agent(client, backend, poll_wait_s=0.3, heartbeat_s=0.5)
        thread = threading.Thread(target=agent.run, name=f"browser-agent-{provider.pk}", daemon=True)
        thread.start()
        self.agents.append((agent, thread))
        wait_for(
            lambda: self.db.read(lambda: Provider.objects.get(pk=provider.pk).last_heartbeat_at),
            timeout_s=TIMEOUT_S,
            what="the agent's first heartbeat",
        )
        return agent


def user_with_password(factory, **fields) -> User:
    user = factory(**fields)
    user.set_password(PASSWORD)
    user.save(update_fields=["password"])
    return user


def log_in(page, market: LiveMarket, user: User) -> None:
    page.goto(f"{market.url}/accounts/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


@pytest.fixture
def live_market(shared_db, settings):
    """Web server + in-process worker and beat on the in-memory broker; agents started on demand."""
    # Agents simulate at 3600× real time: the server bounds a simulated lease's metering by this.
    settings.CPX_SIMULATION_SPEEDUP = 3600
    override = {"default": shared_db.connection} if shared_db.shared else None
    server = ThreadedWSGIServer(
        ("127.0.0.1", 0), _QuietHandler, allow_reuse_address=True, connections_override=override
    )
    server.set_app(shared_db.wsgi(StaticFilesHandler(get_wsgi_application())))
    web = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    web.start()

    app = Celery("cpx-browser-test")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(
        broker_url="memory://",
        result_backend="cache+memory://",
        broker_transport_options={"polling_interval": 0.05},
        task_default_queue=f"browser-{uuid.uuid4().hex[:8]}",
        beat_schedule={
            "clear-round": {
                "task": "auctions.open_and_clear_round",
                "schedule": 1.0,
                "options": {"expires": 1.0},
            },
            "sweep-leases": {"task": "auctions.sweep_leases", "schedule": 2.0, "options": {"expires": 2.0}},
            "update-prices": {"task": "auctions.update_prices", "schedule": 3.0, "options": {"expires": 3.0}},
        },
    )
    app.autodiscover_tasks(["workers"], force=True)

    def take_turn(**_):
        if shared_db.shared:
            shared_db.lock.acquire()

    def give_turn(**_):
        if shared_db.shared:
            shared_db.lock.release()

    task_prerun.connect(take_turn, weak=False)
    task_postrun.connect(give_turn, weak=False)
    worker = EmbeddedCelery(app, beat=True, on_thread_start=shared_db.adopt).start()
    host, port = server.server_address[:2]
    market = LiveMarket(url=f"http://{host}:{port}", db=shared_db)
    try:
        yield market
    finally:
        for agent, thread in market.agents:
            agent.stop(timeout_s=10)
            thread.join(10)
        worker.stop(timeout=30)
        task_prerun.disconnect(take_turn)
        task_postrun.disconnect(give_turn)
        cpx_app.set_current()
        cpx_app.set_default()
        server.shutdown()
        server.server_close()
        web.join(10)
