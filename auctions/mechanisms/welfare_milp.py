"""The `welfare` mechanism: welfare-maximising assignment as a MILP, its LP bound, and VCG payments.

Model (units: money for w, GPUs / vCPUs / GB for capacities):

    maximise    sum_{(j,k) in E} w_jk x_jk
    subject to  sum_k x_jk <= 1                      for every job j              (dual y_j >= 0)
                sum_j d_jr x_jk <= Cap_kr            for every provider k, r      (dual mu_kr >= 0)
                x_jk in {0, 1}

where E holds the compatible pairs (docs/mechanisms.md) that also fit an empty provider on their own
(a pair that does not is 0 in every feasible solution). Every MILP is solved with
`scipy.optimize.milp` (HiGHS branch and cut) over a `scipy.sparse` constraint matrix with one column
per pair.

Bound and reduced costs (weak duality; Lagrangian relaxation of the capacity rows). For any mu >= 0,
set y_j = max(0, max_k (w_jk - mu_k . d_j)); then every column has reduced cost
rc_jk = w_jk - mu_k . d_j - y_j <= 0 and D = mu . Cap + sum_j y_j >= every integer welfare, and
any assignment that uses pair q has welfare <= D + rc_q. mu comes from the LP relaxation: over all
pairs when they are few (`FULL_LP_PAIRS`), otherwise by column generation (an LP over a per-provider
subset, priced over all pairs, grown by the columns of positive reduced cost until none is left;
each iteration's D is a valid bound and the smallest is kept; at convergence D is the LP bound over
all pairs). `lp_bound` is that D: a valid upper bound on the optimum in every case.

Exact path (`pruning` false, or absent with at most `AUTO_PRUNE_PAIRS` pairs). Reduced-cost fixing over a core
(Balas and Zemel 1980 for the core idea): a MILP (`mip_rel_gap = 0`) over the columns of highest
reduced cost returns welfare Z; every pair with D + rc_q < Z is provably useless; if all other pairs
are in the core, Z is the optimum over all pairs, otherwise the core grows to them and is solved
again. The first incumbent rounds the LP (`_Problem.rounded`); when a solve stops at the time limit
with a worse incumbent, the rounding is returned ("feasible").

Pruned path (per provider, never per job). Every provider keeps its N compatible pairs of highest
reduced cost rc_jk (ties, frequent in degenerate LPs: net value, then the LP's x_jk), and one MILP runs
over the union. Reduced cost is net value at the LP's prices of the provider's capacity and
of the job's alternatives, so a provider keeps the jobs the relaxation wants there — unlike raw net
value, which favours the same large jobs on every provider (measured on the 1,000 x 50 bench book: the
exact optimum's pairs rank at most 27th per provider by reduced cost, 90 % within the top 10, but up to
287th by net value, 19 % within the top 40). A per-job top-k would drop exactly the jobs that compete
for a scarce provider. The pruned result is "optimal" only when the MILP over the kept pairs is proven
and reduced-cost fixing shows every dropped pair useless (Z >= D + max rc over dropped pairs);
otherwise "feasible", with `lp_bound` still over all pairs. `{"per_provider": N}` asks for it
explicitly (the MILP then keeps `mip_rel_gap = 0`) and `false` asks for the exact path at any size.
Without either, books of more than `AUTO_PRUNE_PAIRS` pairs are pruned automatically: every provider
keeps its whole LP support plus `AUTO_PER_PROVIDER` pairs, and the MILP stops at a relative gap of
`AUTO_MIP_GAP` on the kept pairs or after `AUTO_NODES` branch-and-bound nodes; unless that first MILP
proved its answer optimal over all pairs, a second MILP over `AUTO_WIDER_PER_PROVIDER` per provider
plus the incumbent's pairs runs to the same gap or to the end of its root node (`AUTO_WIDER_NODES`)
and the better assignment is kept (bench/welfare.py: 2,000 x 100 at about 99 % of the LP bound, where
the exact MILP did not finish in 10 minutes).

Deterministic replay: every choice that shapes the answer is bounded by work, never by time — a node
limit per MILP (`EXACT_NODES` on the exact path and for explicit pruning, `AUTO_NODES` and
`AUTO_WIDER_NODES` on the automatic one; HiGHS `mip_max_nodes`, whose branch and cut is
deterministic), a bounded number of column-generation rounds (`CG_MAX_ROUNDS`) and of core rounds
(`CORE_MAX_ROUNDS`), and a second automatic round that runs or not by the first one's outcome. The
same book therefore gives the same result on a loaded machine and on a quiet one
(tests/unit/mechanisms/test_replay_under_load.py). A solve stopped by a work limit keeps its incumbent
and makes the status "feasible"; the result's `stopped_by` says "work_limit".

Time (`time_limit_s`) is only a guard against a runaway solve: the allocation — LP, column
generation, every MILP — runs against one wall-clock deadline of `time_limit_s` from the start of the
call (each HiGHS call gets what is left), and each VCG re-solve has its own `time_limit_s` (the spec's
"applies to each solve"). Work limits are sized to finish well inside the default, so the guard does
not fire in normal operation. When it does, the cut solve counts as one that found nothing — HiGHS's
incumbent at that moment depends on the machine, so it is dropped — and its caller falls back to a
deterministic answer (the LP rounding, or an earlier round's assignment; with none, the error
`time_limit`); the result says `stopped_by: "time_limit"` and lists the cut solves, numbered in solve
order, in `time_cuts`. Whether the guard fires depends on the machine; what follows from it does not: a
replay given the recorded `time_cuts` (`clear(doc, replay=result)`) cuts exactly those solves, runs the
others without a guard, and gives the same result anywhere.

VCG (Vickrey 1961, Clarke 1971, Groves 1973): job j pays bid_j - (W* - W*_-j) and provider k receives
its cost in the optimum plus (W* - W*_-k), where W*_-i is the optimum without agent i — one extra
solve per winner (its columns fixed at 0; the same duals stay valid). Payments are exact only when
every solve is; a solve stopped at the time limit, or a pruned one, turns `status` into "feasible".
Marginal contributions are clipped at 0 so that solver tolerances cannot break individual rationality.
"""

