"""The round's gang book: jobs that opted in to run as a gang (market.services.gangs), cleared all or
nothing by `auctions.mechanisms.gang` before every other book, and their member fills.

Each QUEUED gang job bids its value (max price per reference device-hour x its base device-hours)
for its layers; every free resource of its device class with room for one layer per device is a
possible member, unless the job's region, latency SLA (RTT from its region), strict placement or an
earlier fault of that provider rules it out. Members are placed by their provider's coordinates,
else their region's centroid (`auctions.mechanisms.latency`), so the engine can hold every pair of
members within the job's `max_latency_ms`. The document goes into the round's snapshot like every
other book, so `cpx_round replay` re-clears it bit for bit.

A member's fill: its devices, its share of the job's payment in proportion to its cost (so every
member's price per device-hour is at least its ask), its part of the escrow in the same proportion,
and its stage: index, count, layer range and its peers.
"""

from auctions.mechanisms import latency

KIND = "gang"


def gang_book_document(builder) -> tuple[dict, list, list] | None:
    """(document, jobs, resources) of the gang book over the builder's free devices, or None."""
    jobs = builder.gang_jobs
    resources = [r for r in builder.resources if builder.free[r["id"]] > 0]
    if not jobs or not resources:
        return None
    docs = []
    for job in jobs:
        allowed = [f"r{r['id']}" for r in resources if _may_host(builder, job, r)]
        terms = job["gang"]
        docs.append(
            {
                "id": f"j{job['id']}",
                "bid": job["bid"] * job["base_device_hours"],
                "layers": terms["layers"],
                "layer_gib": terms["layer_gib"],
                "work_hours": job["base_device_hours"],
                "deadline_hours": max(0.0, job["hours_left"]),
                "max_members": terms["max_members"],
                "max_latency_ms": terms.get("max_latency_ms"),
                "providers": allowed,
            }
        )
    providers = []
    for r in resources:
        place = _place(r)
        providers.append(
            {
                "id": f"r{r['id']}",
                "gpus": builder.free[r["id"]],
                "vram_per_gpu": r["memory"],
                "speed": r["speed"],
                "ask_per_gpu_hour": r["ask"],
                "lat": None if place is None else place[0],
                "lon": None if place is None else place[1],
            }
        )
    return {"mechanism": KIND, "jobs": docs, "providers": providers}, jobs, resources


def _place(resource: dict) -> tuple[float, float] | None:
    if resource["provider__latitude"] is not None and resource["provider__longitude"] is not None:
        return float(resource["provider__latitude"]), float(resource["provider__longitude"])
    return latency.region_centroid(resource["region"])


def _may_host(builder, job: dict, resource: dict) -> bool:
    if resource["device_class"] != job["device_class"] or resource["memory"] < job["gang"]["layer_gib"]:
        return False
    if resource["provider_id"] in builder.exclusions.get(job["id"], ()):
        return False
    if (
        job.get("placement") == "strict"
        and job["latency_sla_ms"] is None
        and resource["region"] != job["region"]
    ):
        return False
    if job["latency_sla_ms"] is not None:
        rtt = builder._rtt(job["region"], resource)
        return rtt == rtt and rtt <= job["latency_sla_ms"]  # NaN (an unknown place) cannot promise
    return True


def gang_fill_parts(book, result: dict) -> list[dict]:
    """One dict of Fill fields per member of every matched gang (see the module docstring)."""
    parts = []
    for job_id, members in result["assignments"].items():
        job = book.jobs[job_id]
        hours = result["hours"][job_id]
        cost, payment = result["costs"][job_id], result["payments"][job_id]
        devices = sum(m["devices"] for m in members)
        peers = [
            {
                "stage": m["stage"],
                "provider": book.resources[m["provider"]]["provider_id"],
                "resource": book.resources[m["provider"]]["id"],
                "region": book.resources[m["provider"]]["region"],
                "layers": m["layers"],
            }
            for m in members
        ]
        for member in members:
            resource = book.resources[member["provider"]]
            share = member["cost"] / cost if cost > 0 else member["devices"] / devices
            device_hours = member["devices"] * hours
            parts.append(
                {
                    "job": job,
                    "resource": resource,
                    "devices": member["devices"],
                    "resource_class": resource["class"],
                    "unit_price_paid": payment * share / device_hours,
                    "unit_price_received": member["cost"] / device_hours,
                    "expected_device_hours": device_hours,
                    "gang": {
                        "stage": member["stage"],
                        "stages": len(members),
                        "layers": member["layers"],
                        "model_layers": job["gang"]["layers"],
                        "budget_share": share,
                        "hours": hours,
                        "peers": peers,
                    },
                }
            )
    return parts


def gang_waiting_reason(book, job: dict) -> dict:
    """Why a gang job of the book waits: no possible member at all, or no whole gang this round."""
    doc = next(d for d in book.doc["jobs"] if d["id"] == f"j{job['id']}")
    if not doc["providers"]:
        return {
            "code": "no_supply",
            "message": "No free device of its class can hold one of its layers (or its region, latency "
            "SLA or earlier faults rule them out): it waits for one.",
            "region": job["region"],
        }
    return {
        "code": "gang_unmatched",
        "message": f"No whole gang of at most {doc['max_members']} members (within its latency bound "
        "and deadline) could hold its layers at a cost within its bid this round: all or nothing.",
    }
