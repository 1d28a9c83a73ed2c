"""Settlement on chain: batches of completed leases (the outbox), deposits credited by event, and the
reconciler that compares the chain's events with the ledger per lease.

Flow 7. A completed lease is paid in the ledger first (market.services.settlement.lease_settle: escrow →
provider earnings, fee → platform, rest → consumer balance). Here, when a chain is configured:

1. `settlement_batch_create` groups such leases (consumer has a wallet, its on-chain escrow covers them)
   into a PENDING SettlementBatch, in one transaction: leaves, Merkle root, and the bytes32 key that is
   also the on-chain batch id. A lease is in at most one batch (a unique row per lease): the contract
   would not notice the same lease in two batches, so the database must.
2. `settlement_batch_submit` sends it OUTSIDE any database transaction: claim the row (PENDING →
   SUBMITTED, attempts + 1, compare-and-set), send `commitBatch`, then record the receipt (SUBMITTED →
   CONFIRMED). Crash recovery rests on the key: an attempt after the first, or a SUBMITTED row whose
   worker went silent for CPX_SETTLEMENT_SUBMIT_STALE_S, first asks the chain `batchOf(key)`; a settled
   key is recorded CONFIRMED from the chain's own data (its BatchCommitted event) and nothing is sent
   twice. Were it sent twice anyway, the contract refuses (`BatchAlreadySettled`): recorded as already
   settled, not as a failure. ChainUnavailable puts the row back to PENDING with a backoff and is raised
   for the task to retry; any other rejection is FAILED with the contract's error name (an operator
   retries it with `settlement_batch_retry`).
3. `settlement_reconcile` reads the contract's events since its last block (BatchCommitted,
   EscrowDebited, Claimed, LeaseSettled), records what each batch and lease saw on chain, flags what the
   database cannot account for (ReconciliationIssue), then sets each batched lease's status: MATCHED,
   PENDING, MISSING_ON_CHAIN or AMOUNT_MISMATCH (the ledger's amounts now vs the committed leaf).
4. `chain_deposits_sync` credits each `Deposited` event once to the wallet's consumer:
   `ledger_deposit(reference="chain:deposit:<tx>:<log index>")` next to a unique ChainDeposit row.

Money. Ledger Decimal (6 dp) × CHAIN_WEI_PER_UNIT = wei (exact: the unit is a multiple of 10**6). Each
lease gives up to two leaves: the provider's payment (leaf id = lease id) and the platform's fee and
surplus (leaf id = FEE_LEAF_BASE + lease id, paid to CHAIN_FEE_ADDRESS). Together they are the lease's
charge, which the commit debits from the consumer's on-chain escrow; the refund stays in that escrow just
as it returns to the consumer's ledger balance, so the escrow keeps backing the balance.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from eth_utils import is_address, keccak, to_checksum_address

from auctions.models import Lease
from config.errors import Conflict, InvalidInput, NotFound
from contracts.client import ChainRejected, ChainUnavailable, SettlementClient, client_from_settings
from contracts.merkle import Leaf, MerkleTree
from contracts.models import (
    ChainDeployment,
    ChainDeposit,
    ConsumerWallet,
    ReconciliationIssue,
    SettlementBatch,
    SettlementLease,
)
from market.models import LedgerTransfer, User
from market.money import DECIMAL_PLACES, QUANTUM
from market.services.ledger import ledger_deposit

logger = logging.getLogger(__name__)

FEE_LEAF_BASE = 1 << 128  # fee leaves' on-chain ids: FEE_LEAF_BASE + lease id (never a lease id)
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
SCAN_FACTOR = 20  # candidates read per batch slot before giving up for this run
BACKOFF_BASE_S = 5
BACKOFF_MAX_S = 600
Status = SettlementBatch.Status
Recon = SettlementLease.Recon


class BatchNotFound(NotFound):
    code = "settlement_batch_not_found"


class BatchNotRetryable(Conflict):
    code = "settlement_batch_not_retryable"


class WalletTaken(Conflict):
    code = "wallet_taken"


# ------------------------------------------------------------------ money


def _wei_per_quantum() -> int:
    per_unit = settings.CHAIN_WEI_PER_UNIT
    if per_unit <= 0 or per_unit % 10**DECIMAL_PLACES:
        raise ValueError("CHAIN_WEI_PER_UNIT must be a positive multiple of 10**6 (the ledger's quantum)")
    return per_unit // 10**DECIMAL_PLACES


def to_wei(amount: Decimal) -> int:
    """A ledger amount (at the quantum) in wei or token base units, exactly."""
    quanta = Decimal(amount) / QUANTUM
    if quanta != quanta.to_integral_value():
        raise ValueError(f"{amount} is not at the ledger's quantum")
    return int(quanta) * _wei_per_quantum()


def from_wei(amount_wei: int) -> tuple[Decimal, int]:
    """(the ledger amount, the dust below the quantum) of an on-chain amount."""
    step = _wei_per_quantum()
    return Decimal(int(amount_wei) // step) * QUANTUM, int(amount_wei) % step


# ------------------------------------------------------------------ chain identity


def chain_client() -> SettlementClient:
    """The app's client (contracts.client.client_from_settings): in-process EVM unless CHAIN_RPC_URL."""
    return client_from_settings()


