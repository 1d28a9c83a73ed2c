"""Pricing: Stackelberg quotes per resource class (providers lead with a price, consumers follow with
quantities), auto-priced asks, and the quote for one job spec ("what would it pay, would it clear").

The game per class (docs/mechanisms.md, `stackelberg`, uniform price):
- followers: the single-device jobs of the class — the QUEUED ones, routed as a round routes them
  (`classes.group_book`), plus the jobs leased in the class by the last CPX_PRICING_RECENT_ROUNDS
  rounds. Follower i values device-hours x at a_i ln(1 + x) with a_i its bid per device-hour, so its
  first device-hour is worth its bid and it buys x_i(p) = a_i / p - 1 device-hours at price p.
- unit cost c: the median price floor of the class's listed resources (what providers say a
  device-hour costs them); 0 when they state none — the capacity then still bounds the game.
- capacity: the class's free devices x CPX_PRICING_HORIZON_H hours (device-hours).
With two providers or more in the class, the providers themselves lead (`provider_asks.py`, the
engine's budget_oligopoly): each provider's auto-priced listings take its own equilibrium ask, stored
in the quote's result as `provider_asks`; the pooled game above still gives the class's quote.
The quote stores recommended_ask = max(c, p*), expected_price = the class's last clearing price in
the recent rounds (else p*), expected_utilisation = demand(p*) / capacity, and the game's document
and result. A class with no follower, or a game the engine cannot answer (`no_equilibrium`, …), gets
no quote this time.
"""

import statistics
from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest

from auctions.mechanisms import MechanismError, classes, latency, price
from auctions.models import PriceQuote
from auctions.selectors import rounds as selectors
from auctions.services.provider_asks import class_oligopoly
from auctions.services.round_books import class_label, class_of
from market.models import Resource
from market.money import MAX_AMOUNT, to_money
from market.services.jobs import job_request_size


def _book_resources(*, now: datetime, only_free: bool) -> list[dict]:
    return selectors.round_book_resources(
        now=now,
        heartbeat_timeout_s=getattr(settings, "CPX_HEARTBEAT_TIMEOUT_S", 60),
        include_unseen=settings.CPX_BOOK_INCLUDE_UNSEEN_PROVIDERS,
        only_free=only_free,
    )


def _grouped(jobs: list[dict], resources: list[dict], *, free: bool) -> dict:
    """`classes.group_book` over a live book (ids prefixed: jobs and resources share the id space)."""
    return classes.group_book(
        [
            {
                "id": f"j{job['id']}",
                "device_class": class_label(job["device_class"]),
                "memory_per_device_gib": float(job["memory_per_device_gib"]),
                "devices": job["device_count"],
                "bid": float(job["max_price_per_device_hour"]),
                "region": class_label(job["region"]),
            }
            for job in jobs
        ],
        [
            {
                "id": f"r{r['id']}",
                "device_class": class_label(r["device_class"]),
                "memory_per_device_gib": float(r["memory_per_device_gib"]),
                "devices": r["device_count"] - r["busy"] if free else r["device_count"],
                "ask": float(r["ask_per_device_hour"]),
                "region": class_label(r["provider__region"]),
            }
            for r in resources
        ],
        mechanism=settings.CPX_UNIT_MECHANISM,
    )


def _recent_prices(*, limit: int) -> dict[str, list[float]]:
    """Buyer prices per class over the recent cleared rounds, newest first."""
    history: dict[str, list[float]] = defaultdict(list)
    for round_obj in selectors.round_recent_cleared(limit=limit):
        for resource_class, prices in (round_obj.prices or {}).items():
            if prices.get("buyer_price") is not None:
                history[resource_class].append(float(prices["buyer_price"]))
    return history


