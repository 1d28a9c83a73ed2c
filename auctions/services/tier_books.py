"""The tiered books of a round (cloud–edge tiers, AI-Bazaar; the model is in auctions/mechanisms/tiers.py).

With `CPX_TIER_CLEARING=aware`, a latency-bound job (a latency SLA, one device) whose fitting devices
(device class, memory, its SLA by estimated RTT from its region, deadline, providers that failed it)
include a free cloud device (provider tier CLOUD) clears in its device class's tiered book, beside
every free edge device (tiers END and EDGE) that fits it: edge first at the edge followers' prices,
the cloud as the overflow at the cloud leader's price level. Any other job routes as before.
Everything the engine reads (tiers, costs, the demand scale, the substitution) is in the book
document, so `cpx_round replay` reproduces it. The
book's tier figures go to `Round.mechanism` (`books[i]["tiers"]`), which the market pages, the
dashboards and the API read.
"""

import statistics
from collections import defaultdict

from django.conf import settings

TIER_MODES = frozenset({"aware", "off"})
EDGE_TIERS = frozenset({"END", "EDGE"})


def tier_config() -> dict:
    """The tier settings a round runs under (checked at start-up in auctions/checks.py)."""
    return {"mode": settings.CPX_TIER_CLEARING, "substitution": settings.CPX_TIER_SUBSTITUTION}


def tier_accepts(builder, job: dict) -> list[dict]:
    """The resources of the snapshot a latency-bound single-device job may run on (free devices now), in
    id order. Its placement is strict (an SLA implies it), which market.services.placement defines as
    "within `latency_sla_ms` of its region": the RTT check is the region check, so a cloud region a few
    milliseconds away may take the overflow (the heterogeneous book also holds a strict job to its own
    region; a tiered book follows the placement rule as the consumer was told it). A job's edge is local:
    END and EDGE devices of its own region (AI-Bazaar's edge sits next to its users); any CLOUD device
    within its SLA may take the overflow."""
    from auctions.services.round_books import device_hours_on

    excluded = builder.exclusions.get(job["id"]) or set()
    cloud, local = _candidates(builder, job["device_class"], job["region"])
    fitting = []
    for resource in sorted(cloud + local, key=lambda r: r["id"]):
        if (
            builder.free[resource["id"]] <= 0
            or resource["memory"] < job["memory"] - 1e-9
            or resource["provider_id"] in excluded
        ):
            continue
        if not builder._rtt(job["region"], resource) <= job["latency_sla_ms"]:
            continue  # NaN (an unknown place) cannot promise the SLA either
        if device_hours_on(job, resource) > job["hours_left"]:
            continue
        fitting.append(resource)
    return fitting


def _candidates(builder, device_class: str, region: str) -> tuple[list, list]:
    """The snapshot's CLOUD resources of a device class, and its END and EDGE resources in one region
    (indexed once per round: a round may hold thousands of latency-bound jobs)."""
    index = getattr(builder, "_tier_index", None)
    if index is None:
        index = {"cloud": defaultdict(list), "local": defaultdict(list)}
        for resource in builder.resources:
            if resource["tier"] == "CLOUD":
                index["cloud"][resource["device_class"]].append(resource)
            else:
                index["local"][(resource["device_class"], resource["region"])].append(resource)
        builder._tier_index = index
    return index["cloud"].get(device_class, []), index["local"].get((device_class, region), [])


def tier_route(builder) -> list:
    """The jobs of the snapshot that go to tiered books (module docstring), in queue order."""
    tiers = builder.config.get("tiers") or {}
    if tiers.get("mode") != "aware":
        return []
    routed = []
    for job in builder.jobs:
        if job["latency_sla_ms"] is None or job["device_count"] != 1:
            continue
        if not _candidates(builder, job["device_class"], job["region"])[0]:
            continue  # no cloud device of its class in the snapshot: nothing to overflow to
        # A cloud device to overflow to is enough: an edge that is busy now has no free device in the
        # snapshot, and its jobs must still overflow rather than wait for it.
        if any(r["tier"] == "CLOUD" for r in tier_accepts(builder, job)):
            routed.append(job)
    return routed


