"""Price competition between providers: linear Bertrand oligopoly and budget-constrained followers.

`linear_oligopoly` (differentiated Bertrand competition with linear demand, e.g. Vives 1999, ch. 6):
provider j sets p_j, sells D_j = alpha - beta p_j + gamma sum_{k != j} p_k (truncated at 0) at unit
cost c_j, profit (p_j - c_j) D_j. The first-order conditions
alpha - 2 beta p_j + gamma sum_{k != j} p_k + beta c_j = 0 form one linear system
((2 beta + gamma) I - gamma 1 1^T) p = alpha + beta c, whose matrix has eigenvalues 2 beta + gamma and
2 beta - (M - 1) gamma: the market is stable (best responses contract) iff 2 beta > (M - 1) gamma,
else `unstable_market`. gamma >= 0 (substitutes) and beta > 0 are required.

`budget_oligopoly`: follower i maximises sum_j (a_ij ln(1 + x_ij) - p_j x_ij) subject to
sum_j p_j x_ij <= B_i (money not spent is kept), so x_ij = max(0, t_i a_ij / p_j - 1) with
t_i = 1 / (1 + mu_i): t_i = 1 when the budget is slack, otherwise the unique t_i in (0, 1) with
sum_j max(0, t_i a_ij - p_j) = B_i, found exactly by water-filling (sort the thresholds p_j / a_ij;
on each piece the spending is linear in t). Leaders best-respond in turn, damped
(p_j <- p_j + DAMPING (BR_j - p_j)); a best response is a global search over [c_j, max_i a_ij]
(dense grid, then bounded Brent polish with `scipy.optimize.minimize_scalar` around the best point),
since profit is only piecewise smooth where budgets switch between slack and binding. The answer is
"verified" only when a finer unilateral-deviation search finds no leader gaining more than 1e-6;
otherwise it is "unverified" (not an equilibrium: best responses may cycle or equilibria form a
continuum at the kinks).
"""

import numpy as np
from scipy.optimize import minimize_scalar

from auctions.mechanisms.errors import MechanismError
from auctions.mechanisms.game_fields import floats, matrix, number, vector

DAMPING = 0.5
DEFAULT_MAX_ROUNDS = 200
GAIN_TOLERANCE = 1e-6
RESPONSE_GRID = 257
VERIFY_GRID = 2049


def solve_linear_oligopoly(doc: dict) -> dict:
    """Nash equilibrium prices of the linear Bertrand oligopoly from its first-order conditions."""
    alpha = number(doc, "alpha")
    beta = number(doc, "beta", positive=True)
    gamma = number(doc, "gamma")
    costs = vector(doc, "costs")
    m = len(costs)
    if not 2 * beta > (m - 1) * gamma:
        raise MechanismError(
            "unstable_market", f"2 beta = {2 * beta} must exceed (M - 1) gamma = {(m - 1) * gamma}"
        )
    system = (2 * beta + gamma) * np.eye(m) - gamma * np.ones((m, m))
    prices = np.linalg.solve(system, alpha + beta * costs)
    demands = np.maximum(0.0, alpha - beta * prices + gamma * (prices.sum() - prices))
    return {
        "prices": floats(prices),
        "demands": floats(demands),
        "profits": floats((prices - costs) * demands),
    }


