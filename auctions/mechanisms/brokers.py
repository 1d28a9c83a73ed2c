"""The broker tier: a three-tier market of servers, brokers and users, cleared for social welfare.

Source: Li et al., MECM, a pricing-based resource allocation mechanism for a three-tier edge
computing market (edge servers, brokers, users) that maximises social welfare (survey ref. [133]).
Users reach servers through brokers (a broker aggregates its principals' demand, or servers'
capacity, and has a limited capacity of its own); prices are the Lagrange multipliers of the
capacity constraints, found in the paper by dual decomposition.

Model (units: devices for quantities, money per device for values, costs and prices):

    routes r = (j, b, k): user j through broker b (one that j appointed, or "direct", b = None,
               to the servers j reaches on its own) to server k (one that b reaches)
    maximise    sum_r w_r x_r,   w_r = d_j (v_j - c_k - h_b)
    subject to  sum_{r ∋ j} x_r <= 1                 every user j          (dual u_j >= 0)
                sum_{r ∋ k} d_j x_r <= cap_k         every server k        (dual p_k >= 0)
                sum_{r ∋ b} d_j x_r <= cap_b         every broker b        (dual q_b >= 0)
                x_r in {0, 1}   (the MILP; the LP relaxation has 0 <= x_r <= 1)

d_j is the user's demand (devices, all or nothing: a CPX job runs whole on one provider), v_j its
value per device, c_k the server's cost per device (its floor), h_b the broker's own cost per device
(what intermediation costs it; its fee rate is a transfer and no part of welfare). Only routes of
positive weight are columns, so a route that destroys welfare is never used.

Allocation: `scipy.optimize.milp` (HiGHS branch and cut, `mip_rel_gap = 0`, a node limit — work,
not time, so the answer replays anywhere). Prices: the duals of the LP relaxation from
`scipy.optimize.linprog` (HiGHS; `ineqlin.marginals`), which is what the paper's dual decomposition
converges to; we take them from the LP directly rather than by subgradient steps (same fixed point,
exact, no step size to tune). Payments on a route (j, b, k): the user pays
P = min(d_j v_j, d_j (c_k + p_k + h_b + q_b)); the server receives its cost d_j c_k and the broker its
cost d_j h_b, and the margin P - d_j (c_k + h_b) >= 0 is split between them in proportion p_k : q_b
(equally when both are 0). So every payment is individually rational (the user pays at most its bid,
server and broker receive at least their costs) and exactly budget balanced; when the LP is integral
(no fractional x), P is the user's price at the duals and the split is exactly p_k and q_b.
"""

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from auctions.mechanisms.errors import MechanismError

MILP_NODES = 20_000  # branch-and-bound nodes (work limit: the same answer on any machine)
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Server:
    """A provider's capacity: `capacity` devices at `cost` per device."""

    id: str
    capacity: float
    cost: float


@dataclass(frozen=True)
class Broker:
    """An intermediary: it reaches `servers`, handles at most `capacity` devices, at `cost` per device."""

    id: str
    capacity: float
    cost: float
    servers: tuple[str, ...]


@dataclass(frozen=True)
class User:
    """A consumer's demand: `demand` devices worth `value` each; `brokers` it appointed, `direct`
    the servers it reaches without a broker; `fits` the servers that can run it at all (None: any),
    a filter on every route (CPX's compatibility: device class, memory, free devices)."""

    id: str
    demand: float
    value: float
    brokers: tuple[str, ...] = ()
    direct: tuple[str, ...] = ()
    fits: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Route:
    """One user's allocation: through `broker` (None: direct) to `server`, and the money on it."""

    user: str
    broker: str | None
    server: str
    devices: float
    user_pays: float
    server_receives: float
    broker_receives: float


@dataclass(frozen=True)
class ThreeTierResult:
    """The welfare-maximising allocation, its LP bound, and the dual prices per device."""

    status: str  # "optimal", or "feasible" when the node limit stopped the MILP
    welfare: float
    lp_bound: float
    routes: tuple[Route, ...]
    server_prices: dict = field(default_factory=dict)
    broker_prices: dict = field(default_factory=dict)
    user_surplus: dict = field(default_factory=dict)


