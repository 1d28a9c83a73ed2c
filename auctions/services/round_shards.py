"""One round's books cleared on several workers (`CPX_ROUND_SHARDS` > 1), committed in one transaction.

Model. `round_clear` holds the round's transaction (the round row and the QUEUED jobs locked) from the
snapshot to the write, as with one shard. Inside it:
1. the builder walks its books in their fixed order with `plan` instead of the engine: a heterogeneous
   `greedy` book gets only its assignments (`mechanisms.shards.allocation`, the cheap greedy pass the
   next books' free devices depend on); a `welfare` book is cleared in full here, in the chain (its
   assignments have no cheaper twin); every other book is only recorded. The documents are then final:
   the round's snapshot, byte for byte what one shard would have built;
2. the recorded books are split into `CPX_ROUND_SHARDS` groups of about equal work (a greedy book of
   PIECE_MIN_JOBS jobs or more is cut in N + 1 pieces: its LP bound, and N shares of its winners'
   payments, `mechanisms.shards.clear_piece`; `join` puts the book's result together); every group but the
   first is sent as one `auctions.clear_round_shard` task carrying the documents' canonical text and
   sha256 (the shard checks both and runs the pure engine; it touches no database); this worker clears
   the first group itself, then any group no worker has started yet (the results are pure functions of
   the documents, so whoever computes a group computes the same thing), and waits for the others;
3. the results, in book order, go to the same write as with one shard, in the same transaction.

Failure. A shard that fails, or does not answer within `CPX_ROUND_SHARD_TIMEOUT_S` (its worker was
killed: Redis redelivers it only after the visibility timeout), raises `RoundShardFailed` before
anything is written: the transaction rolls back, the round stays OPEN and the next run clears it whole.
A shard result whose assignments differ from the chain's (never expected: one pure function) is
refused the same way. A book the engine refuses fails the round as with one shard (the first such book
in book order; the snapshot keeps the books up to it).
"""

import hashlib
import json
import time
import uuid

from auctions.mechanisms import DOUBLE_AUCTIONS, POSTED_PRICE, MechanismError, clear
from auctions.mechanisms.shards import allocation, book_cost, clear_piece, divisible, join, split
from config.errors import Conflict

SHARD_TASK = "auctions.clear_round_shard"
# Books nothing later in the round reads (only their assignments never feed another document):
# recorded in the chain, cleared on the shards.
LEAVES = DOUBLE_AUCTIONS | {POSTED_PRICE}
POLL_S = 0.01
# A greedy book this large is cleared in pieces (its LP bound apart, its winners' critical values
# shared: they are independent); a smaller one is not worth sending its document more than once.
PIECE_MIN_JOBS = 100


class RoundShardFailed(Conflict):
    """A shard of the round failed or was lost; nothing was written, the next run clears it whole."""

    code = "round_shard_failed"


def books_clear_shard(*, books: list[dict]) -> list[dict]:
    """Clear the given books ({index, sha256, text}: canonical JSON) with the engine: for each,
    {index, result} or {index, error: {code, message}} (the engine refused it). Pure: reads no database.
    Raises ValueError when a text does not hash to its sha256 (a corrupted message, never retried)."""
    answers = []
    for book in books:
        text = book["text"]
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != book["sha256"]:
            raise ValueError(f"book {book['index']} does not hash to its sha256")
        try:
            if "pieces" in book:
                piece = _piece(json.loads(text), book)
                answers.append({"index": book["index"], "piece": book["piece"], "result": piece})
                continue
            result = clear(json.loads(text), input_sha256=book["sha256"])
        except MechanismError as error:
            answers.append({"index": book["index"], "error": {"code": error.code, "message": error.message}})
            continue
        answers.append({"index": book["index"], "result": result})
    return answers


def _piece(doc: dict, book: dict) -> dict:
    return clear_piece(doc, piece=book["piece"], pieces=book["pieces"], input_sha256=book["sha256"])


def books_clear(
    *,
    builder,
    round_id: int,
    clear_document,
    shards: int,
    timeout_s: float,
    piece_min_jobs: int = PIECE_MIN_JOBS,
) -> list:
    """The engine's results for every book of `builder`, in book order: `builder.run` itself with one
    shard, else the sharded clearing of the module's model. Raises MechanismError (a book the engine
    refuses), RoundShardFailed."""
    if shards <= 1 or getattr(builder, "elastic_jobs", None):
        # Elastic books read every earlier book's fills: such a round clears in one task.
        return builder.run(clear_document=clear_document)
    plan = _Plan(clear_document=clear_document)
    builder.run(clear_document=plan.record)
    return plan.finish(
        builder=builder, round_id=round_id, shards=shards, timeout_s=timeout_s, piece_min_jobs=piece_min_jobs
    )