def _network(client: SettlementClient) -> str:
    # The client has no public notion of "which chain": read its connection once and remember it there.
    conn = client._conn  # noqa: SLF001
    cached = conn.__dict__.get("cpx_network")
    if cached:
        return cached
    if conn.in_process:
        network = f"in-process:{uuid.uuid4().hex[:16]}"
    else:
        network = f"rpc:{client._read(lambda: client._w3.eth.chain_id)}"  # noqa: SLF001
    conn.__dict__["cpx_network"] = network
    return network


def deployment_for(client: SettlementClient, *, now: datetime) -> ChainDeployment:
    """The ChainDeployment row of the client's contract on the client's chain (created on first use)."""
    if not client.contract_address:
        raise InvalidInput("The settlement client has no contract address.")
    network, address = _network(client), to_checksum_address(client.contract_address)
    try:
        with transaction.atomic():
            deployment, _ = ChainDeployment.objects.get_or_create(
                network=network, address=address, defaults={"created_at": now}
            )
    except IntegrityError:  # created by a concurrent caller between our get and our insert
        deployment = ChainDeployment.objects.get(network=network, address=address)
    return deployment


def _deposit_reference(deployment: ChainDeployment, tx_hash: str, log_index: int) -> str:
    reference = f"chain:deposit:{tx_hash}:{log_index}"
    if deployment.in_process:  # an in-process chain repeats tx hashes from run to run
        reference += f"@{deployment.network.split(':', 1)[1]}"
    return reference


# ------------------------------------------------------------------ wallets and deposits


def checked_address(address: str, *, field_name: str = "address") -> str:
    if not isinstance(address, str) or not is_address(address):
        raise InvalidInput("Not an Ethereum address (0x and 40 hex digits).", field=field_name)
    if address != address.lower() and address != to_checksum_address(address):
        raise InvalidInput("The address fails its EIP-55 checksum: check for a typo.", field=field_name)
    return to_checksum_address(address)


def consumer_wallet_register(*, user: User, address: str, now: datetime) -> ConsumerWallet:
    """Link a consumer to the address it deposits from (one address per consumer and per user).

    Idempotent for the same pair; another user's address is WalletTaken."""
    if not user.holds_role(User.Role.CONSUMER):
        raise InvalidInput("Only consumers deposit on chain.", user=user.username)
    address = checked_address(address)
    existing = ConsumerWallet.objects.filter(Q(user=user) | Q(address=address)).first()
    if existing is not None:
        if existing.user_id == user.pk and existing.address == address:
            return existing
        raise WalletTaken("This consumer or this address already has a wallet link.", address=address)
    try:
        with transaction.atomic():
            return ConsumerWallet.objects.create(user=user, address=address, created_at=now)
    except IntegrityError:
        raise WalletTaken(
            "This consumer or this address already has a wallet link.", address=address
        ) from None


