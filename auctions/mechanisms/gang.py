"""Gangs: one job too large for any single device, split into pipeline stages across several
providers, matched whole or not at all (FusionAI's model; docs/fusionai-gangs.md).

Model. A job j has L_j layers of m_j GiB each (its sizing's total memory spread evenly over its
layers, `stage_plan`), W_j base device-hours of work (on a speed-1 device), a value `bid` (money for
the whole job), a deadline of h_j hours, at most `max_members` members and, optionally,
`max_latency_ms` between every two members. A provider k offers F_k free devices of g_k GiB, speed
v_k, at a_k per device-hour; a device holds floor(g_k / m_j) whole layers (pipeline parallelism never
splits a layer). A gang is a list of members (stages, in pipeline order); member i takes the
contiguous layers l_i on d_i = ceil(l_i / floor(g_i / m_j)) <= F_i of its devices. The pipeline
runs as fast as its slowest stage:

    H = max_i W l_i / (L d_i v_i)   hours, every member holding its devices for H,
    cost = sum_i a_i d_i H          (money),   feasible iff sum l_i = L, H <= h_j,
    every pair of members within max_latency_ms (`latency.rtt_from_distance_ms` between their
    places; a member with no known place cannot promise a latency and is left out), and cost <= bid.

Allocation (all or nothing): jobs in order of bid per base device-hour (ties by position); each takes
the cheapest gang the devices still free allow (`_plan`: for every anchor provider, add the
providers cheapest per layer-hour that keep every pair within the bound until the layers fit or
`max_members` is reached; the cheapest of these gangs wins), or nothing: no member of a job that
does not fit is ever allocated. Payments: the job pays its critical value (the least bid that still
wins, computed exactly over the positions it could take: `_critical`), at least the gang's cost;
each member receives its cost share a_i d_i H (pay-as-ask). So the job pays at most its bid (IR for
the consumer), every member is paid its ask for its devices (IR for providers), and payments cover
receipts (weak budget balance); the surplus goes to the platform.

Departures (docs/fusionai-gangs.md): FusionAI's broker schedules sub-tasks as a DAG across
volunteers; CPX clears gangs in its round as one more book, cleared before the others (the most
constrained orders first), with the heuristic plan above instead of an exact search, so truthfulness
for the consumer is exact only where the plan's cost never rises with more free capacity; providers
are paid their asks (not truthful for them, as in the greedy heterogeneous book's receipts).
Pure: no Django, no settings, no clock.
"""

import math

from auctions.mechanisms.canonical import input_sha256 as _hash
from auctions.mechanisms.errors import MechanismError
from auctions.mechanisms.latency import great_circle_km, rtt_from_distance_ms

MECHANISM = "gang"
MAX_MEMBERS = 64
TINY = 1e-9


def stage_plan(*, layers: int, total_gib: float) -> dict:
    """The job's pipeline unit from its sizing (`llm_sizing.Sizing`): layers and GiB per layer."""
    if not (isinstance(layers, int) and layers >= 1) or not (math.isfinite(total_gib) and total_gib > 0):
        raise MechanismError("bad_input", "a gang needs layers >= 1 and a positive total memory")
    return {"layers": layers, "layer_gib": total_gib / layers}


def clear_gang(doc: dict, *, input_sha256: str | None = None) -> dict:
    """Clear a gang book (module docstring); returns assignments, hours, payments, costs, receipts."""
    digest = input_sha256 if input_sha256 is not None else _hash(doc)
    jobs, providers = _validate(doc)
    order = sorted(range(len(jobs)), key=lambda i: (-jobs[i]["bid"] / jobs[i]["work_hours"], i))
    plans, _ = _allocate(jobs, providers, order)
    assignments, hours, payments, costs, receipts = {}, {}, {}, {}, {}
    for i in order:
        plan = plans.get(i)
        if plan is None:
            continue
        job = jobs[i]
        critical = _critical(jobs, providers, order, i)
        payment = min(job["bid"], max(critical, plan["cost"]))
        assignments[job["id"]] = [
            {key: value for key, value in member.items() if key != "index"} for member in plan["members"]
        ]
        hours[job["id"]] = plan["hours"]
        costs[job["id"]] = plan["cost"]
        payments[job["id"]] = payment
        for member in plan["members"]:
            receipts[member["provider"]] = receipts.get(member["provider"], 0.0) + member["cost"]
    welfare = sum(jobs[i]["bid"] - plans[i]["cost"] for i in plans)
    return {
        "mechanism": MECHANISM,
        "assignments": assignments,
        "hours": hours,
        "costs": costs,
        "payments": payments,
        "receipts": receipts,
        "welfare": welfare,
        "surplus": sum(payments.values()) - sum(receipts.values()),
        "input_sha256": digest,
    }


