"""Gang terms at submission: a job too large for any one device may opt in to run as a gang, one
pipeline split across the devices of several providers (auctions.mechanisms.gang; docs/fusionai-gangs.md).

The consumer states `gang = {"max_members": 2..MAX_MEMBERS, "max_latency_ms": 1..MAX_LATENCY_MS or
null}`; CPX adds the pipeline unit from the job's sizing (`layers`, `layer_gib` = the sizing's total
memory in GiB over its layers) and stores the four on the job. Errors carry stable codes:
`gang_invalid` (400: the terms' shape, or a field a gang cannot take: requested devices or memory,
an input file) and `gang_unservable` (422: no
`max_members` of the listed resources of the job's device class could ever hold its layers, busy or
idle; a market listing nothing refuses nothing, as for single-node jobs).
"""

from auctions.mechanisms.errors import MechanismError
from auctions.mechanisms.gang import stage_plan
from config.errors import InvalidInput
from market.models import Provider, Resource

MAX_MEMBERS = 16
MAX_LATENCY_MS = 1000
TERMS = frozenset({"max_members", "max_latency_ms"})
GIB_PER_GB = 1e9 / 2**30


class GangInvalid(InvalidInput):
    code = "gang_invalid"


class GangUnservable(InvalidInput):
    """No `max_members` listed resources could ever hold the job's layers together."""

    code = "gang_unservable"
    status = 422


def gang_terms_check(*, gang, fields: dict) -> dict:
    """The job's gang column from the consumer's terms and the sized job `fields` (job_request_size).

    Raises GangInvalid, GangUnservable."""
    if not isinstance(gang, dict) or not gang.keys() <= TERMS or "max_members" not in gang:
        raise GangInvalid(
            "gang is an object {max_members, max_latency_ms (optional)}.", field="gang", allowed=sorted(TERMS)
        )
    members = gang["max_members"]
    if isinstance(members, bool) or not isinstance(members, int) or not 2 <= members <= MAX_MEMBERS:
        raise GangInvalid(
            f"gang.max_members is a whole number from 2 to {MAX_MEMBERS}.", field="gang.max_members"
        )
    bound = gang.get("max_latency_ms")
    if bound is not None and (
        isinstance(bound, bool) or not isinstance(bound, int) or not 1 <= bound <= MAX_LATENCY_MS
    ):
        raise GangInvalid(
            f"gang.max_latency_ms is a whole number of ms from 1 to {MAX_LATENCY_MS}, or null.",
            field="gang.max_latency_ms",
        )
    if fields.get("requested_device_count") or fields.get("requested_memory_per_device_gib"):
        raise GangInvalid(
            "A gang is sized by its layers: it takes no requested_device_count or "
            "requested_memory_per_device_gib.",
            field="gang",
        )
    if fields.get("input_file") is not None:
        # A batch's results come back per lease and every request must be answered by the lease
        # that completes (auctions.services.batches); a pipeline's stages cannot each answer them.
        raise GangInvalid(
            "A gang takes no input file yet: submit the batch as a single-node job.", field="gang"
        )
    sizing = fields["sizing"]
    try:
        plan = stage_plan(layers=sizing["layers"], total_gib=sizing["total_gb"] * GIB_PER_GB)
    except MechanismError as error:
        raise GangInvalid(f"The job cannot be split: {error.message}", field="gang") from None
    terms = {"max_members": members, "max_latency_ms": bound, **plan}
    _check_servable(terms=terms, device_class=fields["device_class"])
    return terms


def _check_servable(*, terms: dict, device_class: str) -> None:
    listed = list(
        Resource.objects.filter(
            status=Resource.Status.LISTED,
            provider__status=Provider.Status.ACTIVE,
            device_class=device_class,
        ).values_list("device_count", "memory_per_device_gib")
    )
    if not listed:
        return
    capacities = sorted(
        (count * int(float(memory) // terms["layer_gib"]) for count, memory in listed), reverse=True
    )
    most = sum(capacities[: terms["max_members"]])
    if most < terms["layers"]:
        raise GangUnservable(
            f"No {terms['max_members']} listed {device_class} resources could hold the model's "
            f"{terms['layers']} layers of {terms['layer_gib']:.2f} GiB together (at most {most}): "
            "allow more members, or quantise the model.",
            field="gang",
            layers=terms["layers"],
            layer_gib=round(terms["layer_gib"], 3),
            most_layers=most,
        )
