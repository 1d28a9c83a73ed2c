"""The rate limiter without its shared cache (issue 9): with Redis unreachable the API keeps answering
and keeps limiting, counting in each process, and says so in the log; when Redis is back the counters
are shared again."""

import logging

import pytest
import redis

from market.api import throttling
from tests.conftest import assert_error, bearer_client
from tests.factories import ConsumerFactory
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.django_db


def redis_cache(url: str) -> dict:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }


@pytest.fixture
def fresh_counters(monkeypatch):
    counters = throttling.CounterCaches()
    monkeypatch.setattr(throttling, "counter_caches", counters)
    return counters


class TestWithRedisDown:
    def test_the_api_answers_and_still_limits_each_key_in_this_process(
        self, settings, three_per_minute, fresh_counters, caplog
    ):
        settings.CACHES = redis_cache(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
        client = bearer_client(ConsumerFactory())

        with caplog.at_level(logging.WARNING, logger="market.api.throttling"):
            statuses = [client.get("/api/v1/me").status_code for _ in range(3)]
            response = client.get("/api/v1/me")

        assert statuses == [200, 200, 200]
        assert_error(response, 429, "rate_limited")
        warnings = [r for r in caplog.records if "shared cache is unreachable" in r.getMessage()]
        assert len(warnings) == 1  # once per outage, not once per request
        assert fresh_counters.outages == 1


@pytest.mark.services
class TestARedisRestart:
    def test_counts_locally_while_it_is_down_and_shared_again_once_it_is_back(
        self, settings, three_per_minute, fresh_counters, monkeypatch, caplog
    ):
        server = RedisServer().start()
        try:
            settings.CACHES = redis_cache(server.url(0))
            monkeypatch.setattr(throttling, "SHARED_CACHE_RETRY_S", 0.0)
            consumer = ConsumerFactory()
            first = bearer_client(consumer).get("/api/v1/me")
            server.kill()

            with caplog.at_level(logging.INFO, logger="market.api.throttling"):
                during = bearer_client(consumer).get("/api/v1/me")
                server.start()
                after = bearer_client(consumer).get("/api/v1/me")
            shared = redis.Redis.from_url(server.url(0))
            keys = [k.decode() for k in shared.scan_iter("*throttle_api_key*")]
            shared.close()
        finally:
            server.kill()

        assert (first.status_code, during.status_code, after.status_code) == (200, 200, 200)
        messages = [r.getMessage() for r in caplog.records]
        assert any("unreachable" in m for m in messages) and any("answers again" in m for m in messages)
        assert len(keys) == 1  # the request after the restart counted in Redis again
