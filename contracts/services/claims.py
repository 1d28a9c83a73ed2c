"""Claims relayed for payees whose wallets hold no keys (the demo): one multiproof per payee."""

from __future__ import annotations

from collections import defaultdict

from contracts.client import SettlementClient
from contracts.models import SettlementBatch
from contracts.services import deployment as deployments
from contracts.services.batches import BatchNotFound, Status, batch_tree


def settlement_claims_relay(*, batch_id: int, client: SettlementClient | None = None) -> dict:
    """Claim every unclaimed leaf of a CONFIRMED batch for its payee (anyone may relay a claim; the
    contract pays the leaf's provider address, never the sender): one multiproof per payee.

    Used by the demo, where providers' wallets have no keys. Raises ChainUnavailable, ChainRejected.
    """
    client = client or deployments.chain_client()
    batch = SettlementBatch.objects.filter(pk=batch_id, status=Status.CONFIRMED).first()
    if batch is None:
        raise BatchNotFound("No such confirmed settlement batch.", batch=batch_id)
    tree = batch_tree(batch)
    by_payee: dict[str, list[int]] = defaultdict(list)
    for index, leaf in enumerate(tree.leaves):
        if not client.claimed_of(batch.batch_key, leaf.lease_id)["provider"]:
            by_payee[leaf.provider].append(index)
    txs = []
    for indices in by_payee.values():
        leaves, proof, flags = tree.multiproof(indices)
        txs.append(client.claim_many(batch.batch_key, leaves, proof, flags)["tx_hash"])
    return {"batch": batch.pk, "claims": len(txs), "leaves": sum(map(len, by_payee.values())), "txs": txs}
