"""Settlement batches, the outbox: `settlement_batch_create` groups ledger-settled leases into a PENDING
batch, `settlement_batch_submit` sends it outside any database transaction and records the outcome, and
`settlement_batch_retry` sends a FAILED one again (the states: contracts.services' docstring)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from eth_utils import is_address, keccak, to_checksum_address

from auctions.models import Lease
from config.errors import Conflict, InvalidInput, NotFound
from contracts.client import ChainRejected, ChainUnavailable, SettlementClient
from contracts.merkle import CreditTree, Leaf, MerkleTree
from contracts.models import (
    ChainDeployment,
    ChainDeposit,
    ReconciliationIssue,
    SettlementBatch,
    SettlementLease,
    SettlementOrder,
)
from contracts.orders import Order
from contracts.services import deployment as deployments
from contracts.services.deployment import _network, checked_address, deployment_for, signer_lock
from contracts.services.money import FEE_LEAF_BASE, lease_ledger_amounts, to_wei
from contracts.services.reconcile import _issue

logger = logging.getLogger(__name__)

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
SCAN_FACTOR = 20  # candidates read per batch slot before giving up for this run
BACKOFF_BASE_S = 5
BACKOFF_MAX_S = 600
Status = SettlementBatch.Status


class BatchNotFound(NotFound):
    code = "settlement_batch_not_found"


class BatchNotRetryable(Conflict):
    code = "settlement_batch_not_retryable"


def batch_key_for(deployment: ChainDeployment, lease_ids: list[int]) -> str:
    """The bytes32 id of a batch: keccak of the chain, the contract and the sorted lease ids."""
    text = f"cpx-settlement|{deployment.network}|{deployment.address}|{','.join(map(str, sorted(lease_ids)))}"
    return "0x" + keccak(text=text).hex()


def batch_leaves(batch: SettlementBatch) -> list[Leaf]:
    return [Leaf(int(i), c, p, int(a), int(r)) for i, c, p, a, r in batch.leaves]


_TREES: dict[str, MerkleTree] = {}


def batch_tree(batch: SettlementBatch) -> MerkleTree:
    """The batch's Merkle tree, rebuilt from its stored leaves (a few per process are kept)."""
    tree = _TREES.get(batch.batch_key)
    if tree is None or tree.root_hex != batch.merkle_root:
        tree = MerkleTree(batch_leaves(batch))
        if len(_TREES) > 32:
            _TREES.clear()
        _TREES[batch.batch_key] = tree
    return tree


def _escrow_available(
    deployment: ChainDeployment, addresses: set[str], client: SettlementClient
) -> dict[str, int]:
    """Per consumer address, what the next batch may take from its escrow: the escrow the CHAIN holds
    now (after any reclaim, refund or claw-back the database never saw) less what this contract's batches
    not yet on chain will take, and never more than its credited deposits less everything batched."""
    deposited = (
        deployment.deposits.filter(status=ChainDeposit.Status.CREDITED, address__in=addresses)
        .values("address")
        .annotate(total=Sum("amount_wei"))
    )
    charge = F("provider_wei") + F("fee_wei") + F("refund_wei")
    committed = (
        SettlementLease.objects.filter(batch__deployment=deployment, consumer_address__in=addresses)
        .values("consumer_address")
        .annotate(total=Sum(charge))
    )
    in_flight = (
        SettlementLease.objects.filter(
            batch__deployment=deployment,
            consumer_address__in=addresses,
            batch__status__in=[Status.PENDING, Status.SUBMITTED, Status.FAILED],
        )
        .values("consumer_address")
        .annotate(total=Sum(charge))
    )
    by_ledger = {a: 0 for a in addresses}
    for row in deposited:
        by_ledger[row["address"]] += int(row["total"])
    for row in committed:
        by_ledger[row["consumer_address"]] -= int(row["total"])
    by_chain = {a: client.escrow_of(a)["escrow_wei"] for a in addresses}
    for row in in_flight:
        by_chain[row["consumer_address"]] -= int(row["total"])
    return {a: min(by_ledger[a], by_chain[a]) for a in addresses}


