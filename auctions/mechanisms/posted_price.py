"""Posted prices for thin books: every trade at a price fixed before the round, rationed by a public hash.

Model. Prices are per reference device-hour: the work a speed-1 device does in an hour, which a device
of speed s does in 1/s device-hours. Each resource class c carries a posted price p_c per reference
device-hour, set before the round from data the traders in the book do not report in it (the round
service uses the class's market-clearing price estimated in earlier rounds). Each ask (a resource's
free devices, `quantity` units of class `class`, `speed` s > 0, default 1, an ask per device-hour) is
willing iff ask / s <= p_c, i.e. iff p_c x s per device-hour covers its ask. Each bid (one
single-device job, one unit) lists the asks it can run on (`accepts`: memory, region within its
latency limit, deadline, earlier failures — whatever the caller checked), so a job may be served by
any class that fits it, not only its own. Buyers are taken in priority order: sha256("<salt>:<bid
id>") ascending (the round service uses the round id as salt, so the order is published with the
snapshot and no order can choose it). Each buyer takes, among its accepted willing asks with a unit
left and p_c <= bid, the one of lowest p_c (ties by the ask's priority sha256("<salt>:<ask id>")),
and pays p_c per reference device-hour, which is p_c x s per device-hour of that device; the seller
receives exactly that.

Properties (tested with Hypothesis in tests/unit/mechanisms/test_posted_price.py):
- truthful for both sides: no report changes any price or any priority. A buyer's bid only decides
  which classes it accepts; it gets the cheapest one left when its turn comes, so a lower bid can only
  remove options and a higher one can only add options priced above its value. An ask only decides
  whether the seller is willing; it sells at p_c either way (serial dictatorship with fixed prices);
- individually rational: a buyer pays p_c <= bid, a seller receives p_c x s >= ask per device-hour;
- exactly (strongly) budget balanced: each unit's payment is its receipt; `surplus` is 0;
- deterministic from the document: replaying it gives the same result and hash.
It is not efficient: a pair whose bid and ask straddle no posted price does not trade (the price of the
guarantees); the round service therefore uses it only where a double auction would drop the only
trades (thin books) and keeps McAfee for thick ones.

BOOK: {"mechanism": "posted_price", "salt": str, "prices": {class: p >= 0},
"bids": [{"id", "price", "accepts": [ask ids]}], "asks": [{"id", "price", "quantity", "class", "speed"?}]}.
RESULT: {"mechanism", "assignments": {bid: ask}, "fills": {id: units}, "payments": {id: money per
reference device-hour of the job paid (bids) or received (asks, summed over the jobs it serves)},
"unit_prices": {bid: p_c x s, per device-hour of the device it got}, "traded_quantity", "surplus" (0.0),
"gains_from_trade" (sum of bid - ask / s over the trades, per reference device-hour), "input_sha256"}.
"""

import hashlib
import math

from auctions.mechanisms.canonical import input_sha256 as _hash
from auctions.mechanisms.errors import MechanismError


def _bad(message: str) -> MechanismError:
    return MechanismError("bad_input", message)


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise _bad(f"{what} must be a finite number >= 0")
    return float(value)


