"""Canonical JSON and its sha256: the identity of a book or game that anyone can recompute."""

import hashlib
import json

import numpy as np


def _default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def canonical_json(doc) -> str:
    """The document as docs/mechanisms.md defines it: sorted keys, no spaces, NumPy arrays as lists."""
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default
    )


def input_sha256(doc) -> str:
    """sha256 hex of the canonical JSON of `doc`, encoded as UTF-8."""
    try:
        text = canonical_json(doc)
    except (TypeError, ValueError) as error:
        from auctions.mechanisms.errors import MechanismError

        raise MechanismError("bad_input", f"document is not canonical JSON: {error}") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