def _drop_uncovered(
    batch: SettlementBatch, client: SettlementClient, now: datetime
) -> SettlementBatch | None:
    """Before a batch's first send: take out the leases of any consumer whose on-chain escrow no longer
    covers its debit (it reclaimed since the batch was made), so one consumer cannot make the whole batch
    revert with InsufficientEscrow. Their leases go back to the queue (an ESCROW_RECLAIMED issue says
    why). Returns the batch (rebuilt if it changed), or None when every consumer is short (the batch is
    then failed as it stands, for an operator retry once the escrow is back)."""
    tree = batch_tree(batch)
    short = {
        consumer
        for consumer, debit in tree.debits().items()
        if client.escrow_of(consumer)["escrow_wei"] < debit
    }
    if not short:
        return batch
    if short == set(tree.debits()):
        return None
    for consumer in short:
        _issue(
            batch.deployment,
            ReconciliationIssue.Kind.ESCROW_RECLAIMED,
            f"{consumer}:batch:{batch.batch_key}",
            f"{consumer}'s escrow no longer covers its leases in batch {batch.pk}: they were taken out "
            "and wait for a deposit",
            now,
            batch=batch,
        )
    kept = [leaf for leaf in tree.leaves if leaf.consumer not in short]
    with transaction.atomic():
        SettlementLease.objects.filter(batch=batch, consumer_address__in=short).delete()
        rows = list(SettlementLease.objects.filter(batch=batch))
        new_tree = MerkleTree(kept)
        SettlementBatch.objects.filter(pk=batch.pk).update(
            batch_key=batch_key_for(batch.deployment, [row.lease_id for row in rows]),
            merkle_root=new_tree.root_hex,
            leaves=[
                [str(x.lease_id), x.consumer, x.provider, str(x.amount_wei), str(x.refund_wei)] for x in kept
            ],
            leaf_count=len(kept),
            lease_count=len(rows),
            total_wei=sum(x.debit_wei for x in kept),
            total=sum((row.provider_amount + row.fee_amount for row in rows), Decimal(0)),
        )
    batch.refresh_from_db()
    _TREES[batch.batch_key] = new_tree
    return batch


