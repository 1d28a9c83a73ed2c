"""Published rounds: the snapshot and result anyone signed in may download, and their replay offline.

A round's snapshot is the exact list of engine documents the round cleared (`Round.snapshot`,
canonical JSON, whose sha256 is `snapshot_sha256`); `clear(snapshot)` gives the result whose
canonical sha256 is `result_sha256`. The download carries the books themselves, byte for byte
re-serialisable (canonical JSON of the parsed list is the stored text), so replaying a downloaded
file reproduces both hashes with no database.

What is public and what is hidden. The books were built to be published: every order is an opaque
id — `j<N>` a job, `r<N>` a resource listing — with only what the mechanism reads: bids, asks,
quantities, memory and device counts, speeds, latency-feasible candidate sets. They carry no
username, provider name, wallet, site, coordinates, budget, model name or API key, and nothing
here adds any: ids map to accounts only for the job's own consumer, the listing's own provider and
operators (everyone else gets 404 on `/jobs/{id}`). Re-labelling the ids would change the hashes
the round published, so they are kept.
"""

import hashlib
import json

from auctions.mechanisms import MechanismError, clear
from auctions.mechanisms.canonical import canonical_json
from auctions.mechanisms.canonical import input_sha256 as canonical_sha256
from auctions.models import Round
from auctions.selectors import rounds as selectors
from auctions.services.rounds import RoundNotFound
from config.errors import InvalidInput

SNAPSHOT_FORMAT = "cpx-round-snapshot/1"
RESULT_FORMAT = "cpx-round-result/1"


class RoundNotPublished(InvalidInput):
    """A round that has not cleared (or failed) yet has no snapshot to publish."""

    code = "round_not_published"
    status = 409


class SnapshotUnreadable(InvalidInput):
    code = "snapshot_unreadable"


def _published(round_id: int) -> Round:
    round_obj = selectors.round_get(round_id=round_id)
    if round_obj is None:
        raise RoundNotFound("No such round.", round=round_id)
    if not round_obj.snapshot:
        raise RoundNotPublished(
            f"Round {round_id} is {round_obj.status.lower()}: it has no snapshot yet.",
            status=round_obj.status,
        )
    return round_obj


def round_snapshot_export(*, round_id: int) -> dict:
    """The round's published snapshot: its books and the hashes a replay must reproduce.

    Raises RoundNotFound, RoundNotPublished."""
    round_obj = _published(round_id)
    return {
        "format": SNAPSHOT_FORMAT,
        "round": round_obj.pk,
        "status": round_obj.status,
        "engine_version": round_obj.engine_version,
        "mechanism": round_obj.mechanism,
        "opened_at": round_obj.opened_at.isoformat(),
        "cleared_at": round_obj.cleared_at.isoformat() if round_obj.cleared_at else None,
        "snapshot_sha256": round_obj.snapshot_sha256,
        "result_sha256": round_obj.result_sha256,
        "books": json.loads(round_obj.snapshot),
    }


def round_result_export(*, round_id: int) -> dict:
    """The round's published result (the engine's answer per book) with its figures and hashes.

    Raises RoundNotFound, RoundNotPublished."""
    round_obj = _published(round_id)
    return {
        "format": RESULT_FORMAT,
        "round": round_obj.pk,
        "status": round_obj.status,
        "snapshot_sha256": round_obj.snapshot_sha256,
        "result_sha256": round_obj.result_sha256,
        "welfare": round_obj.welfare,
        "lp_bound": round_obj.lp_bound,
        "optimality_gap": round_obj.optimality_gap,
        "jobs_matched": round_obj.jobs_matched,
        "prices": round_obj.prices,
        "error": round_obj.error,
        "result": round_obj.result,
    }


def snapshot_replay(*, snapshot: dict | list, result: dict | None = None) -> dict:
    """Re-run a downloaded snapshot with the engine (no database) and compare the hashes.

    `snapshot` is a `round_snapshot_export` document (or a bare list of books); `result`, when
    given, a `round_result_export` document whose hashes are compared as well. `match` holds when
    every published hash present is reproduced: the books' canonical sha256, the result's
    (recomputed and, with `result`, stored). Raises SnapshotUnreadable for a document that is not one.
    """
    if isinstance(snapshot, dict):
        books = snapshot.get("books")
        published = {key: snapshot.get(key) or "" for key in ("snapshot_sha256", "result_sha256")}
    else:
        books, published = snapshot, {"snapshot_sha256": "", "result_sha256": ""}
    if not isinstance(books, list):
        raise SnapshotUnreadable(
            "A snapshot is the document GET /rounds/{id}/snapshot serves (or its books)."
        )
    for key in ("snapshot_sha256", "result_sha256"):
        if result and result.get(key) and published[key] and result[key] != published[key]:
            raise SnapshotUnreadable(f"The result file is of another round ({key} differs).")
        published[key] = published[key] or (result or {}).get(key, "")
    try:
        text = canonical_json(books)
    except (TypeError, ValueError) as error:
        raise SnapshotUnreadable(f"The books are not canonical JSON: {error}") from None
    report = {
        "round": snapshot.get("round") if isinstance(snapshot, dict) else None,
        "snapshot_sha256": published["snapshot_sha256"],
        "recomputed_snapshot_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "result_sha256": published["result_sha256"],
        "stored_result_sha256": "",
        "recomputed_result_sha256": "",
        "match": False,
    }
    if result is not None and result.get("result") is not None:
        report["stored_result_sha256"] = canonical_sha256(result["result"])
    try:
        recomputed = clear(books)
    except MechanismError as error:
        report["error"] = f"{error.code}: {error.message}"
        return report
    report["recomputed_result_sha256"] = canonical_sha256(recomputed)
    checks = [
        report["snapshot_sha256"] == report["recomputed_snapshot_sha256"],
        report["result_sha256"] == report["recomputed_result_sha256"],
    ]
    if report["stored_result_sha256"]:
        checks.append(report["stored_result_sha256"] == report["result_sha256"])
    report["match"] = bool(report["snapshot_sha256"] and report["result_sha256"]) and all(checks)
    return report
