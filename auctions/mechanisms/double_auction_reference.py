"""A plain-Python reading of the double-auction rules, for audits, tests and the benchmark.

It expands every order into its units and follows docs/mechanisms.md line by line, with no
vectorisation and no cut of the book, so that the NumPy engine (`double_auction`) can be checked
against it on random books. It assumes a valid book (the engine validates) and uses NumPy only for
the lottery draw, which the spec defines as `numpy.random.default_rng(seed).choice`.
"""

import numpy as np

from auctions.mechanisms import canonical

INF = float("inf")


def clear_reference(doc: dict, *, input_sha256: str | None = None) -> dict:
    """The RESULT of `clear` for a valid double-auction BOOK, computed the slow and obvious way."""
    mechanism = doc["mechanism"]
    bids = _orders(doc["bids"])
    asks = _orders(doc["asks"])
    if mechanism == "huang":
        result = _huang(bids, asks)
    else:
        result = _unit(mechanism, bids, asks, doc.get("support"), doc.get("seed", 0))
    result["input_sha256"] = canonical.input_sha256(doc) if input_sha256 is None else input_sha256
    return result


def _orders(side) -> list[tuple]:
    """(id, price, quantity) per order in input order."""
    if isinstance(side, dict):
        ids = list(side["id"].tolist() if hasattr(side["id"], "tolist") else side["id"])
        prices = side["price"].tolist() if hasattr(side["price"], "tolist") else side["price"]
        quantities = side.get("quantity")
        if quantities is None:
            quantities = [1] * len(ids)
        elif hasattr(quantities, "tolist"):
            quantities = quantities.tolist()
        return [(i, float(p), q) for i, p, q in zip(ids, prices, quantities, strict=True)]
    return [(row["id"], float(row["price"]), row.get("quantity", 1)) for row in side]


def _unit(mechanism, bids, asks, support, seed) -> dict:
    buyers = sorted(
        [(price, name) for name, price, quantity in bids for _ in range(int(quantity))], key=lambda u: -u[0]
    )
    sellers = sorted(
        [(price, name) for name, price, quantity in asks for _ in range(int(quantity))], key=lambda u: u[0]
    )
    k = 0
    while k < min(len(buyers), len(sellers)) and buyers[k][0] >= sellers[k][0]:
        k += 1

    def b(i):
        return buyers[i - 1][0] if 1 <= i <= len(buyers) else None

    def s(i):
        return sellers[i - 1][0] if 1 <= i <= len(sellers) else None

    units, bp, sp, lottery_on = 0, None, None, None
    if k > 0:
        if mechanism == "mcafee":
            nb, ns = b(k + 1), s(k + 1)
            if support is not None:
                nb = support["min_bid"] if nb is None else nb
                ns = support["max_ask"] if ns is None else ns
            p0 = None if nb is None or ns is None else (nb + ns) / 2
            if p0 is not None and s(k) <= p0 <= b(k):
                units, bp, sp = k, p0, p0
            else:
                units, bp, sp = k - 1, b(k), s(k)
        elif mechanism == "trade_reduction":
            units, bp, sp = k - 1, b(k), s(k)
        elif mechanism == "vcg":
            nb = -INF if b(k + 1) is None else b(k + 1)
            ns = INF if s(k + 1) is None else s(k + 1)
            units, bp, sp = k, max(s(k), nb), min(b(k), ns)
        elif mechanism == "sbba":
            ns = INF if s(k + 1) is None else s(k + 1)
            p = min(b(k), ns)
            units, bp, sp = (k, p, p) if ns <= b(k) else (k - 1, p, p)
            lottery_on = None if ns <= b(k) else "asks"
        elif mechanism == "sbba_buyer_lottery":
            nb = -INF if b(k + 1) is None else b(k + 1)
            p = max(s(k), nb)
            units, bp, sp = (k, p, p) if nb >= s(k) else (k - 1, p, p)
            lottery_on = None if nb >= s(k) else "bids"
    trading_buyers = buyers[:units]
    trading_sellers = sellers[:units]
    lottery = None
    if mechanism in ("sbba", "sbba_buyer_lottery"):
        side = "asks" if mechanism == "sbba" else "bids"
        lottery = {"side": side, "pool": [], "drawn": 0, "seed": seed}
        if lottery_on is not None:
            pool_units = (sellers if side == "asks" else buyers)[:k]
            drawn = np.random.default_rng(seed).choice(len(pool_units), size=units, replace=False)
            chosen = [pool_units[i] for i in sorted(int(i) for i in drawn)]
            lottery.update(pool=[name for _, name in pool_units], drawn=units)
            if side == "asks":
                trading_sellers = chosen
            else:
                trading_buyers = chosen
    if units == 0:
        bp = sp = None
    fills, payments = {}, {}
    gains = 0.0
    for units_of_side, price, sign in ((trading_buyers, bp, 1), (trading_sellers, sp, -1)):
        for unit_price, name in units_of_side:
            fills[name] = fills.get(name, 0) + 1
            payments[name] = price * fills[name]
            gains += sign * unit_price
    result = {
        "mechanism": mechanism,
        "efficient_trades": k,
        "traded_quantity": units,
        "buyer_price": None if bp is None else float(bp),
        "seller_price": None if sp is None else float(sp),
        "fills": fills,
        "payments": payments,
        "surplus": float((bp - sp) * units) if units else 0.0,
        "gains_from_trade": gains,
    }
    if lottery is not None:
        result["lottery"] = lottery
    return result