def settlement_batch_create(
    *, now: datetime, max_leases: int | None = None, client: SettlementClient | None = None
) -> SettlementBatch | None:
    """Group completed, ledger-settled leases not yet batched into one PENDING batch; None if none fit.

    A lease qualifies when its consumer has a wallet whose credited on-chain deposits (less what earlier
    batches of this contract take) cover its charge, and its provider's wallet is a valid address.
    The batch and its SettlementLease rows are written in one transaction; a concurrent create that
    took the same leases makes this one roll back and answer None.
    """
    client = client or deployments.chain_client()
    deployment = deployment_for(client, now=now)
    size = settings.CPX_SETTLEMENT_BATCH_SIZE if max_leases is None else max_leases
    if size < 1:
        raise InvalidInput("A batch holds at least one lease.", max_leases=size)
    fee_address = checked_address(
        settings.CHAIN_FEE_ADDRESS or client.address, field_name="CHAIN_FEE_ADDRESS"
    )
    if is_credit_contract(client):
        return _create_credit_batch(client, deployment, fee_address, size, now)
    candidates = list(
        Lease.objects.filter(
            status=Lease.Status.COMPLETED,
            chain_settlement__isnull=True,
            job__consumer__chain_wallet__isnull=False,
        )
        .select_related("provider", "job__consumer__chain_wallet")
        .order_by("pk")[: size * SCAN_FACTOR]
    )
    if not candidates:
        return None
    ledger = lease_ledger_amounts([lease.pk for lease in candidates])
    budget = _escrow_available(
        deployment, {lease.job.consumer.chain_wallet.address for lease in candidates}, client
    )
    chosen: list[SettlementLease] = []
    for lease in candidates:
        payment, fee = ledger[lease.pk]
        provider_wei, fee_wei = to_wei(payment), to_wei(fee)
        consumer = lease.job.consumer.chain_wallet.address
        provider = lease.provider.wallet_address
        if provider_wei + fee_wei == 0 or budget[consumer] < provider_wei + fee_wei:
            continue  # nothing moved yet (not settled in the ledger), or the escrow does not cover it
        if not is_address(provider) or to_checksum_address(provider) == ZERO_ADDRESS:
            logger.warning("lease %s: provider %s has no usable wallet address", lease.pk, lease.provider_id)
            continue
        budget[consumer] -= provider_wei + fee_wei
        chosen.append(
            SettlementLease(
                lease=lease,
                consumer_address=consumer,
                provider_address=to_checksum_address(provider),
                fee_address=fee_address,
                provider_amount=payment,
                fee_amount=fee,
                provider_wei=provider_wei,
                fee_wei=fee_wei,
            )
        )
        if len(chosen) == size:
            break
    if not chosen:
        return None
    leaves = []
    for row in chosen:
        if row.provider_wei:
            leaves.append(Leaf(row.lease.pk, row.consumer_address, row.provider_address, row.provider_wei, 0))
        if row.fee_wei:
            leaves.append(
                Leaf(FEE_LEAF_BASE + row.lease.pk, row.consumer_address, fee_address, row.fee_wei, 0)
            )
    tree = MerkleTree(leaves)
    if not _worth_its_gas(client, deployment, tree, chosen, size):
        return None
    try:
        with transaction.atomic():
            batch = SettlementBatch.objects.create(
                deployment=deployment,
                batch_key=batch_key_for(deployment, [row.lease.pk for row in chosen]),
                merkle_root=tree.root_hex,
                leaves=[
                    [str(x.lease_id), x.consumer, x.provider, str(x.amount_wei), str(x.refund_wei)]
                    for x in leaves
                ],
                leaf_count=len(leaves),
                lease_count=len(chosen),
                total_wei=sum(x.debit_wei for x in leaves),
                total=sum((row.provider_amount + row.fee_amount for row in chosen), Decimal(0)),
                created_at=now,
            )
            for row in chosen:
                row.batch = batch
            SettlementLease.objects.bulk_create(chosen)
    except IntegrityError:
        logger.info("settlement batch: another worker batched some of these leases first")
        return None
    _TREES[batch.batch_key] = tree
    return batch


# ---------------------------------------------------------------------------------------------------------
# SettlementV2: consumer-signed debits and cumulative credits.


def is_credit_contract(client) -> bool:
    """Whether the client speaks SettlementV2 (signed orders, cumulative credits); test doubles that
    wrap a client forward ARTIFACT, so no isinstance."""
    return getattr(client, "ARTIFACT", "Settlement") == "SettlementV2"


def is_credit_batch(batch: SettlementBatch) -> bool:
    """A SettlementV2 batch stores its credits, [payee, cumulative wei], as its leaves."""
    return bool(batch.leaves) and len(batch.leaves[0]) == 2


def batch_credits(batch: SettlementBatch) -> list[tuple[str, int]]:
    return [(payee, int(cumulative)) for payee, cumulative in batch.leaves]


def newest_orders(deployment: ChainDeployment, consumers) -> dict[str, SettlementOrder]:
    """Per consumer, its newest signed order on the contract: the one its debits are made under."""
    out: dict[str, SettlementOrder] = {}
    for row in SettlementOrder.objects.filter(
        deployment=deployment, consumer_address__in=set(consumers)
    ).order_by("consumer_address", "-nonce"):
        out.setdefault(row.consumer_address, row)
    return out


def batch_debits(batch: SettlementBatch) -> list[tuple[Order, str, int]]:
    """The batch's debits, (signed order, signature, amount wei), rebuilt from its leases: one per
    consumer, under its newest signed order. That order's running total (``cumulativeMax``) covers
    every earlier job of the consumer, so a lease of an older job that completes after a newer job's was
    debited still settles (the contract refuses an order older than the newest one used); each job's
    own order caps that job's charges (checked when the batch is made)."""
    amounts: dict[str, int] = {}
    for row in SettlementLease.objects.filter(batch=batch):
        charge = int(row.provider_wei + row.fee_wei + row.refund_wei)
        amounts[row.consumer_address] = amounts.get(row.consumer_address, 0) + charge
    newest = newest_orders(batch.deployment, amounts)
    out = []
    for consumer in sorted(amounts):
        row = newest[consumer]
        order = Order(
            row.consumer_address,
            row.job_hash,
            int(row.max_amount_wei),
            int(row.cumulative_max_wei),
            row.nonce,
            row.deadline,
        )
        out.append((order, row.signature, amounts[consumer]))
    return out


