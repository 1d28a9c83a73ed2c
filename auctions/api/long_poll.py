"""Slots for held requests: how many long-polls (`GET /agent/leases?wait=S`) this process holds open at
once, per API key and in total.

Why: a held request holds a server thread (gunicorn gthread: workers × threads in all). Eight waiting
polls from one key took every thread of a 2 × 4 deployment and `/api/v1/me` waited up to 25 s behind
them. Counting per process is the point, since the threads are per process: with
CPX_AGENT_LONG_POLLS_PER_KEY and CPX_AGENT_LONG_POLLS_TOTAL below a worker's thread count, the other
threads always serve the rest of the API. A poll refused a slot answers at once (429 with
Retry-After), which the agent honours before polling again; a poll that finds an offer needs no slot.
"""

import contextlib
import threading
from collections import Counter

from django.conf import settings
from rest_framework.exceptions import Throttled

# The agent waits this long before asking again after a refused poll.
RETRY_AFTER_S = 1


class LongPollBusy(Throttled):
    default_detail = "Too many long-polls are held open; poll again after Retry-After."


class LongPollSlots:
    def __init__(self):
        self.lock = threading.Lock()
        self.per_key: Counter[str] = Counter()
        self.total = 0

    @contextlib.contextmanager
    def hold(self, key: str):
        """One slot for `key` for the block; LongPollBusy when the key or the process is at its cap."""
        with self.lock:
            if (
                self.per_key[key] >= settings.CPX_AGENT_LONG_POLLS_PER_KEY
                or self.total >= settings.CPX_AGENT_LONG_POLLS_TOTAL
            ):
                raise LongPollBusy(wait=RETRY_AFTER_S)
            self.per_key[key] += 1
            self.total += 1
        try:
            yield
        finally:
            with self.lock:
                self.per_key[key] -= 1
                if not self.per_key[key]:
                    del self.per_key[key]
                self.total -= 1


long_poll_slots = LongPollSlots()