import math
import time
import warnings

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from auctions.mechanisms.errors import MechanismError

CORE_SIZE_PER_JOB = 2  # first exact core: the 2 x n_jobs columns of highest reduced cost (measured)
CORE_MAX_ROUNDS = 20  # the core grows at most this many times (each round adds every column still needed)
FULL_LP_PAIRS = 20_000  # above: the LP by column generation (full LP 5 s at 120k pairs, generation ~1.5 s)
CG_START_PER_PROVIDER = 40  # first restricted LP: per provider, the jobs of highest net value per capacity
CG_ADD_PER_PROVIDER = 40  # each pricing round adds, per provider, its columns of highest positive rc
CG_TOLERANCE = 1e-7  # column generation stops when the restricted LP is this close (relative) to the bound
CG_MAX_ROUNDS = 60  # and after this many restricted LPs at most (each iteration's bound is valid)
AUTO_PRUNE_PAIRS = (
    20_000  # above: automatic per-provider pruning (exact: 5-30 s at 30k pairs, no end at 120k)
)
AUTO_PER_PROVIDER = 8  # measured: 98.7-99.0 % of the LP bound at 2,000 x 100 in about a second
AUTO_WIDER_PER_PROVIDER = 16  # the second round: 99.2-99.4 % where N=8 gave 97.1 %
AUTO_MIP_GAP = 1e-3  # relative gap on the kept pairs at which the automatic pruned MILP stops
AUTO_NODES = 50  # branch-and-bound nodes of the first automatic MILP (work, not time: the same anywhere)
AUTO_WIDER_NODES = 1  # the second one stops after its root (cuts and heuristics: 99.5-99.99 % at 2,000 x 100;
# 50 nodes more found nothing better on the bench books and cost 2.5x the time)
EXACT_NODES = 20_000  # branch-and-bound nodes per MILP on the exact path and under explicit pruning
PRESOLVE = False  # restricted LPs: HiGHS presolve off (measured 20-30 % faster here)
MIN_SOLVE_S = 1e-3  # below this much time left, a MILP is not started
HIGHS_CAPPED = {"mip_pool_soft_limit": 10, "mip_lp_age_limit": 2}  # fewer root cut rounds (measured)
WORK_LIMIT, TIME_LIMIT = "work_limit", "time_limit"  # values of `stopped_by`


