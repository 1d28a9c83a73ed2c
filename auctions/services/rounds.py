"""Rounds: open one, clear it (snapshot the book, run the engine, write leases and job states in one
transaction), and replay a published round from its snapshot.

Locking and crash safety. At most one round is OPEN or CLEARING (`Round.active_slot` is unique).
`round_clear` does everything in ONE transaction that starts by locking the round row: on PostgreSQL
`SELECT … FOR UPDATE SKIP LOCKED`, so a second worker returns at once with `RoundBusy` instead of
queueing behind the first; on SQLite the first statement is the round's compare-and-set UPDATE, which
takes the database's single writer lock. The QUEUED jobs are locked FOR UPDATE in the one query that
reads them, so a concurrent cancel waits and then finds the job MATCHED. Nothing is committed before
the final write: a worker killed mid-round leaves the round OPEN with no lease and no job moved, and
the next run clears it from scratch. A CLEARED or FAILED round is returned unchanged.

Books (built from one snapshot, cleared in a fixed order that no bid influences):
0. the gang book (`auctions/services/gang_books.py`): jobs that opted in to run as one pipeline across
   several providers, matched whole or not at all (`auctions/mechanisms/gang.py`), one lease a stage.
1. heterogeneous books (`CPX_HETEROGENEOUS_MECHANISM`): multi-device jobs, single-device jobs whose
   latency SLA, deadline or earlier failures the class cannot express, and jobs whose region has no
   class that fits them. The engine cannot forbid a (job, provider) pair, so jobs are partitioned by
   the exact set of resources they may use (device class, memory, device count, SLA, providers that
   failed them); each part is one book over those resources, the most constrained part first, each
   seeing the devices the previous parts left. Heterogeneous jobs clear first because a job that needs
   several devices on one node starves if single-device jobs nibble every node first.
   Then (`CPX_TIER_CLEARING=aware`) one tiered book per device class (auctions/services/tier_books.py):
   latency-bound single-device jobs with cloud supply in reach take their region's edge devices first
   and overflow to the cloud at the cloud leader's Stackelberg price (AI-Bazaar, docs/ai-bazaar.md).
2. one unit double auction per resource class (`CPX_UNIT_MECHANISM`) over the devices left: bids are
   the jobs' max price per device-hour (one unit each), asks the resources' ask with quantity = free
   devices. A job's devices are never split: a unit job needs one device; a heterogeneous job gets
   all of its devices on one resource. Under `CPX_CLEARING_RULE=depth` (the default) only thick
   classes (at least CPX_THICK_BOOK_MIN_ORDERS bids and free devices) clear this way;
3. (rule "depth") one posted-price book over the thin classes' devices left: every other single-device
   job buys at its class's posted price, fixed before the round from earlier rounds
   (`round_books.posted_prices`), on any device that fits it, rationed by sha256 of the round id and
   the order id (`auctions/mechanisms/posted_price.py`).
"""

import hashlib
import json
import time
from datetime import datetime
from decimal import ROUND_DOWN, Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from auctions.mechanisms import ENGINE_VERSION, MechanismError, clear
from auctions.mechanisms.canonical import input_sha256 as canonical_sha256
from auctions.models import Lease, Round
from auctions.selectors import rounds as selectors
from auctions.services import backup_pool, round_shards
from auctions.services import round_books as books
from auctions.services.dispatch import jobs_refuse_uncovered
from auctions.services.elastic_demand import elastic_record_purchases
from auctions.services.offers import offers_announce
from auctions.services.sla import lease_sla_copy
from auctions.services.tier_books import TIER_MODES, tier_config
from config.errors import Conflict, InvalidInput, NotFound
from market.models import JobRequest
from market.money import to_money

ACTIVE = (Round.Status.OPEN, Round.Status.CLEARING)
FINAL = (Round.Status.CLEARED, Round.Status.FAILED)
UNIT_MECHANISMS = frozenset({"mcafee", "trade_reduction", "sbba", "sbba_buyer_lottery"})
HETEROGENEOUS_RULES = {"greedy": "critical", "welfare": "vcg"}
CLEARING_RULES = frozenset({"depth", "per_class"})
# The column holds 8 integer digits; a free resource (ask 0) has no escrow limit worth storing.
MAX_DEVICE_HOURS = Decimal("99999999.999999")
HOUR_QUANTUM = Decimal("0.000001")
WAITING_BATCH = 1000