@transaction.atomic
def price_quotes_update(*, now: datetime) -> list[PriceQuote]:
    """Solve the Stackelberg game per resource class, store a quote per class, and move every
    auto-priced resource of a quoted class to the recommended ask (never below its floor).

    Raises nothing for an empty or unsolvable class (it gets no quote); database errors propagate.
    """
    resources = _book_resources(now=now, only_free=False)
    if not resources:
        return []
    jobs = selectors.round_book_jobs(now=now, lock=False)
    members: dict[str, list[dict]] = defaultdict(list)
    for resource in resources:
        members[
            class_of(
                device_class=resource["device_class"],
                memory_gib=float(resource["memory_per_device_gib"]),
                region=resource["provider__region"],
            )
        ].append(resource)
    valuations: dict[str, list[float]] = defaultdict(list)
    budgets: dict[str, list[float | None]] = defaultdict(list)  # per follower, for the leaders' game
    budget_of = {f"j{job['id']}": float(job["budget"]) for job in jobs}
    for key, book in _grouped(jobs, resources, free=False)["books"].items():
        valuations[key].extend(float(order["price"]) for order in book["bids"])
        budgets[key].extend(budget_of.get(order["id"]) for order in book["bids"])
    recent = selectors.round_recent_cleared(limit=settings.CPX_PRICING_RECENT_ROUNDS)
    for key, bid in selectors.round_recent_lease_bids(round_ids=[r.pk for r in recent]):
        if key in members:
            valuations[key].append(float(bid))
            budgets[key].append(None)
    history = _recent_prices(limit=settings.CPX_PRICING_RECENT_ROUNDS)
    horizon = float(settings.CPX_PRICING_HORIZON_H)

    quotes = []
    for key in sorted(members):
        if not valuations.get(key):
            continue
        quote = _quote_class(key, members[key], valuations[key], history.get(key), horizon=horizon, now=now)
        if quote is not None:
            # The class's providers as leaders (docs/eetorp.md): each gets its own equilibrium ask.
            leaders = class_oligopoly(
                resources=members[key], followers=list(zip(valuations[key], budgets[key], strict=True))
            )
            if leaders is not None:
                quote.inputs["oligopoly"] = leaders["game"]
                quote.result["oligopoly"] = leaders["result"]
                quote.result["provider_asks"] = leaders["provider_asks"]
            quotes.append(quote)
    PriceQuote.objects.bulk_create(quotes)
    for quote in quotes:
        provider_asks = quote.result.get("provider_asks")
        if provider_asks:
            _move_to_provider_asks(members[quote.resource_class], provider_asks, now=now)
            continue
        ids = [r["id"] for r in members[quote.resource_class] if r["auto_pricing"]]
        if ids:
            # One UPDATE per class; GREATEST keeps every ask at or above its own floor.
            Resource.objects.filter(pk__in=ids, auto_pricing=True).update(
                ask_per_device_hour=Greatest(Value(quote.recommended_ask), F("price_floor")), updated_at=now
            )
    return quotes


def _move_to_provider_asks(resources: list[dict], provider_asks: dict, *, now: datetime) -> None:
    """Each provider's auto-priced listings of the class to its own equilibrium ask (never below their
    floors): one UPDATE per provider."""
    ids: dict[str, list[int]] = defaultdict(list)
    for resource in resources:
        if resource["auto_pricing"] and str(resource["provider_id"]) in provider_asks:
            ids[str(resource["provider_id"])].append(resource["id"])
    for provider, resource_ids in sorted(ids.items()):
        ask = min(MAX_AMOUNT, to_money(provider_asks[provider]))
        Resource.objects.filter(pk__in=resource_ids, auto_pricing=True).update(
            ask_per_device_hour=Greatest(Value(ask), F("price_floor")), updated_at=now
        )


