"""The reconciler: `settlement_reconcile` reads ALL of the contract's events (by topic, over ranges of
CHAIN_LOG_RANGE blocks, from the cursor stored on the deployment), records what each batch and lease saw
on chain, flags what the database cannot account for (ReconciliationIssue), and sets each batched
lease's status: MATCHED, PENDING, MISSING_ON_CHAIN, AMOUNT_MISMATCH or CLAWED_BACK.

Money leaving the contract for a consumer is never MATCHED: a `LeafReclaimed` (the consumer took a
provider's unclaimed payment back after the claim window) marks its lease CLAWED_BACK with an
UNKNOWN_ON_CHAIN issue — resolution: the provider was paid in the ledger, so the platform either pays
it on chain again in a later batch or recovers the amount from the consumer's ledger balance; a
`Reclaimed` (the consumer withdrew its whole escrow) is an ESCROW_RECLAIMED issue: its leases not yet
committed are left out of batches until its escrow covers them again (contracts.services.batches)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from eth_utils import to_checksum_address

from contracts.client import SettlementClient
from contracts.models import ChainDeployment, ReconciliationIssue, SettlementBatch, SettlementLease
from contracts.services import deployment as deployments
from contracts.services.deployment import deployment_for
from contracts.services.money import FEE_LEAF_BASE, from_wei, lease_ledger_amounts, to_wei

Status = SettlementBatch.Status
Recon = SettlementLease.Recon


def _issue(
    deployment: ChainDeployment,
    kind: str,
    key: str,
    detail: str,
    now: datetime,
    *,
    batch: SettlementBatch | None = None,
) -> None:
    try:
        with transaction.atomic():
            issue, created = ReconciliationIssue.objects.get_or_create(
                deployment=deployment,
                kind=kind,
                key=key[:160],
                defaults={"detail": detail[:400], "batch": batch, "first_seen_at": now, "last_seen_at": now},
            )
    except IntegrityError:
        issue, created = (
            ReconciliationIssue.objects.get(deployment=deployment, kind=kind, key=key[:160]),
            False,
        )
    if not created:
        ReconciliationIssue.objects.filter(pk=issue.pk).update(
            detail=detail[:400], last_seen_at=now, resolved_at=None
        )


def _resolve(deployment: ChainDeployment, kind: str, key: str, now: datetime) -> None:
    ReconciliationIssue.objects.filter(
        deployment=deployment, kind=kind, key=key[:160], resolved_at__isnull=True
    ).update(resolved_at=now)


@dataclass
class Reconciliation:
    scanned_to: int
    events: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    open_issues: int = 0

    def as_dict(self) -> dict:
        return {
            "scanned_to": self.scanned_to,
            "events": self.events,
            "leases": dict(sorted(self.by_status.items())),
            "open_issues": self.open_issues,
        }


EVENTS = [
    "BatchCommitted",
    "EscrowDebited",
    "Claimed",
    "LeaseSettled",
    "DirectSettled",
    "RefundClaimed",
    "LeafReclaimed",
    "Reclaimed",
    "Refunded",
    "Deposited",
    "WindowsSet",
    "Parked",
    "Withdrawn",
]
# Not about one batch (Parked/Withdrawn: a SettlementV2 payee's payment held for `withdraw`).
_ACCOUNT_EVENTS = {"Reclaimed", "Refunded", "Deposited", "WindowsSet", "Parked", "Withdrawn"}


def settlement_reconcile(*, now: datetime, client: SettlementClient | None = None) -> Reconciliation:
    """Compare the chain's events with the ledger, per lease, for the current contract.

    Reads events since the last block it read; records per batch what the chain committed and debited,
    per lease whether its leaves were claimed; flags batches and leases the database cannot account for;
    then sets every batched lease's status from the ledger (its transfers now) and the chain (the batch's
    committed root). Raises ChainUnavailable (retry).
    """
    client = client or deployments.chain_client()
    deployment = deployment_for(client, now=now)
    head = client.block_number()
    batches = {b.batch_key: b for b in deployment.batches.all()}
    changed: dict[int, SettlementBatch] = {}
    claims: list[tuple[str, int, str]] = []  # (batch key, leaf id, tx)
    credit_claims: list[tuple[str, str, str]] = []  # SettlementV2: (batch key, payee, tx)
    debits: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # read in this pass
    clawed: list[tuple[str, int, str]] = []  # (batch key, lease id, tx)
    result = Reconciliation(scanned_to=head)
    start = deployment.events_scanned_block + 1
    while start <= head:
        end = min(head, start + settings.CHAIN_LOG_RANGE - 1)
        for event in client.events(from_block=start, to_block=end, names=EVENTS):
            result.events += 1
            args = event["args"]
            if event["event"] in _ACCOUNT_EVENTS:
                _account_event(deployment, event, now)
                continue
            key = args.get("batchId", "")
            batch = batches.get(key)
            if batch is None:
                _issue(
                    deployment,
                    ReconciliationIssue.Kind.UNKNOWN_BATCH,
                    key,
                    f"{event['event']} in tx {event['tx_hash']} for a batch CPX did not create",
                    now,
                )
                continue
            if event["event"] == "BatchCommitted":
                total = args["total"] if "total" in args else args["debited"]  # Settlement / SettlementV2
                batch.chain_seen, batch.chain_root, batch.chain_total_wei = True, args["root"], total
            elif event["event"] == "EscrowDebited":
                # SettlementV2 debits once per order, so a consumer may have several in one batch.
                consumer = args["consumer"]
                debits[batch.pk][consumer] += int(args["amount"])
                batch.chain_debits = {**batch.chain_debits, consumer: str(debits[batch.pk][consumer])}
            elif event["event"] == "Claimed" and "payee" in args:
                credit_claims.append((key, args["payee"], event["tx_hash"]))
            elif event["event"] == "Claimed":
                claims += [(key, int(leaf_id), event["tx_hash"]) for leaf_id in args["leaseIds"]]
            elif event["event"] == "LeafReclaimed":
                clawed.append((key, int(args["leaseId"]), event["tx_hash"]))
            elif event["event"] == "RefundClaimed":
                pass  # CPX commits no refund leaves; a refund claim under our key has nothing to record
            else:  # CPX commits Merkle batches only: a direct settlement under our key is foreign
                _issue(
                    deployment,
                    ReconciliationIssue.Kind.UNKNOWN_ON_CHAIN,
                    f"{key}:{event['event']}:{event['tx_hash']}",
                    f"{event['event']} under a Merkle batch's key",
                    now,
                    batch=batch,
                )
            changed[batch.pk] = batch
        start = end + 1
    with transaction.atomic():
        for batch in changed.values():
            batch.save(update_fields=["chain_seen", "chain_root", "chain_total_wei", "chain_debits"])
        _record_claims(deployment, batches, claims, now)
        _record_credit_claims(deployment, batches, credit_claims)
        _record_claw_backs(deployment, batches, clawed, now)
        ChainDeployment.objects.filter(pk=deployment.pk).update(
            events_scanned_block=max(head, deployment.events_scanned_block), reconciled_at=now
        )
        result.by_status = _lease_statuses(deployment, now)
    result.open_issues = deployment.issues.filter(resolved_at__isnull=True).count()
    return result


def _record_claims(deployment, batches, claims, now) -> None:
    for key, leaf_id, tx_hash in claims:
        batch = batches[key]
        is_fee = leaf_id >= FEE_LEAF_BASE
        lease_id = leaf_id - FEE_LEAF_BASE if is_fee else leaf_id
        rows = SettlementLease.objects.filter(batch=batch, lease_id=lease_id)
        updated = (
            rows.update(fee_claimed=True)
            if is_fee
            else rows.update(provider_claimed=True, provider_claim_tx=tx_hash)
        )
        if not updated:
            _issue(
                deployment,
                ReconciliationIssue.Kind.UNKNOWN_ON_CHAIN,
                f"{key}:{leaf_id}",
                f"leaf {leaf_id} claimed in tx {tx_hash} is not a lease of batch {batch.pk}",
                now,
                batch=batch,
            )


def _record_credit_claims(deployment, batches, claims) -> None:
    """A SettlementV2 claim pays the payee everything credited up to its batch: every lease of that batch
    and the earlier ones crediting the payee is claimed (its provider payment, or the platform's fee)."""
    for key, payee, tx_hash in claims:
        upto = SettlementLease.objects.filter(batch__deployment=deployment, batch__pk__lte=batches[key].pk)
        upto.filter(provider_address=payee, provider_claimed=False).update(
            provider_claimed=True, provider_claim_tx=tx_hash
        )
        upto.filter(fee_address=payee, fee_claimed=False).update(fee_claimed=True)


def _account_event(deployment: ChainDeployment, event: dict, now: datetime) -> None:
    """Escrow leaving for its consumer outside any batch: a reclaim is an issue (its leases wait)."""
    if event["event"] == "Reclaimed":
        consumer = event["args"]["consumer"]
        _issue(
            deployment,
            ReconciliationIssue.Kind.ESCROW_RECLAIMED,
            f"{consumer}:{event['tx_hash']}",
            f"{consumer} reclaimed {event['args']['amount']} wei of escrow in tx {event['tx_hash']}: its "
            "leases not yet committed stay out of batches until a deposit covers them again",
            now,
        )


def _record_claw_backs(deployment, batches, clawed, now) -> None:
    for key, leaf_id, tx_hash in clawed:
        batch = batches[key]
        lease_id = leaf_id - FEE_LEAF_BASE if leaf_id >= FEE_LEAF_BASE else leaf_id
        SettlementLease.objects.filter(batch=batch, lease_id=lease_id).update(clawed_back_tx=tx_hash)
        _issue(
            deployment,
            ReconciliationIssue.Kind.UNKNOWN_ON_CHAIN,
            f"{key}:{leaf_id}:clawed",
            f"leaf {leaf_id} of batch {batch.pk} was taken back by its consumer in tx {tx_hash}: the ledger "
            "paid the provider; pay it again on chain or recover the amount from the consumer's balance",
            now,
            batch=batch,
        )


def _lease_statuses(deployment: ChainDeployment, now: datetime) -> dict[str, int]:
    rows = list(SettlementLease.objects.filter(batch__deployment=deployment).select_related("batch"))
    ledger = lease_ledger_amounts([row.lease_id for row in rows])
    counts: dict[str, int] = defaultdict(int)
    debits: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        batch = row.batch
        debits[batch.pk][row.consumer_address] += int(row.provider_wei + row.fee_wei + row.refund_wei)
        payment, fee = ledger[row.lease_id]
        if batch.status == Status.FAILED:
            status, detail = Recon.MISSING_ON_CHAIN, f"batch {batch.pk} failed: {batch.error_code}"
        elif batch.status != Status.CONFIRMED:
            # On chain but not recorded yet is a send whose outcome was lost: the next submit records it.
            status, detail = Recon.PENDING, "on chain, not yet recorded" if batch.chain_seen else ""
        elif not batch.chain_seen:
            status, detail = Recon.MISSING_ON_CHAIN, "confirmed, but no BatchCommitted event on chain"
        elif batch.chain_root != batch.merkle_root:
            status, detail = Recon.MISSING_ON_CHAIN, f"the chain committed another root: {batch.chain_root}"
        elif row.clawed_back_tx:
            status, detail = Recon.CLAWED_BACK, f"taken back by the consumer in tx {row.clawed_back_tx}"
        elif (to_wei(payment), to_wei(fee)) != (int(row.provider_wei), int(row.fee_wei)):
            status = Recon.AMOUNT_MISMATCH
            detail = (
                f"ledger payment {payment} / fee {fee}; on chain {from_wei(int(row.provider_wei))[0]}"
                f" / {from_wei(int(row.fee_wei))[0]}"
            )
        else:
            status, detail = Recon.MATCHED, ""
        counts[status] += 1
        if (row.recon_status, row.recon_detail) != (status, detail) or row.reconciled_at is None:
            row.recon_status, row.recon_detail, row.reconciled_at = status, detail[:300], now
        else:
            row.reconciled_at = now
    SettlementLease.objects.bulk_update(
        rows, ["recon_status", "recon_detail", "reconciled_at"], batch_size=500
    )
    for batch in deployment.batches.all():
        if not batch.chain_seen:
            if batch.status == Status.CONFIRMED:
                _issue(
                    deployment,
                    ReconciliationIssue.Kind.MISSING_ON_CHAIN,
                    batch.batch_key,
                    f"batch {batch.pk} is confirmed (tx {batch.tx_hash}) but the chain shows no commit",
                    now,
                    batch=batch,
                )
            continue
        _resolve(deployment, ReconciliationIssue.Kind.MISSING_ON_CHAIN, batch.batch_key, now)
        chain = {to_checksum_address(k): int(v) for k, v in batch.chain_debits.items()}
        ours = dict(debits[batch.pk])
        if chain != ours:
            _issue(
                deployment,
                ReconciliationIssue.Kind.DEBIT_MISMATCH,
                batch.batch_key,
                f"escrow debited on chain {chain} ≠ the batch's leaves {ours}",
                now,
                batch=batch,
            )
        else:
            _resolve(deployment, ReconciliationIssue.Kind.DEBIT_MISMATCH, batch.batch_key, now)
    return dict(counts)
