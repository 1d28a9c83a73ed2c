"""SLA measurement and breach detection (pure): percentiles of RTT samples and the breaches a
lease's terms find in what was measured.

Model (the SLA contract model of the seed survey, section IV.B.3): a delegated task carries
conditions (latency, completion time), a quality level, and fees and penalties; a breach of a
condition costs the provider a penalty stated in the contract. Here:

    latency   breach when the samples show, at confidence 1 − ALPHA, that the link's p95 exceeds the
              bound: more samples over the bound than a link whose p95 is exactly the bound would
              give with probability ALPHA (a one-sided binomial test, P[Bin(n, 0.05) ≥ k] ≤ ALPHA).
              The p95 itself is what is reported. A bare "sample p95 > bound" charges honest links
              for sampling noise (bench/sla.py measures both).
    deadline  breach when the lease ended after its completion deadline
    quality   breach when the verified quality (share of spot-checked answers that matched) is
              below the minimum
    penalty   rate_kind × charge per breach, the sum capped at the charge
"""

import math
from dataclasses import dataclass

MIN_SAMPLES = 5
ALPHA = 0.01
TAIL = 0.05  # the share of samples a p95 bound lets exceed it


def binomial_tail(n: int, k: int, p: float) -> float:
    """P[Bin(n, p) ≥ k]."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def exceedances_needed(n: int, *, alpha: float = ALPHA) -> int:
    """The fewest samples over the bound (of n) that prove the p95 exceeds it at confidence 1 − alpha."""
    k = 0
    while k <= n and binomial_tail(n, k, TAIL) > alpha:
        k += 1
    return k


def percentile(samples: list[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (0 < q ≤ 100) of the samples; None when there are none."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


@dataclass(frozen=True)
class Breach:
    kind: str  # "latency" | "deadline" | "quality"
    measured: float
    bound: float
    rate: float


def breaches(
    *,
    terms: dict,
    rtt_ms: list[float],
    late_by_s: float | None,
    quality: float | None,
    default_rate: float,
) -> list[Breach]:
    """The breaches of `terms` ({latency_p95_ms, complete_by, min_quality, *_penalty_rate}) in the
    measurements: RTT samples, seconds past the completion deadline (None: no deadline or not
    ended), verified quality (None: not checked)."""
    found = []

    def rate(kind: str) -> float:
        value = terms.get(f"{kind}_penalty_rate")
        return float(default_rate if value is None else value)

    bound = terms.get("latency_p95_ms")
    if bound is not None and len(rtt_ms) >= MIN_SAMPLES:
        over = sum(1 for x in rtt_ms if x > float(bound))
        if over >= exceedances_needed(len(rtt_ms)):
            found.append(Breach("latency", percentile(rtt_ms, 95), float(bound), rate("latency")))
    if late_by_s is not None and late_by_s > 0:
        found.append(Breach("deadline", float(late_by_s), 0.0, rate("deadline")))
    minimum = terms.get("min_quality")
    if minimum is not None and quality is not None and quality < float(minimum):
        found.append(Breach("quality", float(quality), float(minimum), rate("quality")))
    return found


def detection_scores(injected: set, detected: set) -> dict:
    """Precision and recall of detected breaches against injected ones (bench/sla.py)."""
    hits = len(injected & detected)
    precision = hits / len(detected) if detected else 1.0
    recall = hits / len(injected) if injected else 1.0
    return {
        "injected": len(injected),
        "detected": len(detected),
        "hits": hits,
        "precision": precision,
        "recall": recall,
    }
