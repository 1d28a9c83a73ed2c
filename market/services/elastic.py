"""Elastic demand at submission (EETORP's follower, docs/eetorp.md): a job states a utility and bounds
instead of a fixed size, and the round that matches it buys its best response at the price it clears.

The consumer states `elastic = {unit, utility_weight, min_quantity?, max_quantity?}`: it values q
units at utility_weight x ln(1 + q), a unit being one reference device-hour (`device_hours`) or a
million tokens of its model (`million_tokens`, inference only), and pays from its budget. CPX derives:
- the bid (max_price_per_device_hour): the choke price (`auctions.mechanisms.elastic.choke_price`,
  the highest price at which it buys anything) per reference device-hour, rounded down, so that the
  job wins a unit order exactly when it would buy something at the price;
- `unit_device_hours` h: reference device-hours per unit (1, or the throughput model's figure for a
  million tokens of its model), which converts a price per device-hour into a price per unit;
- a provisional workload, the least it would buy (min_quantity, else one thousandth of a unit), which
  is what routing checks against deadlines; the round then records what it bought as the workload.
"""

from decimal import ROUND_CEILING, ROUND_DOWN, Decimal

from auctions.mechanisms import throughput
from auctions.mechanisms.elastic import choke_price
from config.errors import InvalidInput
from market.money import MAX_AMOUNT, QUANTUM

UNITS = ("device_hours", "million_tokens")
TOKENS_PER_UNIT = 1_000_000
SMALLEST_QUANTITY = Decimal("0.001")
WORKLOAD_QUANTUM = Decimal("0.001")


class ElasticWithBid(InvalidInput):
    code = "elastic_with_bid"


class ElasticWithWorkload(InvalidInput):
    code = "elastic_with_workload"


class ElasticUnitMismatch(InvalidInput):
    code = "elastic_unit_mismatch"


class ElasticBoundsInverted(InvalidInput):
    code = "elastic_bounds_inverted"


class ElasticWithGang(InvalidInput):
    code = "elastic_with_gang"


class ElasticMultiDevice(InvalidInput):
    code = "elastic_multi_device"


class ElasticValueTooLow(InvalidInput):
    code = "elastic_value_too_low"


def elastic_check_spec(*, spec: dict) -> None:
    """The rules of an elastic spec that need no sizing. Raises ElasticWithBid (the bid is derived),
    ElasticWithWorkload (the size follows from the purchase: no workload, no input file),
    ElasticWithGang, ElasticUnitMismatch (million_tokens for a job that is not inference),
    ElasticBoundsInverted."""
    elastic = spec["elastic"]
    if spec.get("max_price_per_device_hour") is not None:
        raise ElasticWithBid(
            "An elastic job's bid is derived from its utility: leave max_price_per_device_hour out.",
            field="max_price_per_device_hour",
        )
    stated = [name for name in ("workload_tokens", "workload_device_hours", "input_file") if spec.get(name)]
    if stated:
        raise ElasticWithWorkload(
            "An elastic job's size follows from what it buys: state no workload and no input file.",
            field=stated[0].replace("input_file", "input_file_id"),
        )
    if spec.get("gang") is not None:
        raise ElasticWithGang("An elastic job runs on one device: it cannot be a gang.", field="gang")
    if elastic["unit"] == "million_tokens" and spec["kind"] != "INFERENCE":
        raise ElasticUnitMismatch(
            "Only an inference job can buy tokens; a training or fine-tuning job buys device_hours.",
            field="elastic.unit",
        )
    high = elastic.get("max_quantity")
    if high is not None and elastic.get("min_quantity", Decimal(0)) > high:
        raise ElasticBoundsInverted(
            "elastic.min_quantity must not exceed elastic.max_quantity.", field="elastic.min_quantity"
        )


def elastic_size(*, spec: dict, device_count: int) -> dict:
    """The fields an elastic job adds to a sized job: its derived bid, provisional workload and the
    stored `elastic` record. Raises ElasticMultiDevice (the per-class game prices one device),
    ElasticValueTooLow (its choke price rounds to nothing)."""
    elastic = spec["elastic"]
    if device_count != 1:
        raise ElasticMultiDevice(
            f"An elastic job runs on one device; this one needs {device_count} (fewer bits, a shorter "
            "context, or a fixed size).",
            field="elastic",
            device_count=device_count,
        )
    weight = Decimal(elastic["utility_weight"])
    low = Decimal(elastic.get("min_quantity") or 0)
    high = elastic.get("max_quantity")
    unit_hours = _unit_device_hours(spec, elastic["unit"])
    choke = choke_price(weight=float(weight), budget=float(spec["budget"]), min_quantity=float(low))
    bid = min(MAX_AMOUNT, Decimal(repr(choke / unit_hours)).quantize(QUANTUM, rounding=ROUND_DOWN))
    if bid <= 0:
        raise ElasticValueTooLow(
            "The utility's first unit is worth less than the smallest price: raise utility_weight.",
            field="elastic.utility_weight",
        )
    provisional = max(low, SMALLEST_QUANTITY)
    workload = {"workload_tokens": None, "workload_device_hours": None}
    if spec["kind"] == "INFERENCE":
        tokens = provisional * TOKENS_PER_UNIT
        if elastic["unit"] == "device_hours":
            tokens = tokens / Decimal(repr(unit_hours))
        workload["workload_tokens"] = max(1, int(tokens.to_integral_value(rounding=ROUND_CEILING)))
    else:
        workload["workload_device_hours"] = provisional.quantize(WORKLOAD_QUANTUM, rounding=ROUND_CEILING)
    return {
        **workload,
        "max_price_per_device_hour": bid,
        "elastic": {
            "unit": elastic["unit"],
            "utility_weight": str(weight),
            "min_quantity": str(low),
            "max_quantity": None if high is None else str(Decimal(high)),
            "unit_device_hours": unit_hours,
            "choke_price_per_unit": choke,
        },
    }


def _unit_device_hours(spec: dict, unit: str) -> float:
    if unit == "device_hours":
        return 1.0
    return throughput.base_device_hours(
        kind="INFERENCE",
        params_billion=float(spec["params_billion"]),
        workload_tokens=TOKENS_PER_UNIT,
        workload_device_hours=None,
    )