class Budget:
    """The limits of one call: a wall-clock guard `seconds` from now, and a record shared by every solve
    of the call — the solves numbered in order, the ones the guard cut (`time_cuts`), and what stopped a
    solve early (`stopped_by`: None, or WORK_LIMIT, or TIME_LIMIT, which wins because it is the one a
    replay must be told about).

    A cut solve counts as one that found nothing: its caller falls back to a deterministic incumbent
    (the LP rounding, or an earlier round's answer), never to HiGHS's time-dependent one. So a replay
    given the same `cuts` (the recorded `time_cuts`) cuts exactly those solves, runs every other one
    without the guard, and gives the same result on any machine. `cuts=None`: a live run."""

    def __init__(self, seconds: float, record: dict | None = None, cuts=None):
        self.at = time.perf_counter() + seconds
        self.record = {"solves": 0, "time_cuts": [], "stopped_by": None} if record is None else record
        self.cuts = None if cuts is None else frozenset(cuts)

    def left(self) -> float:
        return self.at - time.perf_counter()

    def another(self, seconds: float) -> "Budget":
        """A fresh guard of `seconds` (a VCG re-solve) sharing this call's record and cuts."""
        budget = Budget(seconds, self.record)
        budget.cuts = self.cuts
        return budget

    def next_solve(self) -> float | None:
        """Number the next solve and return the seconds it may take (inf on a replay), or None: cut it."""
        index = self.record["solves"]
        self.record["solves"] += 1
        if self.cuts is not None:
            if index in self.cuts:
                self.cut()
                return None
            return math.inf
        left = self.left()
        if left < MIN_SOLVE_S:
            self.cut()
            return None
        return left

    def cut(self) -> None:
        """The guard stopped the solve just numbered: record it (its incumbent is discarded)."""
        self.record["time_cuts"].append(self.record["solves"] - 1)
        self.stopped(TIME_LIMIT)

    def stopped(self, reason: str) -> None:
        if self.record["stopped_by"] != TIME_LIMIT:
            self.record["stopped_by"] = reason


