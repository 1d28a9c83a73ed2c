"""The demo's moving parts, in one process: the web server, simulated provider agents and consumer
traffic. Used by `cpx_serve` (make demo) and `cpx_demo` (headless).

Everything here goes through the same doors as the real thing: the agents are the real agent loop
(`workers.agent.runner.Agent`) with the `simulate` backend — a simulation, and named as one in its
API key, its thread and its leases (`simulated=true`) — talking HTTP to the local server with a
provider API key; the traffic generator submits jobs over the REST API with consumer keys.
"""

import logging
import random
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import requests
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.db.models import Count
from django.utils import timezone

from market.models import Provider, Resource, User
from market.services.accounts import api_key_create, api_key_revoke
from market.services.ledger import ledger_deposit
from workers.agent.backends import make_backend
from workers.agent.client import AgentClient
from workers.agent.runner import Agent

logger = logging.getLogger("cpx.simulation")

AGENT_KEY_NAME = "simulated agent (demo)"
TRAFFIC_KEY_NAME = "consumer traffic simulation (demo)"

# (model, params B, bits, context): small models an edge GPU serves, so most jobs can clear.
MODELS = [
    ("llama-3.1-8b-instruct", "8", 4, 8192),
    ("mistral-7b-instruct", "7.2", 8, 4096),
    ("qwen2.5-14b", "14.7", 4, 8192),
    ("phi-3-mini", "3.8", 16, 4096),
    ("gemma-2-9b", "9.2", 16, 8192),
]
REGIONS = ["eu-west", "eu-central", "us-east", "us-west", "ap-south"]
# The simulated traffic's own consumers: a person trying the demo with a seeded account (acme-ai…)
# sees only their own jobs move their balance.
TRAFFIC_CONSUMERS = [("sim-traffic-1", "500"), ("sim-traffic-2", "500"), ("sim-traffic-3", "500")]


def quiet_logs(verbosity: int) -> None:
    """At verbosity 1 a demo prints its own status lines, not a log line per task and per 409."""
    if verbosity >= 2:
        return
    for name in ("celery", "kombu", "django.request", "cpx.agent", "workers.embedded"):
        logging.getLogger(name).setLevel(logging.WARNING if name != "django.request" else logging.ERROR)


# --- the web server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 — the stdlib's signature
        logger.debug("%s %s", self.address_string(), format % args)