def _allocate(jobs: list, providers: list, order: list, *, skip: int | None = None):
    """Greedy in `order` (without job `skip`): {job index: plan}, and `states[p]`, the free devices
    the p-th job of the order met (the last entry: what all of them left)."""
    free = [p["gpus"] for p in providers]
    plans, states = {}, []
    for i in order:
        if i == skip:
            continue
        states.append(list(free))
        plan = _plan(jobs[i], providers, free)
        if plan is not None and plan["cost"] <= jobs[i]["bid"] + TINY:
            plans[i] = plan
            for member in plan["members"]:
                free[member["index"]] -= member["devices"]
    states.append(list(free))
    return plans, states


def _critical(jobs: list, providers: list, order: list, i: int) -> float:
    """The least bid with which job i still wins, the others' bids fixed: placed after the first p
    other jobs of the order (p = 0..n), it wins iff the gang planned on the devices they leave costs
    at most its bid; a bid puts it at position p over an interval of bids, so the least winning bid
    is the least over p of max(cost_p, the interval's lower end) within the interval."""
    others = [k for k in order if k != i]
    _, states = _allocate(jobs, providers, order, skip=i)
    work = jobs[i]["work_hours"]
    best = math.inf
    for p in range(len(others) + 1):
        plan = _plan(jobs[i], providers, states[p])
        if plan is None:
            continue
        # Position p: ahead of others[p] (a bid above its density, or equal with a lower index),
        # behind others[p-1]. Ties resolve by index, as in `order`.
        low = 0.0 if p == len(others) else jobs[others[p]]["bid"] / jobs[others[p]]["work_hours"] * work
        high = math.inf if p == 0 else jobs[others[p - 1]]["bid"] / jobs[others[p - 1]]["work_hours"] * work
        candidate = max(plan["cost"], low)
        if candidate <= high + TINY:
            best = min(best, candidate)
    return best if math.isfinite(best) else jobs[i]["bid"]


