"""Heterogeneous jobs on heterogeneous providers: the book, its validation, and the result document.

Model (docs/mechanisms.md, one round, each job on one provider with all its GPUs there):
run time tau_jk = base_hours_j / speed_k (hours), cost kappa_jk = ask_per_gpu_hour_k * gpus_j * tau_jk
(money), net value w_jk = bid_j - kappa_jk (money). The pair (j, k) is compatible iff
vram_per_gpu_j <= vram_per_gpu_k, gpus_j <= gpus_k, tau_jk <= deadline_hours_j and w_jk > 0; per-GPU
memory is a filter, gpus / vcpu / ram are additive capacities per provider.

Two mechanisms share this module's book and result:

- `welfare` (`welfare_milp.py`): the welfare-maximising assignment as a MILP (SciPy `milp`, HiGHS),
  with VCG payments (Vickrey 1961, Clarke 1971, Groves 1973) or none.
- `greedy` (`greedy_critical.py`): density-ordered greedy allocation with critical-value payments
  (Lehmann, O'Callaghan, Shoham 2002; multi-resource density after Nejad, Mashayekhy, Grosu 2015).

Choices the spec leaves open (documented in the README as well):

- `payment_rule` is required: `welfare` takes "vcg" or "none", `greedy` takes "critical" or "none";
  any other pairing is `bad_input`. With "none", `payments` and `receipts` are empty and `surplus` is 0.
- Ids are non-empty strings or integers (not booleans), unique across jobs and providers (compared as
  strings, since they become JSON object keys).
- Job `gpus` is an integer >= 1; provider `gpus` an integer >= 0; `speed` > 0; every other number is
  finite and >= 0. `time_limit_s` (default 30) is finite and > 0.
- `pruning` (optional, `welfare` only): `{"per_provider": N}` keeps, for every provider, its N
  compatible jobs of highest LP reduced cost (plus the LP's support) and solves over the union of
  those pairs (never a per-job top-k, which would drop exactly the jobs that compete for a scarce
  provider); `false` forces the exact MILP at any size. Absent (or null): exact up to
  `welfare_milp.AUTO_PRUNE_PAIRS` compatible pairs, automatic per-provider pruning beyond (the result's
  `pruning` then says `"automatic": true`).
- Deterministic replay: the answer is shaped by work limits only (MILP node limits, bounded
  column-generation and core rounds; `welfare_milp.py`), so the same book gives the same result on any
  machine and under any load. `time_limit_s` is a wall-clock guard over the whole allocation (each VCG
  re-solve has its own), sized never to bind in normal operation. The result's `stopped_by` says what
  cut a solve short: null (nothing: every solve finished or reached its gap), "work_limit" (a node or
  round limit; replays exactly) or "time_limit" (the guard, which depends on the machine; the result
  then lists the cut solves in `time_cuts`, and `clear(doc, replay=result)` cuts the same ones and
  gives the same result anywhere). Greedy is deterministic by construction; its `lp_bound` is an LP
  under the same guard.
- Every result carries `lp_bound` (the LP relaxation over *all* compatible pairs — as a Lagrangian bound
  from the LP's capacity prices, valid whatever the solve — so it bounds the true optimum even when the
  solve was pruned or greedy; None only when no LP finished within the time limit) and
  `gap` = (lp_bound - welfare) / max(|lp_bound|, 1e-12), plus the extra keys `payment_rule`,
  `stopped_by` and, when pruning applied, `pruning`.
"""

import math
from dataclasses import dataclass

import numpy as np

from auctions.mechanisms.canonical import input_sha256 as _hash
from auctions.mechanisms.errors import MechanismError

JOB_FIELDS = ("bid", "gpus", "vram_per_gpu", "vcpu", "ram", "base_hours", "deadline_hours")
PROVIDER_FIELDS = ("gpus", "vram_per_gpu", "vcpu", "ram", "speed", "ask_per_gpu_hour")
PAYMENT_RULES = {"welfare": frozenset({"vcg", "none"}), "greedy": frozenset({"critical", "none"})}
DEFAULT_TIME_LIMIT_S = 30.0
TINY = 1e-12


