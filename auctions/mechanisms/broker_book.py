"""The `brokers` book: MECM's three-tier clearing (`brokers.clear_three_tier`) as a BOOK document.

BOOK: {"mechanism": "brokers", "node_limit": int >= 0,
       "servers": [{"id", "capacity", "cost"}],                       devices, money per device
       "brokers": [{"id", "capacity", "cost", "servers": [server ids]}],
       "users":   [{"id", "demand", "value", "brokers": [broker ids], "direct": [server ids],
                    "fits": [server ids]}]}
RESULT: {"mechanism": "brokers", "status", "welfare", "lp_bound",
         "assignments": {user: server}, "routes": {user: broker or null},
         "payments": {user: what it pays}, "server_receipts": {user: what its server receives},
         "broker_receipts": {user: what its broker receives},
         "unit_prices": {user: payment per device}, "server_prices", "broker_prices",
         "traded_quantity", "input_sha256"}
Work limits only (`node_limit`), so a replay gives the same result on any machine under any load.
"""

from auctions.mechanisms.brokers import Broker, Server, User, clear_three_tier
from auctions.mechanisms.canonical import input_sha256 as _hash
from auctions.mechanisms.errors import MechanismError


def _list(doc: dict, key: str) -> list:
    value = doc.get(key)
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise MechanismError("bad_input", f"{key} must be a list of objects")
    return value


def _number(item: dict, key: str) -> float:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MechanismError("bad_input", f"{key} must be a number")
    return float(value)


def _ids(item: dict, key: str, *, required: bool = False) -> tuple[str, ...]:
    if required and key not in item:
        raise MechanismError("bad_input", f"missing field {key!r}")
    value = item.get(key, [])
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise MechanismError("bad_input", f"{key} must be a list of ids")
    return tuple(value)


def clear_brokers(doc: dict, *, input_sha256: str | None = None) -> dict:
    """Clear a `brokers` book (module docstring) and return its RESULT document."""
    digest = input_sha256 if input_sha256 is not None else _hash(doc)
    node_limit = doc.get("node_limit")
    try:
        servers = [
            Server(str(s["id"]), _number(s, "capacity"), _number(s, "cost")) for s in _list(doc, "servers")
        ]
        brokers = [
            Broker(
                str(b["id"]), _number(b, "capacity"), _number(b, "cost"), _ids(b, "servers", required=True)
            )
            for b in _list(doc, "brokers")
        ]
        users = [
            User(
                str(u["id"]),
                _number(u, "demand"),
                _number(u, "value"),
                _ids(u, "brokers"),
                _ids(u, "direct"),
                _ids(u, "fits") if "fits" in u else None,
            )
            for u in _list(doc, "users")
        ]
    except KeyError as missing:
        raise MechanismError("bad_input", f"missing field {missing}") from None
    result = clear_three_tier(servers, brokers, users, node_limit=node_limit)
    routes = result.routes
    return {
        "mechanism": "brokers",
        "status": result.status,
        "welfare": result.welfare,
        "lp_bound": result.lp_bound,
        "assignments": {r.user: r.server for r in routes},
        "routes": {r.user: r.broker for r in routes},
        "payments": {r.user: r.user_pays for r in routes},
        "server_receipts": {r.user: r.server_receives for r in routes},
        "broker_receipts": {r.user: r.broker_receives for r in routes},
        "unit_prices": {r.user: r.user_pays / r.devices for r in routes},
        "server_prices": result.server_prices,
        "broker_prices": result.broker_prices,
        "traded_quantity": sum(r.devices for r in routes),
        "input_sha256": digest,
    }
