"""The broker's view of the market at the duals: MECM's allocation of the current book.

The book is what the next round would see (`snapshot_book`, read without locks). Servers are the
listed resources of online providers (free devices, the ask per device-hour as cost); users are the
QUEUED jobs (devices, the bid per device-hour as value), each fitting the resources a round could give
it (device class, memory, free devices, region when placement is strict, not a provider it failed on).
The broker's consumer principals reach the market through the broker; everyone else directly. CPX's
broker reaches every provider and has no capacity or cost of its own, so this is the welfare
allocation of the whole book, and its LP duals are the market's prices per device-hour: what the
broker's principals would pay, and what its provider principals' devices are worth.
"""

from dataclasses import dataclass
from datetime import datetime

from auctions.mechanisms.brokers import Broker, Server, User, clear_three_tier
from auctions.mechanisms.errors import MechanismError
from auctions.services.round_books import snapshot_book
from config.errors import DomainError
from market.models import BrokerAppointment, JobRequest, Provider
from market.models import User as Account

STRICT = "strict"
# A page must answer quickly: the quote's MILP stops after this many branch-and-bound nodes (a
# quarter of a round's work limit). Work, never the clock: the same book gives the same quote on any
# machine under any load (issue 12 item 7); stopped by it, the quote is the best allocation found.
QUOTE_NODE_LIMIT = 5_000


class BrokerQuoteUnavailable(DomainError):
    code = "broker_quote_unavailable"
    status = 503


@dataclass(frozen=True)
class PrincipalJobQuote:
    job_id: int
    principal: str
    devices: int
    bid: float
    trades: bool
    resource_id: int | None
    price: float | None  # per device-hour


@dataclass(frozen=True)
class ResourceQuote:
    resource_id: int
    principal: str
    free: int
    ask: float
    dual_price: float  # per device-hour, over the ask


@dataclass(frozen=True)
class BrokerMarketPrices:
    welfare: float
    lp_bound: float
    jobs_in_book: int
    resources_in_book: int
    jobs: tuple[PrincipalJobQuote, ...]
    resources: tuple[ResourceQuote, ...]


def broker_market_prices(*, broker: Account, now: datetime) -> BrokerMarketPrices:
    """The welfare allocation of the current book and its dual prices, for the broker's principals.
    Raises BrokerQuoteUnavailable (the engine found no allocation within QUOTE_NODE_LIMIT nodes, or
    failed)."""
    active = BrokerAppointment.objects.filter(broker=broker, status=BrokerAppointment.Status.ACTIVE)
    sides = dict(active.values_list("principal_id", "side"))
    names = dict(active.values_list("principal_id", "principal__username"))
    book = snapshot_book(now=now, include_unseen=False, lock=False)
    resources = [r for r in book.resources if r["free"] > 0]
    servers = [Server(f"r{r['id']}", float(r["free"]), float(r["ask"])) for r in resources]
    owner_of = _owners(resources)
    consumer_of = dict(
        JobRequest.objects.filter(pk__in=[j["id"] for j in book.jobs]).values_list("pk", "consumer_id")
    )
    users = []
    for job in book.jobs:
        fits = tuple(
            f"r{r['id']}"
            for r in resources
            if r["device_class"] == job["device_class"]
            and r["memory"] >= job["memory"]
            and r["free"] >= job["device_count"]
            and (job["placement"] != STRICT or r["region"] == job["region"])
            and r["provider_id"] not in book.exclusions.get(job["id"], ())
        )
        brokered = sides.get(consumer_of[job["id"]]) == BrokerAppointment.Side.CONSUMER
        users.append(
            User(
                f"j{job['id']}",
                float(job["device_count"]),
                job["bid"],
                brokers=("broker",) if brokered else (),
                direct=() if brokered else fits,
                fits=fits,
            )
        )
    total = sum(s.capacity for s in servers) or 1.0
    tier = Broker("broker", total, 0.0, tuple(s.id for s in servers))
    try:
        result = clear_three_tier(servers, [tier], users, node_limit=QUOTE_NODE_LIMIT)
    except MechanismError as error:
        raise BrokerQuoteUnavailable(
            "The book could not be allocated for a quote; try again after the next round.", reason=error.code
        ) from None
    routes = {r.user: r for r in result.routes}
    jobs = []
    for job in book.jobs:
        if sides.get(consumer_of[job["id"]]) != BrokerAppointment.Side.CONSUMER:
            continue
        route = routes.get(f"j{job['id']}")
        jobs.append(
            PrincipalJobQuote(
                job_id=job["id"],
                principal=names[consumer_of[job["id"]]],
                devices=job["device_count"],
                bid=job["bid"],
                trades=route is not None,
                resource_id=int(route.server[1:]) if route else None,
                price=route.user_pays / route.devices if route else None,
            )
        )
    quotes = tuple(
        ResourceQuote(
            r["id"], names[owner_of[r["id"]]], r["free"], r["ask"], result.server_prices[f"r{r['id']}"]
        )
        for r in resources
        if sides.get(owner_of[r["id"]]) == BrokerAppointment.Side.PROVIDER
    )
    return BrokerMarketPrices(
        welfare=result.welfare,
        lp_bound=result.lp_bound,
        jobs_in_book=len(book.jobs),
        resources_in_book=len(resources),
        jobs=tuple(jobs),
        resources=quotes,
    )


def _owners(resources: list[dict]) -> dict[int, int]:
    """resource id → the user id of its provider."""
    users = dict(
        Provider.objects.filter(pk__in={r["provider_id"] for r in resources}).values_list("pk", "user_id")
    )
    return {r["id"]: users[r["provider_id"]] for r in resources}