class RoundNotFound(NotFound):
    code = "round_not_found"


class RoundBusy(Conflict):
    """Another worker holds the round's lock and is clearing it now."""

    code = "round_busy"


class RoundBookChanged(Conflict):
    """A job left QUEUED while the round held it: nothing was written; the next run clears afresh."""

    code = "round_book_changed"


def round_open(*, now: datetime) -> Round:
    """The active (OPEN or CLEARING) round, or a new OPEN one; a race resolves to the one that won."""
    existing = selectors.round_active()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return Round.objects.create(
                status=Round.Status.OPEN, active_slot=1, opened_at=now, mechanism=clearing_config()
            )
    except IntegrityError:
        # Another worker opened one between our read and our insert: the unique slot says it won.
        existing = selectors.round_active()
        if existing is None:
            raise
        return existing


def clearing_config() -> dict:
    """The configured mechanisms, checked. Raises InvalidInput for a rule the platform must not run."""
    unit = settings.CPX_UNIT_MECHANISM
    if unit not in UNIT_MECHANISMS:
        raise InvalidInput(
            f"CPX_UNIT_MECHANISM must be one of {', '.join(sorted(UNIT_MECHANISMS))} (budget-balanced).",
            setting="CPX_UNIT_MECHANISM",
        )
    hetero = settings.CPX_HETEROGENEOUS_MECHANISM
    rule = settings.CPX_HETEROGENEOUS_PAYMENT_RULE
    if HETEROGENEOUS_RULES.get(hetero) != rule:
        raise InvalidInput(
            "CPX_HETEROGENEOUS_MECHANISM/PAYMENT_RULE must be greedy/critical or welfare/vcg.",
            setting="CPX_HETEROGENEOUS_MECHANISM",
        )
    clearing_rule = settings.CPX_CLEARING_RULE
    if clearing_rule not in CLEARING_RULES:
        raise InvalidInput("CPX_CLEARING_RULE must be depth or per_class.", setting="CPX_CLEARING_RULE")
    if settings.CPX_TIER_CLEARING not in TIER_MODES or not 0 <= settings.CPX_TIER_SUBSTITUTION < 1:
        raise InvalidInput(
            "CPX_TIER_CLEARING must be aware or off, CPX_TIER_SUBSTITUTION in [0, 1).",
            setting="CPX_TIER_CLEARING",
        )
    return {
        "rule": clearing_rule,
        "thick_min_orders": settings.CPX_THICK_BOOK_MIN_ORDERS,
        "unit": {"mechanism": unit, "seed": settings.CPX_ROUND_SEED},
        "heterogeneous": {
            "mechanism": hetero,
            "payment_rule": rule,
            "time_limit_s": settings.CPX_WELFARE_TIME_LIMIT_S,
        },
        "tiers": tier_config(),
    }