def _quote_class(key, resources, bids, history, *, horizon: float, now: datetime) -> PriceQuote | None:
    cost = float(statistics.median(r["price_floor"] for r in resources))  # median of Decimals: exact
    free = sum(r["device_count"] - r["busy"] for r in resources)
    capacity = free * horizon
    game = {
        "game": "stackelberg",
        "valuations": sorted(bids, reverse=True),
        "unit_cost": cost,
        "capacity": capacity,
        "pricing": "uniform",
    }
    try:
        result = price(game)
    except MechanismError:
        return None  # no equilibrium (or an unanswerable class): no quote this time, not a crash
    p_star = result["price"]
    demand = result["total_demand"]
    first = resources[0]
    recommended = min(MAX_AMOUNT, to_money(max(cost, p_star)))
    expected = to_money(history[0]) if history else to_money(p_star)
    return PriceQuote(
        resource_class=key,
        device_class=first["device_class"],
        region=first["provider__region"],
        memory_tier_gib=classes.memory_tier(float(first["memory_per_device_gib"])),
        recommended_ask=recommended,
        expected_price=min(MAX_AMOUNT, expected),
        expected_utilisation=1.0 if capacity <= 0 else min(1.0, demand / capacity),
        demand_device_hours=demand,
        capacity_device_hours=capacity,
        followers=len(bids),
        inputs={
            "game": game,
            "horizon_h": horizon,
            "resources": [r["id"] for r in resources],
            "recent_buyer_prices": (history or [])[:10],
        },
        result=result,
        created_at=now,
    )


# --- The quote for one job spec


UNSERVABLE = frozenset(
    {"memory_exceeds_every_resource", "latency_sla_unmet", "devices_exceed_every_resource"}
)


def job_quote(*, spec: dict, now: datetime) -> dict:
    """What a job of this spec would pay now, whether it would clear in the next round, its chance
    over recent rounds, and when it would not clear, why and what bid or spec would.

    `would_clear_now` is true only when the next round's rule, run now on the current book plus this
    job (`rounds.round_preview_fill`: same routing, posted prices, rationing salt and engine), matches
    it; `expected_price` is then the price per device-hour that round would charge it. The reason and
    the lowest bid that clears come from the job's own class book (`classes.quote_unit_job`) or the
    cheapest fitting resource. Raises InvalidInput (cross-field rules, sizing).
    """
    fields = job_request_size(spec=spec, now=now)
    answer = _static_quote(fields=fields, now=now)
    if answer["reason"] in UNSERVABLE:
        return answer
    from auctions.services.rounds import round_preview_fill  # rounds imports round_books, as we do

    fill = round_preview_fill(job=_book_row(fields), now=now)
    answer["would_clear_now"] = fill is not None
    if fill is not None:
        if fill.elastic is not None:
            answer["elastic"] = fill.elastic  # what it would buy at that price (docs/eetorp.md)
        answer["expected_price"] = _money(fill.unit_price_paid)
        answer["resource_class"] = fill.resource_class
        if answer["reason"] != "no_supply_in_region":  # that one informs: it is placed elsewhere
            answer["reason"] = None
            answer["suggestion"] = ""
    elif fields.get("elastic") and answer["reason"] == "bid_below_clearing":
        answer["suggestion"] = (
            f"Its first unit is worth {fields['max_price_per_device_hour']} per reference device-hour, below "
            f"the cheapest fitting device's {answer['min_bid_to_clear']}: raise utility_weight (or the "
            "budget, or lower min_quantity)."
        )
    elif fields.get("elastic") and answer["reason"] is None:
        answer["reason"] = "not_matched_next_round"
        answer["suggestion"] = (
            "The next round would not match it on the current book, or at its price its utility would "
            "buy nothing: raise utility_weight or the budget, or lower min_quantity."
        )
    elif answer["reason"] is None:
        answer["reason"] = "not_matched_next_round"
        answer["suggestion"] = (
            "The next round would not match it on the current book (outbid, rationed, or no free "
            "device at its price): it waits in the queue."
        )
    return answer


