"""Rate limits per API key (per user for browser sessions, per address for anonymous calls)."""

import time

from django.core.cache import cache
from rest_framework.throttling import SimpleRateThrottle

from market.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    """A fixed-window counter: one atomic `incr` per request in the shared cache (Redis when
    REDIS_URL is set, so the limit holds across processes), instead of DRF's list of every
    request's timestamp, which is re-saved whole on each call."""

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
        window_key = f"{key}:{window}"
        cache.add(window_key, 0, timeout=self.duration + 1)
        try:
            count = cache.incr(window_key)
        except ValueError:  # expired between add and incr
            cache.set(window_key, 1, timeout=self.duration + 1)
            count = 1
        self.now = now
        return count <= self.num_requests

    def wait(self):
        return max(0.0, self.window_end - self.now)