def solve_welfare(
    market, *, payment_rule: str, time_limit: float, per_provider: int | bool | None, time_cuts=None
) -> dict:
    """Solve the welfare MILP (exactly, or pruned per provider) and price it by VCG or not at all.

    `per_provider`: None (automatic: exact up to `AUTO_PRUNE_PAIRS` pairs, pruned beyond), False (exact
    at any size), or N (pruned to N per provider). `time_cuts`: None for a live run, or a replay's
    recorded `time_cuts` (then no wall-clock guard applies; exactly those solves are cut).

    Returns the assignment part of the RESULT plus `lp_bound` (None when no LP could be solved),
    `pruning` (None on the exact path), `stopped_by` (None, "work_limit" or "time_limit") and
    `time_cuts` (the solves the guard cut, in solve order). Raises MechanismError `time_limit` (stopped
    with no solution) or `solver_failed`.
    """
    budget = Budget(time_limit, cuts=time_cuts)
    problem = _Problem(market, market.fits_alone)
    dual = problem.lp_dual(budget)
    auto = per_provider is None and problem.size > AUTO_PRUNE_PAIRS
    everyone = np.ones(problem.size, dtype=bool)
    seed = problem.rounded(dual) if dual is not None else None
    if per_provider is False or (per_provider is None and not auto):
        kept = everyone
        solve = _CoreSolver(problem, dual) if dual is not None else _PlainSolver(problem, everyone)
        welfare, chosen, exact = solve(everyone, seed=seed, budget=budget)
    else:
        n_kept = AUTO_PER_PROVIDER if auto else per_provider
        kept = prune_per_provider(problem, dual, n_kept, support=auto)
        options = {"gap": AUTO_MIP_GAP, "nodes": AUTO_NODES} if auto else {}
        solve = _PlainSolver(problem, kept, dual, **options)
        welfare, chosen, exact = solve(everyone, seed=seed, budget=budget)
        if auto and not exact and dual is not None:
            # Second round, decided by the first one's outcome (never by the clock, so it replays): twice
            # the pairs per provider plus the incumbent's.
            wider = prune_per_provider(problem, dual, AUTO_WIDER_PER_PROVIDER, support=True) | chosen
            wide = _PlainSolver(problem, wider, dual, gap=AUTO_MIP_GAP, nodes=AUTO_WIDER_NODES)
            result = wide(everyone, seed=chosen, budget=budget)
            if result[0] > welfare or result[2]:
                (welfare, chosen, exact), kept, solve, n_kept = result, wider, wide, AUTO_WIDER_PER_PROVIDER

    cost = np.zeros(len(market.provider_ids))
    np.add.at(cost, problem.providers[chosen], problem.costs[chosen])
    winners = problem.jobs[chosen]
    hosts = np.unique(problem.providers[chosen])
    assignments = {
        market.job_ids[j]: market.provider_ids[k]
        for j, k in sorted(zip(problem.jobs[chosen], problem.providers[chosen], strict=True))
    }
    payments, receipts = {}, {}
    if payment_rule == "vcg":
        for j in sorted(winners):
            others = problem.jobs != j
            without, _, solved = solve(others, seed=chosen & others, budget=budget.another(time_limit))
            exact &= solved
            payments[market.job_ids[j]] = float(market.bid[j] - max(0.0, welfare - without))
        for k in hosts:
            others = problem.providers != k
            without, _, solved = solve(others, seed=chosen & others, budget=budget.another(time_limit))
            exact &= solved
            receipts[market.provider_ids[k]] = float(cost[k] + max(0.0, welfare - without))
    pruning = None
    if per_provider not in (None, False) or auto:
        pruning = {"per_provider": n_kept, "pairs": int(kept.sum()), "pairs_total": problem.size}
        if auto:
            pruning["automatic"] = True
    return {
        "status": "optimal" if exact else "feasible",
        "assignments": assignments,
        "welfare": welfare,
        "lp_bound": None if dual is None else dual.bound,
        "payments": payments,
        "receipts": receipts,
        "pruning": pruning,
        "stopped_by": budget.record["stopped_by"],
        "time_cuts": budget.record["time_cuts"],
    }


def lp_bound(market, *, time_limit: float, time_cuts=None) -> tuple[float | None, dict]:
    """The LP-relaxation bound over all pairs that fit (None if the wall-clock guard stopped the LP), and
    the budget's record (`stopped_by`, `time_cuts`; `time_cuts` replays as in `solve_welfare`)."""
    budget = Budget(time_limit, cuts=time_cuts)
    dual = _Problem(market, market.fits_alone).lp_dual(budget)
    return (None if dual is None else dual.bound), budget.record


def prune_per_provider(
    problem: "_Problem", dual: "_Dual | None", per_provider: int, *, support: bool = False
) -> np.ndarray:
    """Columns kept: per provider, its `per_provider` pairs of highest reduced cost, then net value, then
    LP value x_jk; with `support`, all of the LP's support as well
    (automatic pruning: 1-2 points of welfare more at 2,000 x 100, measured). Without duals (no LP
    finished): by net value per unit of the provider's scarcest capacity."""
    if dual is None:
        keys = (problem.weights, problem.weights / np.maximum(problem.share, 1e-12))
    else:
        keys = (dual.x, problem.weights, dual.reduced)
    keep = _top_per_provider(problem.providers, keys, per_provider)
    if support and dual is not None:
        keep |= dual.x > 1e-9
    return keep


def _top_per_provider(providers: np.ndarray, keys: tuple, n: int) -> np.ndarray:
    """A mask of, for every provider, its `n` columns of highest keys (the last key first, then the one
    before, ...; then column order)."""
    keep = np.zeros(len(providers), dtype=bool)
    if len(providers) == 0:
        return keep
    order = np.lexsort(tuple(-key for key in keys) + (providers,))
    grouped = providers[order]
    first = np.searchsorted(grouped, grouped, side="left")
    keep[order[np.arange(len(order)) - first < n]] = True
    return keep


