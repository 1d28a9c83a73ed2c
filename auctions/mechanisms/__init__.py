"""CPX clearing and pricing engine: pure functions over JSON-shaped documents.

`clear(doc)` runs a double auction or a heterogeneous-jobs mechanism, `price(doc)` solves a
pricing game; both follow docs/mechanisms.md exactly and accept a list of documents
(a list in gives a list out, and one bad document fails the whole list). Nothing here imports
Django, Celery, web3 or any other part of the project: anyone can re-run a published round.
"""

from auctions.mechanisms.errors import MechanismError

__all__ = ["MechanismError", "clear", "price", "ENGINE_VERSION"]

# Bumped whenever a rule or convention changes an outcome; stored with every round.
# 1.1.0: work limits, not wall-clock limits; `stopped_by`, `time_cuts`, replay. 1.2.0: posted_price.
# 1.3.0: tiered (cloud–edge tiers, AI-Bazaar). 1.4.0: elastic_demand (EETORP), gang (FusionAI),
# brokers (MECM), backup_pool (FusionAI), reputation-adjusted asks (SLA), greedy critical values by
# binary search (same payments), books cut in pieces for sharded rounds.
ENGINE_VERSION = "1.4.0"

DOUBLE_AUCTIONS = frozenset({"mcafee", "trade_reduction", "vcg", "sbba", "sbba_buyer_lottery", "huang"})
HETEROGENEOUS = frozenset({"welfare", "greedy"})
POSTED_PRICE = "posted_price"
ELASTIC_DEMAND = "elastic_demand"
TIERED = "tiered"
GANG = "gang"
BROKERS = "brokers"
BACKUP_POOL = "backup_pool"
GAMES = frozenset({"stackelberg", "linear_oligopoly", "budget_oligopoly"})


def clear(doc, *, input_sha256: str | None = None, replay=None):
    """Clear one BOOK document (or a list of them) and return the RESULT document(s).

    `replay`: the RESULT recorded when the book was first cleared (a list for a list), to re-run it
    exactly: a heterogeneous solve the wall-clock guard cut then (its `time_cuts`) is cut again, and no
    guard applies to the others, so the replay does not depend on this machine's speed or load."""
    if isinstance(doc, list):
        if input_sha256 is not None:
            raise MechanismError("bad_input", "input_sha256 is given per document, not for a list")
        if replay is None:
            return [clear(item) for item in doc]
        if not isinstance(replay, list) or len(replay) != len(doc):
            raise MechanismError("bad_input", "replay must be a list of results, one per document")
        return [clear(item, replay=recorded) for item, recorded in zip(doc, replay, strict=True)]
    if not isinstance(doc, dict):
        raise MechanismError("bad_input", "a book must be a JSON object")
    mechanism = doc.get("mechanism")
    if mechanism in DOUBLE_AUCTIONS:
        from auctions.mechanisms.double_auction import clear_double_auction

        return clear_double_auction(doc, input_sha256=input_sha256)
    if mechanism in HETEROGENEOUS:
        from auctions.mechanisms.heterogeneous import clear_heterogeneous

        return clear_heterogeneous(doc, input_sha256=input_sha256, time_cuts=_time_cuts(replay))
    if mechanism == POSTED_PRICE:
        from auctions.mechanisms.posted_price import clear_posted_price

        return clear_posted_price(doc, input_sha256=input_sha256)
    if mechanism == ELASTIC_DEMAND:
        from auctions.mechanisms.elastic import clear_elastic_demand

        return clear_elastic_demand(doc, input_sha256=input_sha256)
    if mechanism == TIERED:
        from auctions.mechanisms.tiers import clear_tiered

        return clear_tiered(doc, input_sha256=input_sha256)
    if mechanism == GANG:
        from auctions.mechanisms.gang import clear_gang

        return clear_gang(doc, input_sha256=input_sha256)
    if mechanism == BROKERS:
        from auctions.mechanisms.broker_book import clear_brokers

        return clear_brokers(doc, input_sha256=input_sha256)
    if mechanism == BACKUP_POOL:
        from auctions.mechanisms.backup_pool import clear_backup_pool

        return clear_backup_pool(doc, input_sha256=input_sha256)
    raise MechanismError("unknown_mechanism", f"unknown mechanism {mechanism!r}")


def _time_cuts(replay) -> list[int] | None:
    """The solves to cut on a replay ([] when the original cut none); None for a live run."""
    if replay is None:
        return None
    cuts = replay.get("time_cuts", []) if isinstance(replay, dict) else None
    if not isinstance(cuts, list) or not all(type(c) is int and c >= 0 for c in cuts):
        raise MechanismError("bad_input", "replay must be a result whose time_cuts lists solve numbers")
    return cuts


def price(doc, *, input_sha256: str | None = None):
    """Solve one GAME document (or a list of them) and return the RESULT document(s)."""
    if isinstance(doc, list):
        if input_sha256 is not None:
            raise MechanismError("bad_input", "input_sha256 is given per document, not for a list")
        return [price(item) for item in doc]
    if not isinstance(doc, dict):
        raise MechanismError("bad_input", "a game must be a JSON object")
    game = doc.get("game")
    if game in GAMES:
        from auctions.mechanisms.pricing import solve_game

        return solve_game(doc, input_sha256=input_sha256)
    raise MechanismError("unknown_game", f"unknown game {game!r}")
