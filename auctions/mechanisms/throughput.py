"""Throughput: how many device-hours an LLM job needs on a resource.

Model (units: FLOPs, TFLOPS = 1e12 FLOP/s, hours):

- Inference: a decoder-only transformer spends ~2 P FLOPs per token processed (one multiply-add per
  parameter; Kaplan et al. 2020, "Scaling laws for neural language models", section 2.1), P the
  parameter count. The devices deliver `utilisation` of their peak FP16 rate; the default 0.30 is the
  model-FLOPs utilisation of batched serving (prefill is compute-bound near 0.5, single-stream decode
  is memory-bound far below; Pope et al. 2022, "Efficiently scaling transformer inference", report
  MFU in that range). So device-hours = 2 P tokens / (TFLOPS x 1e12 x utilisation) / 3600, summed
  over the job's devices (tensor parallelism splits the FLOPs, it does not add any here).
- Training and fine-tuning: the consumer states `workload_device_hours` at speed 1 (the class
  reference device); on a resource of speed factor s it takes workload / s device-hours.
- A resource that reports no FP16 rate (0) is taken as `speed_factor` reference devices, the
  reference device delivering REFERENCE_FP16_TFLOPS.

`base_device_hours` is the same figure on the reference device (speed 1): the heterogeneous book's
`base_hours` (wall-clock, so divided by the job's device count there) and a job's value at speed 1.
Pure: no Django, no settings, no clock.
"""

from auctions.mechanisms.errors import MechanismError

FLOPS_PER_PARAM_PER_TOKEN = 2.0
DEFAULT_UTILISATION = 0.30
# Speed 1 in the demo population is an NVIDIA L4 / RTX A6000-class card (30-39 TFLOPS FP16 dense).
REFERENCE_FP16_TFLOPS = 30.0
SECONDS_PER_HOUR = 3600.0
# A floor so that a tiny job still reserves a measurable slice (the escrow cap divides by it).
MIN_DEVICE_HOURS = 1e-6


def inference_device_hours(
    *, tokens: int, params_billion: float, fp16_tflops: float, utilisation: float = DEFAULT_UTILISATION
) -> float:
    """Device-hours to process `tokens` with a model of `params_billion` on devices of `fp16_tflops`."""
    _require(tokens >= 0, "tokens must be >= 0")
    _require(params_billion > 0, "params_billion must be > 0")
    _require(fp16_tflops > 0, "fp16_tflops must be > 0")
    _require(0 < utilisation <= 1, "utilisation must be in (0, 1]")
    flops = FLOPS_PER_PARAM_PER_TOKEN * params_billion * 1e9 * tokens
    return max(MIN_DEVICE_HOURS, flops / (fp16_tflops * 1e12 * utilisation) / SECONDS_PER_HOUR)


def training_device_hours(*, workload_device_hours: float, speed_factor: float) -> float:
    """Device-hours of a training or fine-tuning workload stated at speed 1, on a device of `speed_factor`."""
    _require(workload_device_hours >= 0, "workload_device_hours must be >= 0")
    _require(speed_factor > 0, "speed_factor must be > 0")
    return max(MIN_DEVICE_HOURS, workload_device_hours / speed_factor)


def job_device_hours(
    *,
    kind: str,
    params_billion: float,
    workload_tokens: int | None,
    workload_device_hours: float | None,
    fp16_tflops: float,
    speed_factor: float,
    utilisation: float = DEFAULT_UTILISATION,
) -> float:
    """Device-hours a job needs on a resource (`kind` INFERENCE uses tokens, the others device-hours)."""
    if kind == "INFERENCE":
        _require(workload_tokens is not None, "an inference job needs workload_tokens")
        tflops = fp16_tflops if fp16_tflops > 0 else REFERENCE_FP16_TFLOPS * speed_factor
        return inference_device_hours(
            tokens=workload_tokens, params_billion=params_billion, fp16_tflops=tflops, utilisation=utilisation
        )
    _require(workload_device_hours is not None, "a training or fine-tuning job needs workload_device_hours")
    return training_device_hours(workload_device_hours=workload_device_hours, speed_factor=speed_factor)


def base_device_hours(
    *,
    kind: str,
    params_billion: float,
    workload_tokens: int | None,
    workload_device_hours: float | None,
    utilisation: float = DEFAULT_UTILISATION,
) -> float:
    """Device-hours of a job on the reference device (speed 1, REFERENCE_FP16_TFLOPS)."""
    return job_device_hours(
        kind=kind,
        params_billion=params_billion,
        workload_tokens=workload_tokens,
        workload_device_hours=workload_device_hours,
        fp16_tflops=REFERENCE_FP16_TFLOPS,
        speed_factor=1.0,
        utilisation=utilisation,
    )


def _require(condition: bool, message: str) -> None:
    # NaN fails every comparison, so it is refused here too.
    if not condition:
        raise MechanismError("bad_input", message)