@dataclass
class DepositSync:
    scanned_to: int
    seen: int = 0
    credited: int = 0
    unmatched: int = 0
    credited_amount: Decimal = Decimal(0)

    def as_dict(self) -> dict:
        return {
            "scanned_to": self.scanned_to,
            "seen": self.seen,
            "credited": self.credited,
            "unmatched": self.unmatched,
            "credited_amount": str(self.credited_amount),
        }


def chain_deposits_sync(*, now: datetime, client: SettlementClient | None = None) -> DepositSync:
    """Credit every `Deposited` event since the last block scanned to its wallet's consumer, once.

    Idempotent: a ChainDeposit row is unique per (deployment, tx, log index) and its ledger transfer per
    reference, so a second run (or two at once) credits nothing more. Deposits from an address no
    consumer has registered are kept UNMATCHED and credited by a later run once one registers it.
    Raises ChainUnavailable (retry).
    """
    client = client or chain_client()
    deployment = deployment_for(client, now=now)
    head = client.block_number() - settings.CHAIN_CONFIRMATIONS
    start = deployment.deposits_scanned_block + 1
    result = DepositSync(scanned_to=max(head, deployment.deposits_scanned_block))
    while start <= head:
        end = min(head, start + settings.CHAIN_LOG_RANGE - 1)
        for event in client.events(from_block=start, to_block=end, names=["Deposited"]):
            result.seen += 1
            row = _deposit_row(deployment, event, now)
            if row.status == ChainDeposit.Status.UNMATCHED:
                _deposit_credit(row.pk, now, result)
        ChainDeployment.objects.filter(pk=deployment.pk, deposits_scanned_block__lt=end).update(
            deposits_scanned_block=end
        )
        start = end + 1
    # Deposits that arrived before their wallet was registered.
    wallets = ConsumerWallet.objects.values("address")
    waiting = deployment.deposits.filter(status=ChainDeposit.Status.UNMATCHED, address__in=wallets)
    for pk in waiting.values_list("pk", flat=True):
        _deposit_credit(pk, now, result)
    result.unmatched = deployment.deposits.filter(status=ChainDeposit.Status.UNMATCHED).count()
    return result


def _deposit_row(deployment: ChainDeployment, event: dict, now: datetime) -> ChainDeposit:
    args = event["args"]
    try:
        with transaction.atomic():
            row, _ = ChainDeposit.objects.get_or_create(
                deployment=deployment,
                tx_hash=event["tx_hash"],
                log_index=event["log_index"],
                defaults={
                    "block_number": event["block_number"],
                    "address": to_checksum_address(args["consumer"]),
                    "amount_wei": args["amount"],
                    "status": ChainDeposit.Status.UNMATCHED,
                    "seen_at": now,
                },
            )
    except IntegrityError:
        row = ChainDeposit.objects.get(
            deployment=deployment, tx_hash=event["tx_hash"], log_index=event["log_index"]
        )
    return row


@transaction.atomic
def _deposit_credit(deposit_id: int, now: datetime, result: DepositSync) -> None:
    row = ChainDeposit.objects.select_for_update().select_related("deployment").get(pk=deposit_id)
    if row.status != ChainDeposit.Status.UNMATCHED:
        return
    wallet = ConsumerWallet.objects.select_related("user").filter(address=row.address).first()
    if wallet is None:
        return
    amount, _dust = from_wei(int(row.amount_wei))
    if amount <= 0:
        row.status = ChainDeposit.Status.DUST
        row.save(update_fields=["status"])
        return
    ledger_deposit(
        user=wallet.user,
        amount=amount,
        now=now,
        reference=_deposit_reference(row.deployment, row.tx_hash, row.log_index),
        memo=f"on-chain deposit, block {row.block_number}",
    )
    row.status, row.user, row.amount, row.credited_at = ChainDeposit.Status.CREDITED, wallet.user, amount, now
    row.save(update_fields=["status", "user", "amount", "credited_at"])
    result.credited += 1
    result.credited_amount += amount