def _order_refused(deployment: ChainDeployment, lease: Lease, order: SettlementOrder, why: str, now) -> None:
    _issue(
        deployment,
        ReconciliationIssue.Kind.ORDER_REFUSED,
        f"order:{order.pk}:lease:{lease.pk}",
        f"lease {lease.pk} of job {lease.job_id} is not paid on chain: {why}; it stays paid in the ledger "
        "only (resolution: the consumer signs a new order, or the platform recovers it off chain)",
        now,
    )


def _create_credit_batch(
    client: SettlementClient, deployment: ChainDeployment, fee_address: str, size: int, now: datetime
) -> SettlementBatch | None:
    """The SettlementV2 batch: completed leases of jobs with a signed order on this contract, debited
    under their consumer's newest signed order (batch_debits), and every payee's cumulative earnings to
    date (providers and the platform's fee; the refund stays in escrow, as in the ledger, so no refund
    credit is needed).

    A lease is left out, with an ORDER_REFUSED issue, when the orders cannot cover it: the job's
    charges would pass its own order's maximum, the consumer's newest order expires within
    CPX_ORDER_MIN_LIFE_S, or the consumer's lifetime debits would pass that order's running total. A
    lease whose consumer's escrow is short waits for a deposit. Leases of jobs without an order never
    come here: they stay on the off-chain ledger.

    Cumulative totals are ordered, so one batch per contract is in flight at a time: none is made while
    another is PENDING, SUBMITTED or FAILED (a failed one waits for an operator retry)."""
    if SettlementBatch.objects.filter(deployment=deployment).exclude(status=Status.CONFIRMED).exists():
        return None
    candidates = list(
        Lease.objects.filter(
            status=Lease.Status.COMPLETED,
            chain_settlement__isnull=True,
            job__chain_order__deployment=deployment,
        )
        .select_related("provider", "job__chain_order")
        .order_by("pk")[: size * SCAN_FACTOR]
    )
    if not candidates:
        return None
    ledger = lease_ledger_amounts([lease.pk for lease in candidates])
    charge = F("provider_wei") + F("fee_wei") + F("refund_wei")
    spent = {
        row["lease__job_id"]: int(row["total"])
        for row in SettlementLease.objects.filter(
            batch__deployment=deployment, lease__job_id__in={lease.job_id for lease in candidates}
        )
        .values("lease__job_id")
        .annotate(total=Sum(charge))
    }
    within_max: list[SettlementLease] = []
    for lease in candidates:
        order = lease.job.chain_order
        payment, fee = ledger[lease.pk]
        provider_wei, fee_wei = to_wei(payment), to_wei(fee)
        provider = lease.provider.wallet_address
        if provider_wei + fee_wei == 0:
            continue  # not settled in the ledger yet
        if not is_address(provider) or to_checksum_address(provider) == ZERO_ADDRESS:
            logger.warning("lease %s: provider %s has no usable wallet address", lease.pk, lease.provider_id)
            continue
        job_total = spent.get(lease.job_id, 0) + provider_wei + fee_wei
        if job_total > int(order.max_amount_wei):
            _order_refused(
                deployment,
                lease,
                order,
                f"the job's charges {job_total} wei pass the signed maximum {int(order.max_amount_wei)} wei",
                now,
            )
            continue
        spent[lease.job_id] = job_total
        within_max.append(
            SettlementLease(
                lease=lease,
                consumer_address=order.consumer_address,
                provider_address=to_checksum_address(provider),
                fee_address=fee_address,
                provider_amount=payment,
                fee_amount=fee,
                provider_wei=provider_wei,
                fee_wei=fee_wei,
            )
        )
    chain_now = client.now() if within_max else 0
    by_consumer: dict[str, list[SettlementLease]] = {}
    for row in within_max:
        by_consumer.setdefault(row.consumer_address, []).append(row)
    chosen: list[SettlementLease] = []
    newest = newest_orders(deployment, by_consumer)
    for consumer, rows in by_consumer.items():
        account = client.escrow_of(consumer)
        running, escrow = int(account["debited_wei"]), int(account["escrow_wei"])
        signed = newest[consumer]  # what the debit is made under (batch_debits)
        for row in sorted(rows, key=lambda r: r.lease.pk):
            amount = row.provider_wei + row.fee_wei
            why = ""
            if signed.deadline <= chain_now + settings.CPX_ORDER_MIN_LIFE_S:
                why = f"the consumer's newest order expired (deadline {signed.deadline})"
            elif running + amount > int(signed.cumulative_max_wei):
                cap = int(signed.cumulative_max_wei)
                why = f"lifetime debits {running + amount} wei pass the signed running total {cap}"
            elif escrow < amount:
                continue  # waits for a deposit
            if why:
                _order_refused(deployment, row.lease, row.lease.job.chain_order, why, now)
                continue
            running, escrow = running + amount, escrow - amount
            chosen.append(row)
    chosen = sorted(chosen, key=lambda r: r.lease.pk)[:size]
    if not chosen:
        return None
    this_batch: dict[str, int] = {}
    for row in chosen:
        if row.provider_wei:
            this_batch[row.provider_address] = this_batch.get(row.provider_address, 0) + row.provider_wei
        if row.fee_wei:
            this_batch[row.fee_address] = this_batch.get(row.fee_address, 0) + row.fee_wei
    earlier = _cumulative_earnings(deployment, set(this_batch))
    credits = sorted((payee, earlier.get(payee, 0) + amount) for payee, amount in this_batch.items())
    tree = CreditTree(credits)
    try:
        with transaction.atomic():
            batch = SettlementBatch.objects.create(
                deployment=deployment,
                batch_key=batch_key_for(deployment, [row.lease.pk for row in chosen]),
                merkle_root=tree.root_hex,
                leaves=[[payee, str(cumulative)] for payee, cumulative in credits],
                leaf_count=len(credits),
                lease_count=len(chosen),
                total_wei=sum(row.provider_wei + row.fee_wei for row in chosen),
                total=sum((row.provider_amount + row.fee_amount for row in chosen), Decimal(0)),
                created_at=now,
            )
            for row in chosen:
                row.batch = batch
            SettlementLease.objects.bulk_create(chosen)
    except IntegrityError:
        logger.info("settlement batch: another worker batched some of these leases first")
        return None
    return batch


