"""Fields of a pricing GAME document: validation and the JSON form of results.

Shared by the game solvers (`stackelberg.py`, `oligopoly.py`); `pricing.py` dispatches to them. This
module imports no solver, so the engine's imports run one way: pricing -> solvers -> game_fields
(kept by an import-linter contract in pyproject.toml). Validation raises `bad_input` for a missing
field, a non-number (booleans and strings included), a non-finite or negative number, an empty list,
and a wrongly shaped matrix.
"""

import math

import numpy as np

from auctions.mechanisms.errors import MechanismError


def number(doc: dict, key: str, *, positive: bool = False, where: str = "") -> float:
    """A required finite number >= 0 (> 0 if `positive`), booleans and strings refused."""
    if key not in doc:
        raise MechanismError("bad_input", f"{where}{key} is required")
    return _check(doc[key], f"{where}{key}", positive=positive)


def vector(doc: dict, key: str, *, length: int | None = None) -> np.ndarray:
    """A required non-empty list (or 1-D array) of finite numbers >= 0, as a float array (vectorised)."""
    values = doc.get(key)
    if not isinstance(values, list | tuple | np.ndarray) or len(values) == 0:
        raise MechanismError("bad_input", f"{key} must be a non-empty list of numbers")
    if length is not None and len(values) != length:
        raise MechanismError("bad_input", f"{key} must have {length} entries, not {len(values)}")
    if not isinstance(values, np.ndarray) and any(type(v) is bool for v in values):
        raise MechanismError("bad_input", f"{key} must hold numbers, not booleans")
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "iuf":
        raise MechanismError("bad_input", f"{key} must be a flat list of numbers")
    array = array.astype(float)
    if not np.all(np.isfinite(array)):
        raise MechanismError("bad_input", f"{key} must hold finite numbers")
    if np.any(array < 0):
        raise MechanismError("bad_input", f"{key} must hold numbers >= 0")
    return array


def matrix(doc: dict, key: str) -> np.ndarray:
    """A required non-empty rectangular list of lists of finite numbers >= 0."""
    rows = doc.get(key)
    if not isinstance(rows, list | tuple | np.ndarray) or len(rows) == 0:
        raise MechanismError("bad_input", f"{key} must be a non-empty list of lists of numbers")
    width = None
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, list | tuple | np.ndarray) or len(row) == 0:
            raise MechanismError("bad_input", f"{key}[{i}] must be a non-empty list of numbers")
        if width is not None and len(row) != width:
            raise MechanismError("bad_input", f"{key} rows must all have {width} entries")
        width = len(row)
        out.append([_check(v, f"{key}[{i}][{c}]") for c, v in enumerate(row)])
    return np.array(out, dtype=float)


def _check(value, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise MechanismError("bad_input", f"{name} must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise MechanismError("bad_input", f"{name} must be finite")
    if value < 0 or (positive and value == 0):
        raise MechanismError("bad_input", f"{name} must be {'> 0' if positive else '>= 0'}")
    return value


def floats(values) -> list[float]:
    """Plain Python floats (ndarray.tolist converts float64 to float), for JSON."""
    return np.asarray(values, dtype=float).ravel().tolist()