# ------------------------------------------------------------------ batches


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


def lease_ledger_amounts(lease_ids) -> dict[int, tuple[Decimal, Decimal]]:
    """Per lease, (payment to the provider, fee + surplus to the platform) as the ledger holds them."""
    refs = {f"lease:{i}:payment": (i, 0) for i in lease_ids} | {f"lease:{i}:fee": (i, 1) for i in lease_ids}
    out: dict[int, list[Decimal]] = {i: [Decimal(0), Decimal(0)] for i in lease_ids}
    rows = LedgerTransfer.objects.filter(reference__in=list(refs)).values_list("reference", "amount")
    for reference, amount in rows:
        lease_id, part = refs[reference]
        out[lease_id][part] = amount
    return {i: (p, f) for i, (p, f) in out.items()}


def _escrow_available(deployment: ChainDeployment, addresses: set[str]) -> dict[str, int]:
    """Per consumer address, credited on-chain deposits minus what batches of this contract already take."""
    deposited = (
        deployment.deposits.filter(status=ChainDeposit.Status.CREDITED, address__in=addresses)
        .values("address")
        .annotate(total=Sum("amount_wei"))
    )
    committed = (
        SettlementLease.objects.filter(batch__deployment=deployment, consumer_address__in=addresses)
        .values("consumer_address")
        .annotate(total=Sum(F("provider_wei") + F("fee_wei") + F("refund_wei")))
    )
    available = {a: 0 for a in addresses}
    for row in deposited:
        available[row["address"]] += int(row["total"])
    for row in committed:
        available[row["consumer_address"]] -= int(row["total"])
    return available


def settlement_batch_create(
    *, now: datetime, max_leases: int | None = None, client: SettlementClient | None = None
) -> SettlementBatch | None:
    """Group completed, ledger-settled leases not yet batched into one PENDING batch; None if none fit.

    A lease qualifies when its consumer has a wallet whose credited on-chain deposits (less what earlier
    batches of this contract take) cover its charge, and its provider's wallet is a valid address.
    The batch and its SettlementLease rows are written in one transaction; a concurrent create that
    took the same leases makes this one roll back and answer None.
    """
    client = client or chain_client()
    deployment = deployment_for(client, now=now)
    size = settings.CPX_SETTLEMENT_BATCH_SIZE if max_leases is None else max_leases
    if size < 1:
        raise InvalidInput("A batch holds at least one lease.", max_leases=size)
    fee_address = checked_address(
        settings.CHAIN_FEE_ADDRESS or client.address, field_name="CHAIN_FEE_ADDRESS"
    )
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
    budget = _escrow_available(deployment, {lease.job.consumer.chain_wallet.address for lease in candidates})
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


def settlement_batches_due(*, now: datetime) -> list[int]:
    """Ids of batches a submit should look at: PENDING and due, or SUBMITTED by a worker gone silent."""
    stale = now - timedelta(seconds=settings.CPX_SETTLEMENT_SUBMIT_STALE_S)
    due = Q(status=Status.PENDING) & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    due |= Q(status=Status.SUBMITTED, submitted_at__lt=stale)
    return list(SettlementBatch.objects.filter(due).order_by("pk").values_list("pk", flat=True))


