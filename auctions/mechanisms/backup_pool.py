"""Backup pool: which idle devices a round holds in standby for which running jobs.

Model (after FusionAI, Tang et al. 2023: a broker keeps a backup pool of consumer GPUs so that a job
whose GPU leaves is restarted on a standby at once). The round's idle devices, after its own trades,
are the asks: `quantity` free devices of one resource at its `price` per device-hour. Each job of the
book is a running job that wants a standby: `devices` devices on ONE resource (a job's devices are
never split) among those it `accepts` (the caller checked device class, memory, region and latency,
deadline, budget, that the price is within the job's bid, and that the resource's provider is
neither the job's current provider nor one that failed it). The pool may hold at most

    capacity = floor(share × Σ quantity)

devices, so a share of the idle supply always stays in the next round's book. Jobs are served in the
order given (the caller lists them oldest first); each takes, among its accepted asks with enough
devices left, the one of lowest price (ties by the ask's id), while the pool has room for its
devices; a job that does not fit is skipped and the next one tried (first fit).

A standby is an option, not a trade: nobody pays for devices here. The caller charges the job a
standby fee (a share of its running lease's cost) and pays it to the standby's provider, and if the
job's provider fails, the job restarts on its standby at the standby's ask, at most its bid.

Properties (tests/unit/mechanisms/test_backup_pool.py, Hypothesis): every standby is accepted by
its job, at its ask's price; no ask holds more devices than its quantity; the pool holds at most
`capacity` devices; a job left without a standby had no accepted ask with room, or no room in the
pool (first fit is maximal); no job's standby is dearer than an accepted ask that still has room;
deterministic from the document (a replay gives the same result).

BOOK: {"mechanism": "backup_pool", "share": 0 <= s <= 1,
"jobs": [{"id", "devices" >= 1, "accepts": [ask ids]}], "asks": [{"id", "price" >= 0, "quantity" >= 0}]}.
RESULT: {"mechanism", "standbys": {job: ask}, "prices": {job: price per device-hour}, "held": {ask:
devices}, "capacity", "reserved_devices", "input_sha256"}.
"""

import math

from auctions.mechanisms.canonical import input_sha256 as _hash
from auctions.mechanisms.errors import MechanismError


def _bad(message: str) -> MechanismError:
    return MechanismError("bad_input", message)


def _name(value, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise _bad(f"{what} must be a non-empty string or an integer")
    return str(value)


def _count(value, what: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(f"{what} must be an integer >= {minimum}")
    return value


def _validate(doc: dict) -> tuple[float, list, dict]:
    share = doc.get("share")
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise _bad("share must be a number from 0 to 1")
    asks_in, jobs_in = doc.get("asks"), doc.get("jobs")
    if not isinstance(asks_in, list) or not isinstance(jobs_in, list):
        raise _bad("a backup_pool book has lists jobs and asks")
    asks: dict[str, tuple[float, int]] = {}
    for ask in asks_in:
        if not isinstance(ask, dict):
            raise _bad("an ask is an object")
        name = _name(ask.get("id"), "an ask's id")
        price = ask.get("price")
        if (
            isinstance(price, bool)
            or not isinstance(price, int | float)
            or not math.isfinite(price)
            or price < 0
        ):
            raise _bad("an ask's price must be a finite number >= 0")
        if name in asks:
            raise _bad(f"ask id {name} appears twice")
        asks[name] = (float(price), _count(ask.get("quantity"), "an ask's quantity", minimum=0))
    jobs, seen = [], set()
    for job in jobs_in:
        if not isinstance(job, dict):
            raise _bad("a job is an object")
        name = _name(job.get("id"), "a job's id")
        if name in seen:
            raise _bad(f"job id {name} appears twice")
        seen.add(name)
        accepts = job.get("accepts", [])
        if not isinstance(accepts, list):
            raise _bad("a job's accepts is a list of ask ids")
        accepted = [_name(a, "an accepted ask") for a in accepts]
        unknown = [a for a in accepted if a not in asks]
        if unknown:
            raise _bad(f"job {name} accepts unknown asks {unknown[:3]}")
        jobs.append((name, _count(job.get("devices"), "a job's devices", minimum=1), accepted))
    return float(share), jobs, asks


def clear_backup_pool(doc: dict, *, input_sha256: str | None = None) -> dict:
    """Choose the standbys of a `backup_pool` book (module docstring) and return its RESULT document."""
    share, jobs, asks = _validate(doc)
    digest = input_sha256 if input_sha256 is not None else _hash(doc)
    capacity = math.floor(share * sum(quantity for _, quantity in asks.values()) + 1e-9)
    left = {name: quantity for name, (_, quantity) in asks.items()}
    standbys: dict[str, str] = {}
    prices: dict[str, float] = {}
    held: dict[str, int] = {}
    reserved = 0
    for name, devices, accepts in jobs:
        if reserved + devices > capacity:
            continue
        options = sorted((asks[a][0], a) for a in set(accepts) if left[a] >= devices)
        if not options:
            continue
        price, ask = options[0]
        left[ask] -= devices
        held[ask] = held.get(ask, 0) + devices
        reserved += devices
        standbys[name] = ask
        prices[name] = price
    return {
        "mechanism": "backup_pool",
        "standbys": standbys,
        "prices": prices,
        "held": held,
        "capacity": capacity,
        "reserved_devices": reserved,
        "input_sha256": digest,
    }
