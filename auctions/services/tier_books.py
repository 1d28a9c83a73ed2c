"""The tiered books of a round (cloud–edge tiers, AI-Bazaar; the model is in auctions/mechanisms/tiers.py).

With `CPX_TIER_CLEARING=aware`, a latency-bound job (a latency SLA, one device) whose fitting devices
(device class, memory, its SLA by estimated RTT from its region, deadline, providers that failed it)
include a free cloud device (provider tier CLOUD) clears in its device class's tiered book, beside
every free edge device (tiers END and EDGE) that fits it: edge first at the edge followers' prices,
the cloud as the overflow at the cloud leader's price level. Any other job routes as before.
Everything the engine reads (tiers, costs, the demand scale, the substitution) is in the book
document, so `cpx_round replay` reproduces it. The book's tier figures go to `Round.mechanism`
(`books[i]["tiers"]`), which the market pages, the dashboards and the API read.

Fall-through (rule `depth`): a job a tiered book does not place (its bid is below every edge follower's
price and the cloud's level, or the devices it could afford went to jobs ahead of it) is routed in the
same round as the `depth` rule routes any job (BookBuilder._fall_through), over the devices the tiered
books left free: its thick class's unit book when it can bid there, else the posted-price book (thin
classes' devices at prices fixed before the round), else a heterogeneous book cleared right after the
tiered books. Thickness was fixed before, so no fall-through job makes or unmakes a thick class. Each
book is still one document of the snapshot with the free quantities it saw, so a replay re-clears every
book as it ran. What it does to the properties: a job is placed at most once (the fall-through books see
only jobs the tiered books left); each book is individually rational and budget-balanced as before (the
tiered and posted-price books' prices read no bid's value when earlier rounds give the scale; unit and
heterogeneous books price a fall-through job as any other). Truthfulness loses what "edge first" already
lost, once more: a job placed by a tiered book at a price above the posted price of a device it accepts
can shade its bid between the two, be priced out of the tiered book and clear in the posted-price book
at the lower price. Routing to a fall-through book reads a tiered book's outcome, and so the job's own
bid (the `depth` rule's route is bid-blind for every other job). The welfare bound counts a fall-through
job in both books (still a bound, a looser one). Under `per_class` there is no fall-through (not done).
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
    milliseconds away may take the overflow (every book reads it so: a strict job is held to its own
    region only when it has no SLA). A job's edge is local:
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


def tier_unmatched(jobs: dict, result: dict) -> list:
    """The jobs of a cleared tiered book it did not place (priced out by the edge followers' prices and
    the cloud's level, or rationed), in the book's job order. Under the `depth` rule they fall through,
    in the same round, to the `depth` rule's books with the devices the tiered books left free (module
    docstring, "Fall-through")."""
    return [job for name, job in jobs.items() if name not in result["assignments"]]


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
