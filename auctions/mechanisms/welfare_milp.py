"""The `welfare` mechanism: welfare-maximising assignment as a MILP, its LP bound, and VCG payments.

Model (units: money for w, GPUs / vCPUs / GB for capacities):

    maximise    sum_{(j,k) in E} w_jk x_jk
    subject to  sum_k x_jk <= 1                      for every job j
                sum_j d_jr x_jk <= Cap_kr            for every provider k and r in (gpus, vcpu, ram)
                x_jk in {0, 1}

where E holds the compatible pairs (spec/mechanisms.md) that also fit an empty provider on their own
(a pair that does not is 0 in every feasible solution, so dropping it changes nothing). Solved with
`scipy.optimize.milp` (HiGHS branch and cut) with `mip_rel_gap = 0` and `time_limit = time_limit_s`
per solve, over a `scipy.sparse` constraint matrix with one column per pair.

VCG (Vickrey 1961, Clarke 1971, Groves 1973): job j pays bid_j - (W* - W*_-j) and provider k receives
its cost in the optimum plus (W* - W*_-k), where W*_-i is the optimum without agent i — one extra
solve per winner, done by fixing the agent's columns to 0. Payments are exact only when every solve
is; a solve stopped at the time limit turns `status` into "feasible". Marginal contributions are
clipped at 0 so that solver tolerances cannot break individual rationality.

Pruning (`{"per_provider": N}`): every provider keeps its N compatible jobs of highest w_jk and the MILP
runs over the union. Per provider, not per job: a per-job top-k drops the jobs that all want the same
scarce provider, which is exactly where the welfare is.
"""

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from auctions.mechanisms.errors import MechanismError


def solve_welfare(market, *, payment_rule: str, time_limit: float, per_provider: int | None) -> dict:
    """Solve the welfare MILP (optionally pruned) and price it by VCG or not at all."""
    mask = market.fits_alone
    total_pairs = int(mask.sum())
    if per_provider is not None:
        mask = prune_per_provider(market.net, mask, per_provider)
    problem = _Problem(market, mask)
    welfare, chosen, exact = problem.solve(problem.upper.copy(), time_limit)
    assignments = {}
    cost = np.zeros(len(market.provider_ids))
    for p in np.flatnonzero(chosen):
        j, k = problem.jobs[p], problem.providers[p]
        assignments[market.job_ids[j]] = market.provider_ids[k]
        cost[k] += market.kappa[j, k]

    payments, receipts = {}, {}
    if payment_rule == "vcg":
        for p in np.flatnonzero(chosen):
            j = problem.jobs[p]
            upper = problem.upper.copy()
            upper[problem.jobs == j] = 0.0
            without, _, solved = problem.solve(upper, time_limit)
            exact &= solved
            payments[market.job_ids[j]] = float(market.bid[j] - max(0.0, welfare - without))
        for k in np.unique(problem.providers[chosen]):
            upper = problem.upper.copy()
            upper[problem.providers == k] = 0.0
            without, _, solved = problem.solve(upper, time_limit)
            exact &= solved
            receipts[market.provider_ids[k]] = float(cost[k] + max(0.0, welfare - without))
    pruning = None
    if per_provider is not None:
        pruning = {"per_provider": per_provider, "pairs": int(mask.sum()), "pairs_total": total_pairs}
    return {
        "status": "optimal" if exact else "feasible",
        "assignments": assignments,
        "welfare": welfare,
        "payments": payments,
        "receipts": receipts,
        "pruning": pruning,
    }


def prune_per_provider(net: np.ndarray, mask: np.ndarray, per_provider: int) -> np.ndarray:
    """Keep, for every provider (column), its `per_provider` candidate jobs of highest net value."""
    if mask.size == 0:
        return mask
    scores = np.where(mask, net, -np.inf)
    order = np.argsort(-scores, axis=0, kind="stable")[:per_provider]
    keep = np.zeros_like(mask)
    np.put_along_axis(keep, order, True, axis=0)
    return keep & mask


def lp_bound(market, *, time_limit: float) -> float | None:
    """The LP relaxation (0 <= x <= 1) over all pairs that fit: an upper bound on the optimal welfare.

    Taken over every compatible pair, never the pruned set, so it bounds the true optimum. None when
    the LP stops at the time limit or fails (the result then has no bound to report).
    """
    problem = _Problem(market, market.fits_alone)
    if problem.size == 0:
        return 0.0
    result = linprog(
        -problem.weights,
        A_ub=problem.matrix,
        b_ub=problem.rhs,
        bounds=(0, 1),
        method="highs",
        options={"time_limit": time_limit, "presolve": True},
    )
    if result.status != 0:
        return None
    return float(-result.fun)


class _Problem:
    """The MILP over the pairs in `mask`: columns are pairs, rows are jobs then (provider, resource)."""

    def __init__(self, market, mask: np.ndarray):
        self.jobs, self.providers = np.nonzero(mask)
        self.size = len(self.jobs)
        self.weights = market.net[self.jobs, self.providers]
        n_jobs, n_providers = market.shape
        columns = np.arange(self.size)
        rows = [self.jobs]
        data = [np.ones(self.size)]
        for r in range(3):
            rows.append(n_jobs + 3 * self.providers + r)
            data.append(market.demand[self.jobs, r])
        rows, data = np.concatenate(rows), np.concatenate(data)
        nonzero = data != 0
        self.matrix = sparse.csr_array(
            (data[nonzero], (rows[nonzero], np.tile(columns, 4)[nonzero])),
            shape=(n_jobs + 3 * n_providers, self.size),
        )
        self.rhs = np.concatenate([np.ones(n_jobs), market.capacity.ravel()])
        self.upper = np.ones(self.size)

    def solve(self, upper: np.ndarray, time_limit: float) -> tuple[float, np.ndarray, bool]:
        """(welfare, chosen pairs as a bool mask, proven optimal) with columns bounded by `upper`."""
        if self.size == 0 or not np.any(upper > 0):
            return 0.0, np.zeros(self.size, dtype=bool), True
        result = milp(
            -self.weights,
            integrality=np.ones(self.size),
            bounds=Bounds(np.zeros(self.size), upper),
            constraints=LinearConstraint(self.matrix, -np.inf, self.rhs),
            options={"mip_rel_gap": 0, "time_limit": time_limit},
        )
        if result.status == 0 and result.x is not None:
            exact = True
        elif result.status == 1 and result.x is not None:
            exact = False
        elif result.status == 1:
            raise MechanismError("time_limit", f"the welfare MILP found no solution within {time_limit} s")
        else:
            raise MechanismError("solver_failed", f"the welfare MILP failed: {result.message}")
        chosen = result.x > 0.5
        if not self._feasible(chosen):
            raise MechanismError("solver_failed", "the welfare MILP returned an infeasible assignment")
        return float(self.weights[chosen].sum()), chosen, exact

    def _feasible(self, chosen: np.ndarray) -> bool:
        load = self.matrix @ chosen.astype(float)
        return bool(np.all(load <= self.rhs * (1 + 1e-9) + 1e-9))
