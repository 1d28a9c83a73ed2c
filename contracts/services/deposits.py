"""Consumers' wallets and their on-chain deposits: `consumer_wallet_register` links a consumer to the
address it deposits from; `chain_deposits_sync` credits each `Deposited` event once to the wallet's
consumer (`ledger_deposit(reference="chain:deposit:<tx>:<log index>")` next to a unique ChainDeposit row);
`chain_demo_fund` funds demo consumers from a development chain's accounts through the same path."""

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
from contracts.models import ChainDeployment, ChainDeposit, ConsumerWallet
from contracts.services import deployment as deployments
from contracts.services.deployment import checked_address, deployment_for
from contracts.services.money import from_wei, to_wei
from market.models import User
from market.services.ledger import ledger_deposit


class WalletTaken(Conflict):
    code = "wallet_taken"


def _deposit_reference(deployment: ChainDeployment, tx_hash: str, log_index: int) -> str:
    reference = f"chain:deposit:{tx_hash}:{log_index}"
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
    client = client or deployments.chain_client()
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
