"""Liveness and readiness.

`GET /healthz` answers 200 while the process can serve a request at all: it touches nothing, so a
database outage never makes an orchestrator kill healthy web processes.

`GET /readyz` checks what the exchange needs to work, each with a short timeout, and answers 200
only when every component is up (503 otherwise), with one entry per component:

- `database`: `SELECT 1` on the default connection;
- `redis`: PING on REDIS_URL (the shared cache behind the rate limits); `skipped` when unset;
- `broker`: a connection to CELERY_BROKER_URL; `in-process` for the embedded memory broker;
- `rounds`: the age of the last CLEARED round against CPX_READY_ROUND_MAX_AGE_S. The beat opens a
  round every CPX_ROUND_INTERVAL_S even on an empty book, so an old (or missing) round means the
  beat or every worker is stuck: the market is not clearing, whatever the web processes say.
"""

import time

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone

UP, DOWN, SKIPPED = "up", "down", "skipped"


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        result = check()
    except Exception as error:  # a probe reports every failure, it never raises
        result = {"status": DOWN, "error": f"{type(error).__name__}: {error}"[:300]}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"status": UP, "vendor": connection.vendor}


def check_redis() -> dict:
    url = settings.REDIS_URL
    if not url:
        return {"status": SKIPPED, "detail": "REDIS_URL is unset: rate limits live in each process"}
    import redis

    redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping()
    return {"status": UP}


def check_broker() -> dict:
    url = settings.CELERY_BROKER_URL
    if url.startswith("memory://"):
        return {"status": UP, "detail": "in-process memory broker (embedded default)"}
    from config.celery import app

    with app.connection_for_write(url=url) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
        return {"status": UP, "transport": conn.transport.driver_name}


def check_rounds() -> dict:
    from auctions.models import Round

    limit = settings.CPX_READY_ROUND_MAX_AGE_S
    cleared_at = (
        Round.objects.filter(status=Round.Status.CLEARED)
        .order_by("-cleared_at")
        .values_list("cleared_at", flat=True)
        .first()
    )
    if cleared_at is None:
        return {"status": DOWN, "error": "no round has cleared yet", "max_age_s": limit}
    age = (timezone.now() - cleared_at).total_seconds()
    return {
        "status": UP if age <= limit else DOWN,
        "last_cleared_at": cleared_at.isoformat(),
        "age_s": round(age, 1),
        "max_age_s": limit,
    }


CHECKS = {"database": check_database, "redis": check_redis, "broker": check_broker, "rounds": check_rounds}


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    components = {name: _timed(check) for name, check in CHECKS.items()}
    ready = all(component["status"] != DOWN for component in components.values())
    return JsonResponse(
        {"status": "ready" if ready else "not_ready", "components": components}, status=200 if ready else 503
    )