@dataclass(frozen=True)
class Market:
    """A validated book as arrays: jobs along axis 0, providers along axis 1, resources (gpus, vcpu, ram)."""

    job_ids: tuple
    provider_ids: tuple
    bid: np.ndarray  # (n,)
    demand: np.ndarray  # (n, 3): gpus, vcpu, ram
    capacity: np.ndarray  # (P, 3)
    kappa: np.ndarray  # (n, P) cost of running job j on provider k
    net: np.ndarray  # (n, P) w_jk = bid_j - kappa_jk
    compatible: np.ndarray  # (n, P) bool, the spec's filter
    eligible: np.ndarray  # (n, P) bool, the filter without w_jk > 0 (it does not depend on the bid)
    fits_alone: np.ndarray  # (n, P) bool, compatible and within every capacity of k on its own

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.job_ids), len(self.provider_ids)


def clear_heterogeneous(doc: dict, *, input_sha256: str | None = None, time_cuts=None, share=None) -> dict:
    """Clear a `welfare` or `greedy` book (docs/mechanisms.md) and return its RESULT document.

    `time_cuts`: None for a live run; on a replay, the original result's `time_cuts` (see
    `welfare_milp.Budget`), so that the replay cuts the same solves and runs the rest without a guard."""
    mechanism = doc["mechanism"]
    rule = doc.get("payment_rule")
    if rule not in PAYMENT_RULES[mechanism]:
        allowed = " or ".join(sorted(PAYMENT_RULES[mechanism]))
        raise MechanismError("bad_input", f"payment_rule for {mechanism!r} must be {allowed}, not {rule!r}")
    time_limit = _time_limit(doc)
    pruning = _pruning(doc, mechanism)
    market = build_market(doc)
    digest = input_sha256 if input_sha256 is not None else _hash(doc)

    if mechanism == "welfare":
        from auctions.mechanisms.welfare_milp import solve_welfare

        outcome = solve_welfare(
            market, payment_rule=rule, time_limit=time_limit, per_provider=pruning, time_cuts=time_cuts
        )
        bound = outcome["lp_bound"]
    else:
        from auctions.mechanisms.greedy_critical import solve_greedy
        from auctions.mechanisms.welfare_milp import lp_bound

        outcome = solve_greedy(market, payment_rule=rule, share=share)
        bound, record = lp_bound(market, time_limit=time_limit, time_cuts=time_cuts)
        outcome.update(stopped_by=record["stopped_by"], time_cuts=record["time_cuts"])
    welfare = outcome["welfare"]
    result = {
        "mechanism": mechanism,
        "payment_rule": rule,
        "status": outcome["status"],
        "assignments": outcome["assignments"],
        "welfare": welfare,
        "lp_bound": bound,
        "gap": None if bound is None else max(0.0, (bound - welfare) / max(abs(bound), TINY)),
        "payments": outcome["payments"],
        "receipts": outcome["receipts"],
        "surplus": float(sum(outcome["payments"].values()) - sum(outcome["receipts"].values())),
        "stopped_by": outcome["stopped_by"],
        "input_sha256": digest,
    }
    if outcome.get("pruning") is not None:
        result["pruning"] = outcome["pruning"]
    if outcome["time_cuts"]:
        result["time_cuts"] = outcome["time_cuts"]
    return result