def round_clear(*, round_id: int, now: datetime) -> Round:
    """Clear an OPEN round: snapshot, engine, leases, job states and prices, all in one transaction.

    Idempotent: a CLEARED or FAILED round is returned unchanged. An engine error marks the round
    FAILED (error recorded, slot freed so the next round can open); a database error propagates and
    leaves nothing behind (the task retries). With CPX_ROUND_SHARDS > 1 the books are cleared on
    several workers inside the same transaction (services/round_shards.py). Raises RoundNotFound,
    RoundBusy (another worker is clearing it), RoundBookChanged (a job left QUEUED under the round;
    nothing written), RoundShardFailed (a shard failed or was lost; nothing written), InvalidInput
    (a misconfigured mechanism).
    """
    config = clearing_config()
    with transaction.atomic():
        round_obj = _lock(round_id)
        if round_obj.status in FINAL:
            return round_obj
        started = time.perf_counter()
        if config["rule"] == "depth":
            # Fixed before the snapshot is read, from earlier rounds; published in the snapshot.
            config = {**config, "salt": f"round-{round_obj.pk}", "posted_prices": books.posted_prices()}
        snapshot = books.snapshot_book(now=now, include_unseen=settings.CPX_BOOK_INCLUDE_UNSEEN_PROVIDERS)
        builder = books.BookBuilder(snapshot=snapshot, config=config, now=now)
        timings = {"snapshot": 0.0, "clear": 0.0, "write": 0.0}
        timings["snapshot"] += time.perf_counter() - started
        clearing = time.perf_counter()
        try:
            cleared = round_shards.books_clear(
                builder=builder,
                round_id=round_obj.pk,
                clear_document=_clear_timed(timings),
                shards=settings.CPX_ROUND_SHARDS,
                timeout_s=settings.CPX_ROUND_SHARD_TIMEOUT_S,
            )
            # The backup pool: standbys for running jobs among the devices left idle (one more book).
            pool = backup_pool.standby_book(builder=builder, cleared=cleared, round_id=round_obj.pk, now=now)
            if pool is not None:
                pool.result = _clear_timed(timings)(pool.doc, pool.digest)
        except MechanismError as error:
            return _fail(round_obj, builder=builder, config=config, error=error, now=now)
        if settings.CPX_ROUND_SHARDS > 1:  # the shards' engine time is theirs: count the wall time
            timings["clear"] = time.perf_counter() - clearing
        started = time.perf_counter()
        _write(round_obj, builder=builder, cleared=cleared, config=config, now=now, pool=pool)
        timings["write"] = time.perf_counter() - started
        round_obj.timings_ms = {name: round(seconds * 1000, 3) for name, seconds in timings.items()}
        Round.objects.filter(pk=round_obj.pk).update(timings_ms=round_obj.timings_ms)
    return round_obj


def round_preview_fill(*, job: dict, now: datetime) -> "books.Fill | None":
    """What the next round's rule would give `job` (a book row, id not in the database) if it cleared
    now on the current book plus this job: its fill, or None. Reads only; nothing is locked or written.

    Runs the same routing, posted prices, salt (the next round's id) and engine as `round_clear`, so
    `would_clear_now` comes true unless the book changes before the round (arrivals, cancellations,
    providers leaving). Raises InvalidInput (a misconfigured mechanism)."""
    config = clearing_config()
    if config["rule"] == "depth":
        salt = f"round-{selectors.round_next_id()}"
        config = {**config, "salt": salt, "posted_prices": books.posted_prices()}
    snapshot = books.snapshot_book(
        now=now, include_unseen=settings.CPX_BOOK_INCLUDE_UNSEEN_PROVIDERS, lock=False, extra_jobs=(job,)
    )
    builder = books.BookBuilder(snapshot=snapshot, config=config, now=now)
    try:
        cleared = builder.run(clear_document=lambda doc, digest: clear(doc, input_sha256=digest))
    except MechanismError:
        return None
    return next((fill for fill in builder.fills(cleared) if fill.job["id"] == job["id"]), None)


def _lock(round_id: int) -> Round:
    if connection.features.has_select_for_update_skip_locked:
        locked = Round.objects.select_for_update(skip_locked=True).filter(pk=round_id).first()
        if locked is None:
            if Round.objects.filter(pk=round_id).exists():
                raise RoundBusy("Another worker is clearing this round.", round=round_id)
            raise RoundNotFound("No such round.", round=round_id)
    # On SQLite this UPDATE is the lock (the single writer); on PostgreSQL the row is ours already.
    Round.objects.filter(pk=round_id, status=Round.Status.OPEN).update(status=Round.Status.CLEARING)
    round_obj = Round.objects.filter(pk=round_id).first()
    if round_obj is None:
        raise RoundNotFound("No such round.", round=round_id)
    return round_obj


def _clear_timed(timings: dict):
    def run(doc: dict, digest: str) -> dict:
        started = time.perf_counter()
        try:
            return clear(doc, input_sha256=digest)
        finally:
            timings["clear"] += time.perf_counter() - started

    return run


def _fail(round_obj: Round, *, builder, config: dict, error: MechanismError, now: datetime) -> Round:
    round_obj.status = Round.Status.FAILED
    round_obj.active_slot = None
    round_obj.error = f"{error.code}: {error.message}"
    round_obj.mechanism = {**config, "books": builder.book_meta}
    round_obj.engine_version = ENGINE_VERSION
    round_obj.snapshot = builder.snapshot_text()
    round_obj.snapshot_sha256 = _sha(round_obj.snapshot)
    round_obj.jobs_in_book = len(builder.jobs)
    round_obj.resources_in_book = len(builder.resources)
    round_obj.cleared_at = now
    round_obj.save()
    return round_obj


