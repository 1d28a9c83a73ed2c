"""The match on chain (issue 12, after Du et al. 2023): every cleared round's snapshot and result hashes
committed to SettlementV2, a reconciler that finds rounds whose commitment is missing or disagrees, and
the replay's check against what the chain holds.

Flow. `round_commitments_submit` makes a PENDING RoundCommitment per CLEARED round this contract has
none for (oldest first; a round whose stored snapshot or result no longer hashes to its own recorded
hashes is FAILED `inconsistent_round`, never committed), claims the due rows (PENDING → SUBMITTED under
a claim token, compare-and-set), and sends them in ONE `commitRounds` transaction, outside any database
transaction. Crash safety rests on the contract's write-once round ids: a row claimed again after an
earlier attempt (a stale SUBMITTED row, or a retry after ChainUnavailable) first asks the chain
`roundCommitment(id)`; a committed id is recorded from the chain's own event (CHAIN_LOOKUP), never sent
twice, and were it sent twice anyway the contract refuses it (`RoundAlreadyCommitted`), which is
recorded the same way. ChainUnavailable puts the rows back to PENDING with a backoff and is raised for
the task to retry; any other refusal FAILS the rows with the contract's error (a pause or a revoked
operator: until the reconciler sees it lifted).

`round_commitments_reconcile` compares, per committed row, the chain's stored commitment with the row's
hashes and the round's hashes in the database now (MATCHED / MISSING / MISMATCH); a CONFIRMED row the
chain no longer holds (a reorg dropped its transaction) goes back to PENDING to be sent again.

`round_replay_on_chain` is the replay (auctions.services.rounds.round_replay) plus the chain's verdict,
read from the chain alone, not from these rows: `match` (the chain's hashes are the replay's),
`mismatch`, `not_committed`, or `unavailable` / `off`.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q

from auctions.mechanisms.canonical import input_sha256 as canonical_sha256
from auctions.models import Round
from auctions.services.rounds import round_replay
from contracts.client import ChainRejected, ChainUnavailable, SettlementClient, round_commitment_of
from contracts.models import ChainDeployment, RoundCommitment
from contracts.services import deployment as deployments
from contracts.services.deployment import deployment_for, signer_lock

logger = logging.getLogger(__name__)

Status = RoundCommitment.Status
ChainStatus = RoundCommitment.ChainStatus
ZERO32 = "0x" + "00" * 32
BACKOFF_BASE_S = 5
BACKOFF_MAX_S = 600
# Refusals that last only while the contract is paused or this signer is not its operator.
BLOCKED = ("IsPaused", "NotOperator")


@dataclass
class RoundCommitRun:
    created: int = 0
    inconsistent: int = 0
    sent: int = 0
    recovered: int = 0
    failed: int = 0
    tx_hash: str = ""
    gas_used: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _round_is_consistent(round_obj: Round) -> bool:
    """The stored snapshot and result still hash to the round's own recorded hashes."""
    if not round_obj.snapshot or round_obj.result is None:
        return False
    snapshot_ok = hashlib.sha256(round_obj.snapshot.encode()).hexdigest() == round_obj.snapshot_sha256
    return snapshot_ok and canonical_sha256(round_obj.result) == round_obj.result_sha256


def _create_rows(deployment: ChainDeployment, limit: int, now: datetime, run: RoundCommitRun) -> None:
    rounds = list(
        Round.objects.filter(status=Round.Status.CLEARED)
        .exclude(chain_commitments__deployment=deployment)
        .order_by("pk")[:limit]
    )
    for round_obj in rounds:
        consistent = _round_is_consistent(round_obj)
        fields = {
            "snapshot_sha256": round_obj.snapshot_sha256,
            "result_sha256": round_obj.result_sha256,
            "created_at": now,
        }
        if not consistent:
            # The operator's worker refuses to vouch for a round its own database cannot reproduce.
            fields.update(
                status=Status.FAILED,
                error_code="inconsistent_round",
                error="the stored snapshot or result does not hash to the round's recorded hashes",
            )
        try:
            with transaction.atomic():
                RoundCommitment.objects.create(deployment=deployment, round=round_obj, **fields)
        except IntegrityError:
            continue  # another worker made it first
        run.created += 1
        run.inconsistent += not consistent