def tier_books(builder, jobs: list) -> list[tuple[dict, list, list, dict]]:
    """One tiered book document per device class: (doc, jobs, resources, meta), device classes sorted."""
    by_device: dict[str, list] = defaultdict(list)
    for job in jobs:
        by_device[job["device_class"]].append(job)
    books = []
    for device_class in sorted(by_device):
        members = by_device[device_class]
        accepts = {job["id"]: tier_accepts(builder, job) for job in members}
        members = [job for job in members if accepts[job["id"]]]
        if not members:
            continue
        resources = sorted(
            {r["id"]: r for job in members for r in accepts[job["id"]]}.values(), key=lambda r: r["id"]
        )
        doc = {
            "mechanism": "tiered",
            "salt": builder.config["salt"] if "salt" in builder.config else "tiers",
            "tier_aware": True,
            "substitution": builder.config["tiers"]["substitution"],
            "bids": [
                {
                    "id": f"j{job['id']}",
                    "price": job["bid"],
                    "accepts": [f"r{r['id']}" for r in accepts[job["id"]]],
                }
                for job in members
            ],
            "asks": [
                {
                    "id": f"r{r['id']}",
                    "price": r["ask"],
                    "quantity": builder.free[r["id"]],
                    "speed": r["speed"],
                    "tier": r["tier"],
                }
                for r in resources
            ],
        }
        reference = _reference_price(builder, device_class)
        if reference is not None:
            doc["reference_price"] = reference
        books.append((doc, members, resources, {"kind": "tiered", "device_class": device_class}))
    return books


def _reference_price(builder, device_class: str) -> float | None:
    """The demand scale fixed before the round: the median posted price (earlier rounds' estimates) of
    the device class's classes; None (the engine then takes the median bid) when there is none."""
    label = device_class.replace("/", "-") or "-"
    prices = [price for key, price in builder.prices.items() if key.split("/", 1)[0] == label and price > 0]
    return statistics.median(prices) if prices else None


def tier_summary(doc: dict, result: dict) -> dict:
    """The figures of one cleared tiered book that the pages show: jobs placed per tier, the overflow
    share and its causes, the cloud's price level and the edge followers' prices (per reference
    device-hour)."""
    edge = list(result["prices"]["edge"].values())
    causes: dict[str, int] = defaultdict(int)
    for cause in result["overflow"].values():
        causes[cause] += 1
    return {
        "jobs": len(doc["bids"]),
        "placed": result["placed_by_tier"],
        "overflow_share": result["overflow_share"],
        "overflow_causes": dict(sorted(causes.items())),
        "cloud_price": result["prices"]["cloud"],
        "edge_price_low": min(edge) if edge else None,
        "edge_price_median": statistics.median(edge) if edge else None,
        "edge_price_high": max(edge) if edge else None,
    }


def tier_waiting_reasons(doc: dict, result: dict, jobs: dict) -> dict[int, dict]:
    """Why each job of a tiered book that got nothing waits: `bid_below_price` (below every price of a
    device that fits it: the edge followers' and the cloud's level), else `rationed` (the devices it
    could afford went to jobs ahead of it in the public order)."""
    edge, cloud = result["prices"]["edge"], result["prices"]["cloud"]
    tier = {ask["id"]: ask["tier"] for ask in doc["asks"]}
    reasons = {}
    for bid in doc["bids"]:
        if bid["id"] in result["assignments"]:
            continue
        offered = [edge[a] if tier[a] in EDGE_TIERS else cloud for a in bid["accepts"]]
        offered = [price for price in offered if price is not None]
        job = jobs[bid["id"]]
        if offered and min(offered) > bid["price"]:
            low = min(offered)
            reasons[job["id"]] = {
                "code": "bid_below_price",
                "message": f"The bid is {low - bid['price']:.6f} below the lowest tier price of a fitting "
                f"device "
                f"({low:.6f} per reference device-hour).",
                "price": low,
                "short_by": low - bid["price"],
            }
        else:
            reasons[job["id"]] = {
                "code": "rationed",
                "message": "Its price was met, but the fitting edge and cloud devices went to orders ahead "
                "of it.",
            }
    return reasons
