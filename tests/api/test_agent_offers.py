"""The async offer channel `GET /api/v1/agent/offers` (auctions/api/agent_offers.py), called through
the production ASGI app (config/asgi.py) on the embedded default: an offer reaches a waiting agent
when its round commits (in-process notification, no polling), and what the channel refuses: no
key, another role's key, hostile `wait` values, more waits per key than the cap."""

import asyncio
import gc
import json
import threading
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async

from auctions.api import agent_offers
from auctions.services.offers import offer_hub
from market.models import JobRequest
from market.services.accounts import api_key_create
from tests.conftest import NOW
from tests.factories import ConsumerFactory, ProviderFactory, ProviderUserFactory
from tests.integration.test_rounds import bid, cleared_round, funded_consumer, online_resource

URL = "/api/v1/agent/offers"


class Answer:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status_code, self.headers, self.content = status, headers, body

    def json(self):
        return json.loads(self.content)

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]


async def call(query: dict, headers: dict | None = None, method: str = "GET") -> Answer:
    """One request through config.asgi.application, as uvicorn makes it."""
    from config.asgi import application

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": URL,
        "raw_path": URL.encode(),
        "query_string": urlencode(query).encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode("latin1")) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    sent, asked = [], False
    never = asyncio.Event()

    async def receive():
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await application(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body)


@pytest.fixture
def turns(monkeypatch):
    """SQLite's in-memory test database locks a table against other threads at once instead of
    waiting: the channel's database calls and the test's round take turns (no-op cost elsewhere)."""
    lock = threading.Lock()

    def taking_turns(function):
        def call_in_turn(*args, **kwargs):
            with lock:
                return function(*args, **kwargs)

        return call_in_turn

    for name, function in [
        ("authorize_batch", agent_offers._authorize_many),
        ("look_batch", agent_offers._look_many),
        ("hand_out_batch", agent_offers._hand_out_many),
    ]:
        monkeypatch.setattr(agent_offers, name, agent_offers._in_thread(taking_turns(function)))
    return taking_turns


def provider_key(provider) -> str:
    return api_key_create(user=provider.user, role="provider", now=NOW)[1]


def auth(raw: str) -> dict:
    return {"Authorization": f"Bearer {raw}"}


async def until_waiting(count: int) -> None:
    for _ in range(500):
        if offer_hub.waiting() >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{offer_hub.waiting()} waiters, expected {count}")


@pytest.mark.django_db(transaction=True)
def test_a_waiting_agent_gets_its_offer_when_the_round_commits(turns):
    resource = online_resource(price_floor=Decimal("0"))
    raw = provider_key(resource.provider)
    job = bid(funded_consumer(), "5")

    async def scenario():
        # The wait (30 s) outlasts the bound on the answer (20 s): only the notification answers in time.
        waiting = asyncio.create_task(call({"wait": 30}, auth(raw)))
        await until_waiting(1)
        assert not waiting.done()
        round_obj = await sync_to_async(turns(cleared_round), thread_sensitive=False)()
        response = await asyncio.wait_for(waiting, timeout=20)
        return round_obj, response

    round_obj, response = asyncio.run(scenario())

    assert round_obj.jobs_matched == 1
    assert response.status_code == 200, response.content
    [offer] = response.json()
    assert offer["job"]["id"] == job.pk and offer["status"] == "DISPATCHED"
    # Handed out as the sync poll does: the job went MATCHED → DISPATCHED.
    assert JobRequest.objects.get(pk=job.pk).status == JobRequest.Status.DISPATCHED
    assert offer_hub.waiting() == 0


@pytest.mark.django_db(transaction=True)
def test_the_agents_one_commit_wakes_are_answered_by_one_batched_hand_out(turns, monkeypatch):
    resources = [online_resource(price_floor=Decimal("0")) for _ in range(3)]
    keys = [provider_key(resource.provider) for resource in resources]
    jobs = [bid(funded_consumer(), price) for price in ("5", "4", "3")]
    batches = []
    batch = agent_offers.hand_out_batch

    async def counted(providers):
        batches.append(sorted(provider.pk for provider in providers))
        return await batch(providers)

    monkeypatch.setattr(agent_offers, "hand_out_batch", counted)

    async def scenario():
        # A provider the round leaves out (McAfee trades one pair fewer) answers [] after its wait.
        waiting = [asyncio.create_task(call({"wait": 4}, auth(key))) for key in keys]
        await until_waiting(3)
        round_obj = await sync_to_async(turns(cleared_round), thread_sensitive=False)()
        return round_obj, await asyncio.wait_for(asyncio.gather(*waiting), timeout=20)

    round_obj, answers = asyncio.run(scenario())

    assert round_obj.jobs_matched >= 2
    offered = {}
    for resource, answer in zip(resources, answers, strict=True):
        assert answer.status_code == 200, answer.content
        for offer in answer.json():
            assert offer["resource"] == resource.pk
            offered[offer["job"]["id"]] = resource.provider_id
    assert len(offered) == round_obj.jobs_matched and set(offered) <= {job.pk for job in jobs}
    # Woken together by one notification (their events set in one turn of the loop): one database
    # call answered them all.
    assert batches == [sorted(offered.values())]
    assert set(JobRequest.objects.filter(pk__in=offered).values_list("status", flat=True)) == {"DISPATCHED"}