def _cumulative_earnings(deployment: ChainDeployment, payees: set[str]) -> dict[str, int]:
    """Per payee, what the contract's earlier batches credited it (provider payments and fees)."""
    out: dict[str, int] = {}
    rows = SettlementLease.objects.filter(batch__deployment=deployment)
    for row in (
        rows.filter(provider_address__in=payees)
        .values("provider_address")
        .annotate(total=Sum("provider_wei"))
    ):
        out[row["provider_address"]] = out.get(row["provider_address"], 0) + int(row["total"])
    for row in rows.filter(fee_address__in=payees).values("fee_address").annotate(total=Sum("fee_wei")):
        out[row["fee_address"]] = out.get(row["fee_address"], 0) + int(row["total"])
    return out


def _worth_its_gas(
    client: SettlementClient, deployment: ChainDeployment, tree: MerkleTree, chosen: list, size: int
) -> bool:
    """The gas-share guard: a batch whose commit would cost more than CPX_SETTLEMENT_MAX_GAS_SHARE of the
    value it settles is not made (0 turns the guard off); its leases wait and the batch grows with the
    next ones, until it is worth its gas or full (a full batch cannot grow: it goes, and is logged)."""
    share = settings.CPX_SETTLEMENT_MAX_GAS_SHARE
    if not share:
        return True
    value = sum(leaf.debit_wei for leaf in tree.leaves)
    probe = "0x" + keccak(text=f"gas-probe|{tree.root_hex}").hex()
    try:
        cost = client.estimate_commit_cost(probe, list(tree.leaves))
    except (ChainRejected, ChainUnavailable) as error:
        logger.warning("settlement batch: gas estimate failed (%s); not batching now", error)
        return False
    if cost <= Decimal(str(share)) * value:
        return True
    if len(chosen) >= size:
        logger.warning(
            "settlement batch of %s leases (full) costs %s wei for %s wei settled", size, cost, value
        )
        return True
    logger.info("settlement batch: %s wei of gas for %s wei settled exceeds %s; waiting", cost, value, share)
    return False


