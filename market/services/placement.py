"""Placement: the regions CPX knows, where a job may run, and whether any listed resource ever could.

Regions are those of the latency model (`auctions.mechanisms.latency.REGION_CENTROIDS`): a region
CPX cannot place on a map is one it cannot promise a latency for, so it is refused (`unknown_region`).

A job's placement is "strict" (it runs only where its region allows: within `latency_sla_ms` of its
region when it states one, else in its own region) or "preferred" (its region first, any region
if that one has no fit). A latency SLA implies strict; "preferred" with an SLA is a contradiction
and refused (`placement_conflicts_with_sla`).

Servability (`job_request_check_servable`) asks whether some listed resource could EVER run the
job, busy or idle, heartbeat or not (capacity comes and goes, a spec does not): a resource of the job's
device class, LISTED by an ACTIVE provider, with at least the job's memory per device and its
device count on one node, placed where the job may run. If none could, the job is refused with
`unservable` (422), the binding reason (the first of these checks that leaves nothing: device class,
placement, memory per device, devices on one node) and the nearest spec that would fit. A market
that lists nothing at all (a fresh install) refuses nothing: there is no listing to judge against.
Reads only; pure rules over the rows in `_fit` and `nearest_spec`.
"""

import math
from decimal import Decimal

from auctions.mechanisms import latency
from auctions.mechanisms.errors import MechanismError
from auctions.mechanisms.llm_sizing import size_llm_job
from config.errors import InvalidInput
from market.models import JobRequest, Provider, Resource

STRICT = JobRequest.Placement.STRICT
PREFERRED = JobRequest.Placement.PREFERRED
FIT_FIELDS = (
    "device_class",
    "model_name",
    "device_count",
    "memory_per_device_gib",
    "provider__region",
    "provider__latitude",
    "provider__longitude",
)


class UnknownRegion(InvalidInput):
    code = "unknown_region"


class PlacementConflictsWithSla(InvalidInput):
    code = "placement_conflicts_with_sla"


class Unservable(InvalidInput):
    """No listed resource could ever run the job as specified (not: none is free now)."""

    code = "unservable"
    status = 422


def region_names() -> list[str]:
    """The regions CPX knows, sorted."""
    return sorted(latency.REGION_CENTROIDS)


def region_check(region: str) -> str:
    """The region's canonical name (trimmed, lower case). Raises UnknownRegion."""
    name = (region or "").strip().lower()
    if name not in latency.REGION_CENTROIDS:
        raise UnknownRegion(
            f"Unknown region {region!r}: GET /api/v1/regions lists the regions CPX knows.",
            field="region",
            known=region_names(),
        )
    return name


def placement_of(*, placement: str | None, latency_sla_ms: int | None) -> str:
    """The job's placement: a latency SLA implies strict; without one the default is preferred.

    Raises PlacementConflictsWithSla ("preferred" with a latency SLA)."""
    if latency_sla_ms is not None:
        if placement == PREFERRED:
            raise PlacementConflictsWithSla(
                "A latency SLA holds the job to places within it: drop latency_sla_ms for a "
                "preferred placement, or drop placement.",
                field="placement",
            )
        return STRICT
    return placement or PREFERRED


def _listed():
    return Resource.objects.filter(status=Resource.Status.LISTED, provider__status=Provider.Status.ACTIVE)


def _allowed(row: dict, *, region: str, placement: str, latency_sla_ms: int | None) -> bool:
    """Whether the job may run where this resource is (placement and latency only)."""
    if latency_sla_ms is not None:
        return _rtt(row, region) <= latency_sla_ms
    return placement != STRICT or row["provider__region"] == region


def _rtt(row: dict, region: str) -> float:
    rtt = latency.estimate_rtt_ms(
        consumer_region=region,
        provider_region=row["provider__region"],
        provider_lat=row["provider__latitude"],
        provider_lon=row["provider__longitude"],
    )
    return math.inf if rtt is None else rtt  # unknown distance: no promise can be made


def _fits(row: dict, *, memory: Decimal, devices: int) -> bool:
    return row["memory_per_device_gib"] >= memory and row["device_count"] >= devices


def job_request_check_servable(*, fields: dict) -> None:
    """Refuse a job that no listed resource could ever run (`fields`: the sized model fields).

    One query in the common case (some resource fits). Raises Unservable with extra
    {"reason", "nearest", "suggestion"}."""
    memory = Decimal(fields["memory_per_device_gib"])
    devices = fields["device_count"]
    region, sla, placement = fields["region"], fields.get("latency_sla_ms"), fields["placement"]
    candidates = _listed().filter(
        device_class=fields["device_class"], memory_per_device_gib__gte=memory, device_count__gte=devices
    )
    if sla is None:
        if placement == STRICT:
            candidates = candidates.filter(provider__region=region)
        if candidates.exists():
            return
    else:
        places = candidates.values(*FIT_FIELDS[4:]).distinct()
        if any(_allowed(row, region=region, placement=placement, latency_sla_ms=sla) for row in places):
            return
    rows = list(_listed().values(*FIT_FIELDS).distinct())
    if not rows:
        return  # nothing listed at all: no listing to judge against
    reason, suggestion, nearest = _diagnose(rows, fields=fields, memory=memory, devices=devices)
    raise Unservable(suggestion, reason=reason, nearest=nearest)


