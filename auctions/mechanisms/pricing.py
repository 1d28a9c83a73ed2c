"""Pricing games (`price`): dispatch to the game solvers.

Games (docs/mechanisms.md): `stackelberg` (one leader prices a resource to followers with logarithmic
utility, uniform or per-user prices, optional capacity; `stackelberg.py`), `linear_oligopoly`
(Bertrand competition with linear differentiated demand) and `budget_oligopoly` (leaders price to
budget-constrained logarithmic followers; both in `oligopoly.py`). Field validation lives in
`game_fields.py`, below the solvers, so imports run one way: pricing -> solvers -> game_fields.

Every result carries `game` and `input_sha256` besides the spec's keys, and only plain floats, lists
and booleans, so it is JSON-serialisable as it stands.
"""

from auctions.mechanisms.canonical import input_sha256 as _hash
from auctions.mechanisms.errors import MechanismError
from auctions.mechanisms.oligopoly import solve_budget_oligopoly, solve_linear_oligopoly
from auctions.mechanisms.stackelberg import solve_stackelberg

SOLVERS = {
    "stackelberg": solve_stackelberg,
    "linear_oligopoly": solve_linear_oligopoly,
    "budget_oligopoly": solve_budget_oligopoly,
}


def solve_game(doc: dict, *, input_sha256: str | None = None) -> dict:
    """Solve one GAME document (stackelberg, linear_oligopoly or budget_oligopoly)."""
    game = doc["game"]
    solver = SOLVERS.get(game)
    if solver is None:  # the dispatcher only sends the games above
        raise MechanismError("unknown_game", f"unknown game {game!r}")
    result = solver(doc)
    result["game"] = game
    result["input_sha256"] = input_sha256 if input_sha256 is not None else _hash(doc)
    return result
