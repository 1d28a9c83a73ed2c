"""Offer notifications: "provider P has a new lease offer", pushed the moment the writing transaction
commits, to the agents waiting on `GET /api/v1/agent/offers` (auctions/api/agent_offers.py).

Model. A notification carries provider ids only, never a lease: the waiting request reads the
offers from the database after it is woken, so a lost, late or duplicated notification can cost a
wake-up but never an offer or a double one (the offers are still DISPATCHED rows; `lease_poll`
hands them out). Two transports, both fanned out in each web process by one `OfferHub`:

- Redis pub/sub (REDIS_URL, else CELERY_BROKER_URL when it is redis://): the round is written by a
  Celery worker, the agents wait in the web processes. One PUBLISH per commit on the channel
  CPX_AGENT_OFFER_CHANNEL; one subscription per web process (not per agent), whose listener task
  wakes the local waiters of the providers named.
- In-process (always): the embedded default runs rounds and web in one process; the hub is woken
  directly (thread-safe: a round commits in a worker thread, waiters live on the event loop).

Who announces: `round_clear` when it writes leases (auctions/services/rounds.py `_write`) — the only
place a DISPATCHED lease is created. A failover (leases.py `_fail_over`) puts the job back in the
queue; its re-offer is a lease written by the next round, announced there.
"""

import asyncio
import json
import logging
import threading
from collections import defaultdict

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)


def offer_redis_url() -> str:
    """Where offers are published: REDIS_URL, else a redis:// Celery broker; "" for in-process only."""
    for url in (settings.REDIS_URL, settings.CELERY_BROKER_URL):
        if url and url.startswith(("redis://", "rediss://", "unix://")):
            return url
    return ""


class OfferHub:
    """The waiters of one process, by provider id: each an asyncio.Event on its own loop."""

    def __init__(self):
        self.lock = threading.Lock()
        self.waiters: dict[int, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(set)
        self.listener: threading.Thread | None = None

    def waiting(self) -> int:
        with self.lock:
            return sum(len(events) for events in self.waiters.values())

    def register(self, provider_id: int) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self.lock:
            self.waiters[provider_id].add(entry)
        return entry

    def unregister(self, provider_id: int, entry) -> None:
        with self.lock:
            events = self.waiters.get(provider_id)
            if events is not None:
                events.discard(entry)
                if not events:
                    del self.waiters[provider_id]

    def wake(self, provider_ids) -> int:
        """Set the events of these providers' waiters (from any thread); how many were woken."""
        with self.lock:
            entries = [entry for pk in provider_ids for entry in self.waiters.get(pk, ())]
        by_loop = defaultdict(list)
        for loop, event in entries:
            by_loop[loop].append(event)
        # One callback per loop sets all its events: the waiters one notification wakes resume in the
        # same turn of their loop (and their hand-outs go in one batch: auctions/api/agent_offers.py).
        for loop, events in by_loop.items():
            try:
                loop.call_soon_threadsafe(_set_all, events)
            except RuntimeError:  # that loop is closed: its waiters are gone
                pass
        return len(entries)

    def ensure_listener(self) -> None:
        """Subscribe this process to the Redis channel once: a daemon thread with its own event loop,
        so it outlives any request's loop (under WSGI each async request runs on a loop of its own)."""
        url = offer_redis_url()
        if not url:
            return
        with self.lock:
            if self.listener is not None and self.listener.is_alive():
                return
            self.listener = threading.Thread(
                target=asyncio.run, args=(self._listen(url),), name="cpx-offer-listener", daemon=True
            )
            self.listener.start()

    async def _listen(self, url: str) -> None:
        import redis.asyncio as aioredis

        while True:
            client = aioredis.Redis.from_url(url, socket_connect_timeout=2)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(settings.CPX_AGENT_OFFER_CHANNEL)
                    # Offers written while the subscription was down are in the database: wake every
                    # waiter once so each one looks again (a spurious wake-up costs one query).
                    with self.lock:
                        everyone = list(self.waiters)
                    self.wake(everyone)
                    async for message in pubsub.listen():
                        try:
                            self.wake(json.loads(message["data"]))
                        except (ValueError, TypeError):
                            logger.warning("malformed offer notification: %r", message.get("data"))
            except Exception as error:  # noqa: BLE001 — Redis down: retry, the waiters time out meanwhile
                logger.warning("offer channel subscription lost (%s); retrying in 1 s", error)
                await asyncio.sleep(1)
            finally:
                await client.aclose()


def _set_all(events) -> None:
    for event in events:
        event.set()


offer_hub = OfferHub()
_publisher = threading.local()


def offers_publish(*, provider_ids) -> None:
    """Tell the waiting agents of these providers that they have offers (now; see offers_announce)."""
    ids = sorted({int(pk) for pk in provider_ids})
    if not ids:
        return
    offer_hub.wake(ids)
    url = offer_redis_url()
    if not url:
        return
    import redis

    try:
        client = getattr(_publisher, "client", None)
        if client is None or getattr(_publisher, "url", None) != url:
            client = _publisher.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            _publisher.url = url
        client.publish(settings.CPX_AGENT_OFFER_CHANNEL, json.dumps(ids))
    except redis.RedisError as error:
        # The leases are committed either way: the agents find them on their next wait or poll.
        logger.warning("offer notification not published (%s) for %d providers", error, len(ids))


def offers_announce(*, provider_ids) -> None:
    """Publish once the current transaction commits (never for a rolled-back write)."""
    ids = sorted({int(pk) for pk in provider_ids})
    if ids:
        transaction.on_commit(lambda: offers_publish(provider_ids=ids))