class WebServer:
    """Django behind a threaded WSGI server (the one runserver uses), static files included."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        access_log: bool = False,
        connections_override: dict | None = None,
        wrap_app=None,
    ):
        # connections_override / wrap_app: for tests on SQLite's in-memory database, whose one
        # connection the request threads must share (as Django's live server does) one at a time.
        handler = WSGIRequestHandler if access_log else _QuietHandler
        self.server = ThreadedWSGIServer(
            (host, port), handler, allow_reuse_address=True, connections_override=connections_override
        )
        app = StaticFilesHandler(get_wsgi_application())
        self.server.set_app(wrap_app(app) if wrap_app is not None else app)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, name="web", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "WebServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


# --- simulated provider agents


@dataclass
class SimulatedAgent:
    provider_id: int
    username: str
    key_prefix: str
    agent: Agent
    thread: threading.Thread


def providers_to_simulate() -> list[Provider]:
    """Active providers with at least one listed resource, in id order."""
    return list(
        Provider.objects.filter(status=Provider.Status.ACTIVE, resources__status=Resource.Status.LISTED)
        .select_related("user")
        .distinct()
        .order_by("id")
    )


class SimulatedAgents:
    """One real agent loop per provider, each in a thread, with the simulate backend."""

    def __init__(self, api_url: str, *, speedup: float, poll_wait_s: float = 2.0, heartbeat_s: float = 2.0):
        self.api_url = api_url
        self.speedup = speedup
        self.poll_wait_s = poll_wait_s
        self.heartbeat_s = heartbeat_s
        self.agents: list[SimulatedAgent] = []

    def start(self, *, now: datetime, providers: list[Provider] | None = None) -> "SimulatedAgents":
        for provider in providers if providers is not None else providers_to_simulate():
            key, raw = api_key_create(
                user=provider.user, role=User.Role.PROVIDER, now=now, name=AGENT_KEY_NAME
            )
            agent = Agent(
                AgentClient(self.api_url, raw, timeout_s=30.0),
                make_backend("simulate", speedup=self.speedup),
                poll_wait_s=self.poll_wait_s,
                heartbeat_s=self.heartbeat_s,
            )
            thread = threading.Thread(
                target=agent.run, name=f"simulated-agent-{provider.user.username}", daemon=True
            )
            self.agents.append(SimulatedAgent(provider.pk, provider.user.username, key.prefix, agent, thread))
            thread.start()
        close_old_connections()
        return self

    def stop(self, *, now: datetime, timeout_s: float = 15.0) -> None:
        """Agents stop cleanly (a lease still running fails over at once), then their keys are revoked."""
        for simulated in self.agents:
            simulated.agent.stopping.set()
            for run in list(simulated.agent.runs.values()):
                run.stop.set()
        for simulated in self.agents:
            simulated.thread.join(timeout_s)
        for simulated in self.agents:
            api_key_revoke(prefix=simulated.key_prefix, now=now)
        self.agents = []


# --- consumer traffic


def job_spec(rng: random.Random, *, now: datetime) -> dict:
    """A random consumer job as the API takes it: mostly inference on a small model, some fine-tunes."""
    name, params, bits, context = rng.choice(MODELS)
    kind = rng.choices(["INFERENCE", "FINE_TUNE"], weights=[8, 2])[0]
    spec = {
        "kind": kind,
        "model_name": name,
        "params_billion": params,
        "quant_bits": bits,
        "context_length": context,
        "batch_size": rng.choice([1, 1, 2]),
        "device_class": "GPU",
        "max_price_per_device_hour": str(round(rng.uniform(0.15, 2.0), 2)),
        "budget": str(round(rng.uniform(2, 20), 2)),
        "deadline": (now + timedelta(hours=rng.choice([2, 6, 24]))).isoformat(),
        "region": rng.choice(REGIONS),
    }
    if kind == "INFERENCE":
        spec["workload_tokens"] = rng.choice([20_000, 100_000, 400_000, 1_000_000])
    else:
        spec["workload_device_hours"] = str(rng.choice([0.25, 0.5, 1]))
    return spec


@dataclass
class TrafficStats:
    submitted: int = 0
    refused: int = 0
    top_ups: int = 0
    job_ids: list = field(default_factory=list)


class ConsumerTraffic:
    """Consumers submitting jobs over the REST API, on average one every `interval_s` seconds.

    A consumer whose balance runs out is topped up through the operator deposit endpoint, so the
    market keeps moving however long the demo runs.
    """

    TOP_UP = Decimal("250")

    def __init__(self, api_url: str, *, interval_s: float, seed: int = 11):
        self.api = api_url.rstrip("/") + "/api/v1"
        self.interval_s = interval_s
        self.rng = random.Random(seed)
        self.stats = TrafficStats()
        self.consumers: list[tuple[str, str, str]] = []  # (username, key prefix, raw key)
        self.operator: tuple[str, str] | None = None  # (key prefix, raw key)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consumer-traffic-simulation", daemon=True)
        self._session = requests.Session()

    def start(self, *, now: datetime) -> "ConsumerTraffic":
        for user in traffic_consumers(now=now):
            key, raw = api_key_create(user=user, role=User.Role.CONSUMER, now=now, name=TRAFFIC_KEY_NAME)
            self.consumers.append((user.username, key.prefix, raw))
        operator = User.objects.filter(role=User.Role.OPERATOR, is_active=True).order_by("id").first()
        if operator is not None:
            key, raw = api_key_create(user=operator, role=User.Role.OPERATOR, now=now, name=TRAFFIC_KEY_NAME)
            self.operator = (key.prefix, raw)
        close_old_connections()
        if self.consumers:
            self._thread.start()
        return self

    def stop(self, *, now: datetime) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15)
        prefixes = [prefix for _, prefix, _ in self.consumers] + ([self.operator[0]] if self.operator else [])
        for prefix in prefixes:
            api_key_revoke(prefix=prefix, now=now)

    def submit_one(self) -> int | None:
        """Submit one random job as a random consumer; the new job's id, or None if refused."""
        username, _, raw = self.rng.choice(self.consumers)
        spec = job_spec(self.rng, now=timezone.now())
        for attempt in range(2):
            response = self._post("/jobs", raw, spec, idempotency_key=f"traffic-{uuid.uuid4()}")
            if response.status_code in (200, 201):
                job_id = response.json()["id"]
                self.stats.submitted += 1
                self.stats.job_ids.append(job_id)
                return job_id
            code = _error_code(response)
            if code == "insufficient_funds" and attempt == 0 and self._top_up(username):
                continue
            logger.info("job refused for %s: %s %s", username, response.status_code, code)
            self.stats.refused += 1
            return None
        return None

    def _top_up(self, username: str) -> bool:
        if self.operator is None:
            return False
        response = self._post(
            "/operator/deposits",
            self.operator[1],
            {"username": username, "amount": str(self.TOP_UP), "memo": "demo top-up (simulation)"},
            idempotency_key=f"traffic-top-up-{uuid.uuid4()}",
        )
        if response.status_code in (200, 201):
            self.stats.top_ups += 1
            return True
        return False

    def _post(self, path: str, key: str, body: dict, *, idempotency_key: str) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}
        return self._session.post(self.api + path, json=body, headers=headers, timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.rng.expovariate(1 / self.interval_s)):
            try:
                self.submit_one()
            except requests.RequestException as error:
                logger.warning("consumer traffic: %s", error)