class _Dual:
    """Duals y (jobs, then capacities) >= 0, reduced costs per column, the bound D = b.y + sum max(0, rc),
    and the (restricted) LP's primal x over all columns (0 off the restricted set)."""

    def __init__(self, y: np.ndarray, reduced: np.ndarray, rhs: np.ndarray, x: np.ndarray, lp_reduced=None):
        self.y, self.x = y, x
        self.reduced = reduced
        self.lp_reduced = reduced if lp_reduced is None else lp_reduced  # at the restricted LP's own y
        self.objective = None  # the (restricted) LP's optimum, a lower bound on the LP over all pairs
        self.bound = float(rhs @ y + np.maximum(reduced, 0.0).sum())


class _Problem:
    """The MILP over the pairs in `mask`: columns are pairs, rows are jobs then (provider, resource)."""

    def __init__(self, market, mask: np.ndarray):
        self.jobs, self.providers = np.nonzero(mask)
        self.size = len(self.jobs)
        self.n_jobs, self.n_providers = market.shape
        self.weights = market.net[self.jobs, self.providers]
        self.costs = market.kappa[self.jobs, self.providers]
        n_jobs, n_providers = market.shape
        demand = self.demand = market.demand[self.jobs]
        self.share = (demand / np.maximum(market.capacity[self.providers], 1e-12)).max(axis=1, initial=0.0)
        rows = [self.jobs] + [n_jobs + 3 * self.providers + r for r in range(3)]
        data = [np.ones(self.size)] + [demand[:, r] for r in range(3)]
        rows, data = np.concatenate(rows), np.concatenate(data)
        nonzero = data != 0
        self.matrix = sparse.csc_array(
            (data[nonzero], (rows[nonzero], np.tile(np.arange(self.size), 4)[nonzero])),
            shape=(n_jobs + 3 * n_providers, self.size),
        )
        self.rhs = np.concatenate([np.ones(n_jobs), market.capacity.ravel()])

    def milp(
        self, columns: np.ndarray, budget: Budget, *, gap: float = 0.0, nodes: int = EXACT_NODES
    ) -> tuple[float, np.ndarray, bool]:
        """(welfare, chosen columns as a bool mask, proven optimal) over the columns in `columns`, within
        `nodes` branch-and-bound nodes (work) and what is left of the budget's wall-clock guard."""
        chosen = np.zeros(self.size, dtype=bool)
        index = np.flatnonzero(columns)
        if len(index) == 0:
            return 0.0, chosen, True
        time_limit = budget.next_solve()
        if time_limit is None:
            raise MechanismError("time_limit", "the welfare MILP found no solution within the time limit")
        options = {"mip_rel_gap": gap, "node_limit": nodes}
        if math.isfinite(time_limit):
            options["time_limit"] = time_limit
        if gap > 0:
            options.update(HIGHS_CAPPED)
        with warnings.catch_warnings():  # options beyond SciPy's list go to HiGHS verbatim, with a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            result = milp(
                -self.weights[index],
                integrality=np.ones(len(index)),
                bounds=Bounds(0, 1),
                constraints=LinearConstraint(self.matrix[:, index], -np.inf, self.rhs),
                options=options,
            )
        if result.status == 1:  # the guard: whatever HiGHS holds depends on the machine, so it is dropped
            budget.cut()
            raise MechanismError("time_limit", f"the welfare MILP was stopped after {time_limit:.3g} s")
        # SciPy reports HiGHS's node limit ("Solution limit reached") as status 4 with the incumbent.
        work_stop = result.status == 4 and "Solution limit" in result.message
        if work_stop:
            budget.stopped(WORK_LIMIT)
        if result.status == 0 or work_stop:
            if result.x is None:
                raise MechanismError("time_limit", f"the welfare MILP found no solution within {nodes} nodes")
            exact = result.status == 0 and (gap == 0 or result.mip_gap is not None and result.mip_gap <= 0)
        else:
            raise MechanismError("solver_failed", f"the welfare MILP failed: {result.message}")
        chosen[index[result.x > 0.5]] = True
        load = self.matrix @ chosen.astype(float)
        if np.any(load > self.rhs * (1 + 1e-9) + 1e-9):
            raise MechanismError("solver_failed", "the welfare MILP returned an infeasible assignment")
        return float(self.weights[chosen].sum()), chosen, exact

    def lp_dual(self, budget: Budget) -> "_Dual | None":
        """LP duals over all columns (full LP or column generation, at most CG_MAX_ROUNDS restricted LPs);
        None when the wall-clock guard stopped the first LP."""
        if self.size == 0:
            return _Dual(np.zeros(len(self.rhs)), np.zeros(0), self.rhs, np.zeros(0))
        if self.size <= FULL_LP_PAIRS:
            return self._restricted_lp(np.ones(self.size, dtype=bool), budget)
        density = self.weights / np.maximum(self.share, 1e-12)
        columns = _top_per_provider(self.providers, (self.weights, density), CG_START_PER_PROVIDER)
        best = None
        for _ in range(CG_MAX_ROUNDS):
            dual = self._restricted_lp(columns, budget)
            if dual is None:
                return best
            if best is None or dual.bound < best.bound:
                best = dual
            if best.bound - dual.objective <= CG_TOLERANCE * max(1.0, abs(best.bound)):
                return (
                    best  # the restricted LP is within CG_TOLERANCE of the bound: the LP over all pairs too
                )
            # Columns that would enter the restricted LP: positive reduced cost at its own job duals.
            entering = (dual.lp_reduced > 1e-9 * max(1.0, abs(dual.bound))) & ~columns
            if not entering.any():
                return best
            score = np.where(entering, dual.lp_reduced, -np.inf)
            columns |= (
                _top_per_provider(self.providers, (self.weights, score), CG_ADD_PER_PROVIDER) & entering
            )
        return best

    def _restricted_lp(self, columns: np.ndarray, budget: Budget) -> "_Dual | None":
        """The LP over `columns`; its capacity duals mu priced over all columns (Lagrangian job duals).
        None when the wall-clock guard stops it (recorded: the LP itself always finishes otherwise)."""
        left = budget.next_solve()
        if left is None:
            return None
        index = np.flatnonzero(columns)
        options = {"presolve": PRESOLVE} | ({"time_limit": left} if math.isfinite(left) else {})
        result = linprog(
            -self.weights[index],
            A_ub=self.matrix[:, index],
            b_ub=self.rhs,
            bounds=(0, 1),
            method="highs",
            options=options,
        )
        if result.status != 0:
            if result.status == 1:
                budget.cut()
            return None
        y_lp = np.maximum(0.0, -np.asarray(result.ineqlin.marginals))
        mu = y_lp.copy()
        mu[: self.n_jobs] = 0.0
        priced = self.weights - self.matrix.T @ mu  # w_jk - mu_k . d_j
        y = mu
        np.maximum.at(y, self.jobs, priced)  # y_j = max(0, max_k priced_jk); y starts at 0 for jobs
        x = np.zeros(self.size)
        x[index] = result.x
        dual = _Dual(y, priced - y[self.jobs], self.rhs, x, lp_reduced=priced - y_lp[self.jobs])
        dual.objective = -float(result.fun)
        return dual

    def rounded(self, dual: "_Dual") -> np.ndarray:
        """An incumbent from the LP: its integral pairs, then its other support pairs by net value, then
        the rest by reduced cost, each while it fits (measured 97.8 % of the bound at 1,000 x 50)."""
        chosen = dual.x >= 1 - 1e-9
        load = self.matrix @ chosen.astype(float)
        if np.any(load > self.rhs * (1 + 1e-9) + 1e-9):
            chosen[:] = False
            load[:] = 0.0
        score = dual.reduced + self.weights * (dual.x > 1e-9)
        order = np.argsort(-score, kind="stable")[: 10 * self.n_jobs]
        taken = (load[: self.n_jobs] > 0.5).tolist()
        room = (self.rhs[self.n_jobs :] * (1 + 1e-9) + 1e-12 - load[self.n_jobs :]).reshape(-1, 3).tolist()
        need = self.demand.tolist()
        for p, j, k in zip(
            order.tolist(), self.jobs[order].tolist(), self.providers[order].tolist(), strict=True
        ):
            if taken[j]:
                continue
            left, d = room[k], need[p]
            if d[0] <= left[0] and d[1] <= left[1] and d[2] <= left[2]:
                chosen[p] = taken[j] = True
                left[0], left[1], left[2] = left[0] - d[0], left[1] - d[1], left[2] - d[2]
        return chosen


