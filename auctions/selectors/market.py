"""The public market: what is on offer per resource class and what recent rounds cleared at.

Public on purpose (no login): the offers are what a visitor needs to decide to buy (device class,
memory, region, devices, ask), the way Vast.ai lists its offers; no provider name, site, wallet or
coordinates. Prices are stated per reference device-hour (one device-hour of a speed-1 device of
the class: what a bid is per) with the per-device-hour figure of the hardware beside it; a
device of speed s at ask a costs a / s per reference device-hour. Three queries whatever the size.
"""

import statistics
from collections import defaultdict
from datetime import datetime

from auctions.mechanisms import classes
from auctions.models import Lease, Round
from auctions.selectors import rounds as selectors
from market.money import to_money
from market.units import per_reference_device_hour as per_reference

RECENT_ROUNDS = 20


def _class_key(device_class: str, memory_gib, region: str) -> str:
    return classes.resource_class_key(
        device_class.replace("/", "-"), float(memory_gib), region.replace("/", "-")
    )


def market_offers(*, now: datetime, heartbeat_timeout_s: float, include_unseen: bool) -> list[dict]:
    """Listings on offer now (online providers, inside their availability window) grouped by class,
    cheapest per reference device-hour first in each class; classes sorted by key."""
    rows = selectors.round_book_resources(
        now=now, heartbeat_timeout_s=heartbeat_timeout_s, include_unseen=include_unseen, only_free=False
    )
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        key = _class_key(row["device_class"], row["memory_per_device_gib"], row["provider__region"])
        groups[key].append(row)
    offers = []
    for key in sorted(groups):
        members = groups[key]
        listed = sorted(
            (
                {
                    "devices": r["device_count"],
                    "free": max(0, r["device_count"] - r["busy"]),
                    "memory_per_device_gib": r["memory_per_device_gib"],
                    "speed_factor": r["speed_factor"],
                    "ask_per_device_hour": r["ask_per_device_hour"],
                    "ask_per_reference_device_hour": per_reference(
                        r["ask_per_device_hour"], r["speed_factor"]
                    ),
                }
                for r in members
            ),
            key=lambda offer: (offer["ask_per_reference_device_hour"], -offer["free"]),
        )
        first = members[0]
        offers.append(
            {
                "resource_class": key,
                "device_class": first["device_class"],
                "memory_tier_gib": classes.memory_tier(float(first["memory_per_device_gib"])),
                "region": first["provider__region"],
                "providers": len({r["provider_id"] for r in members}),
                "devices": sum(o["devices"] for o in listed),
                "free_devices": sum(o["free"] for o in listed),
                "lowest_ask_per_reference_device_hour": listed[0]["ask_per_reference_device_hour"],
                "offers": listed,
            }
        )
    return offers


def market_recent_prices(*, rounds: int = RECENT_ROUNDS) -> dict:
    """Prices the last `rounds` cleared rounds traded at, per class, newest round first: each
    trade's price per reference device-hour (what the consumer paid ÷ the device's speed) and per
    device-hour, and the median per class. Two queries."""
    recent = list(
        Round.objects.filter(status=Round.Status.CLEARED)
        .order_by("-id")
        .values_list("id", "cleared_at")[:rounds]
    )
    cleared_at = dict(recent)
    leases = (
        Lease.objects.filter(round_id__in=list(cleared_at))
        .order_by("-round_id", "id")
        .values_list("round_id", "resource_class", "unit_price_paid", "resource__speed_factor")
    )
    trades: dict[str, list[dict]] = defaultdict(list)
    for round_id, key, paid, speed in leases:
        trades[key].append(
            {
                "round": round_id,
                "cleared_at": cleared_at[round_id],
                "price_per_reference_device_hour": per_reference(paid, speed),
                "price_per_device_hour": paid,
            }
        )
    return {
        "rounds": [round_id for round_id, _ in recent],
        "classes": [
            {
                "resource_class": key,
                "trades": len(trades[key]),
                "last_price_per_reference_device_hour": trades[key][0]["price_per_reference_device_hour"],
                "median_price_per_reference_device_hour": to_money(
                    statistics.median(t["price_per_reference_device_hour"] for t in trades[key])
                ),
                "recent": trades[key][:10],
                "recent_all": trades[key],
            }
            for key in sorted(trades)
        ],
    }


def market_clearing_share(*, resource_class: str, bid, rounds: int = RECENT_ROUNDS) -> dict:
    """How often a bid (per reference device-hour) would have covered what `resource_class`
    traded at in the last `rounds` cleared rounds: {"trades", "rounds", "share"} (share None
    when the class did not trade). Two queries."""
    recent = market_recent_prices(rounds=rounds)
    row = next((c for c in recent["classes"] if c["resource_class"] == resource_class), None)
    if row is None:
        return {"trades": 0, "rounds": len(recent["rounds"]), "share": None}
    prices = [t["price_per_reference_device_hour"] for t in row["recent_all"]]
    share = sum(1 for price in prices if price <= bid) / len(prices)
    return {"trades": len(prices), "rounds": len(recent["rounds"]), "share": share}


def quote_history(*, quote: dict, bid) -> dict:
    """The quote's chance of clearing, or else how `bid` compares with what the quoted class traded
    at in recent rounds (every kind of book, not only unit auctions, whose prices the quote reads),
    so a class that trades has history: {"share", "trades", "rounds"}."""
    if quote["chance_of_clearing"] is not None or not quote["resource_class"]:
        return {"share": quote["chance_of_clearing"], "trades": None, "rounds": None}
    return market_clearing_share(resource_class=quote["resource_class"], bid=bid)
