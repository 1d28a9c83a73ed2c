"""The round's `brokers` book (docs/mecm.md): MECM's three-tier clearing inside a live round.

Which orders: the QUEUED jobs placed through a broker whose appointment is ACTIVE (users) and the
listings of providers with an ACTIVE provider-side broker (that broker's servers). A brokered job
reaches its broker's servers through the broker and the un-brokered listings directly (MECM's direct
route); it never reaches another broker's servers. Each broker's capacity is its principals' free
devices; brokers' own cost is 0 (a CPX broker is paid its agreed fee rate at settlement, a transfer,
not a cost). Values and costs are per device-hour (the job's max price, the listing's ask), demands
the job's devices; a job fits a listing as in the quote (device class, memory, free devices, region
when placement is strict, not a provider it failed on) and when it can finish there before its
deadline.

The book clears after the gang book and before every other; what it leaves free of a listing (a
brokered one too) is offered to the ordinary books next, so a broker's provider principals lose no
buyer. The document carries the whole reach (users' brokers and direct servers, brokers' servers), so
`cpx_round replay` re-runs it from the snapshot alone; the engine has work limits only.

Payments from the engine's duals: the job pays its route's payment per device-hour; the provider
receives the rest of the route (server plus the broker tier's dual share, which is 0 unless the LP's
duals are degenerate, since a broker's capacity is exactly its servers'). The broker's fee is then
split off at settlement (auctions.services.broker_fees), as for any brokered trade.
"""

from auctions.mechanisms.brokers import MILP_NODES

KIND = "brokers"
STRICT = "strict"


def take_brokered_jobs(builder) -> list[dict]:
    """The snapshot's rows carry `broker`, the broker's user id or None (auctions.selectors.broker_reach).
    Take the brokered fixed jobs (not gang, not elastic) out of the builder's other routes."""
    taken = [job for job in builder.fixed_jobs if job.get("broker") and not job.get("gang")]
    ids = {job["id"] for job in taken}
    builder.routable = [job for job in builder.routable if job["id"] not in ids]
    builder.tier_jobs = [job for job in builder.tier_jobs if job["id"] not in ids]
    return taken


def _fits(builder, job: dict, resource: dict, device_hours_on) -> bool:
    return (
        resource["device_class"] == job["device_class"]
        and resource["memory"] >= job["memory"] - 1e-9
        and builder.free[resource["id"]] >= job["device_count"]
        and (job["placement"] != STRICT or resource["region"] == job["region"])
        and resource["provider_id"] not in builder.exclusions.get(job["id"], ())
        and device_hours_on(job, resource) / job["device_count"] <= job["hours_left"]
    )


def broker_book_document(builder, jobs: list[dict], device_hours_on) -> tuple[dict, list, list] | None:
    """(document, jobs, resources) of the `brokers` book, or None when no brokered job has a listing
    it could use."""
    if not jobs:
        return None
    free = [r for r in builder.resources if builder.free[r["id"]] > 0]
    fits = {job["id"]: [r for r in free if _fits(builder, job, r, device_hours_on)] for job in jobs}
    used = {r["id"] for rows in fits.values() for r in rows}
    resources = [r for r in free if r["id"] in used]
    if not resources:
        return None
    ids = sorted({r["broker"] for r in resources if r.get("broker")} | {job["broker"] for job in jobs})
    brokers = [
        {
            "id": f"b{broker}",
            "capacity": sum(builder.free[r["id"]] for r in resources if r.get("broker") == broker),
            "cost": 0.0,
            "servers": [f"r{r['id']}" for r in resources if r.get("broker") == broker],
        }
        for broker in ids
    ]
    users = [
        {
            "id": f"j{job['id']}",
            "demand": job["device_count"],
            "value": job["bid"],
            "brokers": [f"b{job['broker']}"],
            "direct": [f"r{r['id']}" for r in fits[job["id"]] if not r.get("broker")],
            "fits": [f"r{r['id']}" for r in fits[job["id"]]],
        }
        for job in jobs
    ]
    doc = {
        "mechanism": KIND,
        "node_limit": MILP_NODES,
        "servers": [
            {"id": f"r{r['id']}", "capacity": builder.free[r["id"]], "cost": r["ask"]} for r in resources
        ],
        "brokers": brokers,
        "users": users,
    }
    return doc, jobs, resources


def broker_fill_parts(book, result: dict, *, received, device_hours_on) -> list[dict]:
    """One fill (as Fill keyword arguments) per routed job: all its devices on its server, at the
    engine's payment per device-hour; the provider receives the route's server and broker-tier parts."""
    parts = []
    for name, server in result["assignments"].items():
        job, resource = book.jobs[name], book.resources[server]
        devices = job["device_count"]
        paid = result["payments"][name] / devices
        to_provider = (result["server_receipts"][name] + result["broker_receipts"][name]) / devices
        parts.append(
            {
                "job": job,
                "resource": resource,
                "devices": devices,
                "resource_class": resource["class"],
                "unit_price_paid": paid,
                "unit_price_received": received(resource, min(paid, to_provider)),
                "expected_device_hours": device_hours_on(job, resource),
            }
        )
    return parts