def _book_row(fields: dict) -> dict:
    """The quote's job as a round's book reads a queued job (selectors.BOOK_JOB_FIELDS); id 0 is no job's."""
    return {
        "id": 0,
        "kind": fields["kind"],
        "params_billion": fields["params_billion"],
        "workload_tokens": fields.get("workload_tokens"),
        "workload_device_hours": fields.get("workload_device_hours"),
        "device_class": fields["device_class"],
        "max_price_per_device_hour": fields["max_price_per_device_hour"],
        "budget": fields["budget"],
        "deadline": fields["deadline"],
        "latency_sla_ms": fields.get("latency_sla_ms"),
        "region": fields["region"],
        "memory_per_device_gib": fields["memory_per_device_gib"],
        "device_count": fields["device_count"],
        "elastic": fields.get("elastic"),
        **({"placement": fields["placement"]} if fields.get("placement") else {}),
    }


def _static_quote(*, fields: dict, now: datetime) -> dict:
    """The class-book answer (price, reason, lowest bid that clears) before the next-round check."""
    job = {
        "id": 0,
        "device_class": fields["device_class"],
        "memory_per_device_gib": fields["memory_per_device_gib"],
        "device_count": fields["device_count"],
        "max_price_per_device_hour": fields["max_price_per_device_hour"],
        "region": fields["region"],
    }
    bid = float(fields["max_price_per_device_hour"])
    memory = float(fields["memory_per_device_gib"])
    answer = {
        "resource_class": None,
        "device_count": fields["device_count"],
        "memory_per_device_gib": str(fields["memory_per_device_gib"]),
        "expected_price": None,
        "would_clear_now": False,
        "chance_of_clearing": None,
        "reason": None,
        "min_bid_to_clear": None,
        "suggestion": "",
    }
    listed = _book_resources(now=now, only_free=False)
    of_class = [r for r in listed if r["device_class"] == job["device_class"]]
    if not any(float(r["memory_per_device_gib"]) >= memory for r in of_class):
        return _why(answer, "memory_exceeds_every_resource", _memory_hint(of_class, memory))
    fitting = [r for r in of_class if float(r["memory_per_device_gib"]) >= memory]
    if fields.get("latency_sla_ms") is not None:
        fitting = [r for r in fitting if _within_sla(r, fields["region"], fields["latency_sla_ms"])]
        if not fitting:
            return _why(
                answer,
                "latency_sla_unmet",
                "No listed resource is within the latency SLA of your region: relax latency_sla_ms.",
            )
    fitting = [r for r in fitting if r["device_count"] >= job["device_count"]]
    if not fitting:
        return _why(
            answer,
            "devices_exceed_every_resource",
            "No resource has that many devices on one node: use fewer devices with more memory each.",
        )
    free = [r for r in fitting if r["device_count"] - r["busy"] >= job["device_count"]]
    # An elastic job takes the cheapest fitting free device at its ask (docs/eetorp.md): the answer
    # below for the heterogeneous book, not a class's double auction.
    if job["device_count"] == 1 and fields.get("latency_sla_ms") is None and not fields.get("elastic"):
        queued = selectors.round_book_jobs(now=now, lock=False)
        grouped = _grouped([*queued, job], listed, free=True)
        for key, book in grouped["books"].items():
            if any(order["id"] == "j0" for order in book["bids"]) and len(book["bids"]) > 1:
                return _unit_answer(answer, key, book, bid)
        # Alone in its class, the round clears it in a heterogeneous book (services/round_books.py).
        if not any(r["provider__region"] == fields["region"] for r in fitting):
            answer["reason"] = "no_supply_in_region"
            answer["suggestion"] = "No fitting device in your region: the round may place the job elsewhere."
    return _heterogeneous_answer(answer, fields, free, bid)