def _better_seed(result, seed, weights):
    """After a solve that was not proven: the seed when it beats the solve's incumbent."""
    welfare, chosen, exact = result
    if seed is not None and not exact:
        seeded = float(weights[seed].sum())
        if seeded > welfare:  # a solve stopped by its node limit may hold a worse incumbent than the seed
            return seeded, seed.copy(), False
    return result


class _PlainSolver:
    """One MILP over the kept columns (all of them, or a per-provider pruning). With duals, the answer
    is proven optimal over *all* columns when it is proven over the kept ones and every dropped column
    is useless by reduced-cost fixing."""

    def __init__(
        self, problem: _Problem, kept: np.ndarray, dual: "_Dual | None" = None, *, gap=0.0, nodes=EXACT_NODES
    ):
        self.problem, self.kept, self.dual, self.gap, self.nodes = problem, kept, dual, gap, nodes

    def __call__(self, allowed: np.ndarray, *, seed, budget: Budget) -> tuple[float, np.ndarray, bool]:
        try:
            result = self.problem.milp(allowed & self.kept, budget, gap=self.gap, nodes=self.nodes)
        except MechanismError as error:
            if error.code != "time_limit" or seed is None:
                raise
            return float(self.problem.weights[seed].sum()), seed.copy(), False
        welfare, chosen, exact = result
        dropped = allowed & ~self.kept
        if exact and dropped.any():
            if self.dual is None:
                exact = False
            else:
                bound = _bound_within(self.problem, self.dual, allowed)
                exact = bool(bound + self.dual.reduced[dropped].max() < welfare - 1e-9 * max(1.0, abs(bound)))
        return _better_seed((welfare, chosen, exact), seed, self.problem.weights)


