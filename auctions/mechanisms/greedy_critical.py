"""The `greedy` mechanism: density-ordered greedy assignment with critical-value payments.

Allocation (Lehmann, O'Callaghan, Shoham 2002, "Truth revelation in approximately efficient
combinatorial auctions", JACM 49(5); multi-resource density after Nejad, Mashayekhy, Grosu 2015,
"Truthful greedy mechanisms for dynamic virtual machine provisioning and allocation in clouds",
IEEE TPDS 26(2)): jobs are taken in decreasing density rho_j = bid_j / s_j with
s_j = sqrt(sum_r d_jr / Cap_r) over r in (gpus, vcpu, ram) and Cap_r the total over providers (a
resource with Cap_r = 0 is left out of the sum), ties by input order; each job gets the compatible
provider of lowest cost kappa_jk that still has room (ties by provider input order), or nothing.

Payments: a winner pays its critical value, the infimum of the bids at which it still wins with all
other reports fixed; a provider receives the cost of the jobs it hosts. The bid enters twice — through
the density (the job's position in the order) and through w_jk = b - kappa_jk > 0 (which providers
it may take) — and winning is monotone in both: an earlier position sees elementwise more remaining
capacity, a higher bid admits more providers. So with the order of the *other* jobs fixed, the job
wins at position t iff m_t < b, where m_t is the lowest cost among providers that pass the bid-free
filters and still have room for it after the first t others; m_t is non-decreasing in t.

Critical value, by exact breakpoints (no bisection): with r_1 >= r_2 >= ... the others' densities,
position t is reached for bids in the open interval (s_j r_{t+1}, s_j r_t) (r_0 = inf, last = 0), so
    b* = min over t of max(s_j r_{t+1}, m_t)   over the t where that is < s_j r_t.
(Tie points between intervals do not move an infimum, and winning is an up-set in b.) The states
after t others are the original run's for t up to the job's own position; beyond it the order is
re-run without the job, and stopped as soon as no later t can improve b* (m_t is non-decreasing
and s_j r_{t+1} non-increasing). Bidding b* + epsilon wins, b* - epsilon loses.
"""

import numpy as np

ROOM_TOLERANCE = 1e-9  # relative to capacity: sums of fractional vCPU / RAM must not reject an exact fit
CHANGED_LIMIT = 32  # past this many providers off the original run, a re-run step scans them all


def solve_greedy(market, *, payment_rule: str, share: tuple[int, int] | None = None) -> dict:
    """Run the greedy allocation and, for `payment_rule == "critical"`, price every winner (with
    `share` = (k, n), only every n-th winner from the k-th, and none for n = 0: each winner's price is
    independent of the others', so n processes can price a book apart; `mechanisms.shards` joins them)."""
    size = job_size(market)
    density = job_density(market.bid, size)
    order = np.argsort(-density, kind="stable")
    run = _run(market, order)
    winners = np.flatnonzero(run.host >= 0)
    assignments = {market.job_ids[j]: market.provider_ids[run.host[j]] for j in winners}
    welfare = float(sum(market.net[j, run.host[j]] for j in winners))
    payments, receipts = {}, {}
    if payment_rule == "critical":
        priced = winners if share is None else winners[share[0] :: share[1]] if share[1] else winners[:0]
        payments = {market.job_ids[j]: critical_value(market, order, density, size, run, j) for j in priced}
        cost = np.zeros(len(market.provider_ids))
        np.add.at(cost, run.host[winners], market.kappa[winners, run.host[winners]])
        receipts = {market.provider_ids[k]: float(cost[k]) for k in np.unique(run.host[winners])}
    return {
        "status": "feasible",
        "assignments": assignments,
        "welfare": welfare,
        "payments": payments,
        "receipts": receipts,
    }


def job_size(market) -> np.ndarray:
    """s_j = sqrt(sum_r d_jr / Cap_r), Cap_r the total over providers (resources nobody offers left out)."""
    total = market.capacity.sum(axis=0)
    shares = np.divide(market.demand, total, out=np.zeros_like(market.demand), where=total > 0)
    return np.sqrt(shares.sum(axis=1))


def job_density(bid: np.ndarray, size: np.ndarray) -> np.ndarray:
    """rho_j = bid_j / s_j (Nejad et al. 2015); +inf for a job that needs none of the offered resources."""
    return np.divide(bid, size, out=np.full_like(bid, np.inf), where=size > 0)


class _Run:
    """One greedy pass: host per job (-1 if none), position per job, remaining capacity before each step."""

    def __init__(self, host, position, before):
        self.host, self.position, self.before = host, position, before