def build_market(doc: dict) -> Market:
    """Validate the jobs and providers of a book and compute costs, net values and compatibility."""
    jobs = _rows(doc, "jobs", JOB_FIELDS)
    providers = _rows(doc, "providers", PROVIDER_FIELDS)
    job_ids = _ids(jobs, "jobs")
    provider_ids = _ids(providers, "providers")
    seen = {str(i) for i in job_ids}
    for pid in provider_ids:
        if str(pid) in seen:
            raise MechanismError("bad_input", f"id {pid!r} is used by a job and a provider")
    job = {
        f: np.array([_number(r, f, "jobs", i) for i, r in enumerate(jobs)], dtype=float) for f in JOB_FIELDS
    }
    prov = {
        f: np.array([_number(r, f, "providers", i) for i, r in enumerate(providers)], dtype=float)
        for f in PROVIDER_FIELDS
    }
    _integer(job["gpus"], "jobs", "gpus", minimum=1)
    _integer(prov["gpus"], "providers", "gpus", minimum=0)
    if np.any(prov["speed"] <= 0):
        raise MechanismError("bad_input", "providers[].speed must be > 0")

    tau = job["base_hours"][:, None] / prov["speed"][None, :]
    kappa = prov["ask_per_gpu_hour"][None, :] * job["gpus"][:, None] * tau
    net = job["bid"][:, None] - kappa
    eligible = (
        (job["vram_per_gpu"][:, None] <= prov["vram_per_gpu"][None, :])
        & (job["gpus"][:, None] <= prov["gpus"][None, :])
        & (tau <= job["deadline_hours"][:, None])
    )
    compatible = eligible & (net > 0)
    demand = np.column_stack([job["gpus"], job["vcpu"], job["ram"]]) if jobs else np.zeros((0, 3))
    capacity = np.column_stack([prov["gpus"], prov["vcpu"], prov["ram"]]) if providers else np.zeros((0, 3))
    fits_alone = compatible & np.all(demand[:, None, :] <= capacity[None, :, :], axis=2)
    return Market(
        job_ids=tuple(job_ids),
        provider_ids=tuple(provider_ids),
        bid=job["bid"],
        demand=demand,
        capacity=capacity,
        kappa=kappa.reshape(len(jobs), len(providers)),
        net=net.reshape(len(jobs), len(providers)),
        compatible=compatible.reshape(len(jobs), len(providers)),
        eligible=eligible.reshape(len(jobs), len(providers)),
        fits_alone=fits_alone.reshape(len(jobs), len(providers)),
    )


def _rows(doc: dict, side: str, fields: tuple) -> list:
    rows = doc.get(side)
    if not isinstance(rows, list):
        raise MechanismError("bad_input", f"{side} must be a list of objects")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise MechanismError("bad_input", f"{side}[{i}] must be an object")
        missing = [f for f in ("id", *fields) if f not in row]
        if missing:
            raise MechanismError("bad_input", f"{side}[{i}] lacks {', '.join(missing)}")
    return rows


def _ids(rows: list, side: str) -> list:
    ids, seen = [], set()
    for i, row in enumerate(rows):
        value = row["id"]
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise MechanismError("bad_input", f"{side}[{i}].id must be a non-empty string or an integer")
        if str(value) in seen:
            raise MechanismError("bad_input", f"id {value!r} is repeated in {side}")
        seen.add(str(value))
        ids.append(value)
    return ids


def _number(row: dict, field: str, side: str, index: int) -> float:
    value = row[field]
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise MechanismError("bad_input", f"{side}[{index}].{field} must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise MechanismError("bad_input", f"{side}[{index}].{field} must be finite")
    if value < 0:
        raise MechanismError("bad_input", f"{side}[{index}].{field} must be >= 0")
    return value


def _integer(values: np.ndarray, side: str, field: str, *, minimum: int) -> None:
    if np.any(values != np.floor(values)) or np.any(values < minimum):
        raise MechanismError("bad_input", f"{side}[].{field} must be an integer >= {minimum}")


def _time_limit(doc: dict) -> float:
    value = doc.get("time_limit_s", DEFAULT_TIME_LIMIT_S)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise MechanismError("bad_input", "time_limit_s must be a finite number > 0")
    return float(value)


def _pruning(doc: dict, mechanism: str) -> int | bool | None:
    if "pruning" not in doc or doc["pruning"] is None:
        return None
    spec = doc["pruning"]
    if mechanism != "welfare":
        raise MechanismError("bad_input", "pruning applies to the welfare mechanism only")
    if spec is False:
        return False
    if not isinstance(spec, dict) or set(spec) != {"per_provider"}:
        raise MechanismError("bad_input", 'pruning must be false or {"per_provider": N}')
    n = spec["per_provider"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MechanismError("bad_input", "pruning.per_provider must be an integer >= 1")
    return n