def _write(round_obj: Round, *, builder, cleared: list, config: dict, now: datetime, pool=None) -> None:
    fills = builder.fills(cleared)
    leases = [_lease(round_obj, fill, now=now) for fill in fills]
    filled = {lease.job_id for lease in leases}  # matched or refused below: none of them waits
    # A job whose budget cannot pay its expected usage is refunded, not dispatched (issue 9).
    leases, refused, failed = jobs_refuse_uncovered(leases=leases, now=now)
    job_ids = sorted({lease.job_id for lease in leases})  # a gang's members share their job
    # One compare-and-set for every matched job; the row count says whether the book held.
    moved = JobRequest.objects.filter(pk__in=job_ids, status=JobRequest.Status.QUEUED).update(
        status=JobRequest.Status.MATCHED, updated_at=now, waiting_reason=None
    )
    if moved != len(job_ids) or failed != refused:
        raise RoundBookChanged(
            "A job left the queue while the round held it; nothing was written.",
            round=round_obj.pk,
            expected=len(job_ids),
            moved=moved,
        )
    Lease.objects.bulk_create(leases, batch_size=2000)
    lease_sla_copy(
        leases=leases, jobs={job["id"]: job for job in builder.jobs}
    )  # the job's SLA terms, fixed on the lease the provider accepts
    elastic_record_purchases(leases=leases, fills=fills, round_id=round_obj.pk)
    _write_waiting_reasons(round_obj, builder=builder, cleared=cleared, matched=filled)
    # The waiting agents hear of their offers when this commits (auctions/services/offers.py).
    offers_announce(provider_ids=[lease.provider_id for lease in leases])
    backup_pool.standby_reserve(round_id=round_obj.pk, pool=pool, now=now)
    summary = builder.summary(cleared)
    round_obj.status = Round.Status.CLEARED
    round_obj.active_slot = None
    round_obj.mechanism = {**config, "books": builder.book_meta + ([pool.meta] if pool else [])}
    round_obj.engine_version = ENGINE_VERSION
    # The pool's book and answer close the snapshot and the result, so a replay re-derives it too.
    round_obj.snapshot = builder.snapshot_text()
    if pool is not None:
        round_obj.snapshot = f"{round_obj.snapshot[:-1]}{',' if builder.books else ''}{pool.text}]"
        cleared = [*cleared, pool.result]
    round_obj.snapshot_sha256 = _sha(round_obj.snapshot)
    round_obj.result = cleared
    round_obj.result_sha256 = canonical_sha256(cleared)
    round_obj.welfare = summary["welfare"]
    round_obj.lp_bound = summary["lp_bound"]
    round_obj.optimality_gap = summary["gap"]
    round_obj.prices = summary["prices"]
    round_obj.jobs_in_book = len(builder.jobs)
    round_obj.resources_in_book = len(builder.resources)
    round_obj.jobs_matched = len(job_ids)
    round_obj.cleared_at = now
    round_obj.error = ""
    round_obj.save()


def _write_waiting_reasons(round_obj: Round, *, builder, cleared: list, matched: set) -> None:
    """Store why each unmatched job waits (JobRequest.waiting_reason), writing only the jobs whose
    reason changed since the last round (the round number does not count as a change).

    One `UPDATE … FROM (VALUES …)` per 1,000 jobs: a round can leave thousands of jobs waiting, and
    `bulk_update`'s CASE per row cost seconds at 10,000 (bench/round.py)."""
    reasons = builder.waiting_reasons(cleared, matched=matched)
    rows = []
    for job in builder.jobs:
        reason = reasons.get(job["id"])
        if job["id"] in matched or reason is None:
            continue
        previous = dict(job.get("waiting_reason") or {})
        previous.pop("round", None)
        if previous != reason:
            rows.append((job["id"], json.dumps({**reason, "round": round_obj.pk}, allow_nan=False)))
    table = connection.ops.quote_name(JobRequest._meta.db_table)
    if connection.vendor == "postgresql":
        row_sql, alias, job_id, reason = "(%s::bigint, %s::jsonb)", "v(id, reason)", "v.id", "v.reason"
    else:  # SQLite names a VALUES table's columns column1, column2
        row_sql, alias, job_id, reason = "(%s, %s)", "v", "v.column1", "v.column2"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), WAITING_BATCH):
            batch = rows[start : start + WAITING_BATCH]
            cursor.execute(
                f"UPDATE {table} SET waiting_reason = {reason} "  # noqa: S608 - names are ours, values bound
                f"FROM (VALUES {', '.join([row_sql] * len(batch))}) AS {alias} WHERE {table}.id = {job_id}",
                [value for row in batch for value in row],
            )