def _has_room(remaining: np.ndarray, demand: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    return np.all(remaining + ROOM_TOLERANCE * capacity >= demand, axis=-1)


def _choose(market, j: int, remaining: np.ndarray) -> int:
    """The cheapest compatible provider with room for job j (first in input order on ties), or -1."""
    candidates = market.compatible[j] & _has_room(remaining, market.demand[j], market.capacity)
    if not candidates.any():
        return -1
    return int(np.argmin(np.where(candidates, market.kappa[j], np.inf)))


def _run(market, order: np.ndarray) -> _Run:
    n_jobs, n_providers = market.shape
    host = np.full(n_jobs, -1)
    position = np.empty(n_jobs, dtype=int)
    before = np.empty((n_jobs + 1, n_providers, 3))
    remaining = market.capacity.copy()
    for t, j in enumerate(order):
        before[t] = remaining
        position[j] = t
        k = _choose(market, j, remaining)
        if k >= 0:
            host[j] = k
            remaining[k] -= market.demand[j]
    before[n_jobs] = remaining
    return _Run(host, position, before)


def critical_value(market, order, density, size, run: _Run, j: int) -> float:
    """The infimum of the bids at which winner j still wins, everyone else's report fixed (exact)."""
    p = int(run.position[j])
    others = np.delete(order, p)
    scale = float(size[j])
    upper_rho = np.concatenate([[np.inf], density[others]])  # r_t for t = 0..n-1
    lower_rho = np.concatenate([density[others], [0.0]])  # r_{t+1}
    eligible = market.eligible[j]
    kappa = np.where(eligible, market.kappa[j], np.inf)
    demand, capacity = market.demand[j], market.capacity

    # Positions 0..p: the others ahead of j are the same as in the original run, so are the states.
    # Provider k has room at positions t < last_k (its remaining capacity only falls with t).
    last = np.where(eligible, _room_until(run.before, p + 1, demand, capacity), 0)
    cheapest = np.full(p + 2, np.inf)
    np.minimum.at(cheapest, last, kappa)  # the provider contributes to m_t for t < last_k
    m = np.minimum.accumulate(cheapest[::-1])[::-1][1 : p + 2]
    best = _best_candidate(scale * lower_rho[: p + 1], scale * upper_rho[: p + 1], m)

    # Positions beyond p: re-run the others after j's slot without j, while an improvement is possible.
    remaining = run.before[p].copy()
    alive = last > p
    m_t = float(kappa[alive].min()) if alive.any() else np.inf
    # Providers whose remaining capacity may differ from the original run's at the same step: the
    # others choose as they did there unless one of these providers changes their choice.
    changed = {int(run.host[j])}
    for t in range(p + 1, len(order)):
        low = scale * float(lower_rho[t - 1])
        if m_t >= best or low <= m_t:
            break
        i = others[t - 1]
        k = _choose_again(market, i, remaining, run, t, changed)
        host = int(run.host[i])
        if k >= 0:
            remaining[k] -= market.demand[i]
            if alive[k] and not _has_room(remaining[k], demand, capacity[k]):
                alive[k] = False
                m_t = float(kappa[alive].min()) if alive.any() else np.inf
        for provider in {k, host} - {-1}:
            changed.add(provider)
        changed = {c for c in changed if not np.array_equal(remaining[c], run.before[t + 1][c])}
        low = scale * float(lower_rho[t])
        high = scale * float(upper_rho[t])
        if np.isfinite(m_t) and not np.isnan(low):
            candidate = max(low, m_t)
            if candidate < high:
                best = min(best, candidate)
    return float(best)


def _room_until(before: np.ndarray, steps: int, demand: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Per provider, the number of leading steps t < `steps` at which it has room for `demand`
    (room only shrinks with t, so a binary search per provider, all providers at once)."""
    n_providers = before.shape[1]
    columns = np.arange(n_providers)
    low = np.zeros(n_providers, dtype=int)
    high = np.full(n_providers, steps)
    while True:
        open_ = low < high
        if not open_.any():
            return low
        mid = (low + high) // 2
        room = _has_room(before[np.minimum(mid, steps - 1), columns], demand, capacity)
        low = np.where(open_ & room, mid + 1, low)
        high = np.where(open_ & ~room, mid, high)


def _choose_again(market, i: int, remaining: np.ndarray, run: _Run, t: int, changed: set) -> int:
    """`_choose(market, i, remaining)` where `remaining` equals the original run's state before step t
    except at the providers in `changed`: the original choice (the cheapest of every provider that had
    room then) stands unless one of them beats it."""
    host = int(run.host[i])
    if len(changed) > CHANGED_LIMIT:
        return _choose(market, i, remaining)
    if host in changed:
        # The original choice, if it still has room, beats every provider off `changed` as before.
        if not _has_room(remaining[host], market.demand[i], market.capacity[host]):
            return _choose(market, i, remaining)
        host = -1
    best, best_cost = host, (market.kappa[i, host] if host >= 0 else np.inf)
    for k in sorted(changed):
        if market.compatible[i, k] and _has_room(remaining[k], market.demand[i], market.capacity[k]):
            cost = market.kappa[i, k]
            if best < 0 or cost < best_cost or (cost == best_cost and k < best):
                best, best_cost = k, cost
    return best


def _best_candidate(low: np.ndarray, high: np.ndarray, m) -> float:
    m = np.asarray(m, dtype=float)
    candidate = np.maximum(low, m)
    valid = np.isfinite(m) & (candidate < high)
    return float(candidate[valid].min()) if valid.any() else np.inf