class _Plan:
    def __init__(self, *, clear_document):
        self.clear_document = clear_document
        self.results: dict[int, dict] = {}  # book index -> result cleared in the chain
        self.chain: dict[int, dict] = {}  # book index -> assignments the chain went on with
        self.deferred: list[int] = []
        self.count = 0

    def record(self, doc: dict, digest: str) -> dict:
        index, self.count = self.count, self.count + 1
        mechanism = doc.get("mechanism")
        assignments = allocation(doc) if mechanism == "greedy" else None
        if assignments is not None:
            self.chain[index] = assignments
            self.deferred.append(index)
            return {"assignments": assignments}
        if mechanism in LEAVES:
            self.deferred.append(index)
            return {}
        # Any other book (welfare, and whatever the chain reads back) is cleared here, in the chain.
        self.results[index] = self.clear_document(doc, digest)
        return self.results[index]

    def finish(self, *, builder, round_id: int, shards: int, timeout_s: float, piece_min_jobs: int) -> list:
        from celery import current_app

        books = builder.books
        items = []  # (book index, piece, pieces): a large greedy book is priced in `shards` pieces
        for i in self.deferred:
            large = divisible(books[i].doc) and len(books[i].doc["jobs"]) >= piece_min_jobs
            pieces = shards + 1 if large else 1  # piece 0: the LP bound; the others share the payments
            items += [(i, piece, pieces) for piece in range(pieces)]
        costs = [book_cost(books[i].doc, piece=piece, pieces=pieces) for i, piece, pieces in items]
        payload = [
            [
                {"index": i, "sha256": books[i].digest, "text": books[i].text}
                | ({"piece": piece, "pieces": pieces} if pieces > 1 else {})
                for i, piece, pieces in (items[n] for n in group)
            ]
            for group in split(costs, shards)
        ]
        attempt = uuid.uuid4().hex[:12]
        sent, task_ids = {}, []
        for number, group in enumerate(payload[1:], start=1):
            task_id = f"round-{round_id}-{attempt}-shard-{number}"
            current_app.send_task(
                SHARD_TASK,
                kwargs={"round_id": round_id, "books": group},
                task_id=task_id,
                soft_time_limit=timeout_s,
                time_limit=timeout_s + 10,
            )
            sent[task_id] = group
            task_ids.append(task_id)
        answers = self._local(payload[0] if payload else [], books)
        deadline = time.monotonic() + timeout_s
        try:
            while sent:
                for task_id, group in list(sent.items()):
                    outcome = current_app.AsyncResult(task_id)
                    state = outcome.state
                    if state == "SUCCESS":
                        answers += outcome.result["books"]
                    elif state == "PENDING":
                        # No worker has started it: it is ours (the same pure result either way).
                        current_app.control.revoke(task_id)
                        answers += self._local(group, books)
                    elif state in ("FAILURE", "REVOKED"):
                        raise RoundShardFailed(
                            "A shard of the round failed; nothing was written.",
                            round=round_id,
                            shard=task_id,
                            reason=str(outcome.result)[:200],
                        )
                    else:
                        continue
                    del sent[task_id]
                if sent and time.monotonic() > deadline:
                    raise RoundShardFailed(
                        "A shard of the round did not answer in time; nothing was written.",
                        round=round_id,
                        shards=sorted(sent),
                    )
                if sent:
                    time.sleep(POLL_S)
        finally:
            # A shard's result is read once: it must not sit in the result backend for days.
            for task_id in task_ids:
                current_app.AsyncResult(task_id).forget()
        return self._assemble(answers, builder=builder, round_id=round_id)

    def _local(self, group: list[dict], books: list) -> list[dict]:
        answers = []
        for book in group:
            try:
                doc = books[book["index"]].doc
                if "pieces" in book:
                    answers.append(
                        {"index": book["index"], "piece": book["piece"], "result": _piece(doc, book)}
                    )
                    continue
                result = self.clear_document(doc, book["sha256"])
            except MechanismError as error:
                answers.append(
                    {"index": book["index"], "error": {"code": error.code, "message": error.message}}
                )
                continue
            answers.append({"index": book["index"], "result": result})
        return answers

    def _assemble(self, answers: list[dict], *, builder, round_id: int) -> list:
        results = dict(self.results)
        errors = {}
        pieces: dict[int, dict] = {}
        for answer in answers:
            if "error" in answer:
                errors[answer["index"]] = answer["error"]
            elif "piece" in answer:
                pieces.setdefault(answer["index"], {})[answer["piece"]] = answer["result"]
            else:
                results[answer["index"]] = answer["result"]
        for index, parts in pieces.items():
            if index not in errors:
                results[index] = join([parts[piece] for piece in sorted(parts)])
        if errors:
            first = min(errors)
            # The chain stops at the first book the engine refuses, as with one shard.
            del builder.books[first + 1 :]
            raise MechanismError(errors[first]["code"], errors[first]["message"])
        for index, assignments in self.chain.items():
            if results[index]["assignments"] != assignments:
                raise RoundShardFailed(
                    "A shard's assignments differ from the round's chain; nothing was written.",
                    round=round_id,
                    book=index,
                )
        return [results[index] for index in range(len(builder.books))]
