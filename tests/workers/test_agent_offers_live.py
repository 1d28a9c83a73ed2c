"""The async offer channel on a real server: gunicorn with uvicorn workers serving config.asgi, on
the test database, with offers pushed through Redis pub/sub from another process (this test's, which
clears the round as a Celery worker would). Skipped without PostgreSQL and Redis; a failure when
required."""

import threading
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
import redis
import requests
from django.db import connection
from django.utils import timezone

from auctions.models import Lease
from auctions.services.offers import offer_redis_url
from market.models import JobRequest
from tests.conftest import service_unavailable
from tests.integration.test_rounds import bid, cleared_round, funded_consumer, online_resource
from tests.live import wait_for
from tests.workers.conftest import provider_key
from tests.workers.gunicorn import Gunicorn

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def channel(settings):
    if connection.vendor != "postgresql":
        service_unavailable("needs PostgreSQL (DATABASE_URL=postgres://…): gunicorn is a process of its own")
    url = offer_redis_url()
    if not url:
        service_unavailable("needs Redis (REDIS_URL=redis://…): offers cross processes through its pub/sub")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        service_unavailable(f"Redis at {url} is not reachable: {error}")
    # A channel of this run's own: other test runs on the same Redis hear nothing of it.
    settings.CPX_AGENT_OFFER_CHANNEL = f"cpx-test-offers-{uuid.uuid4().hex[:12]}"
    return url, settings.CPX_AGENT_OFFER_CHANNEL


@pytest.fixture
def asgi_server(channel, tmp_path):
    url, name = channel
    server = Gunicorn(
        tmp_path,
        workers=2,
        threads=4,
        app="config.asgi:application",
        worker_class="uvicorn.workers.UvicornWorker",
        REDIS_URL=url,
        CPX_AGENT_OFFER_CHANNEL=name,
    )
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def test_an_offer_reaches_the_waiting_agent_through_redis_and_the_sync_api_runs_it(asgi_server, channel):
    url, name = channel
    resource = online_resource(price_floor=Decimal("0"))
    headers = {"Authorization": f"Bearer {provider_key(resource.provider)}"}
    job = bid(funded_consumer(), "5")
    answers = []

    def wait_for_offer():
        answers.append(
            requests.get(
                f"{asgi_server.url}/api/v1/agent/offers", params={"wait": 30}, headers=headers, timeout=40
            )
        )

    agent = threading.Thread(target=wait_for_offer, daemon=True)
    agent.start()
    # The worker holding the wait subscribes when its first wait arrives; registered before that.
    subscribers = redis.Redis.from_url(url)
    wait_for(lambda: dict(subscribers.pubsub_numsub(name)).get(name.encode(), 0) >= 1, timeout_s=20)
    assert agent.is_alive() and not answers, answers and (answers[0].status_code, answers[0].text[:500])

    round_obj = cleared_round()  # commits here; the notification leaves this process through Redis

    # The wait (30 s) outlasts this bound (20 s): only the pushed notification answers in time.
    agent.join(20)
    assert not agent.is_alive(), "no offer within 20 s of the commit"
    assert round_obj.jobs_matched == 1
    [offer] = answers[0].json()
    assert answers[0].status_code == 200 and offer["job"]["id"] == job.pk

    # The server's clock is the real one: the job is due tomorrow by it.
    JobRequest.objects.filter(pk=job.pk).update(deadline=timezone.now() + timedelta(days=1))
    # The sync API of the same server (config.asgi's WSGI side) takes the lease from there.
    accepted = requests.post(
        f"{asgi_server.url}/api/v1/agent/leases/{offer['id']}/accept",
        json={"simulated": True},
        headers=headers,
    )
    assert accepted.status_code == 200, accepted.text
    assert Lease.objects.get(pk=offer["id"]).status == Lease.Status.RUNNING


def test_a_server_refuses_a_wait_without_a_key(asgi_server):
    response = requests.get(f"{asgi_server.url}/api/v1/agent/offers", params={"wait": 5}, timeout=10)

    assert response.status_code == 401 and response.json()["code"] == "not_authenticated"