def _claim(deployment: ChainDeployment, limit: int, now: datetime) -> tuple[str, list[RoundCommitment]]:
    """Take the due rows (PENDING and due, or SUBMITTED by a worker gone silent) under a fresh token."""
    stale = now - timedelta(seconds=settings.CPX_SETTLEMENT_SUBMIT_STALE_S)
    due = Q(status=Status.PENDING) & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    due |= Q(status=Status.SUBMITTED, submitted_at__lt=stale)
    ids = list(
        RoundCommitment.objects.filter(due, deployment=deployment)
        .order_by("round_id")
        .values_list("pk", flat=True)[:limit]
    )
    token = uuid.uuid4().hex
    # One UPDATE re-checks `due`: a row another worker took in between is not taken again.
    RoundCommitment.objects.filter(due, pk__in=ids).update(
        status=Status.SUBMITTED, claim=token, attempts=F("attempts") + 1, submitted_at=now
    )
    return token, list(
        RoundCommitment.objects.filter(claim=token, status=Status.SUBMITTED).order_by("round_id")
    )


def _mine(row: RoundCommitment):
    return RoundCommitment.objects.filter(pk=row.pk, status=Status.SUBMITTED, claim=row.claim)


def _recover_from_chain(row: RoundCommitment, client, now: datetime) -> bool:
    """If the chain already holds this round id, record it from the chain and answer True."""
    stored = client.round_commitment(row.round_id)
    if stored == ZERO32:
        return False
    event = client.round_committed(row.round_id) or {}
    ours = round_commitment_of(row.snapshot_sha256, row.result_sha256)
    if stored != ours:
        _mine(row).update(
            status=Status.FAILED,
            error_code="RoundMismatch",
            error=f"the chain holds another commitment for round {row.round_id}: {stored}",
            chain_status=ChainStatus.MISMATCH,
            chain_detail=_detail(row, event),
            chain_checked_at=now,
            tx_hash=event.get("tx_hash", ""),
            block_number=event.get("block_number"),
        )
        return True
    _mine(row).update(
        status=Status.CONFIRMED,
        confirmed_via=RoundCommitment.ConfirmedVia.CHAIN_LOOKUP,
        tx_hash=event.get("tx_hash") or "unknown",
        block_number=event.get("block_number"),
        confirmed_at=now,
        error_code="",
        error="",
        next_attempt_at=None,
    )
    return True


def _detail(row: RoundCommitment, event: dict) -> str:
    if not event:
        return "the chain holds another commitment and no event for it"
    return (
        f"chain snapshot {event['snapshot_sha256'][:16]}… result {event['result_sha256'][:16]}…; "
        f"ours snapshot {row.snapshot_sha256[:16]}… result {row.result_sha256[:16]}…"
    )


def round_commitments_submit(
    *, now: datetime, client: SettlementClient | None = None, max_rounds: int | None = None
) -> RoundCommitRun:
    """Commit the cleared rounds this contract has no commitment for, several per transaction.

    Idempotent: the contract takes each round id once and a row claimed again asks the chain first.
    Raises ChainUnavailable (rows back to PENDING with a backoff) for the caller to retry."""
    client = client or deployments.chain_client()
    deployment = deployment_for(client, now=now)
    limit = settings.CPX_ROUND_COMMIT_BATCH if max_rounds is None else max_rounds
    run = RoundCommitRun()
    _create_rows(deployment, limit, now, run)
    token, rows = _claim(deployment, limit, now)
    if not rows:
        return run
    try:
        to_send = []
        for row in rows:
            if row.attempts > 1 and _recover_from_chain(row, client, now):
                run.recovered += 1
            else:
                to_send.append(row)
        if not to_send:
            return run
        batch = [(row.round_id, row.snapshot_sha256, row.result_sha256) for row in to_send]
        try:
            with signer_lock(client):
                receipt = client.commit_rounds(batch)
        except ChainRejected as error:
            if error.error_name != "RoundAlreadyCommitted":
                run.failed += _fail(to_send, error.error_name, str(error), now)
                return run
            # Someone committed one of them meanwhile: record those from the chain, send the rest later.
            for row in to_send:
                if _recover_from_chain(row, client, now):
                    run.recovered += 1
                else:
                    _mine(row).update(status=Status.PENDING, next_attempt_at=now)
            return run
    except ChainUnavailable as error:
        for row in rows:
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(0, row.attempts - 1))
            _mine(row).update(
                status=Status.PENDING,
                error_code=ChainUnavailable.code,
                error=str(error)[:2000],
                next_attempt_at=now + timedelta(seconds=delay),
            )
        raise
    RoundCommitment.objects.filter(
        pk__in=[r.pk for r in to_send], status=Status.SUBMITTED, claim=token
    ).update(
        status=Status.CONFIRMED,
        confirmed_via=RoundCommitment.ConfirmedVia.RECEIPT,
        tx_hash=receipt["tx_hash"],
        block_number=receipt["block_number"],
        gas_used=receipt["gas_used"],
        rounds_in_tx=len(to_send),
        confirmed_at=now,
        error_code="",
        error="",
        next_attempt_at=None,
    )
    run.sent, run.tx_hash, run.gas_used = len(to_send), receipt["tx_hash"], receipt["gas_used"]
    return run