def _diagnose(rows: list[dict], *, fields: dict, memory: Decimal, devices: int) -> tuple[str, str, dict]:
    """(binding reason, a sentence, the nearest spec that would fit) for an unservable job."""
    region, sla, placement = fields["region"], fields.get("latency_sla_ms"), fields["placement"]
    of_class = [r for r in rows if r["device_class"] == fields["device_class"]]
    if not of_class:
        classes = sorted({r["device_class"] for r in rows})
        return (
            "no_resource_of_class",
            f"No {fields['device_class']} is listed; listed device classes: {', '.join(classes)}.",
            {"device_class": classes[0]},
        )
    placeable = [r for r in of_class if _allowed(r, region=region, placement=placement, latency_sla_ms=sla)]
    fitting = [r for r in of_class if _fits(r, memory=memory, devices=devices)]
    if not placeable or (fitting and not any(r in placeable for r in fitting)):
        return _placement_reason(fitting or of_class, fields=fields)
    nearest = _nearest_by_devices(placeable, fields=fields)
    largest = max(placeable, key=lambda r: (r["memory_per_device_gib"], r["device_count"]))
    if not any(r["memory_per_device_gib"] >= memory for r in placeable):
        reason = "memory_exceeds_every_resource"
        sentence = (
            f"The job needs {memory:g} GiB per device; the largest device it may use has "
            f"{largest['memory_per_device_gib']:g} GiB."
        )
    else:
        reason = "devices_exceed_every_resource"
        most = max(r["device_count"] for r in placeable if r["memory_per_device_gib"] >= memory)
        sentence = (
            f"The job needs {devices} devices of {memory:g} GiB on one node; the most such devices "
            f"one listed node has is {most}."
        )
    if nearest is None:
        nearest = {
            "memory_per_device_gib": str(largest["memory_per_device_gib"]),
            "device_count": largest["device_count"],
            "hint": "a smaller model, fewer bits (quant_bits), a shorter context or a smaller batch",
        }
        return reason, f"{sentence} No device count fits this model: shrink the job.", nearest
    return (
        reason,
        f"{sentence} It would fit as {nearest['requested_device_count']} devices of "
        f"{nearest['memory_per_device_gib']} GiB ({nearest['resource_model']}).",
        nearest,
    )


def _placement_reason(rows: list[dict], *, fields: dict) -> tuple[str, str, dict]:
    region, sla = fields["region"], fields.get("latency_sla_ms")
    if sla is not None:
        closest = min(rows, key=lambda r: _rtt(r, region))
        rtt = _rtt(closest, region)
        if math.isfinite(rtt):
            need = math.ceil(rtt)
            return (
                "latency_sla_unmet",
                f"No resource that fits is within {sla} ms of {region}; the closest is ~{need} ms away "
                f"(in {closest['provider__region']}).",
                {"latency_sla_ms": need, "region": closest["provider__region"]},
            )
        return "latency_sla_unmet", f"No resource that fits is within {sla} ms of {region}.", {}
    regions = sorted({r["provider__region"] for r in rows})
    return (
        "no_supply_in_region",
        f"No resource that fits is listed in {region}, and the placement is strict; it fits in "
        f"{', '.join(regions)}.",
        {"placement": PREFERRED, "region": regions[0]},
    )


def _nearest_by_devices(placeable: list[dict], *, fields: dict) -> dict | None:
    """The fewest devices on one node (of those listed) over which the job fits, re-sized for it."""
    for count in sorted({r["device_count"] for r in placeable}):
        if fields.get("requested_memory_per_device_gib"):
            memory = Decimal(fields["requested_memory_per_device_gib"])
        else:
            try:
                memory = Decimal(str(_size(fields, count)))
            except MechanismError:
                return None
        fit = [r for r in placeable if _fits(r, memory=memory, devices=count)]
        if fit:
            cheapest = min(fit, key=lambda r: (r["memory_per_device_gib"], r["device_count"]))
            return {
                "requested_device_count": count,
                "memory_per_device_gib": str(memory),
                "resource_model": cheapest["model_name"],
                "resource_region": cheapest["provider__region"],
            }
    return None


def _size(fields: dict, count: int) -> float:
    return size_llm_job(
        kind=fields["kind"],
        params_billion=float(fields["params_billion"]),
        quant_bits=fields["quant_bits"],
        context_length=fields["context_length"],
        batch_size=fields.get("batch_size", 1),
        device_count=count,
    ).memory_per_device_gib