def _plan(job: dict, providers: list, free: list) -> dict | None:
    """The cheapest gang the free devices allow for the job (module docstring), or None."""
    per_device = [int((p["vram_per_gpu"] + TINY) // job["layer_gib"]) for p in providers]
    usable = [k for k in job["allowed"] if free[k] > 0 and per_device[k] > 0]
    if not usable:
        return None
    # Cheapest per layer-hour first: ask / (speed x layers per device); ties by position.
    ranked = sorted(
        usable,
        key=lambda k: (providers[k]["ask_per_gpu_hour"] / (providers[k]["speed"] * per_device[k]), k),
    )
    bound = job["max_latency_ms"]
    best = None
    for anchor in ranked:
        members = [anchor]
        capacity = free[anchor] * per_device[anchor]
        for k in ranked:
            if capacity >= job["layers"] or len(members) >= job["max_members"]:
                break
            if k == anchor or not all(_near(providers[k], providers[m], bound) for m in members):
                continue
            members.append(k)
            capacity += free[k] * per_device[k]
        if capacity < job["layers"]:
            continue
        plan = _stages(job, providers, free, per_device, members)
        if plan is not None and (best is None or plan["cost"] < best["cost"] - TINY):
            best = plan
    return best


def _stages(job: dict, providers: list, free: list, per_device: list, members: list) -> dict | None:
    """Layers to members in order (each up to its free devices' layers), devices, hours and cost."""
    left, start, stages = job["layers"], 0, []
    for k in members:
        layers = min(left, free[k] * per_device[k])
        if layers <= 0:
            break
        devices = -(-layers // per_device[k])
        stages.append((k, layers, devices, start))
        start += layers
        left -= layers
    hours = max(
        job["work_hours"] * layers / (job["layers"] * devices * providers[k]["speed"])
        for k, layers, devices, _ in stages
    )
    if hours > job["deadline_hours"] + TINY:
        return None
    out = []
    for stage, (k, layers, devices, first) in enumerate(stages):
        out.append(
            {
                "stage": stage,
                "provider": providers[k]["id"],
                "index": k,
                "devices": devices,
                "layers": [first, first + layers],
                "cost": providers[k]["ask_per_gpu_hour"] * devices * hours,
            }
        )
    return {"members": out, "hours": hours, "cost": sum(m["cost"] for m in out)}


def _near(a: dict, b: dict, bound: float | None) -> bool:
    if bound is None:
        return True
    if a["lat"] is None or b["lat"] is None:
        return False  # an unknown place cannot promise a latency
    return rtt_from_distance_ms(great_circle_km((a["lat"], a["lon"]), (b["lat"], b["lon"]))) <= bound


def _finite(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MechanismError("bad_input", f"{name} must be a finite number")
    return float(value)


def _number(value, name: str, *, positive: bool = False) -> float:
    value = _finite(value, name)
    if value < 0 or (positive and value <= 0):
        raise MechanismError("bad_input", f"{name} must be {'> 0' if positive else '>= 0'}")
    return float(value)


def _whole(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise MechanismError("bad_input", f"{name} must be an integer >= {low}")
    return value


def _validate(doc: dict) -> tuple[list, list]:
    if doc.get("mechanism") != MECHANISM:
        raise MechanismError("bad_input", "a gang book has mechanism 'gang'")
    raw_jobs, raw_providers = doc.get("jobs"), doc.get("providers")
    if not isinstance(raw_jobs, list) or not isinstance(raw_providers, list):
        raise MechanismError("bad_input", "a gang book has lists 'jobs' and 'providers'")
    providers, position = [], {}
    for p in raw_providers:
        if not isinstance(p, dict) or not isinstance(p.get("id"), str) or not p["id"] or p["id"] in position:
            raise MechanismError("bad_input", "every provider has a unique non-empty string id")
        lat, lon = p.get("lat"), p.get("lon")
        if (lat is None) != (lon is None):
            raise MechanismError("bad_input", f"provider {p['id']}: lat and lon come together")
        position[p["id"]] = len(providers)
        providers.append(
            {
                "id": p["id"],
                "gpus": _whole(p.get("gpus"), "provider gpus", 0),
                "vram_per_gpu": _number(p.get("vram_per_gpu"), "vram_per_gpu", positive=True),
                "speed": _number(p.get("speed"), "speed", positive=True),
                "ask_per_gpu_hour": _number(p.get("ask_per_gpu_hour"), "ask_per_gpu_hour"),
                "lat": None if lat is None else _finite(lat, "lat"),
                "lon": None if lon is None else _finite(lon, "lon"),
            }
        )
    jobs, seen = [], set()
    for j in raw_jobs:
        if not isinstance(j, dict) or not isinstance(j.get("id"), str) or not j["id"] or j["id"] in seen:
            raise MechanismError("bad_input", "every job has a unique non-empty string id")
        seen.add(j["id"])
        allowed = j.get("providers")
        if not isinstance(allowed, list) or any(a not in position for a in allowed):
            raise MechanismError("bad_input", f"job {j['id']}: providers lists ids of the book's providers")
        bound = j.get("max_latency_ms")
        jobs.append(
            {
                "id": j["id"],
                "bid": _number(j.get("bid"), "bid"),
                "layers": _whole(j.get("layers"), "layers", 1),
                "layer_gib": _number(j.get("layer_gib"), "layer_gib", positive=True),
                "work_hours": _number(j.get("work_hours"), "work_hours", positive=True),
                "deadline_hours": _number(j.get("deadline_hours"), "deadline_hours"),
                "max_members": min(MAX_MEMBERS, _whole(j.get("max_members"), "max_members", 1)),
                "max_latency_ms": None if bound is None else _number(bound, "max_latency_ms", positive=True),
                "allowed": sorted({position[a] for a in allowed}),
            }
        )
    return jobs, providers
