"""Reads of on-chain settlement for the API and the pages: a fixed number of queries per call."""

from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum

from auctions.models import Lease
from contracts.merkle import CreditTree
from contracts.models import (
    ChainDeposit,
    ReconciliationIssue,
    RoundCommitment,
    SettlementBatch,
    SettlementLease,
)
from contracts.services import FEE_LEAF_BASE, batch_credits, batch_tree, is_credit_batch
from market.models import Provider


def batch_list(*, status: str | None = None) -> QuerySet[SettlementBatch]:
    batches = SettlementBatch.objects.select_related("deployment").annotate(
        matched=Count("settled_leases", filter=Q(settled_leases__recon_status=SettlementLease.Recon.MATCHED)),
        differing=Count(
            "settled_leases",
            filter=Q(
                settled_leases__recon_status__in=[
                    SettlementLease.Recon.MISSING_ON_CHAIN,
                    SettlementLease.Recon.AMOUNT_MISMATCH,
                ]
            ),
        ),
    )
    if status:
        batches = batches.filter(status=status)
    return batches.order_by("-created_at", "-id")


def batch_get(*, batch_id: int) -> SettlementBatch | None:
    return SettlementBatch.objects.select_related("deployment").filter(pk=batch_id).first()


def batch_leases(*, batch: SettlementBatch) -> QuerySet[SettlementLease]:
    return batch.settled_leases.select_related("lease__job", "lease__provider").order_by("lease_id")


def batch_issues(*, batch: SettlementBatch) -> QuerySet[ReconciliationIssue]:
    return batch.issues.order_by("-last_seen_at")


def open_issues(*, limit: int = 50) -> list[ReconciliationIssue]:
    return list(
        ReconciliationIssue.objects.filter(resolved_at__isnull=True)
        .select_related("batch")
        .order_by("-last_seen_at")[:limit]
    )


def settlement_overview() -> dict:
    """Counts for the dashboard's tiles: batches by status, leases by reconciliation status, what waits."""
    by_status = dict(SettlementBatch.objects.values_list("status").annotate(n=Count("id")).order_by())
    recon = dict(SettlementLease.objects.values_list("recon_status").annotate(n=Count("id")).order_by())
    gas = SettlementBatch.objects.filter(status=SettlementBatch.Status.CONFIRMED).aggregate(
        gas=Sum("gas_used"), leases=Sum("lease_count")
    )
    unbatched = Lease.objects.filter(status=Lease.Status.COMPLETED, chain_settlement__isnull=True).aggregate(
        total=Count("id"), with_wallet=Count("id", filter=Q(job__consumer__chain_wallet__isnull=False))
    )
    deposits = ChainDeposit.objects.aggregate(
        credited=Count("id", filter=Q(status=ChainDeposit.Status.CREDITED)),
        unmatched=Count("id", filter=Q(status=ChainDeposit.Status.UNMATCHED)),
        amount=Sum("amount", filter=Q(status=ChainDeposit.Status.CREDITED)),
    )
    return {
        "batches": {s: by_status.get(s, 0) for s in SettlementBatch.Status.values},
        "batches_total": sum(by_status.values()),
        "leases": {s: recon.get(s, 0) for s in SettlementLease.Recon.values},
        "leases_total": sum(recon.values()),
        "gas_per_lease": (gas["gas"] / gas["leases"]) if gas["gas"] and gas["leases"] else None,
        "unbatched": unbatched["total"],
        "unbatched_with_wallet": unbatched["with_wallet"],
        "unbatched_ledger_only": unbatched["total"] - unbatched["with_wallet"],
        "deposits": deposits,
        "open_issues": ReconciliationIssue.objects.filter(resolved_at__isnull=True).count(),
    }


def lease_chain_status(*, lease_ids) -> dict[int, dict]:
    """Per lease id, its on-chain settlement as a consumer or provider sees it (absent: not batched)."""
    rows = SettlementLease.objects.filter(lease_id__in=list(lease_ids)).select_related("batch")
    return {row.lease_id: lease_chain_fields(row) for row in rows}


def lease_chain_fields(row: SettlementLease) -> dict:
    return {
        "batch": row.batch_id,
        "batch_key": row.batch.batch_key,
        "batch_status": row.batch.status,
        "tx_hash": row.batch.tx_hash or None,
        "reconciliation": row.recon_status,
        "provider_claimed": row.provider_claimed,
    }