@pytest.mark.django_db(transaction=True)
def test_an_offer_already_there_is_answered_at_once_and_a_timeout_answers_empty():
    offered = online_resource(price_floor=Decimal("0"))
    idle = ProviderFactory()  # a provider with nothing listed: nothing to offer
    bid(funded_consumer(), "5")
    cleared_round()
    offered_key, idle_key = provider_key(offered.provider), provider_key(idle)

    async def scenario():
        # An offer stays offered (DISPATCHED) until the agent accepts it: every wait answers it.
        first = await asyncio.wait_for(call({"wait": 30}, auth(offered_key)), timeout=20)
        again = await asyncio.wait_for(call({"wait": 30}, auth(offered_key)), timeout=20)
        nothing = await call({"wait": 0.2}, auth(idle_key))
        return first, again, nothing

    first, again, nothing = asyncio.run(scenario())

    assert first.status_code == 200 and len(first.json()) == 1
    assert again.json() == first.json()
    assert nothing.status_code == 200 and nothing.json() == []


def error_of(response) -> str:
    body = response.json()
    assert set(body) == {"code", "message", "extra"}, body
    return body["code"]


@pytest.mark.django_db(transaction=True)
class TestRefused:
    def get(self, params=None, headers=None):
        return asyncio.run(call(params or {}, headers))

    def test_without_a_key(self):
        response = self.get({"wait": 1})

        assert response.status_code == 401 and error_of(response) == "not_authenticated"
        assert response["WWW-Authenticate"] == "Bearer"

    @pytest.mark.parametrize("header", ["Bearer cpx_nope_nope", "Bearer ", "Basic abc", "cpx_x_y"])
    def test_with_a_bad_key(self, header):
        response = self.get({"wait": 1}, {"Authorization": header})

        assert response.status_code == 401 and error_of(response) == "authentication_failed"

    def test_with_a_consumer_key(self):
        consumer = ConsumerFactory()
        raw = api_key_create(user=consumer, role="consumer", now=NOW)[1]

        response = self.get({"wait": 1}, auth(raw))

        assert response.status_code == 403 and error_of(response) == "permission_denied"

    def test_with_a_provider_key_but_no_provider_profile(self):
        user = ProviderUserFactory()
        raw = api_key_create(user=user, role="provider", now=NOW)[1]

        response = self.get({"wait": 1}, auth(raw))

        assert response.status_code == 404 and error_of(response) == "not_found"

    def test_reconnections_together_are_authorized_in_one_query(self, django_assert_num_queries):
        providers = [online_resource().provider for _ in range(3)]
        consumer_key = api_key_create(user=ConsumerFactory(), role="consumer", now=NOW)[1]
        headers = [f"Bearer {provider_key(provider)}" for provider in providers]
        hostile = ["", "Bearer", "Basic abc", "Bearer cpx_nope_nope", f"Bearer {consumer_key}"]

        with django_assert_num_queries(1):
            answers = agent_offers._authorize_many(headers + hostile)

        assert [answers[header][0] for header in headers] == providers
        assert [answers[header][0] for header in hostile] == [
            "not_authenticated",
            "authentication_failed",
            "authentication_failed",
            "authentication_failed",
            "permission_denied",
        ]

    @pytest.mark.parametrize(
        "wait", ["-1", "nan", "inf", "-inf", "1e309", "3601", "abc", "", "0x10", "1e", "\x00"]
    )
    def test_hostile_wait_values(self, wait):
        raw = provider_key(online_resource().provider)

        response = self.get({"wait": wait}, auth(raw))

        assert response.status_code == 400 and error_of(response) == "invalid", response.content
        assert offer_hub.waiting() == 0

    def test_unknown_parameters(self):
        raw = provider_key(online_resource().provider)

        response = self.get({"wait": "1", "sleep": "5"}, auth(raw))

        assert response.status_code == 400 and error_of(response) == "invalid"

    def test_other_methods(self):
        raw = provider_key(online_resource().provider)

        response = asyncio.run(call({}, auth(raw), method="POST"))

        assert response.status_code == 405 and error_of(response) == "method_not_allowed"

    def test_more_waits_per_key_than_the_cap(self, settings):
        settings.CPX_AGENT_OFFER_WAITS_PER_KEY = 1
        raw = provider_key(online_resource().provider)

        async def scenario():
            held = asyncio.create_task(call({"wait": 2}, auth(raw)))
            await until_waiting(1)
            refused = await call({"wait": 2}, auth(raw))
            return refused, await held

        refused, held = asyncio.run(scenario())

        assert refused.status_code == 429 and error_of(refused) == "throttled"
        assert refused["Retry-After"] == "1"
        assert held.status_code == 200 and held.json() == []


@pytest.mark.django_db(transaction=True)
def test_under_wsgi_a_wait_takes_a_slot_of_the_sync_long_polls_caps(settings):
    """Served by a WSGI server (the embedded default) the wait holds a thread: the sync caps apply."""
    from django.test import Client

    from auctions.api.long_poll import long_poll_slots

    settings.CPX_AGENT_LONG_POLLS_PER_KEY = 1
    raw = provider_key(online_resource().provider)
    prefix = raw.split("_")[1]

    with long_poll_slots.hold(f"key:{prefix}"):
        response = Client().get(URL, {"wait": 5}, headers=auth(raw))

    assert response.status_code == 429 and error_of(response) == "throttled"
    assert response["Retry-After"] == "1"


@pytest.mark.django_db(transaction=True)
def test_the_batches_let_each_requests_event_loop_go():
    """Under WSGI every async request runs on an event loop of its own: the per-loop batches
    (`Coalesced`) must not keep those loops alive once they have answered (asgiref's threads remember
    the last loop they served, at most one per thread: the count stays bounded)."""
    raw = provider_key(online_resource().provider)

    answers = [asyncio.run(call({"wait": 0}, auth(raw))) for _ in range(10)]
    gc.collect()

    assert {answer.status_code for answer in answers} == {200}
    assert len(agent_offers._coalesced) <= 2