def _fail(rows: list[RoundCommitment], code: str, message: str, now: datetime) -> int:
    logger.warning("round commitments %s failed: %s %s", [r.round_id for r in rows], code, message)
    failed = 0
    for row in rows:
        failed += _mine(row).update(status=Status.FAILED, error_code=code[:64], error=message[:2000])
    return failed


@dataclass
class RoundReconciliation:
    checked: int = 0
    matched: int = 0
    missing: int = 0
    mismatched: int = 0
    resent: int = 0
    failed: int = 0
    retried: int = 0
    uncommitted: int = 0
    unknown_on_chain: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def round_commitments_reconcile(
    *, now: datetime, client: SettlementClient | None = None, limit: int = 200
) -> RoundReconciliation:
    """Check confirmed commitments against the chain and the database's round now (a rolling audit: the
    `limit` rows checked longest ago, never-checked first); count the cleared rounds with none. A
    CONFIRMED row the chain does not hold goes back to PENDING (sent again, after a look-up); a
    disagreement is recorded MISMATCH and logged: a commitment is never rewritten. Rows FAILED because
    the contract was paused or the signer was not its operator go back to PENDING once that is over."""
    client = client or deployments.chain_client()
    deployment = deployment_for(client, now=now)
    out = RoundReconciliation()
    rows = RoundCommitment.objects.filter(deployment=deployment).select_related("round")
    oldest_checked = F("chain_checked_at").asc(nulls_first=True)
    for row in rows.filter(status=Status.CONFIRMED).order_by(oldest_checked, "round_id")[:limit]:
        out.checked += 1
        stored = client.round_commitment(row.round_id)
        ours = round_commitment_of(row.snapshot_sha256, row.result_sha256)
        now_in_db = (row.round.snapshot_sha256, row.round.result_sha256)
        if stored == ZERO32:
            out.missing += 1
            out.resent += RoundCommitment.objects.filter(pk=row.pk, status=Status.CONFIRMED).update(
                status=Status.PENDING,
                next_attempt_at=now,
                chain_status=ChainStatus.MISSING,
                chain_detail=f"the chain holds no commitment for round {row.round_id} (reorged out?)",
                chain_checked_at=now,
            )
            continue
        if stored != ours:
            verdict, detail = ChainStatus.MISMATCH, _detail(row, client.round_committed(row.round_id) or {})
        elif now_in_db != (row.snapshot_sha256, row.result_sha256) or not _round_is_consistent(row.round):
            verdict = ChainStatus.MISMATCH
            detail = "the database's round changed since it was committed: it no longer hashes to the chain's"
        else:
            verdict, detail = ChainStatus.MATCHED, ""
        if verdict == ChainStatus.MISMATCH:
            out.mismatched += 1
            logger.error("round %s: commitment mismatch: %s", row.round_id, detail)
        else:
            out.matched += 1
        RoundCommitment.objects.filter(pk=row.pk).update(
            chain_status=verdict, chain_detail=detail[:300], chain_checked_at=now
        )
    _scan_round_events(deployment, client, out, now)
    blocked = rows.filter(status=Status.FAILED, error_code__in=BLOCKED)
    if blocked.exists() and not client.view("paused") and client.view("operator") == client.address:
        # The pause is lifted, or this signer is the operator again: what it refused goes again.
        out.retried = blocked.update(status=Status.PENDING, next_attempt_at=now, error_code="", error="")
    out.failed = rows.filter(status=Status.FAILED).count()
    out.uncommitted = (
        Round.objects.filter(status=Round.Status.CLEARED)
        .exclude(chain_commitments__deployment=deployment)
        .count()
    )
    ChainDeployment.objects.filter(pk=deployment.pk).update(reconciled_at=now)
    return out


