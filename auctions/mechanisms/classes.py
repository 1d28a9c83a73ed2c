"""Resource classes of a live book, and quotes for a unit job in one class.

A resource class is a device class, a memory tier and a region, written as a stable key such as
"GPU/24G/eu-west". The memory tier of a device is the largest tier in MEMORY_TIERS_GIB not above
its memory (a 20 GiB card is in the 16G tier; the last tier, 96, holds every device of 96 GiB or
more). Within a class, devices are interchangeable units, so a class is cleared by a unit double
auction (docs/mechanisms.md): each free device is one unit of its resource's ask, each
single-device job one unit bid.
"""

import math

from auctions.mechanisms.errors import MechanismError

MEMORY_TIERS_GIB = (0, 2, 4, 8, 12, 16, 24, 32, 48, 80, 96)  # 2 and 4: edge NPUs and small boards
QUOTE_ID = "__quote__"


def _bad(message: str) -> MechanismError:
    return MechanismError("bad_input", message)


def _label(value, what: str) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise _bad(f"{what} must be a non-empty string without '/'")
    return value


def _amount(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise _bad(f"{what} must be a finite number >= 0")
    return float(value)


def memory_tier(memory_gib) -> int:
    """The largest tier of MEMORY_TIERS_GIB that is at most `memory_gib` (what a device guarantees)."""
    memory = _amount(memory_gib, "memory_gib")
    return max(tier for tier in MEMORY_TIERS_GIB if tier <= memory)


def required_tier(memory_gib) -> int | None:
    """The smallest tier that guarantees `memory_gib` per device; None above the last tier (96 GiB)."""
    memory = _amount(memory_gib, "memory_gib")
    return next((tier for tier in MEMORY_TIERS_GIB if tier >= memory), None)


def resource_class_key(device_class: str, memory_gib, region: str) -> str:
    """Stable key "<device class>/<tier>G/<region>", e.g. resource_class_key("GPU", 24, "eu-west")."""
    return f"{_label(device_class, 'device_class')}/{memory_tier(memory_gib)}G/{_label(region, 'region')}"


def _field(record: dict, name: str, what: str):
    if not isinstance(record, dict) or name not in record:
        raise _bad(f"{what} has no {name}")
    return record[name]


def _devices(record: dict, what: str) -> int:
    devices = _field(record, "devices", what)
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 0:
        raise _bad(f"{what} devices must be an integer >= 0")
    return devices


def group_book(jobs: list[dict], resources: list[dict], *, mechanism: str = "mcafee") -> dict:
    """Split a live book into one unit double-auction BOOK per resource class.

    jobs: {id, device_class, memory_per_device_gib, devices, bid (max price per device-hour), region};
    resources: {id, device_class, memory_per_device_gib, devices (free), ask (per device-hour), region}.

    Policy, kept simple on purpose: a resource with free devices offers them as one ask of quantity
    `devices` in its own class. A job needing one device bids in the cheapest fitting class of its
    device class and region: the smallest memory tier that guarantees its memory (required_tier) or
    any larger tier, among classes with supply. A job needing several devices, or more memory than
    the last tier guarantees, is returned under "heterogeneous" for the welfare MILP; a single-device
    job with no fitting supply in its region is returned under "unplaced". Orders keep input order,
    so ties in a class are broken by it. Returns {"books": {key: BOOK}, "heterogeneous": [job ids],
    "unplaced": [job ids]}, books sorted by key.
    """
    books: dict[str, dict] = {}
    supply: dict[tuple[str, str], set[int]] = {}
    seen: set = set()
    for position, resource in enumerate(resources):
        what = f"resources[{position}]"
        name = _field(resource, "id", what)
        if isinstance(name, bool) or not isinstance(name, int | str) or name in seen:
            raise _bad(f"{what} id {name!r} is not a new string or integer")
        seen.add(name)
        devices = _devices(resource, what)
        device_class = _field(resource, "device_class", what)
        region = _field(resource, "region", what)
        memory = _field(resource, "memory_per_device_gib", what)
        key = resource_class_key(device_class, memory, region)
        ask = _amount(_field(resource, "ask", what), f"{what} ask")
        if devices == 0:
            continue
        supply.setdefault((device_class, region), set()).add(memory_tier(memory))
        book = books.setdefault(key, {"mechanism": mechanism, "bids": [], "asks": []})
        book["asks"].append({"id": name, "price": ask, "quantity": devices})
    heterogeneous, unplaced = [], []
    for position, job in enumerate(jobs):
        what = f"jobs[{position}]"
        name = _field(job, "id", what)
        if isinstance(name, bool) or not isinstance(name, int | str) or name in seen:
            raise _bad(f"{what} id {name!r} is not a new string or integer")
        seen.add(name)
        devices = _devices(job, what)
        device_class = _label(_field(job, "device_class", what), f"{what} device_class")
        region = _label(_field(job, "region", what), f"{what} region")
        needed = required_tier(_field(job, "memory_per_device_gib", what))
        bid = _amount(_field(job, "bid", what), f"{what} bid")
        if devices != 1 or needed is None:
            heterogeneous.append(name)
            continue
        fitting = [tier for tier in supply.get((device_class, region), ()) if tier >= needed]
        if not fitting:
            unplaced.append(name)
            continue
        key = f"{device_class}/{min(fitting)}G/{region}"
        books[key]["bids"].append({"id": name, "price": bid, "quantity": 1})
    return {"books": dict(sorted(books.items())), "heterogeneous": heterogeneous, "unplaced": unplaced}


def _with_bid(book: dict, name, bid: float) -> dict:
    bids = book.get("bids", [])
    if isinstance(bids, dict):
        columns = {key: list(v.tolist() if hasattr(v, "tolist") else v) for key, v in bids.items()}
        columns["id"].append(name)
        columns["price"].append(bid)
        if "quantity" in columns:
            columns["quantity"].append(1)
        bids = columns
    else:
        bids = [*bids, {"id": name, "price": bid, "quantity": 1}]
    return {**book, "bids": bids}


def _side_orders(side) -> list[tuple]:
    """(id, price, quantity) of each order of a validated side, rows or columns."""
    if isinstance(side, dict):

        def column(values):
            return list(values.tolist() if hasattr(values, "tolist") else values)

        ids, prices = column(side["id"]), column(side["price"])
        quantities = column(side["quantity"]) if side.get("quantity") is not None else [1] * len(ids)
        return list(zip(ids, prices, quantities, strict=True))
    return [(row["id"], row["price"], row.get("quantity", 1)) for row in side]


def quote_unit_job(book: dict, bid) -> dict:
    """Would a new one-unit bid at `bid` trade in this class book now, at what price, and if not, why?

    Clears the book without and with the bid (same mechanism, same seed). Returns
    {"trades", "price" (what it would pay per unit, None when it does not trade), "probability"
    (1 or 0, or drawn/pool when it sits in a buyers' lottery), "reason", "min_bid", "clearing_price"
    (the buyers' price without it)}. `reason` is None when it trades, else one of:
    "no_supply" (no ask with a free unit), "thin_market" (no bid at all would trade: the mechanism
    gives up the only efficient trade), "bid_below_clearing" (the bid is outside the efficient
    trades), "reduced_trade" (efficient, but it is the trade the rule gives up for truthfulness and
    budget balance), "lottery_not_drawn" (in the buyers' lottery pool, not drawn with this seed).
    `min_bid` is the lowest bid, to 1e-9 relative, that trades (or enters the lottery), found by
    bisection: the rules are truthful, so winning is monotone in one's own bid. A new bid is the
    last in input order, so it loses ties; a min_bid just above a book price means "beat it".
    Raises MechanismError for a malformed book or bid.
    """
    from auctions.mechanisms.double_auction import clear_double_auction

    if isinstance(bid, bool) or not isinstance(bid, int | float) or not math.isfinite(bid):
        raise _bad("bid must be a finite number")
    bid = float(bid)
    baseline = clear_double_auction(book, input_sha256="quote")  # validates the book
    bids = _side_orders(book["bids"])
    asks = _side_orders(book["asks"])
    taken = {order[0] for order in bids + asks}
    name = QUOTE_ID
    while name in taken:
        name += "_"

    def outcome(price: float) -> tuple[dict, float]:
        result = clear_double_auction(_with_bid(book, name, price), input_sha256="quote")
        lottery = result.get("lottery")
        if lottery and lottery["side"] == "bids" and name in lottery["pool"]:
            return result, lottery["drawn"] / len(lottery["pool"])
        return result, 1.0 if result["fills"].get(name, 0) > 0 else 0.0

    result, probability = outcome(bid)
    trades = result["fills"].get(name, 0) > 0
    quote = {
        "trades": trades,
        "price": result["buyer_price"] if trades else None,
        "probability": probability,
        "reason": None,
        "min_bid": None,
        "clearing_price": baseline["buyer_price"],
    }
    if sum(quantity for _, _, quantity in asks) <= 0:
        quote["reason"] = "no_supply"
        return quote
    prices = [price for _, price, _ in asks + bids] + [bid]
    quote["min_bid"] = _lowest_winning_bid(lambda x: outcome(x)[1] > 0, prices)
    if trades:
        return quote
    if quote["min_bid"] is None:
        quote["reason"] = "thin_market"
    elif probability > 0:
        quote["reason"] = "lottery_not_drawn"
    else:
        ahead = sum(quantity for _, price, quantity in bids if price >= bid)
        quote["reason"] = "reduced_trade" if ahead + 1 <= result["efficient_trades"] else "bid_below_clearing"
    return quote


def _lowest_winning_bid(wins, prices: list[float]) -> float | None:
    """Bisection for the threshold of a monotone predicate, snapped to a book price when one wins."""
    spread = max(abs(price) for price in prices) + 1.0
    low, high = min(prices) - spread, max(prices) + spread
    if not wins(high):
        return None
    if wins(low):
        return low
    for _ in range(200):
        if high - low <= 1e-9 * max(1.0, abs(high)):
            break
        middle = (low + high) / 2
        if wins(middle):
            high = middle
        else:
            low = middle
    exact = [price for price in prices if low <= price <= high and wins(price)]
    return float(min(exact)) if exact else high