def settlement_batches_due(*, now: datetime) -> list[int]:
    """Ids of batches a submit should look at: PENDING and due, or SUBMITTED by a worker gone silent."""
    stale = now - timedelta(seconds=settings.CPX_SETTLEMENT_SUBMIT_STALE_S)
    due = Q(status=Status.PENDING) & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    due |= Q(status=Status.SUBMITTED, submitted_at__lt=stale)
    return list(SettlementBatch.objects.filter(due).order_by("pk").values_list("pk", flat=True))


def settlement_batch_submit(
    *, batch_id: int, now: datetime, client: SettlementClient | None = None
) -> SettlementBatch:
    """Send one batch to the chain and record the outcome (see contracts.services' docstring for the states).

    Never inside a database transaction: the chain call happens between two short compare-and-set
    writes. A batch not due (CONFIRMED, FAILED, backing off, or in flight with a live worker) is
    returned unchanged. Raises BatchNotFound; ChainUnavailable after putting the batch back to PENDING.
    """
    batch = SettlementBatch.objects.select_related("deployment").filter(pk=batch_id).first()
    if batch is None:
        raise BatchNotFound("No such settlement batch.", batch=batch_id)
    if batch.status in (Status.CONFIRMED, Status.FAILED):
        return batch
    if batch.status == Status.PENDING and batch.next_attempt_at and batch.next_attempt_at > now:
        return batch
    stale = now - timedelta(seconds=settings.CPX_SETTLEMENT_SUBMIT_STALE_S)
    if batch.status == Status.SUBMITTED and batch.submitted_at and batch.submitted_at >= stale:
        return batch  # another worker holds it
    won = SettlementBatch.objects.filter(pk=batch.pk, status=batch.status, attempts=batch.attempts).update(
        status=Status.SUBMITTED, attempts=F("attempts") + 1, submitted_at=now
    )
    if not won:
        return SettlementBatch.objects.get(pk=batch.pk)
    batch.refresh_from_db()
    client = client or deployments.chain_client()
    try:
        if deployment_for(client, now=now).pk != batch.deployment_id:
            return _fail(
                batch,
                "WrongChain",
                f"batch belongs to {batch.deployment}; this worker's chain is {client.contract_address} "
                f"on {_network(client)}",
                now,
            )
        if batch.attempts > 1:  # an earlier attempt may have reached the chain: look before sending
            status = client.batch_status(batch.batch_key)
            if status["settled"]:
                return _confirm_from_chain(
                    batch, client, status, SettlementBatch.ConfirmedVia.CHAIN_LOOKUP, now
                )
        elif not is_credit_batch(batch):  # never sent: a reclaim must not sink everyone else's leases
            rebuilt = _drop_uncovered(batch, client, now)
            if rebuilt is None:
                return _fail(
                    batch, "InsufficientEscrow", "no consumer's on-chain escrow covers its debit", now
                )
            batch = rebuilt
        try:
            with signer_lock(client):
                if is_credit_batch(batch):
                    debits, credits = batch_debits(batch), batch_credits(batch)
                    receipt = client.commit_credits(batch.batch_key, debits, credits)
                else:
                    receipt = client.commit_batch(batch.batch_key, batch_leaves(batch))
        except ChainRejected as error:
            if error.error_name != "BatchAlreadySettled":
                return _fail(batch, error.error_name, str(error), now)
            status = client.batch_status(batch.batch_key)
            return _confirm_from_chain(
                batch, client, status, SettlementBatch.ConfirmedVia.ALREADY_SETTLED, now
            )
    except ChainUnavailable as error:
        _back_to_pending(batch, error, now)
        raise
    except ChainRejected as error:  # a read refused (no contract at the address, …)
        return _fail(batch, error.error_name, str(error), now)
    return _record_receipt(batch, receipt, now)