def traffic_consumers(*, now: datetime) -> list[User]:
    """The traffic's own consumer accounts (no password: they act only through their keys), made
    and funded once (the deposit's reference makes a second start credit nothing)."""
    users = []
    for username, funds in TRAFFIC_CONSUMERS:
        user, created = User.objects.get_or_create(username=username, defaults={"role": User.Role.CONSUMER})
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        ledger_deposit(
            user=user,
            amount=Decimal(funds),
            now=now,
            reference=f"traffic:{username}",
            memo="simulated traffic",
        )
        users.append(user)
    return users


def _error_code(response: requests.Response) -> str:
    try:
        return response.json().get("code", "")
    except ValueError:
        return ""


# --- what happened


def market_summary(*, round_ids: list[int], job_ids: list[int] | None = None) -> dict:
    """What the given rounds did: per round the book, matches, welfare and prices per class; over
    their leases what completed or failed over; the money those leases moved; whether the whole
    ledger balances. Reads only."""
    from auctions.models import Lease, Round
    from market.models import JobRequest, LedgerTransfer
    from market.selectors import ledger_is_balanced

    rounds = list(Round.objects.filter(pk__in=round_ids).order_by("id"))
    leases = Lease.objects.filter(round_id__in=round_ids)
    lease_status = dict(leases.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    matched_jobs = set(leases.values_list("job_id", flat=True))
    job_status = dict(
        JobRequest.objects.filter(pk__in=matched_jobs | set(job_ids or ()))
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    references = [f"lease:{pk}:payment" for pk in leases.values_list("id", flat=True)]
    paid = _total(LedgerTransfer.objects.filter(reference__in=references))
    fee_refs = [ref.replace(":payment", ":fee") for ref in references]
    fees = _total(LedgerTransfer.objects.filter(reference__in=fee_refs))
    penalty_refs = [ref.replace(":payment", ":penalty") for ref in references]
    penalties = _total(LedgerTransfer.objects.filter(reference__in=penalty_refs))
    return {
        "rounds": [
            {
                "id": r.pk,
                "status": r.status,
                "jobs_in_book": r.jobs_in_book,
                "resources_in_book": r.resources_in_book,
                "jobs_matched": r.jobs_matched,
                "welfare": r.welfare,
                "prices": {
                    cls: {"buyer": p["buyer_price"], "seller": p["seller_price"], "traded": p["traded"]}
                    for cls, p in sorted((r.prices or {}).items())
                },
                "error": r.error,
            }
            for r in rounds
        ],
        "leases": {
            "matched": sum(lease_status.values()),
            "completed": lease_status.get(Lease.Status.COMPLETED, 0),
            "running": sum(lease_status.get(status, 0) for status in Lease.ACTIVE),
            "failed": lease_status.get(Lease.Status.FAILED, 0),
            "reassigned": lease_status.get(Lease.Status.REASSIGNED, 0),
            "simulated": leases.filter(simulated=True).count(),
        },
        "jobs": {
            "matched": len(matched_jobs),
            "completed": job_status.get(JobRequest.Status.COMPLETED, 0),
            "failed": job_status.get(JobRequest.Status.FAILED, 0) + job_status.get("EXPIRED", 0),
            "queued": job_status.get(JobRequest.Status.QUEUED, 0),
            "by_status": dict(sorted(job_status.items())),
        },
        "money": {
            "paid_to_providers": str(paid),
            "platform_fees_and_surplus": str(fees),
            "sla_penalties": str(penalties),
        },
        "ledger_balanced": ledger_is_balanced(),
    }


def _total(transfers) -> Decimal:
    # Summed in Python: SQLite's SUM over decimals goes through floats.
    return sum(transfers.values_list("amount", flat=True), Decimal(0))