def _routes(servers, brokers, users):
    """Every route of positive weight, as (user index, broker index or -1, server index, weight)."""
    k_of = {s.id: i for i, s in enumerate(servers)}
    b_of = {b.id: i for i, b in enumerate(brokers)}
    out = []
    for j, user in enumerate(users):
        if user.demand <= 0 or user.value <= 0:
            continue
        fits = set(k_of) if user.fits is None else set(user.fits)
        for k in sorted({k_of[s] for s in user.direct if s in k_of and s in fits}):
            w = user.demand * (user.value - servers[k].cost)
            if w > TOLERANCE and user.demand <= servers[k].capacity:
                out.append((j, -1, k, w))
        for b in sorted({b_of[x] for x in user.brokers if x in b_of}):
            broker = brokers[b]
            if user.demand > broker.capacity:
                continue
            for k in sorted({k_of[s] for s in broker.servers if s in k_of and s in fits}):
                w = user.demand * (user.value - servers[k].cost - broker.cost)
                if w > TOLERANCE and user.demand <= servers[k].capacity:
                    out.append((j, b, k, w))
    return out


def _check(servers, brokers, users):
    for kind, items in (("server", servers), ("broker", brokers), ("user", users)):
        ids = [x.id for x in items]
        if len(set(ids)) != len(ids):
            raise MechanismError("bad_input", f"duplicate {kind} id")
        for x in items:
            numbers = [getattr(x, n) for n in ("capacity", "cost", "demand", "value") if hasattr(x, n)]
            if any(not np.isfinite(v) or v < 0 for v in numbers):
                raise MechanismError("bad_input", f"{kind} {x.id}: negative or non-finite number")


def clear_three_tier(servers, brokers, users, *, node_limit: int = MILP_NODES) -> ThreeTierResult:
    """Allocate servers' capacity to users, directly or through their brokers, for maximum welfare
    (the MILP above), priced by the LP relaxation's duals. `node_limit` bounds the MILP's branch and
    bound by work (nodes), never by the clock, so the same book gives the same answer on any machine
    under any load; stopped by it, the best allocation found is answered with status "feasible".
    Raises MechanismError `bad_input`, `node_limit` (stopped with no allocation), `solver_failed`."""
    if isinstance(node_limit, bool) or not isinstance(node_limit, int) or node_limit < 0:
        raise MechanismError("bad_input", "node_limit must be a whole number >= 0")
    servers, brokers, users = tuple(servers), tuple(brokers), tuple(users)
    _check(servers, brokers, users)
    routes = _routes(servers, brokers, users)
    if not routes:
        return ThreeTierResult(
            "optimal",
            0.0,
            0.0,
            (),
            {s.id: 0.0 for s in servers},
            {b.id: 0.0 for b in brokers},
            {u.id: 0.0 for u in users},
        )
    n, nj, nk, nb = len(routes), len(users), len(servers), len(brokers)
    j_idx = np.array([r[0] for r in routes])
    b_idx = np.array([r[1] for r in routes])
    k_idx = np.array([r[2] for r in routes])
    w = np.array([r[3] for r in routes])
    d = np.array([users[j].demand for j in j_idx])
    cols = np.arange(n)
    brokered = b_idx >= 0
    rows = np.concatenate([j_idx, nj + k_idx, nj + nk + b_idx[brokered]])
    data = np.concatenate([np.ones(n), d, d[brokered]])
    a = sparse.csr_array(
        (data, (rows, np.concatenate([cols, cols, cols[brokered]]))), shape=(nj + nk + nb, n)
    )
    rhs = np.concatenate([np.ones(nj), [s.capacity for s in servers], [b.capacity for b in brokers]])

    # No upper bound on x: the user rows say x <= 1, so their duals carry it (not the bounds).
    lp = linprog(-w, A_ub=a, b_ub=rhs, bounds=(0, None), method="highs")
    if lp.status != 0:
        raise MechanismError("solver_failed", f"LP: {lp.message}")
    duals = np.maximum(0.0, -np.asarray(lp.ineqlin.marginals))
    u_dual, p_dual, q_dual = duals[:nj], duals[nj : nj + nk], duals[nj + nk :]

    res = milp(
        -w,
        constraints=LinearConstraint(a, -np.inf, rhs),
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
        options={"mip_rel_gap": 0.0, "node_limit": node_limit},
    )
    if res.x is None:
        code = "node_limit" if res.status == 1 else "solver_failed"
        raise MechanismError(code, f"MILP: {res.message}")
    chosen = np.flatnonzero(res.x > 0.5)
    status = "optimal" if res.status == 0 else "feasible"

    out = []
    for r in chosen:
        j, b, k = int(j_idx[r]), int(b_idx[r]), int(k_idx[r])
        user, server = users[j], servers[k]
        dj = user.demand
        h = brokers[b].cost if b >= 0 else 0.0
        p, q = float(p_dual[k]), (float(q_dual[b]) if b >= 0 else 0.0)
        pays = min(dj * user.value, dj * (server.cost + p + h + q))
        margin = max(0.0, pays - dj * (server.cost + h))
        if b < 0:
            share = 1.0
        else:
            share = 0.5 if p + q <= TOLERANCE else p / (p + q)
        to_server = dj * server.cost + margin * share
        to_broker = (pays - to_server) if b >= 0 else 0.0
        out.append(
            Route(user.id, brokers[b].id if b >= 0 else None, server.id, dj, pays, to_server, to_broker)
        )
    out.sort(key=lambda route: (route.user, route.server))
    return ThreeTierResult(
        status=status,
        welfare=float(w[chosen].sum()),
        lp_bound=float(-lp.fun),
        routes=tuple(out),
        server_prices={s.id: float(p_dual[i]) for i, s in enumerate(servers)},
        broker_prices={b.id: float(q_dual[i]) for i, b in enumerate(brokers)},
        user_surplus={u.id: float(u_dual[i]) for i, u in enumerate(users)},
    )


