"""The agents' async offer channel: `GET /api/v1/agent/offers?wait=S` (a Django async view, served by
the ASGI app config/asgi.py under uvicorn workers).

Answers the caller's offers (DISPATCHED leases, handed out by `lease_poll_many` exactly as
`GET /agent/leases` does with `lease_poll`) at once when there are any; otherwise holds the request
up to S seconds (at most CPX_AGENT_OFFER_WAIT_S) until the provider's offer notification arrives
(auctions/services/offers.py: pushed when the round that wrote the lease commits, through Redis
pub/sub between processes and in-process in the embedded default) and then answers the offers.
A timeout answers `[]`. No polling: while it waits, a request is one coroutine, one socket and one
asyncio.Event — no thread and no database connection — so one process holds thousands.

Long-poll rather than SSE or WebSocket: every answer is the same complete JSON list as the sync
poll's, so the agent's code, proxies, timeouts and retries stay plain HTTP; a lost connection loses
nothing (the offers are rows, read again on the next request); and an offer is consumed by exactly
the request that answered it. Its cost is one reconnect per offer or per S seconds; the database
work of reconnections (authorization, the first look) and of hand-outs is batched per event loop
(`Coalesced`), so a fleet reconnecting together costs a few queries per batch, not per agent.

Authentication is the provider's API key (`Authorization: Bearer cpx_…`), checked as in
market/api/authentication.py and market/api/permissions.py (IsProvider); errors are the API's
{"code", "message", "extra"} bodies. Database work runs in small thread pools (sync_to_async, not
thread-sensitive) whose connections go back to the pool after each call.
"""

import asyncio
import contextlib
import itertools
import random
import weakref
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections
from django.http import JsonResponse
from django.urls import path
from django.utils import timezone

from auctions.api import agent_serializers as s
from auctions.api.long_poll import RETRY_AFTER_S, LongPollBusy, long_poll_slots
from auctions.models import Lease
from auctions.services.leases import lease_poll_many
from auctions.services.offers import offer_hub
from market import selectors
from market.models import Role

# Threads for the channel's database calls (each borrows a pooled connection for one call). Two
# pools: a reconnecting fleet (authentication and the first look of every wait) queues on the first,
# and never delays the hand-out of an offer just announced, on the second (one batch at a time per
# event loop: Coalesced).
_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cpx-offers-connect")
_hand_out_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cpx-offers-hand-out")
# A wait ends after wait × this fraction, drawn per request (the answer is [] as at S): agents that
# connected together (a restart, a network blip) spread their reconnections instead of arriving as
# one wave every S seconds.
WAIT_JITTER = (0.7, 1.0)
# Waits held open in this process per API key (the event loop is one thread: no lock needed).
_held: Counter[str] = Counter()


