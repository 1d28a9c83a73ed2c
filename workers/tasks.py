"""Celery tasks of the running market: thin, named for good, JSON in and out.

Each task reads the clock, makes one service call and translates the outcome to a small JSON dict.

Policy:
- Names are stable (`auctions.clear_round`, …): beat entries, `send_task` callers and messages still
  queued across a deploy refer to them, so a rename is a new task, never an edit.
- Arguments are keyword-only ids and primitives; the serializer is JSON only.
- Every task is idempotent by construction in its service (a round's status guard and its unique
  active slot, compare-and-set on lease status, unique ledger references), so every task is
  `acks_late`: a worker that dies mid-task leaves the message unacknowledged and it is delivered
  again (Redis: after the broker's visibility timeout) — the second run finishes the job or finds
  it done.
- Only transient database errors (`OperationalError`, `InterfaceError`: a dropped connection, a
  failover, a serialisation or deadlock abort) are retried, with exponential backoff and jitter.
  A `DomainError` (another worker is clearing this round, the book changed under the round, a
  misconfigured mechanism) is the answer, not an accident: it is logged and returned as
  `{"error": code, ...}`, never retried — the next scheduled run starts from the database afresh.
- Soft and hard time limits on every task; the soft limit raises inside the service's transaction,
  which rolls back and leaves nothing partial.
"""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from auctions.services.leases import lease_sweep
from auctions.services.pricing import price_quotes_update
from auctions.services.round_shards import books_clear_shard
from auctions.services.rounds import round_clear, round_open
from config.errors import DomainError
from market.services.files import file_expire

logger = logging.getLogger(__name__)

TRANSIENT = (OperationalError, InterfaceError)
# Shared by every task: idempotent by construction, so late acknowledgement is safe.
POLICY = {
    "acks_late": True,
    "autoretry_for": TRANSIENT,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 5,
}


def _refused(task_name: str, error: DomainError, **ids) -> dict:
    # Recorded (log + result), not retried: a domain error is an answer, not an accident.
    logger.warning("%s refused: %s %s %s", task_name, error.code, error.message, ids)
    return {"error": error.code, "message": error.message, **ids}


def _round_result(round_obj) -> dict:
    return {
        "round_id": round_obj.pk,
        "status": round_obj.status,
        "jobs_matched": round_obj.jobs_matched,
        "welfare": round_obj.welfare,
    }


@shared_task(name="auctions.clear_round", soft_time_limit=120, time_limit=150, **POLICY)
def clear_round(*, round_id: int) -> dict:
    """Clear the round `round_id` (a CLEARED or FAILED round is returned unchanged)."""
    try:
        return _round_result(round_clear(round_id=round_id, now=timezone.now()))
    except DomainError as error:
        return _refused("auctions.clear_round", error, round_id=round_id)


@shared_task(name="auctions.open_and_clear_round", soft_time_limit=120, time_limit=150, **POLICY)
def open_and_clear_round() -> dict:
    """The beat's round: open a round (or take the one still active — e.g. left OPEN by a worker
    that died mid-round) and clear it."""
    now = timezone.now()
    try:
        round_obj = round_open(now=now)
        return _round_result(round_clear(round_id=round_obj.pk, now=now))
    except DomainError as error:
        return _refused("auctions.open_and_clear_round", error)


@shared_task(
    name="auctions.clear_round_shard", soft_time_limit=90, time_limit=110, track_started=True, **POLICY
)
def clear_round_shard(*, round_id: int, books: list) -> dict:
    """Clear some books of round `round_id` with the engine (pure: the documents travel in the message;
    no database). The round's own task commits the results (auctions/services/round_shards.py)."""
    return {"round_id": round_id, "books": books_clear_shard(books=books)}


@shared_task(name="auctions.update_prices", soft_time_limit=60, time_limit=90, **POLICY)
def update_prices() -> dict:
    """Solve the pricing game per resource class, store quotes, move auto-priced asks.

    Running it twice stores a second, equal set of quotes (the newest is read) and sets the same asks.
    """
    try:
        quotes = price_quotes_update(now=timezone.now())
        return {"quotes": len(quotes), "classes": sorted(quote.resource_class for quote in quotes)}
    except DomainError as error:
        return _refused("auctions.update_prices", error)


@shared_task(name="auctions.sweep_leases", soft_time_limit=60, time_limit=90, **POLICY)
def sweep_leases() -> dict:
    """Fail over leases whose agents went silent or missed the deadline; expire overdue jobs."""
    try:
        return lease_sweep(now=timezone.now()).as_dict()
    except DomainError as error:
        return _refused("auctions.sweep_leases", error)


@shared_task(name="market.expire_files", soft_time_limit=120, time_limit=180, **POLICY)
def expire_files() -> dict:
    """Delete the bytes of files past their expiry (issue 10); rows and sha256s stay."""
    return {"expired": file_expire(now=timezone.now())}


