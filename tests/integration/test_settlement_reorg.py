"""Reorg-safe deposits on anvil (evm_snapshot / evm_revert): the issue-11 repro of one deposit credited
twice, a credit whose transaction a reorg dropped (taken back, or recorded as owed when already spent),
and the confirmation depth. Anvil only: the in-process EVM cannot reorg.
"""

import os
from decimal import Decimal

import pytest
from eth_account import Account
from eth_utils import keccak

from contracts import services as chain
from contracts.client import SettlementClient
from contracts.models import ChainDeposit, ReconciliationIssue
from market.models import LedgerAccount, LedgerTransfer
from market.services.ledger import ledger_account_for_user, ledger_house_account, ledger_transfer
from tests.conftest import NOW, service_unavailable
from tests.factories import ConsumerFactory

pytestmark = [pytest.mark.django_db, pytest.mark.services]
AMOUNT = Decimal("100")


@pytest.fixture
def operator() -> SettlementClient:
    url = os.environ.get("CPX_ANVIL_URL", "").strip()
    if not url:
        service_unavailable("CPX_ANVIL_URL is not set: reorgs need anvil")
    base = SettlementClient.connect(url, timeout_s=20)
    client = base.with_signer(base.dev_keys()[0])
    client.deploy(claim_window_s=1_000, reclaim_window_s=5_000)
    return client


def _rpc(client: SettlementClient, method: str, *params):
    return client._w3.provider.make_request(method, list(params))["result"]


def _signed_deposit(client: SettlementClient, key: str, amount_wei: int) -> bytes:
    """A deposit transaction signed now and sent later (the same bytes can be mined again after a reorg)."""
    address = Account.from_key(key).address
    w3 = client._w3
    call = client._contract().functions.deposit(amount_wei)
    tx = call.build_transaction(
        {"from": address, "value": amount_wei, "nonce": w3.eth.get_transaction_count(address), "gas": 200_000}
    )
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


def _mined(client: SettlementClient, raw: bytes) -> None:
    """Send a signed transaction and wait until it is mined (anvil's automine answers before that)."""
    client._w3.eth.wait_for_transaction_receipt(client._w3.eth.send_raw_transaction(raw), timeout=20)


def raw_hash(raw: bytes) -> str:
    return "0x" + keccak(raw).hex()


def _consumer(operator, key):
    user = ConsumerFactory()
    chain.consumer_wallet_register(user=user, address=Account.from_key(key).address, now=NOW)
    return user


def _balance(user) -> Decimal:
    return ledger_account_for_user(user=user, kind=LedgerAccount.Kind.CONSUMER).balance


def test_a_reorg_that_mines_the_same_deposit_again_credits_it_once(operator, settings):
    settings.CHAIN_CONFIRMATIONS = 0  # the issue's repro: credited at once, then the reorg
    keys = operator.dev_keys()
    alice, bob = _consumer(operator, keys[1]), _consumer(operator, keys[2])
    snapshot = _rpc(operator, "evm_snapshot")
    raw = _signed_deposit(operator, keys[1], chain.to_wei(AMOUNT))
    _mined(operator, raw)
    chain.chain_deposits_sync(now=NOW, client=operator)
    assert _balance(alice) == AMOUNT
    _rpc(operator, "evm_revert", snapshot)
    # The same signed transaction mined again, one block later, behind bob's deposit (another log index).
    _rpc(operator, "evm_mine")
    _rpc(operator, "evm_setAutomine", False)
    try:
        operator._w3.eth.send_raw_transaction(_signed_deposit(operator, keys[2], chain.to_wei(AMOUNT)))
        operator._w3.eth.send_raw_transaction(raw)
        _rpc(operator, "evm_mine")
        receipt = operator._w3.eth.wait_for_transaction_receipt(raw_hash(raw), timeout=20)
    finally:
        _rpc(operator, "evm_setAutomine", True)
    result = chain.chain_deposits_sync(now=NOW, client=operator)
    assert _balance(alice) == AMOUNT  # not 200: the escrow holds 100
    assert _balance(bob) == AMOUNT
    assert result.moved == 1
    row = ChainDeposit.objects.get(address=Account.from_key(keys[1]).address)
    # The node orders the two pending deposits as it likes: the row follows wherever alice's landed.
    assert row.status == ChainDeposit.Status.CREDITED
    assert row.log_index in [log["logIndex"] for log in receipt["logs"]]
    assert operator.escrow_of(Account.from_key(keys[1]).address)["escrow_wei"] == chain.to_wei(AMOUNT)


def test_a_deposit_reorged_out_is_taken_back_and_what_was_spent_is_owed(operator, settings):
    settings.CHAIN_CONFIRMATIONS = 0
    keys = operator.dev_keys()
    alice = _consumer(operator, keys[3])
    snapshot = _rpc(operator, "evm_snapshot")
    _mined(operator, _signed_deposit(operator, keys[3], chain.to_wei(AMOUNT)))
    chain.chain_deposits_sync(now=NOW, client=operator)
    account = ledger_account_for_user(user=alice, kind=LedgerAccount.Kind.CONSUMER)
    ledger_transfer(  # alice spends 30 of it before the reorg
        debit=account,
        credit=ledger_house_account(kind=LedgerAccount.Kind.EXTERNAL),
        amount=Decimal("30"),
        kind=LedgerTransfer.Kind.WITHDRAWAL,
        now=NOW,
    )
    _rpc(operator, "evm_revert", snapshot)
    for _ in range(3):
        _rpc(operator, "evm_mine")
    result = chain.chain_deposits_sync(now=NOW, client=operator)
    assert result.reversed == 1
    assert _balance(alice) == 0
    row = ChainDeposit.objects.get(address=Account.from_key(keys[3]).address)
    assert row.status == ChainDeposit.Status.REVERSED
    issue = ReconciliationIssue.objects.get(kind=ReconciliationIssue.Kind.DEPOSIT_REORGED)
    assert "70.000000 taken back, 30.000000 already spent" in issue.detail
    chain.chain_deposits_sync(now=NOW, client=operator)  # idempotent
    assert LedgerTransfer.objects.filter(reference__endswith=":reversed").count() == 1


def test_a_deposit_waits_for_its_confirmations(operator, settings):
    settings.CHAIN_CONFIRMATIONS = 3
    keys = operator.dev_keys()
    alice = _consumer(operator, keys[4])
    operator.with_signer(keys[4]).deposit(chain.to_wei(AMOUNT))
    chain.chain_deposits_sync(now=NOW, client=operator)
    assert _balance(alice) == 0
    for _ in range(3):
        _rpc(operator, "evm_mine")
    chain.chain_deposits_sync(now=NOW, client=operator)
    assert _balance(alice) == AMOUNT