def _huang(bids, asks) -> dict:
    buyers = sorted([order for order in bids if order[2] > 0], key=lambda o: -o[1])
    sellers = sorted([order for order in asks if order[2] > 0], key=lambda o: o[1])
    tolerance = 1e-12 * (sum(float(o[2]) for o in bids) + sum(float(o[2]) for o in asks))
    # Walk both curves together: the efficient quantity is where they stop crossing.
    efficient, i, j = 0.0, 0, 0
    bid_cum = _cumulative(buyers)
    ask_cum = _cumulative(sellers)
    while i < len(buyers) and j < len(sellers) and buyers[i][1] >= sellers[j][1]:
        efficient = min(bid_cum[i], ask_cum[j])
        if bid_cum[i] <= ask_cum[j]:
            i += 1
        else:
            j += 1
    result = {
        "mechanism": "huang",
        "efficient_trades": efficient,
        "traded_quantity": 0.0,
        "buyer_price": None,
        "seller_price": None,
        "fills": {},
        "payments": {},
        "surplus": 0.0,
        "gains_from_trade": 0.0,
    }
    if efficient <= tolerance:
        return result
    buyer_setter = next(n for n, c in enumerate(bid_cum) if c >= efficient - tolerance)
    seller_setter = next(n for n, c in enumerate(ask_cum) if c >= efficient - tolerance)
    demand = bid_cum[buyer_setter - 1] if buyer_setter else 0.0
    supply = ask_cum[seller_setter - 1] if seller_setter else 0.0
    traded = min(demand, supply)
    if traded <= tolerance:
        return result
    buyer_q = [float(o[2]) for o in buyers[:buyer_setter]]
    seller_q = [float(o[2]) for o in sellers[:seller_setter]]
    if demand - supply > tolerance:
        buyer_q = _equal_loss(buyer_q, traded)
    elif supply - demand > tolerance:
        seller_q = _equal_loss(seller_q, traded)
    bp, sp = buyers[buyer_setter][1], sellers[seller_setter][1]
    gains = paid = received = 0.0
    for orders, quantities, price, sign in ((buyers, buyer_q, bp, 1), (sellers, seller_q, sp, -1)):
        for order, quantity in zip(orders, quantities, strict=False):
            if quantity >= tolerance:
                result["fills"][order[0]] = quantity
                result["payments"][order[0]] = quantity * price
                gains += sign * quantity * order[1]
                if sign > 0:
                    paid += quantity * price
                else:
                    received += quantity * price
    result.update(
        traded_quantity=traded,
        buyer_price=bp,
        seller_price=sp,
        surplus=paid - received,
        gains_from_trade=gains,
    )
    return result


def _cumulative(orders) -> list[float]:
    total, out = 0.0, []
    for order in orders:
        total += float(order[2])
        out.append(total)
    return out


def _equal_loss(quantities: list[float], target: float) -> list[float]:
    """Raise the common loss d step by step over the sorted quantities until the total falls to target."""
    active = sorted(quantities)
    total = sum(active)
    loss = 0.0
    while active:
        candidate = (total - target) / len(active)
        if candidate <= active[0]:
            loss = candidate
            break
        total -= active.pop(0)
    return [max(0.0, q - loss) for q in quantities]