def _lease(round_obj: Round, fill: "books.Fill", *, now: datetime) -> Lease:
    paid = to_money(fill.unit_price_paid)
    received = min(to_money(fill.unit_price_received), paid)  # rounding must not open a deficit
    budget = fill.job["budget"]
    if fill.gang is not None:  # a gang member may spend its share of the job's escrow
        budget = budget * Decimal(repr(fill.gang["budget_share"]))
    limit = MAX_DEVICE_HOURS if paid <= 0 else min(MAX_DEVICE_HOURS, budget / paid)
    expected = min(MAX_DEVICE_HOURS, Decimal(repr(fill.expected_device_hours))).quantize(HOUR_QUANTUM)
    if fill.elastic is not None:
        # CPX bought exactly this much (docs/eetorp.md): the lease runs to it and no further.
        limit = expected = min(limit.quantize(HOUR_QUANTUM, rounding=ROUND_DOWN), expected)
    return Lease(
        round=round_obj,
        job_id=fill.job["id"],
        resource_id=fill.resource["id"],
        provider_id=fill.resource["provider_id"],
        devices=fill.devices,
        resource_class=fill.resource_class,
        unit_price_paid=paid,
        unit_price_received=received,
        max_device_hours=limit.quantize(HOUR_QUANTUM),
        expected_device_hours=expected,
        status=Lease.Status.DISPATCHED,
        dispatched_at=now,
        gang_stage=0 if fill.gang is None else fill.gang["stage"],
        gang=fill.gang,
    )


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def round_replay(*, round_id: int) -> dict:
    """Re-run a round's stored snapshot with the engine and compare hashes.

    `match` holds when the stored snapshot hashes to `snapshot_sha256`, the stored result hashes to
    `result_sha256`, and the engine's result from the snapshot hashes the same. A FAILED round
    matches when the engine fails again with the recorded error. Raises RoundNotFound.
    """
    round_obj = selectors.round_get(round_id=round_id)
    if round_obj is None:
        raise RoundNotFound("No such round.", round=round_id)
    report = {
        "round": round_obj.pk,
        "status": round_obj.status,
        "snapshot_sha256": round_obj.snapshot_sha256,
        "recomputed_snapshot_sha256": _sha(round_obj.snapshot) if round_obj.snapshot else "",
        "result_sha256": round_obj.result_sha256,
        "stored_result_sha256": canonical_sha256(round_obj.result) if round_obj.result is not None else "",
        "recomputed_result_sha256": "",
        "match": False,
    }
    if not round_obj.snapshot:
        report["error"] = "the round has no snapshot (it was never cleared)"
        return report
    try:
        # The stored result tells the engine which solves the wall-clock guard cut (`time_cuts`), so the
        # replay repeats them and runs the rest unguarded: the same result on any machine, under any load.
        recomputed = clear(json.loads(round_obj.snapshot), replay=round_obj.result)
    except MechanismError as error:
        report["error"] = f"{error.code}: {error.message}"
        report["match"] = (
            round_obj.status == Round.Status.FAILED
            and report["error"] == round_obj.error
            and report["recomputed_snapshot_sha256"] == round_obj.snapshot_sha256
        )
        return report
    except ValueError as error:
        report["error"] = f"the snapshot is not JSON: {error}"
        return report
    report["recomputed_result_sha256"] = canonical_sha256(recomputed)
    report["match"] = (
        report["recomputed_snapshot_sha256"] == round_obj.snapshot_sha256
        and report["stored_result_sha256"] == round_obj.result_sha256
        and report["recomputed_result_sha256"] == round_obj.result_sha256
    )
    return report