# --- Settlement on chain (issue 5): thin tasks over contracts.services.
# Retried: database operational errors and ChainUnavailable (the node is down or slow: the batch key
# makes a resend safe). A ChainRejected is recorded by the service (FAILED with the contract's error
# name), never retried here. With CPX_SETTLEMENT_ON_CHAIN off they do nothing.
from contracts.client import ChainRejected, ChainUnavailable  # noqa: E402
from contracts.services import (  # noqa: E402
    chain_deposits_sync,
    settlement_batch_create,
    settlement_batch_submit,
    settlement_batches_due,
    settlement_fees_claim,
    settlement_reconcile,
)
from contracts.services.round_commitments import (  # noqa: E402
    round_commitments_reconcile,
    round_commitments_submit,
)

CHAIN_POLICY = {**POLICY, "autoretry_for": (*TRANSIENT, ChainUnavailable), "retry_backoff": 5}


def _chain_off() -> dict | None:
    from django.conf import settings

    return None if settings.CPX_SETTLEMENT_ON_CHAIN else {"skipped": "CPX_SETTLEMENT_ON_CHAIN is off"}


@shared_task(name="contracts.create_batch", soft_time_limit=60, time_limit=90, **CHAIN_POLICY)
def create_batch() -> dict:
    """Batch the completed leases not yet on chain (one batch), then send every batch that is due."""
    if (off := _chain_off()) is not None:
        return off
    now = timezone.now()
    try:
        batch = settlement_batch_create(now=now)
    except (DomainError, ChainRejected) as error:
        return _refused("contracts.create_batch", _as_domain(error))
    due = settlement_batches_due(now=now)
    for batch_id in due:
        submit_batch.delay_on_commit(batch_id=batch_id)
    created = {"created": batch.pk, "leases": batch.lease_count} if batch else {"created": None, "leases": 0}
    return {**created, "submitting": due}


@shared_task(name="contracts.submit_batch", soft_time_limit=60, time_limit=90, **CHAIN_POLICY)
def submit_batch(*, batch_id: int) -> dict:
    """Send one batch (idempotent by its key); ChainUnavailable is retried with backoff."""
    try:
        batch = settlement_batch_submit(batch_id=batch_id, now=timezone.now())
    except DomainError as error:
        return _refused("contracts.submit_batch", error, batch_id=batch_id)
    return {
        "batch_id": batch.pk,
        "status": batch.status,
        "tx_hash": batch.tx_hash or None,
        "error": batch.error_code or None,
    }


@shared_task(name="contracts.reconcile", soft_time_limit=120, time_limit=150, **CHAIN_POLICY)
def reconcile() -> dict:
    """Compare chain events with the ledger per lease; flag differences."""
    if (off := _chain_off()) is not None:
        return off
    try:
        return settlement_reconcile(now=timezone.now()).as_dict()
    except (DomainError, ChainRejected) as error:
        return _refused("contracts.reconcile", _as_domain(error))


@shared_task(name="contracts.sync_deposits", soft_time_limit=60, time_limit=90, **CHAIN_POLICY)
def sync_deposits() -> dict:
    """Credit new on-chain deposits to their consumers' balances, once each."""
    if (off := _chain_off()) is not None:
        return off
    try:
        return chain_deposits_sync(now=timezone.now()).as_dict()
    except (DomainError, ChainRejected) as error:
        return _refused("contracts.sync_deposits", _as_domain(error))


@shared_task(name="contracts.claim_fees", soft_time_limit=120, time_limit=150, **CHAIN_POLICY)
def claim_fees() -> dict:
    """Claim the platform's fee leaves of confirmed batches before their claim window closes."""
    if (off := _chain_off()) is not None:
        return off
    try:
        return settlement_fees_claim(now=timezone.now())
    except (DomainError, ChainRejected) as error:
        return _refused("contracts.claim_fees", _as_domain(error))


@shared_task(name="contracts.commit_rounds", soft_time_limit=60, time_limit=90, **CHAIN_POLICY)
def commit_rounds() -> dict:
    """Commit cleared rounds' snapshot and result hashes on chain (issue 12); idempotent per round id."""
    if (off := _chain_off()) is not None:
        return off
    try:
        return round_commitments_submit(now=timezone.now()).as_dict()
    except (DomainError, ChainRejected) as error:
        return _refused("contracts.commit_rounds", _as_domain(error))


@shared_task(name="contracts.reconcile_rounds", soft_time_limit=120, time_limit=150, **CHAIN_POLICY)
def reconcile_rounds() -> dict:
    """Find rounds whose on-chain commitment is missing or disagrees with the database (issue 12)."""
    if (off := _chain_off()) is not None:
        return off
    try:
        return round_commitments_reconcile(now=timezone.now()).as_dict()
    except (DomainError, ChainRejected) as error:
        return _refused("contracts.reconcile_rounds", _as_domain(error))


def _as_domain(error: Exception) -> DomainError:
    if isinstance(error, DomainError):
        return error
    refused = DomainError(str(error))
    refused.code = getattr(error, "error_name", "chain_rejected")
    return refused


# --- end Settlement on chain (issue 5)