def _name(value, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise _bad(f"{what} must be a non-empty string or an integer")
    return str(value)


def priority(salt: str, order_id) -> str:
    """The public rationing key of an order: sha256 hex of "<salt>:<id>" (lower goes first)."""
    return hashlib.sha256(f"{salt}:{order_id}".encode()).hexdigest()


def _validate(doc: dict) -> tuple[str, dict, list, list]:
    salt = doc.get("salt")
    if not isinstance(salt, str):
        raise _bad("salt must be a string")
    prices = doc.get("prices")
    if not isinstance(prices, dict):
        raise _bad("prices must be an object {class: price}")
    prices = {_name(key, "class"): _number(value, f"price of {key!r}") for key, value in prices.items()}
    bids, asks = doc.get("bids"), doc.get("asks")
    if not isinstance(bids, list) or not isinstance(asks, list):
        raise _bad("bids and asks must be lists")
    seen: set = set()
    clean_asks = []
    for index, row in enumerate(asks):
        what = f"asks[{index}]"
        if not isinstance(row, dict):
            raise _bad(f"{what} must be an object")
        name = _name(row.get("id"), f"{what} id")
        if name in seen:
            raise _bad(f"id {name!r} is repeated")
        seen.add(name)
        quantity = row.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            raise _bad(f"{what} quantity must be an integer >= 0")
        key = row.get("class")
        if key not in prices:
            raise _bad(f"{what} class {key!r} has no posted price")
        speed = row.get("speed", 1)
        if _number(speed, f"{what} speed") <= 0:
            raise _bad(f"{what} speed must be > 0")
        clean_asks.append((name, _number(row.get("price"), f"{what} price"), quantity, key, float(speed)))
    ask_names = {row[0] for row in clean_asks}
    clean_bids = []
    for index, row in enumerate(bids):
        what = f"bids[{index}]"
        if not isinstance(row, dict):
            raise _bad(f"{what} must be an object")
        name = _name(row.get("id"), f"{what} id")
        if name in seen:
            raise _bad(f"id {name!r} is repeated")
        seen.add(name)
        if row.get("quantity", 1) != 1:
            raise _bad(f"{what} quantity must be 1 (a bid is one job on one device)")
        accepts = row.get("accepts")
        if not isinstance(accepts, list) or any(
            _name(a, f"{what} accepts") not in ask_names for a in accepts
        ):
            raise _bad(f"{what} accepts must list ask ids of this book")
        clean_bids.append((name, _number(row.get("price"), f"{what} price"), [str(a) for a in accepts]))
    return salt, prices, clean_bids, clean_asks


def clear_posted_price(doc: dict, *, input_sha256: str | None = None) -> dict:
    """Clear a `posted_price` book (module docstring) and return its RESULT document."""
    salt, prices, bids, asks = _validate(doc)
    digest = input_sha256 if input_sha256 is not None else _hash(doc)
    ask_rows = {name: (price, quantity, key, speed) for name, price, quantity, key, speed in asks}
    left = {
        name: quantity
        for name, price, quantity, key, speed in asks
        if price / speed <= prices[key] and quantity > 0
    }
    per_reference = {name: prices[key] for name, _, _, key, _ in asks}
    ask_rank = {name: priority(salt, name) for name in left}
    assignments: dict[str, str] = {}
    unit_prices: dict[str, float] = {}
    paid_by: dict[str, float] = {}
    fills: dict[str, int] = {}
    receipts: dict[str, list[float]] = {}
    gains = []
    for name, bid, accepts in sorted(bids, key=lambda row: (priority(salt, row[0]), row[0])):
        options = [
            (per_reference[a], ask_rank[a], a)
            for a in accepts
            if left.get(a, 0) > 0 and per_reference[a] <= bid
        ]
        if not options:
            continue
        price, _, ask = min(options)
        left[ask] -= 1
        assignments[name] = ask
        paid_by[name] = price
        unit_prices[name] = price * ask_rows[ask][3]
        fills[name] = 1
        fills[ask] = fills.get(ask, 0) + 1
        receipts.setdefault(ask, []).append(price)
        gains.append(bid - ask_rows[ask][0] / ask_rows[ask][3])
    paid = list(paid_by.values())
    received = [price for values in receipts.values() for price in values]
    return {
        "mechanism": "posted_price",
        "assignments": assignments,
        "fills": fills,
        "payments": {**paid_by, **{ask: math.fsum(values) for ask, values in receipts.items()}},
        "unit_prices": unit_prices,
        "traded_quantity": len(assignments),
        # fsum is exact up to one final rounding of the same multiset of unit prices: 0.0 exactly.
        "surplus": math.fsum(paid) - math.fsum(received),
        "gains_from_trade": math.fsum(gains),
        "input_sha256": digest,
    }


def unit_gains_bound(bids: list[float], asks: list[tuple[float, int]]) -> float:
    """The most gains from trade a unit book can hold: sum of b_(i) - s_(i) over its efficient trades
    (bids one unit each, asks (price, units)); an upper bound on any rule's gains in that book."""
    sellers = sorted(price for price, units in asks for _ in range(int(units)))
    total = []
    for bid, ask in zip(sorted(bids, reverse=True), sellers, strict=False):
        if bid < ask:
            break
        total.append(bid - ask)
    return math.fsum(total)


def clearing_price_estimate(bids: list[float], asks: list[tuple[float, int]]) -> float | None:
    """The buyer-optimal market-clearing price of a unit book: max(s_k, b_k+1) for its k efficient
    trades (the lowest price at which supply and demand both equal k; the missing b_k+1 ignored); with
    no crossing pair, s_1, the lowest price a seller takes (no bid of this book trades anyway, and the
    next bid above it can); None when a side is empty. Bids one unit each, asks (price, units).

    Used to post the NEXT round's price of a class, never this round's (its traders set it). The low
    end of the clearing interval keeps every buyer who could trade willing, and the sellers it leaves
    out are those the efficient trades did not need; measured against other points of the interval in
    bench/market_day.py (the middle lost about a quarter of the efficient trades)."""
    sellers = sorted(price for price, units in asks for _ in range(int(units)))
    buyers = sorted(bids, reverse=True)
    if not sellers or not buyers:
        return None
    k = 0
    while k < min(len(buyers), len(sellers)) and buyers[k] >= sellers[k]:
        k += 1
    if k == 0:
        return sellers[0]
    return max([sellers[k - 1], *buyers[k : k + 1]])


def posted_gains_bound(doc: dict) -> float:
    """An upper bound on the gains any assignment of a posted-price book can hold: each bid's best gain
    bid - ask / s over the asks it accepts (per reference device-hour), summed where positive."""
    cost = {a["id"]: a["price"] / a.get("speed", 1) for a in doc["asks"] if a["quantity"] > 0}
    best = [
        max((bid["price"] - cost[a] for a in bid["accepts"] if a in cost), default=0.0) for bid in doc["bids"]
    ]
    return math.fsum(max(0.0, gain) for gain in best)