def settlement_batch_submit(
    *, batch_id: int, now: datetime, client: SettlementClient | None = None
) -> SettlementBatch:
    """Send one batch to the chain and record the outcome (see the module docstring for the states).

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
    client = client or chain_client()
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
        try:
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


# ------------------------------------------------------------------ reconciliation


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


EVENTS = ["BatchCommitted", "EscrowDebited", "Claimed", "LeaseSettled", "DirectSettled"]


def settlement_reconcile(*, now: datetime, client: SettlementClient | None = None) -> Reconciliation:
    """Compare the chain's events with the ledger, per lease, for the current contract.

    Reads events since the last block it read; records per batch what the chain committed and debited,
    per lease whether its leaves were claimed; flags batches and leases the database cannot account for;
    then sets every batched lease's status from the ledger (its transfers now) and the chain (the batch's
    committed root). Raises ChainUnavailable (retry).
    """
    client = client or chain_client()
    deployment = deployment_for(client, now=now)
    head = client.block_number()
    batches = {b.batch_key: b for b in deployment.batches.all()}
    changed: dict[int, SettlementBatch] = {}
    claims: list[tuple[str, int, str]] = []  # (batch key, leaf id, tx)
    result = Reconciliation(scanned_to=head)
    start = deployment.events_scanned_block + 1
    while start <= head:
        end = min(head, start + settings.CHAIN_LOG_RANGE - 1)
        for event in client.events(from_block=start, to_block=end, names=EVENTS):
            result.events += 1
            args = event["args"]
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
                batch.chain_seen, batch.chain_root, batch.chain_total_wei = True, args["root"], args["total"]
            elif event["event"] == "EscrowDebited":
                batch.chain_debits = {**batch.chain_debits, args["consumer"]: str(args["amount"])}
            elif event["event"] == "Claimed":
                claims += [(key, int(leaf_id), event["tx_hash"]) for leaf_id in args["leaseIds"]]
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


# ------------------------------------------------------------------ claims (relayed) and the demo


def settlement_claims_relay(*, batch_id: int, client: SettlementClient | None = None) -> dict:
    """Claim every unclaimed leaf of a CONFIRMED batch for its payee (anyone may relay a claim; the
    contract pays the leaf's provider address, never the sender): one multiproof per payee.

    Used by the demo, where providers' wallets have no keys. Raises ChainUnavailable, ChainRejected.
    """
    client = client or chain_client()
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


def chain_demo_fund(
    *,
    now: datetime,
    amount: Decimal,
    client: SettlementClient | None = None,
    usernames: list[str] | None = None,
) -> list[dict]:
    """Development chains only (in-process EVM, anvil): give each consumer a funded dev account as its
    wallet (or reuse the dev-account wallet it has), deposit `amount` from it unless this contract
    already credited a deposit from it, and credit it through `chain_deposits_sync` — the same path
    as any deposit. Consumers beyond the dev accounts, or with a wallet of their own, are left alone."""
    client = client or chain_client()
    deployment = deployment_for(client, now=now)
    dev = {client.with_signer(k).address: k for k in client.dev_keys()}
    dev.pop(client.address, None)
    wallets = dict(ConsumerWallet.objects.values_list("user_id", "address"))
    free = [a for a in dev if a not in set(wallets.values())]
    funded_here = set(
        deployment.deposits.filter(status=ChainDeposit.Status.CREDITED).values_list("address", flat=True)
    )
    users = User.objects.filter(role=User.Role.CONSUMER).order_by("pk")
    if usernames is not None:
        users = users.filter(username__in=usernames)
    funded = []
    for user in users:
        address = wallets.get(user.pk)
        if address is None:
            if not free:
                continue
            address = consumer_wallet_register(user=user, address=free.pop(0), now=now).address
        if address not in dev or address in funded_here:
            continue
        receipt = client.with_signer(dev[address]).deposit(to_wei(amount))
        funded.append({"user": user.username, "address": address, "tx_hash": receipt["tx_hash"]})
    chain_deposits_sync(now=now, client=client)
    return funded