def _unit_answer(answer: dict, key: str, book: dict, bid: float) -> dict:
    book = {**book, "bids": [order for order in book["bids"] if order["id"] != "j0"]}
    if settings.CPX_UNIT_MECHANISM in ("sbba", "sbba_buyer_lottery"):
        book["seed"] = settings.CPX_ROUND_SEED
    outcome = classes.quote_unit_job(book, bid)
    answer["resource_class"] = key
    answer["would_clear_now"] = bool(outcome["trades"])
    answer["expected_price"] = _money(outcome["price"] if outcome["trades"] else outcome["clearing_price"])
    answer["min_bid_to_clear"] = _money(outcome["min_bid"])
    answer["chance_of_clearing"] = _chance(key, bid)
    reasons = {
        "no_supply": "no_free_supply",
        "thin_market": "thin_market",
        "bid_below_clearing": "bid_below_clearing",
        "reduced_trade": "bid_below_clearing",
        "lottery_not_drawn": "lottery_not_drawn",
    }
    if outcome["reason"] is not None:
        answer["reason"] = reasons.get(outcome["reason"], outcome["reason"])
        if outcome["min_bid"] is not None:
            answer["suggestion"] = f"Bid at least {answer['min_bid_to_clear']} per device-hour to clear now."
        elif outcome["reason"] == "no_supply":
            answer["suggestion"] = "Every fitting device is busy: the job waits for the next free one."
        else:
            answer["suggestion"] = "Too few orders in this class to price a trade this round."
    return answer


def _heterogeneous_answer(answer: dict, fields: dict, free: list, bid: float) -> dict:
    """A job for the heterogeneous book: it clears where bid x speed beats the ask on a free resource."""
    if not free:
        return _why(answer, "no_free_supply", "Every fitting resource is busy: the job waits for capacity.")
    # Per device-hour on a speed-1 device: a resource of speed s costs ask / s for the same work.
    cheapest = min(free, key=lambda r: (float(r["ask_per_device_hour"]) / float(r["speed_factor"]), r["id"]))
    effective = float(cheapest["ask_per_device_hour"]) / float(cheapest["speed_factor"])
    answer["resource_class"] = class_of(
        device_class=cheapest["device_class"],
        memory_gib=float(cheapest["memory_per_device_gib"]),
        region=cheapest["provider__region"],
    )
    answer["expected_price"] = _money(float(cheapest["ask_per_device_hour"]))
    answer["min_bid_to_clear"] = _money(effective)
    answer["would_clear_now"] = bid > effective
    answer["chance_of_clearing"] = _chance(answer["resource_class"], bid)
    if not answer["would_clear_now"]:
        answer["reason"] = "bid_below_clearing"
        answer["suggestion"] = f"Bid above {answer['min_bid_to_clear']} per device-hour to clear now."
    return answer


def _chance(key: str, bid: float) -> float | None:
    history = _recent_prices(limit=settings.CPX_PRICING_RECENT_ROUNDS).get(key)
    if not history:
        return None
    return sum(1 for p in history if p <= bid) / len(history)


def _within_sla(resource: dict, region: str, sla_ms: int) -> bool:
    rtt = latency.estimate_rtt_ms(
        consumer_region=region,
        provider_region=resource["provider__region"],
        provider_lat=resource["provider__latitude"],
        provider_lon=resource["provider__longitude"],
    )
    return rtt is not None and rtt <= sla_ms


def _memory_hint(resources: list, memory: float) -> str:
    if not resources:
        return "No resource of this device class is listed."
    largest = max(float(r["memory_per_device_gib"]) for r in resources)
    return (
        f"The job needs {memory:g} GiB per device; the largest device has {largest:g} GiB: use more devices "
        "(requested_device_count), fewer bits, or a shorter context."
    )


def _why(answer: dict, reason: str, suggestion: str) -> dict:
    answer["reason"] = reason
    answer["suggestion"] = suggestion
    return answer


def _money(value) -> Decimal | None:
    return None if value is None else min(MAX_AMOUNT, to_money(float(value)))
