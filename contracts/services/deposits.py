"""Consumers' wallets and their on-chain deposits: `consumer_wallet_register` links a consumer to the
address it deposits from; `chain_deposits_sync` credits each `Deposited` event once to the wallet's
consumer (`ledger_deposit(reference="chain:deposit:<tx>:Deposited:<ordinal>")` next to a unique
ChainDeposit row) once it is CHAIN_CONFIRMATIONS deep, and takes back a credit whose transaction a reorg
dropped; `chain_demo_fund` funds demo consumers from a development chain's accounts through the same path.

Reorgs. A deposit's identity is its transaction and the event's ordinal within it, which a reorg does not
change (the log index does: the same transaction mined one block later behind another deposit gets
another one). Each sync re-reads the last CHAIN_REORG_DEPTH confirmed blocks and asks the node for the
receipt of every deposit credited within them: one mined elsewhere is moved (block, hash, log index),
one the chain no longer holds is REVERSED — the ledger takes the amount back from the consumer's
balance, as far as the balance goes; what was already spent stays owed and is recorded as a
DEPOSIT_REORGED reconciliation issue for an operator (README, "Settlement on chain")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from eth_utils import to_checksum_address

from config.errors import Conflict, InvalidInput
from contracts.client import SettlementClient
from contracts.models import ChainDeployment, ChainDeposit, ConsumerWallet, ReconciliationIssue
from contracts.services import deployment as deployments
from contracts.services.deployment import checked_address, deployment_for
from contracts.services.money import from_wei, to_wei
from market.models import LedgerAccount, LedgerTransfer, User
from market.services.ledger import (
    ledger_account_for_user,
    ledger_deposit,
    ledger_house_account,
    ledger_transfer,
)


class WalletTaken(Conflict):
    code = "wallet_taken"


def _deposit_reference(deployment: ChainDeployment, tx_hash: str, ordinal: int) -> str:
    reference = f"chain:deposit:{tx_hash}:Deposited:{ordinal}"
    if deployment.in_process:  # an in-process chain repeats tx hashes from run to run
        reference += f"@{deployment.network.split(':', 1)[1]}"
    return reference


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
    reversed: int = 0
    moved: int = 0
    credited_amount: Decimal = Decimal(0)

    def as_dict(self) -> dict:
        return {
            "scanned_to": self.scanned_to,
            "seen": self.seen,
            "credited": self.credited,
            "unmatched": self.unmatched,
            "reversed": self.reversed,
            "moved": self.moved,
            "credited_amount": str(self.credited_amount),
        }


def chain_deposits_sync(*, now: datetime, client: SettlementClient | None = None) -> DepositSync:
    """Credit every `Deposited` event at least CHAIN_CONFIRMATIONS deep to its wallet's consumer, once;
    move or reverse deposits a reorg touched (see the module docstring).

    Idempotent: a ChainDeposit row is unique per (deployment, tx, event ordinal) and its ledger transfer
    per reference, so a second run (or two at once, or a rescan of the reorg window) credits nothing more.
    Deposits from an address no consumer has registered are kept UNMATCHED and credited by a later run
    once one registers it. Raises ChainUnavailable (retry).
    """
    client = client or deployments.chain_client()
    deployment = deployment_for(client, now=now)
    safe = client.block_number() - settings.CHAIN_CONFIRMATIONS
    window_start = max(0, safe - settings.CHAIN_REORG_DEPTH + 1)
    start = min(deployment.deposits_scanned_block + 1, window_start)
    result = DepositSync(scanned_to=max(safe, deployment.deposits_scanned_block))
    seen: set[tuple[str, int]] = set()
    while start <= safe:
        end = min(safe, start + settings.CHAIN_LOG_RANGE - 1)
        ordinals: dict[str, int] = {}
        for event in client.events(from_block=start, to_block=end, names=["Deposited"]):
            ordinal = ordinals.get(event["tx_hash"], 0)
            ordinals[event["tx_hash"]] = ordinal + 1
            seen.add((event["tx_hash"], ordinal))
            result.seen += 1
            row = _deposit_row(deployment, event, ordinal, now, result)
            if row.status == ChainDeposit.Status.UNMATCHED:
                _deposit_credit(row.pk, now, result)
        ChainDeployment.objects.filter(pk=deployment.pk, deposits_scanned_block__lt=end).update(
            deposits_scanned_block=end
        )
        start = end + 1
    _reverse_dropped(deployment, client, window_start, seen, now, result)
    # Deposits that arrived before their wallet was registered.
    wallets = ConsumerWallet.objects.values("address")
    waiting = deployment.deposits.filter(status=ChainDeposit.Status.UNMATCHED, address__in=wallets)
    for pk in waiting.values_list("pk", flat=True):
        _deposit_credit(pk, now, result)
    result.unmatched = deployment.deposits.filter(status=ChainDeposit.Status.UNMATCHED).count()
    return result


def _deposit_row(
    deployment: ChainDeployment, event: dict, ordinal: int, now: datetime, result: DepositSync
) -> ChainDeposit:
    args = event["args"]
    where = {
        "block_number": event["block_number"],
        "block_hash": event.get("block_hash", ""),
        "log_index": event["log_index"],
    }
    try:
        with transaction.atomic():
            row, created = ChainDeposit.objects.get_or_create(
                deployment=deployment,
                tx_hash=event["tx_hash"],
                event_ordinal=ordinal,
                defaults={
                    **where,
                    "address": to_checksum_address(args["consumer"]),
                    "amount_wei": args["amount"],
                    "status": ChainDeposit.Status.UNMATCHED,
                    "seen_at": now,
                },
            )
    except IntegrityError:
        row, created = (
            ChainDeposit.objects.get(deployment=deployment, tx_hash=event["tx_hash"], event_ordinal=ordinal),
            False,
        )
    if not created and any(getattr(row, k) != v for k, v in where.items()):
        # The same transaction, mined again elsewhere by a reorg: the same deposit, not a new one.
        ChainDeposit.objects.filter(pk=row.pk).update(**where)
        result.moved += 1
    return row


def _reverse_dropped(
    deployment: ChainDeployment,
    client: SettlementClient,
    window_start: int,
    seen: set[tuple[str, int]],
    now: datetime,
    result: DepositSync,
) -> None:
    """Deposits recorded in the reorg window but not seen there now: ask the node where their
    transaction is; one it no longer holds (or that now failed) is reversed."""
    recent = deployment.deposits.filter(block_number__gte=window_start).exclude(
        status=ChainDeposit.Status.REVERSED
    )
    for row in recent:
        if (row.tx_hash, row.event_ordinal) in seen:
            continue
        receipt = client.transaction_receipt(row.tx_hash)
        if receipt is not None and receipt["status"] == 1:
            continue  # mined deeper in a later block still inside confirmations: seen on a later run
        _deposit_reverse(row.pk, now, result)


@transaction.atomic
def _deposit_reverse(deposit_id: int, now: datetime, result: DepositSync) -> None:
    """Take a reorged-out deposit's credit back: from the consumer's balance as far as it goes; the rest
    (already spent) is recorded as a DEPOSIT_REORGED issue with the shortfall."""
    from contracts.services.reconcile import _issue

    row = (
        ChainDeposit.objects.select_for_update(of=("self",))
        .select_related("deployment", "user")
        .get(pk=deposit_id)
    )
    if row.status == ChainDeposit.Status.REVERSED:
        return
    was_credited = row.status == ChainDeposit.Status.CREDITED
    row.status = ChainDeposit.Status.REVERSED
    row.save(update_fields=["status"])
    result.reversed += 1
    if not was_credited:
        return
    reference = _deposit_reference(row.deployment, row.tx_hash, row.event_ordinal)
    consumer = ledger_account_for_user(user=row.user, kind=LedgerAccount.Kind.CONSUMER)
    consumer.refresh_from_db(fields=["balance"])
    taken = min(consumer.balance, row.amount)
    if taken > 0:
        ledger_transfer(
            debit=consumer,
            credit=ledger_house_account(kind=LedgerAccount.Kind.EXTERNAL),
            amount=taken,
            kind=LedgerTransfer.Kind.WITHDRAWAL,
            now=now,
            reference=f"{reference}:reversed",
            memo=f"on-chain deposit reorged out (block {row.block_number})",
        )
    shortfall = row.amount - taken
    _issue(
        row.deployment,
        ReconciliationIssue.Kind.DEPOSIT_REORGED,
        reference,
        f"deposit of {row.amount} by {row.user} reorged out of block {row.block_number}: "
        f"{taken} taken back, {shortfall} already spent and owed",
        now,
    )


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
        reference=_deposit_reference(row.deployment, row.tx_hash, row.event_ordinal),
        memo=f"on-chain deposit, block {row.block_number}",
    )
    row.status, row.user, row.amount, row.credited_at = ChainDeposit.Status.CREDITED, wallet.user, amount, now
    row.save(update_fields=["status", "user", "amount", "credited_at"])
    result.credited += 1
    result.credited_amount += amount


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
    client = client or deployments.chain_client()
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
