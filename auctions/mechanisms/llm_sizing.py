"""LLM sizing: how much accelerator memory a job needs, and on how many devices.

Model (all sizes in GB = 1e9 bytes until the last step, which converts to GiB per device):

- weights = P x 1e9 x bits / 8 bytes, P the parameters in billions. 70B at 16 bits is 140 GB,
  at 4 bits 35 GB (the published figures for Llama-2-70B and its GPTQ/AWQ 4-bit builds).
- shape: decoder-only transformers have P ~= 12 L d^2 (L layers, d hidden size) with d ~= 128 L
  (Llama-2: 7B 32x4096, 13B 40x5120), so L = (P / 196608)^(1/3) and d = 128 L.
- KV cache (inference and fine-tuning): 2 (K and V) x L x d x kv_ratio x context x batch x
  kv_bits/8 bytes; kv_ratio = KV heads / attention heads (1 for multi-head attention, 1/8 for the
  grouped-query attention of Llama-2-70B). The default 1 is the conservative upper bound.
- training state: TRAINING keeps fp16 weights and gradients plus fp32 master weights and two Adam
  moments, 16 bytes per parameter (Rajbhandari et al., ZeRO, 2020), instead of `weights`;
  FINE_TUNE is LoRA-style: frozen weights at `bits` plus 1 % trainable parameters at 16 bytes each.
- activations (TRAINING, FINE_TUNE): 34 x d x L bytes per token of context x batch, the
  per-layer activation memory with flash attention (Korthikanti et al., 2022).
- overhead: x 1.2 on the sum for the runtime (CUDA context, allocator fragmentation, buffers).

Devices: the consumer's device count if given, else the smallest power of two (tensor-parallel
degrees are) whose share fits `max_device_memory_gib`; memory per device is the share rounded up
to 0.5 GiB.
"""

import math
from dataclasses import asdict, dataclass

from auctions.mechanisms.errors import MechanismError

GB = 1e9
GIB = 2**30
OVERHEAD = 1.2
ADAM_MIXED_PRECISION_BYTES = 16
LORA_TRAINABLE_FRACTION = 0.01
ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN_PER_LAYER = 34
SUPPORTED_BITS = (2, 3, 4, 5, 6, 8, 16, 32)
KINDS = ("INFERENCE", "FINE_TUNE", "TRAINING")


@dataclass(frozen=True)
class Sizing:
    """What a job needs; sizes in GB except the per-device figure, in GiB."""

    layers: int
    hidden: int
    weights_gb: float
    kv_cache_gb: float
    training_state_gb: float
    activations_gb: float
    overhead_gb: float
    total_gb: float
    device_count: int
    memory_per_device_gib: float

    def as_dict(self) -> dict:
        return asdict(self)


def model_shape(params_billion: float) -> tuple[int, int]:
    """(layers, hidden size) of a decoder-only transformer with P billion parameters."""
    layers = (params_billion * 1e9 / 196608) ** (1 / 3)
    return max(1, round(layers)), max(64, round(128 * layers))


def size_llm_job(
    *,
    kind: str,
    params_billion: float,
    quant_bits: int,
    context_length: int,
    batch_size: int = 1,
    device_count: int | None = None,
    max_device_memory_gib: float = 80.0,
    kv_bits: int = 16,
    kv_ratio: float = 1.0,
) -> Sizing:
    """Memory per device and device count for an LLM job (model in the module docstring)."""
    _check(kind in KINDS, f"kind must be one of {', '.join(KINDS)}")
    _check(_positive(params_billion) and params_billion <= 100_000, "params_billion must be in (0, 100000]")
    _check(quant_bits in SUPPORTED_BITS, f"quant_bits must be one of {SUPPORTED_BITS}")
    _check(_whole(context_length) and 1 <= context_length <= 10_000_000, "context_length must be 1..10^7")
    _check(_whole(batch_size) and 1 <= batch_size <= 100_000, "batch_size must be 1..10^5")
    _check(
        device_count is None or (_whole(device_count) and 1 <= device_count <= 4096), "device_count 1..4096"
    )
    _check(_positive(max_device_memory_gib), "max_device_memory_gib must be positive")
    _check(kv_bits in SUPPORTED_BITS, f"kv_bits must be one of {SUPPORTED_BITS}")
    _check(_positive(kv_ratio) and kv_ratio <= 1, "kv_ratio must be in (0, 1]")

    params = params_billion * 1e9
    layers, hidden = model_shape(params_billion)
    tokens = context_length * batch_size
    weights = params * quant_bits / 8
    kv_cache = 2 * layers * hidden * kv_ratio * tokens * kv_bits / 8
    training_state = 0.0
    activations = 0.0
    if kind == "TRAINING":
        training_state = params * ADAM_MIXED_PRECISION_BYTES - weights
        kv_cache = 0.0  # training processes whole sequences; activations cover attention
        activations = ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN_PER_LAYER * hidden * layers * tokens
    elif kind == "FINE_TUNE":
        training_state = params * LORA_TRAINABLE_FRACTION * ADAM_MIXED_PRECISION_BYTES
        activations = ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN_PER_LAYER * hidden * layers * tokens
    subtotal = weights + kv_cache + training_state + activations
    total = subtotal * OVERHEAD

    total_gib = total / GIB
    if device_count is None:
        device_count = 1
        while total_gib / device_count > max_device_memory_gib and device_count < 4096:
            device_count *= 2
    per_device_gib = math.ceil(total_gib / device_count * 2) / 2
    return Sizing(
        layers=layers,
        hidden=hidden,
        weights_gb=weights / GB,
        kv_cache_gb=kv_cache / GB,
        training_state_gb=training_state / GB,
        activations_gb=activations / GB,
        overhead_gb=(total - subtotal) / GB,
        total_gb=total / GB,
        device_count=device_count,
        memory_per_device_gib=per_device_gib,
    )


def _positive(value) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise MechanismError("bad_input", message)