def _bound_within(problem: _Problem, dual: _Dual, allowed: np.ndarray) -> float:
    """D restricted to the allowed columns (the same duals stay valid when columns are fixed at 0)."""
    return float(problem.rhs @ dual.y + np.maximum(dual.reduced[allowed], 0.0).sum())


class _CoreSolver:
    """The MILP over a core of columns, grown until reduced-cost fixing proves the rest useless."""

    def __init__(self, problem: _Problem, dual: _Dual):
        self.problem, self.dual = problem, dual
        self.core = None

    def __call__(self, allowed: np.ndarray, *, seed, budget: Budget) -> tuple[float, np.ndarray, bool]:
        reduced = self.dual.reduced
        bound = _bound_within(self.problem, self.dual, allowed)
        slack = 1e-9 * max(1.0, abs(bound))
        if self.core is None:
            size = min(int(allowed.sum()), CORE_SIZE_PER_JOB * self.problem.n_jobs)
            cut = np.partition(reduced[allowed], len(reduced[allowed]) - size)[-size] if size else np.inf
            core = allowed & (reduced >= cut)
        else:
            core = self.core & allowed
        if seed is not None:
            core |= seed
        best, proven = None, False  # the best incumbent of any round; whether the last round closed it
        for _ in range(CORE_MAX_ROUNDS):
            try:
                welfare, chosen, exact = self.problem.milp(core, budget)
            except MechanismError as error:
                if error.code != "time_limit" or (seed is None and best is None):
                    raise
                break
            if best is None or welfare > best[0]:
                best = (welfare, chosen, False)
            # Every pair outside `needed` is useless against `welfare`, so the core can shrink to `needed`.
            needed = allowed & (bound + reduced >= welfare - slack)
            if not exact:
                break
            if not (needed & ~core).any():
                best, proven = (welfare, chosen, True), True
                break
            core = needed | chosen
        else:
            budget.stopped(WORK_LIMIT)  # CORE_MAX_ROUNDS: the best incumbent so far, not proven
        if self.core is None:
            self.core = core
        if best is None:
            return float(self.problem.weights[seed].sum()), seed.copy(), False
        return best if proven else _better_seed(best, seed, self.problem.weights)
