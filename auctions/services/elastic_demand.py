"""Elastic demand in a round (EETORP's follower, docs/eetorp.md): the round buys each matched elastic
job its best response at the price it cleared, and the job's size follows.

After every book of the round has cleared, the matched elastic jobs form one more engine book,
`elastic_demand` (auctions/mechanisms/elastic.py), built only from what the earlier books decided and
the jobs' stated utilities: per job its utility weight, its price per unit (the price per
device-hour it pays divided by the device's speed gives the price per reference device-hour, times
the reference device-hours per unit), its budget, its minimum, and the most it can use (its own
maximum, and what the device can run before its deadline). The book goes into the round's snapshot
like any other, so `cpx_round replay` recomputes every quantity. A job whose best response is zero
at its price (its minimum is not worth it, or the budget cannot pay it) is not matched this round.

A matched elastic job's lease then carries the purchase: expected_device_hours and max_device_hours
are the device-hours bought on its device (q x unit_device_hours / speed), so the agent runs it to
that and settlement charges at most q units at the price; the job records the purchase under
`elastic["bought"]`, and its workload becomes the quantity bought.
"""

import dataclasses
from decimal import ROUND_DOWN, Decimal

from auctions.mechanisms import throughput
from market.models import JobRequest

TOKENS_PER_UNIT = 1_000_000
# A floor for a device the deadline leaves no time on (routing keeps such pairs apart; it guards rounding).
MIN_QUANTITY_CAP = 1e-9


def elastic_document(fills: list) -> dict | None:
    """The `elastic_demand` book of a round's fills (None when no elastic job was matched)."""
    followers = []
    for fill in fills:
        elastic = fill.job.get("elastic")
        if not elastic:
            continue
        job, speed = fill.job, fill.resource["speed"]
        unit_hours = float(elastic["unit_device_hours"])
        low = float(elastic["min_quantity"])
        cap = max(0.0, job["hours_left"]) * speed / unit_hours
        if elastic.get("max_quantity") is not None:
            cap = min(cap, float(elastic["max_quantity"]))
        followers.append(
            {
                "id": f"j{job['id']}",
                "weight": float(elastic["utility_weight"]),
                "price": fill.unit_price_paid / speed * unit_hours,
                "budget": float(job["budget"]),
                "min_quantity": low,
                "max_quantity": max(cap, low, MIN_QUANTITY_CAP),
            }
        )
    if not followers:
        return None
    return {"mechanism": "elastic_demand", "followers": followers}


def elastic_fills(fills: list, doc: dict, result: dict) -> list:
    """The fills with each elastic job's purchase applied: its device-hours and an `elastic` record;
    a job that buys nothing is dropped (not matched)."""
    prices = {row["id"]: row["price"] for row in doc["followers"]}
    kept = []
    for fill in fills:
        name = f"j{fill.job['id']}"
        if name not in prices:
            kept.append(fill)
            continue
        quantity = result["quantities"].get(name)
        if quantity is None:
            continue
        elastic = fill.job["elastic"]
        device_hours = quantity * float(elastic["unit_device_hours"]) / fill.resource["speed"]
        kept.append(
            dataclasses.replace(
                fill,
                expected_device_hours=device_hours,
                elastic={
                    "unit": elastic["unit"],
                    "quantity": quantity,
                    "price_per_unit": prices[name],
                    "device_hours": device_hours,
                    "spend": result["spend"][name],
                    "utility": result["utilities"][name],
                },
            )
        )
    return kept


def elastic_record_purchases(*, leases: list, fills: list, round_id: int) -> None:
    """Write each dispatched elastic job's purchase on the job: `elastic["bought"]` and its workload
    (the quantity bought, in tokens or reference device-hours). One UPDATE per elastic job."""
    dispatched = {lease.job_id for lease in leases}
    for fill in fills:
        if fill.elastic is None or fill.job["id"] not in dispatched:
            continue
        job = fill.job
        bought = {**fill.elastic, "round": round_id}
        quantity = fill.elastic["quantity"]
        if job["kind"] == JobRequest.Kind.INFERENCE:
            tokens = quantity * TOKENS_PER_UNIT
            if job["elastic"]["unit"] == "device_hours":
                tokens /= _hours_per_million_tokens(job)
            workload = {"workload_tokens": max(1, int(tokens))}
        else:
            hours = Decimal(repr(quantity)).quantize(Decimal("0.001"), rounding=ROUND_DOWN)
            workload = {"workload_device_hours": max(hours, Decimal("0.001"))}
        JobRequest.objects.filter(pk=job["id"]).update(
            elastic={**job["elastic"], "bought": bought}, **workload
        )


def _hours_per_million_tokens(job: dict) -> float:
    return throughput.base_device_hours(
        kind="INFERENCE",
        params_billion=float(job["params_billion"]),
        workload_tokens=TOKENS_PER_UNIT,
        workload_device_hours=None,
    )