def provider_proofs(
    *, provider: Provider, batch_id: int | None = None, include_claimed: bool = False
) -> list[dict]:
    """The provider's leaves in CONFIRMED batches, each with its Merkle proof, ready for `claim`
    (and grouped per batch, with a multiproof for `claimMany`). Amounts are strings of wei; each leaf's
    `amount` is the ledger payment it carries (a Decimal string)."""
    rows = SettlementLease.objects.filter(
        lease__provider=provider, batch__status=SettlementBatch.Status.CONFIRMED, provider_wei__gt=0
    ).select_related("batch__deployment")
    if batch_id is not None:
        rows = rows.filter(batch_id=batch_id)
    if not include_claimed:
        rows = rows.filter(provider_claimed=False)
    by_batch: dict[int, list[SettlementLease]] = {}
    by_credit_contract: dict[int, list[SettlementLease]] = {}
    for row in rows.order_by("batch_id", "lease_id"):
        if is_credit_batch(row.batch):
            by_credit_contract.setdefault(row.batch.deployment_id, []).append(row)
        else:
            by_batch.setdefault(row.batch_id, []).append(row)
    out = [_cumulative_claim(rows_of_contract) for rows_of_contract in by_credit_contract.values()]
    for rows_of_batch in by_batch.values():
        batch = rows_of_batch[0].batch
        tree = batch_tree(batch)
        position = {leaf.lease_id: i for i, leaf in enumerate(tree.leaves)}
        indices = [position[row.lease_id] for row in rows_of_batch if row.lease_id in position]
        leaves, multi, flags = tree.multiproof(indices)
        out.append(
            {
                "batch": batch.pk,
                "batch_key": batch.batch_key,
                "merkle_root": batch.merkle_root,
                "contract": batch.deployment.address,
                "tx_hash": batch.tx_hash,
                "leaves": [
                    {
                        "lease": row.lease_id,
                        "amount": str(row.provider_amount),
                        "leaf": _leaf_dict(tree.leaves[position[row.lease_id]]),
                        "proof": ["0x" + p.hex() for p in tree.proof(position[row.lease_id])],
                        "claimed": row.provider_claimed,
                    }
                    for row in rows_of_batch
                ],
                "multiproof": {
                    "leaves": [_leaf_dict(leaf) for leaf in leaves],
                    "proof": ["0x" + p.hex() for p in multi],
                    "flags": flags,
                },
            }
        )
    return out


def _cumulative_claim(rows: list[SettlementLease]) -> dict:
    """SettlementV2: one claim pays every unclaimed lease of the provider on that contract, against the
    newest confirmed batch crediting its wallet (its cumulative earnings there, with that batch's proof):
    `claim(batch_key, payee, cumulative_wei, proof)`. The leases are listed for the console."""
    payee = rows[-1].provider_address
    newest = (
        SettlementBatch.objects.filter(
            deployment_id=rows[-1].batch.deployment_id,
            status=SettlementBatch.Status.CONFIRMED,
            settled_leases__provider_address=payee,
        )
        .select_related("deployment")
        .order_by("-pk")
        .first()
    )
    tree = CreditTree(batch_credits(newest))
    return {
        "batch": newest.pk,
        "batch_key": newest.batch_key,
        "merkle_root": newest.merkle_root,
        "contract": newest.deployment.address,
        "tx_hash": newest.tx_hash,
        "kind": "cumulative",
        "credit": {
            "payee": payee,
            "cumulative_wei": str(tree.cumulative(payee)),
            "proof": ["0x" + p.hex() for p in tree.proof(payee)],
        },
        "leaves": [
            {
                "lease": row.lease_id,
                "amount": str(row.provider_amount),
                "leaf": {
                    "lease_id": str(row.lease_id),
                    "provider": payee,
                    "amount_wei": str(row.provider_wei),
                },
                "proof": [],
                "claimed": row.provider_claimed,
            }
            for row in rows
        ],
        "multiproof": None,
    }


def provider_proofs_document(
    *, provider: Provider, batch_id: int | None = None, include_claimed: bool = False
) -> dict:
    """The proofs document of `GET /api/v1/provider/proofs` (and the console's `proofs.json`)."""
    results = provider_proofs(provider=provider, batch_id=batch_id, include_claimed=include_claimed)
    return {"count": len(results), "results": results}


def provider_claimable(*, provider: Provider) -> dict:
    """What the provider can claim on chain now, for its console: the unclaimed leaves of confirmed
    batches (`provider_proofs`, proofs included) with totals in ledger units and wei, and its wallet."""
    batches = provider_proofs(provider=provider)
    leaves = [item for group in batches for item in group["leaves"]]
    return {
        "wallet": provider.wallet_address,
        "batches": batches,
        "contracts": sorted({group["contract"] for group in batches}),
        "leaf_count": len(leaves),
        "total": sum((Decimal(item["amount"]) for item in leaves), Decimal(0)),
        "total_wei": sum(int(item["leaf"]["amount_wei"]) for item in leaves),
    }


def _leaf_dict(leaf) -> dict:
    return {
        "lease_id": str(leaf.lease_id),
        "consumer": leaf.consumer,
        "provider": leaf.provider,
        "amount_wei": str(leaf.amount_wei),
        "refund_wei": str(leaf.refund_wei),
        "fee_leaf": leaf.lease_id >= FEE_LEAF_BASE,
    }


def round_commitment_document(*, round_id: int) -> dict | None:
    """The round's on-chain commitment as the round API shows it (its newest row: normally the one
    contract CPX talks to), or None when no commitment was made for it. One query."""
    row = (
        RoundCommitment.objects.filter(round_id=round_id)
        .select_related("deployment")
        .order_by("-created_at", "-id")
        .first()
    )
    if row is None:
        return None
    return {
        "status": row.status,
        "contract": row.deployment.address,
        "network": row.deployment.network,
        "snapshot_sha256": row.snapshot_sha256,
        "result_sha256": row.result_sha256,
        "tx_hash": row.tx_hash or None,
        "block_number": row.block_number,
        "rounds_in_tx": row.rounds_in_tx,
        "gas_used": row.gas_used,
        "chain_status": row.chain_status,
        "chain_detail": row.chain_detail,
        "error": row.error_code or None,
    }
