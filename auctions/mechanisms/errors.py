"""The engine's one exception type; its `code` is part of the public contract (docs/mechanisms.md)."""

ERROR_CODES = frozenset(
    {
        "bad_input",
        "bad_json",
        "unknown_mechanism",
        "unknown_game",
        "time_limit",
        "solver_failed",
        "no_equilibrium",
        "unstable_market",
        "usage",
    }
)


class MechanismError(Exception):
    """A document the engine cannot answer: `code` is stable, `message` is for people."""

    def __init__(self, code: str, message: str):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown mechanism error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    def as_document(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}