def _record_receipt(batch: SettlementBatch, receipt: dict, now: datetime) -> SettlementBatch:
    SettlementBatch.objects.filter(pk=batch.pk, status=Status.SUBMITTED, attempts=batch.attempts).update(
        status=Status.CONFIRMED,
        confirmed_via=SettlementBatch.ConfirmedVia.RECEIPT,
        tx_hash=receipt["tx_hash"],
        block_number=receipt["block_number"],
        gas_used=receipt["gas_used"],
        fee_wei=receipt["fee_wei"],
        confirmed_at=now,
        error_code="",
        error="",
        next_attempt_at=None,
    )
    return SettlementBatch.objects.get(pk=batch.pk)


def _confirm_from_chain(
    batch: SettlementBatch, client: SettlementClient, status: dict, via: str, now: datetime
) -> SettlementBatch:
    """The key is settled on chain: record it from the chain's data (the root must be ours)."""
    if status["root"] != batch.merkle_root:
        _issue(
            batch.deployment,
            ReconciliationIssue.Kind.ROOT_MISMATCH,
            batch.batch_key,
            f"the chain holds root {status['root']} under this key; the batch's root is {batch.merkle_root}",
            now,
            batch=batch,
        )
        return _fail(
            batch, "RootMismatch", f"the chain holds another root under this key: {status['root']}", now
        )
    committed = [e for e in client.batch_events(batch.batch_key) if e["event"] == "BatchCommitted"]
    first = committed[0] if committed else {}
    SettlementBatch.objects.filter(pk=batch.pk, status=Status.SUBMITTED, attempts=batch.attempts).update(
        status=Status.CONFIRMED,
        confirmed_via=via,
        tx_hash=first.get("tx_hash") or "unknown",
        block_number=first.get("block_number"),
        confirmed_at=now,
        error_code="",
        error="",
        next_attempt_at=None,
    )
    return SettlementBatch.objects.get(pk=batch.pk)


def _back_to_pending(batch: SettlementBatch, error: Exception, now: datetime) -> None:
    delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(0, batch.attempts - 1))
    SettlementBatch.objects.filter(pk=batch.pk, status=Status.SUBMITTED, attempts=batch.attempts).update(
        status=Status.PENDING,
        error_code=ChainUnavailable.code,
        error=str(error)[:2000],
        next_attempt_at=now + timedelta(seconds=delay),
    )


def _fail(batch: SettlementBatch, code: str, message: str, now: datetime) -> SettlementBatch:
    logger.warning("settlement batch %s failed: %s %s", batch.pk, code, message)
    SettlementBatch.objects.filter(pk=batch.pk, status=Status.SUBMITTED, attempts=batch.attempts).update(
        status=Status.FAILED, error_code=code[:64], error=message[:2000], failed_at=now, next_attempt_at=None
    )
    return SettlementBatch.objects.get(pk=batch.pk)


def settlement_batch_retry(*, batch_id: int, now: datetime) -> SettlementBatch:
    """An operator sends a FAILED batch again (same key, same leaves): FAILED → PENDING, due now.

    Raises BatchNotFound, BatchNotRetryable (only a FAILED batch is retried)."""
    batch = SettlementBatch.objects.filter(pk=batch_id).first()
    if batch is None:
        raise BatchNotFound("No such settlement batch.", batch=batch_id)
    won = SettlementBatch.objects.filter(pk=batch.pk, status=Status.FAILED).update(
        status=Status.PENDING, next_attempt_at=now
    )
    if not won:
        raise BatchNotRetryable("Only a failed batch can be retried.", batch=batch.pk, status=batch.status)
    return SettlementBatch.objects.get(pk=batch.pk)