def _error(code: str, message: str, status: int, extra: dict | None = None, headers=None) -> JsonResponse:
    response = JsonResponse({"code": code, "message": message, "extra": extra or {}}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _in_thread(function, executor=None):
    """Run a sync function with the ORM in one of the channel's pools; its connection is released after."""

    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(call, thread_sensitive=False, executor=executor or _executor)


class Refusal(NamedTuple):
    """Why a wait is refused, as the API's error body and status."""

    code: str
    message: str
    status: int
    headers: dict


def _authorize_many(headers: list[str]) -> dict[str, "tuple | Refusal"]:
    """{header: (provider, key prefix), or a Refusal} for providers' API keys, in one query (the
    keys, their users and the users' provider profiles together)."""
    answers, raws = {}, {}
    bearer = {"WWW-Authenticate": "Bearer"}
    for header in headers:
        scheme, _, raw = header.partition(" ")
        if not header:
            message = "Authentication credentials were not provided."
            answers[header] = Refusal("not_authenticated", message, 401, bearer)
        elif scheme != "Bearer" or not raw.strip():
            message = "Use 'Authorization: Bearer <API key>'."
            answers[header] = Refusal("authentication_failed", message, 401, bearer)
        else:
            raws[header] = raw.strip()
    keys = selectors.api_keys_authenticate(list(raws.values()), related=("user__provider",))
    for header, raw in raws.items():
        key = keys[raw]
        provider = key and getattr(key.user, "provider", None)  # None: no provider profile
        if key is None:
            answers[header] = Refusal("authentication_failed", "Unknown or revoked API key.", 401, bearer)
        elif key.role != Role.PROVIDER or not key.user.holds_role(Role.PROVIDER):
            message = "This needs a provider account or API key."
            answers[header] = Refusal("permission_denied", message, 403, {})
        elif provider is None:
            message = "Register your provider profile first (POST /api/v1/provider)."
            answers[header] = Refusal("not_found", message, 404, {})
        else:
            answers[header] = (provider, key.prefix)
    return answers


def _look_many(providers: list) -> dict[int, bool]:
    """{provider id: whether it has offers}, one read-only query (a reconnecting fleet writes nothing)."""
    offered = set(
        Lease.objects.filter(provider_id__in=[p.pk for p in providers], status=Lease.Status.DISPATCHED)
        .values_list("provider_id", flat=True)
        .distinct()
    )
    return {provider.pk: provider.pk in offered for provider in providers}


def _hand_out_many(providers: list) -> dict[int, list]:
    """Several providers' offers handed out (`lease_poll_many`, also a heartbeat) in one
    transaction: {provider id: serialized offers}."""
    leases = lease_poll_many(providers=providers, now=timezone.now())
    return {pk: s.AgentLeaseSerializer(offers, many=True).data for pk, offers in leases.items()}


authorize_batch = _in_thread(_authorize_many)
look_batch = _in_thread(_look_many)
hand_out_batch = _in_thread(_hand_out_many, _hand_out_executor)


class Coalesced:
    """Calls of one batch function from the requests of one event loop, coalesced: each request asks
    for its key; one call answers everyone who asked meanwhile (at most BATCH_MAX), the next call
    everyone who asked during it. A fleet reconnecting together, and the waiters a round's commit
    wakes together, cost a few queries per batch instead of a few per agent (bench/agents.py)."""

    BATCH_MAX = 500

    def __init__(self, many):
        self.many = many  # async (items) -> {key: answer}
        self.asked: dict = {}  # key -> (item, [futures])
        self.draining = False
        self.drain = None  # the running drain task (held: the loop keeps only a weak reference)

    async def __call__(self, key, item):
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self.asked.setdefault(key, (item, []))[1].append(answer)
        if not self.draining:
            self.draining = True
            self.drain = loop.create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        try:
            while self.asked:
                batch = dict(itertools.islice(self.asked.items(), self.BATCH_MAX))
                for key in batch:
                    del self.asked[key]
                failed = RuntimeError("the batch gave no answer for this key")
                try:
                    found = await self.many([item for item, _ in batch.values()])
                except Exception as error:  # noqa: BLE001 — each asker's request fails with it
                    found, failed = {}, error
                for key, (_, answers) in batch.items():
                    for answer in answers:
                        if answer.done():  # its request went away (the client disconnected)
                            continue
                        if key in found:
                            answer.set_result(found[key])
                        else:
                            answer.set_exception(failed)
        finally:
            # No reference to the loop is kept once drained: under WSGI each request's loop is a new
            # one, and `_coalesced` must let it go.
            self.draining, self.drain = False, None


# Per event loop: uvicorn runs one per process; under WSGI each async request has a loop of its own.
_coalesced: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _batched(name: str, many):
    def call(key, item):
        per_loop = _coalesced.setdefault(asyncio.get_running_loop(), {})
        if name not in per_loop:
            per_loop[name] = Coalesced(many)
        return per_loop[name](key, item)

    return call


# The batch functions are looked up at each call (a test may replace them).
authorize = _batched("authorize", lambda headers: authorize_batch(headers))
look = _batched("look", lambda providers: look_batch(providers))


def hand_out(provider):
    return _batched("hand_out", lambda providers: hand_out_batch(providers))(provider.pk, provider)


async def agent_offers(request):
    if request.method != "GET":
        return _error(
            "method_not_allowed", f'Method "{request.method}" not allowed.', 405, headers={"Allow": "GET"}
        )
    # As config.query_params.EmptyQueryParameterMiddleware does for the rest of /api/v1/ (this path
    # runs without the middleware stack: config/asgi.py): `wait=` is a client's mistake, not 0.
    empty = sorted(name for name in request.GET if "" in request.GET.getlist(name))
    poll = s.PollSerializer(data=request.GET)
    if empty or not poll.is_valid():
        fields = {name: ["This parameter may not be empty."] for name in empty} if empty else poll.errors
        return _error("invalid", "The request has invalid fields.", 400, {"fields": fields})
    wait = min(poll.validated_data["wait"], settings.CPX_AGENT_OFFER_WAIT_S)
    header = request.headers.get("Authorization", "")
    caller = await authorize(header, header)
    if isinstance(caller, Refusal):
        return _error(caller.code, caller.message, caller.status, headers=caller.headers)
    provider, prefix = caller
    if wait <= 0:
        return JsonResponse(await hand_out(provider), safe=False)
    if _held[prefix] >= settings.CPX_AGENT_OFFER_WAITS_PER_KEY:
        return _error(
            "throttled",
            "Too many waits are held open for this key; retry after Retry-After.",
            429,
            {"retry_after_s": 1},
            {"Retry-After": "1"},
        )
    with contextlib.ExitStack() as held:
        if not isinstance(request, ASGIRequest):
            # Served by a WSGI server (the embedded default, a gthread deployment): the wait holds a
            # thread there, so it takes a slot of the sync long-poll's caps (auctions/api/long_poll.py).
            try:
                held.enter_context(long_poll_slots.hold(f"key:{prefix}"))
            except LongPollBusy:
                return _error(
                    "throttled",
                    "Too many long-polls are held open; poll again after Retry-After.",
                    429,
                    {"retry_after_s": RETRY_AFTER_S},
                    {"Retry-After": str(RETRY_AFTER_S)},
                )
        return JsonResponse(await _wait(provider, prefix, wait), safe=False)


async def _wait(provider, prefix: str, wait: float) -> list:
    """The offers as soon as there are any, or [] after `wait` seconds."""
    _held[prefix] += 1
    # Registered before the first look: an offer committed between the look and the wait still wakes it.
    entry = offer_hub.register(provider.pk)
    try:
        offer_hub.ensure_listener()
        # First a read-only look (a reconnecting fleet writes nothing); after a wake-up, straight to
        # handing out (the notification says there is an offer).
        found = await hand_out(provider) if await look(provider.pk, provider) else []
        loop, woken = entry
        give_up_at = loop.time() + wait * random.uniform(*WAIT_JITTER)
        # A wake-up may find nothing (another request of the key answered the offer, or the channel
        # re-subscribed and woke everyone): wait on until the deadline.
        while not found and loop.time() < give_up_at:
            try:
                await asyncio.wait_for(woken.wait(), timeout=give_up_at - loop.time())
            except TimeoutError:
                break
            woken.clear()
            found = await hand_out(provider)
        return found
    finally:
        offer_hub.unregister(provider.pk, entry)
        _held[prefix] -= 1
        if not _held[prefix]:
            del _held[prefix]


urlpatterns = [path("agent/offers", agent_offers, name="agent-offers")]
