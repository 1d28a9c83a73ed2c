"""Rate limits per API key (per user for browser sessions, per address for anonymous calls)."""

import logging
import threading
import time

from django.core.cache import cache
from django.core.cache.backends.locmem import LocMemCache
from redis.exceptions import RedisError
from rest_framework.throttling import SimpleRateThrottle

from market.models import ApiKey

logger = logging.getLogger(__name__)

# How long the counters stay in this process after the shared cache failed, before it is tried again:
# one failed connection per process per interval, not one per request.
SHARED_CACHE_RETRY_S = 5.0


class CounterCaches:
    """Where the fixed-window counters live: the shared cache (Redis when REDIS_URL is set), or, while
    that cannot be reached, a cache of this process's own.

    The policy when Redis is down is neither fail-open nor fail-closed but *per process*: every
    process goes on enforcing the same limit on its own counters, so a key gets at most (number of
    processes) × its limit during an outage. Failing closed would turn a cache outage into an outage
    of the whole API (every request 429 or 500); failing open would drop abuse protection exactly
    when an attacker may have caused the outage. The switch is logged once each way (WARNING when
    the shared cache is lost, INFO when it is back)."""

    def __init__(self):
        self.local = LocMemCache("cpx-rate-limit-fallback", {"OPTIONS": {"MAX_ENTRIES": 100_000}})
        self.lock = threading.Lock()
        self.shared_down_until = 0.0  # time.monotonic(); 0 while the shared cache works
        self.outages = 0

    def count(self, key: str, *, timeout: int) -> int:
        """Add one to the counter `key` (created at 0, expiring after `timeout` s); its new value."""
        if time.monotonic() >= self.shared_down_until:
            try:
                count = _incr(cache, key, timeout=timeout)
            except (RedisError, OSError) as error:
                self._lost(error)
            else:
                if self.shared_down_until:
                    self._back()
                return count
        return _incr(self.local, key, timeout=timeout)

    def _lost(self, error: Exception) -> None:
        with self.lock:
            first = not self.shared_down_until
            self.shared_down_until = time.monotonic() + SHARED_CACHE_RETRY_S
            if first:
                self.outages += 1
        if first:
            logger.warning(
                "rate limits: the shared cache is unreachable (%s: %s); counting in this process "
                "until it answers again",
                type(error).__name__,
                error,
            )

    def _back(self) -> None:
        with self.lock:
            was_down = bool(self.shared_down_until)
            self.shared_down_until = 0.0
        if was_down:
            logger.info("rate limits: the shared cache answers again; counting there")


def _incr(backend, key: str, *, timeout: int) -> int:
    backend.add(key, 0, timeout=timeout)
    try:
        return backend.incr(key)
    except ValueError:  # expired between add and incr
        backend.set(key, 1, timeout=timeout)
        return 1


counter_caches = CounterCaches()


class ApiKeyRateThrottle(SimpleRateThrottle):
    """A fixed-window counter: one atomic `incr` per request in the shared cache (Redis when
    REDIS_URL is set, so the limit holds across processes), instead of DRF's list of every
    request's timestamp, which is re-saved whole on each call. Without the shared cache the counters
    fall back to this process (`CounterCaches`)."""

    scope = "api_key"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiKey):
            ident = f"key:{request.auth.prefix}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"addr:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = time.time()
        window = int(now // self.duration)
        self.window_end = (window + 1) * self.duration
        count = counter_caches.count(f"{key}:{window}", timeout=self.duration + 1)
        self.now = now
        return count <= self.num_requests

    def wait(self):
        return max(0.0, self.window_end - self.now)