def _scan_round_events(
    deployment: ChainDeployment, client: SettlementClient, out: RoundReconciliation, now: datetime
) -> None:
    """Read the RoundCommitted events since the deployment's cursor: a commitment CPX's outbox did not
    make (a round id squatted by the operator key, or another database sharing the contract) is
    `unknown_on_chain`; one under a round CPX committed with other hashes marks that row MISMATCH."""
    deployment.refresh_from_db(fields=["round_events_scanned_block"])
    head = client.block_number()
    start = deployment.round_events_scanned_block + 1
    while start <= head:
        end = min(head, start + settings.CHAIN_LOG_RANGE - 1)
        for event in client.events(from_block=start, to_block=end, names=["RoundCommitted"]):
            round_id = int(event["args"]["roundId"])
            hashes = (event["args"]["snapshotHash"][2:], event["args"]["resultHash"][2:])
            ours = RoundCommitment.objects.filter(deployment=deployment, round_id=round_id).first()
            if ours is None:
                out.unknown_on_chain.append(round_id)
                logger.error(
                    "round %s: committed on chain (tx %s) but not by CPX", round_id, event["tx_hash"]
                )
            elif (ours.snapshot_sha256, ours.result_sha256) != hashes:
                RoundCommitment.objects.filter(pk=ours.pk).update(
                    chain_status=ChainStatus.MISMATCH,
                    chain_detail=f"the chain's RoundCommitted (tx {event['tx_hash']}) carries other hashes",
                    chain_checked_at=now,
                )
        ChainDeployment.objects.filter(pk=deployment.pk).update(round_events_scanned_block=end)
        start = end + 1


def round_replay_on_chain(*, round_id: int, client: SettlementClient | None = None) -> dict:
    """The round's replay (auctions.services.rounds.round_replay) with `chain`: what the contract holds
    for the round, compared with the replay's recomputed hashes and the database's stored ones.

    `chain.status`: `match`, `mismatch`, `not_committed`, `unavailable` (the node did not answer) or
    `off` (CPX_SETTLEMENT_ON_CHAIN is off). Raises RoundNotFound."""
    report = round_replay(round_id=round_id)
    if not settings.CPX_SETTLEMENT_ON_CHAIN:
        report["chain"] = {"status": "off"}
        return report
    try:
        client = client or deployments.chain_client()
        stored = client.round_commitment(round_id)
        # Where CPX recorded the commit is only a hint of where to look: the answer is the chain's.
        hint = (
            RoundCommitment.objects.filter(round_id=round_id, block_number__isnull=False)
            .order_by("-id")
            .values_list("block_number", flat=True)
            .first()
        )
        event = client.round_committed(round_id, at_block=hint) if stored != ZERO32 else None
    except (ChainUnavailable, ChainRejected) as error:
        report["chain"] = {"status": "unavailable", "error": str(error)[:300]}
        return report
    if event is None:
        report["chain"] = {"status": "not_committed", "contract": client.contract_address}
        return report
    chain = {
        "contract": client.contract_address,
        "tx_hash": event["tx_hash"],
        "block_number": event["block_number"],
        "snapshot_sha256": event["snapshot_sha256"],
        "result_sha256": event["result_sha256"],
    }
    differences = []
    if stored != round_commitment_of(event["snapshot_sha256"], event["result_sha256"]):
        differences.append("the stored commitment is not the event's hashes")
    if event["snapshot_sha256"] != report["recomputed_snapshot_sha256"]:
        differences.append("snapshot: the published snapshot does not hash to the committed one")
    if event["result_sha256"] != report["recomputed_result_sha256"]:
        differences.append("result: the replay's result does not hash to the committed one")
    if event["result_sha256"] != report["stored_result_sha256"]:
        differences.append("result: the database's stored result does not hash to the committed one")
    chain["status"] = "mismatch" if differences else "match"
    if differences:
        chain["differences"] = differences
    report["chain"] = chain
    return report