def solve_budget_oligopoly(doc: dict) -> dict:
    """Damped best-response dynamics among leaders selling to budget-constrained log followers."""
    valuations = matrix(doc, "valuations")
    n_followers, n_leaders = valuations.shape
    budgets = vector(doc, "budgets", length=n_followers)
    costs = vector(doc, "costs", length=n_leaders)
    max_rounds = doc.get("max_rounds", DEFAULT_MAX_ROUNDS)
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise MechanismError("bad_input", "max_rounds must be an integer >= 1")
    market = _BudgetMarket(valuations, budgets, costs)

    prices = market.ceiling.copy()  # start from the monopoly-free "nobody buys" corner, then respond
    for j in range(n_leaders):
        prices[j] = market.best_response(prices, j, RESPONSE_GRID)[0]
    rounds = 0
    scale = max(1.0, float(market.ceiling.max()))
    while rounds < max_rounds:
        rounds += 1
        moved = 0.0
        for j in range(n_leaders):
            target = market.best_response(prices, j, RESPONSE_GRID)[0]
            step = DAMPING * (target - prices[j])
            prices[j] += step
            moved = max(moved, abs(step))
        if moved <= 1e-12 * scale:
            break
    profits = market.profits(prices[None, :])[0]
    gains = [market.best_response(prices, j, VERIFY_GRID)[1] - profits[j] for j in range(n_leaders)]
    gain = max(0.0, float(max(gains)))
    return {
        "status": "verified" if gain <= GAIN_TOLERANCE else "unverified",
        "prices": floats(prices),
        "demands": market.demands(prices[None, :])[0].tolist(),
        "profits": floats(profits),
        "max_deviation_gain": gain,
        "rounds": rounds,
    }


class _BudgetMarket:
    """Followers' exact demand under budgets, and leaders' profits and best responses."""

    def __init__(self, valuations: np.ndarray, budgets: np.ndarray, costs: np.ndarray):
        self.a, self.budgets, self.costs = valuations, budgets, costs
        self.ceiling = np.maximum(costs, valuations.max(axis=0))  # above it nobody buys from j
        self.floor = np.maximum(costs, 1e-9 * max(1.0, float(valuations.max())))

    def demands(self, prices: np.ndarray) -> np.ndarray:
        """x[g, i, j] for a batch of price vectors prices[g, j] (water-filling per follower)."""
        a = self.a[None, :, :]
        p = prices[:, None, :]
        slack_spend = np.maximum(0.0, a - p).sum(axis=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            threshold = np.where(a > 0, p / a, np.inf)
        order = np.argsort(threshold, axis=2)
        theta = np.take_along_axis(threshold, order, axis=2)
        a_sorted = np.take_along_axis(np.broadcast_to(a, threshold.shape), order, axis=2)
        p_sorted = np.take_along_axis(np.broadcast_to(p, threshold.shape), order, axis=2)
        cum_a, cum_p = np.cumsum(a_sorted, axis=2), np.cumsum(p_sorted, axis=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            level = (self.budgets[None, :, None] + cum_p) / cum_a
        upper = np.concatenate([theta[:, :, 1:], np.full(theta.shape[:2] + (1,), np.inf)], axis=2)
        valid = np.isfinite(theta) & (level >= theta) & (level <= upper)
        first = np.argmax(valid, axis=2)
        t = np.take_along_axis(level, first[:, :, None], axis=2)[:, :, 0]
        t = np.where(slack_spend <= self.budgets[None, :], 1.0, np.clip(t, 0.0, 1.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(a > 0, t[:, :, None] * a / p - 1.0, 0.0)
        return np.maximum(0.0, x)

    def profits(self, prices: np.ndarray) -> np.ndarray:
        return (prices - self.costs[None, :]) * self.demands(prices).sum(axis=1)

    def best_response(self, prices: np.ndarray, j: int, grid_size: int) -> tuple[float, float]:
        """(price, profit) maximising leader j's profit with the others' prices fixed (global search)."""
        low, high = float(self.floor[j]), float(self.ceiling[j])
        if high <= low:
            return high, 0.0

        def profit(values) -> np.ndarray:
            batch = np.repeat(prices[None, :], len(values), axis=0)
            batch[:, j] = values
            return self.profits(batch)[:, j]

        grid = np.linspace(low, high, grid_size)
        values = profit(grid)
        best = int(np.argmax(values))
        left, right = grid[max(best - 1, 0)], grid[min(best + 1, grid_size - 1)]
        polished = minimize_scalar(
            lambda q: -profit(np.array([q]))[0],
            bounds=(left, right),
            method="bounded",
            options={"xatol": 1e-12 * max(1.0, high)},
        )
        if -polished.fun > values[best]:
            return float(polished.x), float(-polished.fun)
        return float(grid[best]), float(values[best])