def without_brokers(users) -> tuple[User, ...]:
    """The same users with every appointment dropped: each reaches only its direct servers."""
    return tuple(User(u.id, u.demand, u.value, (), u.direct, u.fits) for u in users)


@dataclass(frozen=True)
class DualDecomposition:
    """The paper's distributed pricing: the best dual value found (an upper bound on welfare at every
    iterate, by weak duality), the prices that gave it, and how many price updates ran."""

    bound: float
    server_prices: dict
    broker_prices: dict
    iterations: int


def dual_decomposition(servers, brokers, users, *, iterations: int = 2_000) -> DualDecomposition:
    """MECM's dual decomposition: servers and brokers post prices; each user takes its best route at
    those prices (or nothing); prices move against excess demand. Projected subgradient descent on

        D(p, q) = sum_j max(0, max_{r of j} (w_r - d_j (p_k + q_b))) + p . cap_S + q . cap_B,

    whose minimum over p, q >= 0 is the LP relaxation's optimum (strong duality); every D is an upper
    bound on the welfare of any allocation (weak duality). Step: normalised, diminishing
    (a / sqrt(t + 1), a = the largest value per device). A fixed number of iterations (work, not
    time). `clear_three_tier` takes its prices from the LP directly; this is the paper's route to the
    same fixed point, kept to measure how close it gets (bench/brokers.py)."""
    servers, brokers, users = tuple(servers), tuple(brokers), tuple(users)
    _check(servers, brokers, users)
    nk, nb = len(servers), len(brokers)
    p, q = np.zeros(nk), np.zeros(nb)
    routes = _routes(servers, brokers, users)
    cap_s = np.array([s.capacity for s in servers], dtype=float)
    cap_b = np.array([b.capacity for b in brokers], dtype=float)
    if not routes:
        return DualDecomposition(0.0, {s.id: 0.0 for s in servers}, {b.id: 0.0 for b in brokers}, 0)
    j_idx = np.array([r[0] for r in routes])
    b_idx = np.array([r[1] for r in routes])
    k_idx = np.array([r[2] for r in routes])
    w = np.array([r[3] for r in routes])
    d = np.array([users[j].demand for j in j_idx])
    brokered = b_idx >= 0
    starts = np.flatnonzero(np.r_[True, j_idx[1:] != j_idx[:-1]])  # routes are grouped by user
    segment = np.cumsum(np.r_[False, j_idx[1:] != j_idx[:-1]])
    index = np.arange(len(routes))
    scale = max(u.value for u in users)
    best = (np.inf, p.copy(), q.copy())
    q_of = np.maximum(b_idx, 0)  # a direct route's broker index is unused (masked by `brokered`)
    for t in range(iterations):
        broker_price = np.where(brokered, q[q_of], 0.0) if nb else 0.0
        reduced = w - d * (p[k_idx] + broker_price)
        top = np.maximum.reduceat(reduced, starts)
        value = float(np.maximum(top, 0.0).sum() + p @ cap_s + q @ cap_b)
        if value < best[0]:
            best = (value, p.copy(), q.copy())
        first = np.minimum.reduceat(np.where(reduced == top[segment], index, len(routes)), starts)
        taken = first[top > 0]
        g_p = cap_s - np.bincount(k_idx[taken], weights=d[taken], minlength=nk)
        used = taken[brokered[taken]]
        g_q = cap_b - np.bincount(b_idx[used], weights=d[used], minlength=nb)
        norm = float(np.sqrt(g_p @ g_p + g_q @ g_q))
        if norm <= TOLERANCE:
            break
        step = scale / np.sqrt(t + 1) / norm
        p = np.maximum(0.0, p - step * g_p)
        q = np.maximum(0.0, q - step * g_q)
    value, p, q = best
    return DualDecomposition(
        bound=value,
        server_prices={s.id: float(p[i]) for i, s in enumerate(servers)},
        broker_prices={b.id: float(q[i]) for i, b in enumerate(brokers)},
        iterations=t + 1,
    )
