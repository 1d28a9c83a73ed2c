"""Claims relayed for payees: for providers whose wallets hold no keys (the demo), and the platform's own
fee leaves (`settlement_fees_claim`, a beat task), one multiproof per payee per batch."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from django.conf import settings

from contracts.client import ChainRejected, SettlementClient
from contracts.merkle import CreditTree
from contracts.models import SettlementBatch, SettlementLease
from contracts.services import deployment as deployments
from contracts.services.batches import (
    BatchNotFound,
    Status,
    batch_credits,
    batch_tree,
    is_credit_batch,
    is_credit_contract,
)
from contracts.services.deployment import checked_address, deployment_for, signer_lock
from contracts.services.money import FEE_LEAF_BASE


def settlement_claims_relay(*, batch_id: int, client: SettlementClient | None = None) -> dict:
    """Claim every unclaimed leaf of a CONFIRMED batch for its payee (anyone may relay a claim; the
    contract pays the leaf's provider address, never the sender): one multiproof per payee.

    Used by the demo, where providers' wallets have no keys. Raises ChainUnavailable, ChainRejected.
    """
    client = client or deployments.chain_client()
    batch = SettlementBatch.objects.filter(pk=batch_id, status=Status.CONFIRMED).first()
    if batch is None:
        raise BatchNotFound("No such confirmed settlement batch.", batch=batch_id)
    if is_credit_batch(batch):
        return _relay_credits(batch, client)
    tree = batch_tree(batch)
    by_payee: dict[str, list[int]] = defaultdict(list)
    for index, leaf in enumerate(tree.leaves):
        if not client.claimed_of(batch.batch_key, leaf.lease_id)["provider"]:
            by_payee[leaf.provider].append(index)
    txs = []
    with signer_lock(client):
        for indices in by_payee.values():
            leaves, proof, flags = tree.multiproof(indices)
            txs.append(client.claim_many(batch.batch_key, leaves, proof, flags)["tx_hash"])
    return {"batch": batch.pk, "claims": len(txs), "leaves": sum(map(len, by_payee.values())), "txs": txs}


def settlement_fees_claim(*, now: datetime, client: SettlementClient | None = None) -> dict:
    """Claim the platform's unclaimed fee leaves of every confirmed batch still inside its claim window,
    one multiproof per batch (a beat task): fee revenue no longer lapses to consumers after the window.

    A leaf already claimed on chain (by an earlier run or anyone relaying) is skipped. Raises
    ChainUnavailable (retry); a batch the chain refuses is reported and left for the next run."""
    client = client or deployments.chain_client()
    deployment = deployment_for(client, now=now)
    fee_address = checked_address(
        settings.CHAIN_FEE_ADDRESS or client.address, field_name="CHAIN_FEE_ADDRESS"
    )
    if is_credit_contract(client):
        return _claim_fee_credit(deployment, fee_address, client)
    chain_now = client.now()
    open_batches = (
        SettlementBatch.objects.filter(deployment=deployment, status=Status.CONFIRMED)
        .filter(settled_leases__fee_claimed=False, settled_leases__fee_wei__gt=0)
        .distinct()
        .order_by("pk")
    )
    report = {"batches": 0, "leaves": 0, "txs": [], "refused": []}
    for batch in open_batches:
        status = client.batch_status(batch.batch_key)
        if not status["settled"] or status["claim_deadline"] < chain_now:
            continue
        tree = batch_tree(batch)
        mine = [
            i
            for i, leaf in enumerate(tree.leaves)
            if leaf.provider == fee_address
            and leaf.lease_id >= FEE_LEAF_BASE
            and not client.claimed_of(batch.batch_key, leaf.lease_id)["provider"]
        ]
        if mine:
            leaves, proof, flags = tree.multiproof(mine)
            try:
                with signer_lock(client):
                    receipt = client.claim_many(batch.batch_key, leaves, proof, flags)
            except ChainRejected as error:
                report["refused"].append({"batch": batch.pk, "error": error.error_name})
                continue
            report["txs"].append(receipt["tx_hash"])
            report["leaves"] += len(mine)
        report["batches"] += 1
        lease_ids = [leaf.lease_id - FEE_LEAF_BASE for leaf in tree.leaves if leaf.lease_id >= FEE_LEAF_BASE]
        SettlementLease.objects.filter(batch=batch, lease_id__in=lease_ids).update(fee_claimed=True)
    return report


def _relay_credits(batch: SettlementBatch, client: SettlementClient) -> dict:
    """SettlementV2: one claimMany for every payee of the batch still owed part of its cumulative total
    (one claim pays all its earlier batches too; a payee paid meanwhile is skipped by the contract)."""
    credits = batch_credits(batch)
    tree = CreditTree(credits)
    owed = [(p, c) for p, c in credits if c > client.claimed_wei(p)]
    txs = []
    if owed:
        with signer_lock(client):
            receipt = client.claim_credits([(batch.batch_key, p, c, tree.proof(p)) for p, c in owed])
        txs.append(receipt["tx_hash"])
    return {"batch": batch.pk, "claims": len(owed), "leaves": len(owed), "txs": txs}


def _claim_fee_credit(deployment, fee_address: str, client: SettlementClient) -> dict:
    """SettlementV2: the platform claims its cumulative fees once, against the newest confirmed batch
    that credits it (a single claim, whatever the number of batches since the last one)."""
    report = {"batches": 0, "leaves": 0, "txs": [], "refused": []}
    newest = None
    for batch in (
        SettlementBatch.objects.filter(deployment=deployment, status=Status.CONFIRMED)
        .filter(settled_leases__fee_address=fee_address, settled_leases__fee_wei__gt=0)
        .distinct()
        .order_by("-pk")
    ):
        newest = batch
        break
    if newest is None:
        return report
    credits = batch_credits(newest)
    tree = CreditTree(credits)
    cumulative = tree.cumulative(fee_address)
    if cumulative > client.claimed_wei(fee_address):
        try:
            with signer_lock(client):
                proof = tree.proof(fee_address)
                receipt = client.claim_credit(newest.batch_key, fee_address, cumulative, proof)
        except ChainRejected as error:
            report["refused"].append({"batch": newest.pk, "error": error.error_name})
            return report
        report["txs"].append(receipt["tx_hash"])
        report["leaves"] = 1
    report["batches"] = 1
    SettlementLease.objects.filter(
        batch__deployment=deployment, batch__pk__lte=newest.pk, fee_address=fee_address
    ).update(fee_claimed=True)
    return report
