"""The issue-11 attack list re-run on anvil against both contracts: each attack first against the
previous contract (`Settlement`, where it works: the finding reproduced, so the test fails before the
fix) and then against `SettlementV2`, where it is refused. Service-level attacks (a reorg crediting a
deposit twice, a reclaim blocking a batch) are in test_settlement_reorg.py.

Runs on anvil only (CPX_ANVIL_URL; fails instead of skipping under CPX_REQUIRE_SERVICES=1): the freeze
attacks move the chain's clock, and the figures quoted in the README come from this node.
"""

import os

import pytest
from eth_utils import keccak, to_checksum_address

from contracts.client import ChainRejected, SettlementClient, SettlementV2Client, load_artifact
from contracts.merkle import CreditTree, Leaf, MerkleTree
from contracts.orders import Order, job_hash
from tests.conftest import service_unavailable

pytestmark = pytest.mark.services
DEPOSIT = 10**15
FAR = 2**40


@pytest.fixture
def node() -> SettlementClient:
    url = os.environ.get("CPX_ANVIL_URL", "").strip()
    if not url:
        service_unavailable("CPX_ANVIL_URL is not set: the attack list runs on anvil")
    return SettlementClient.connect(url, timeout_s=20)


def _refused(name: str, fn, *args, **kwargs) -> None:
    with pytest.raises(ChainRejected) as info:
        fn(*args, **kwargs)
    assert info.value.error_name == name, repr(info.value)


def _address(tag: str) -> str:
    return to_checksum_address(keccak(tag.encode() + os.urandom(8))[-20:])


def _v1(node):
    keys = node.dev_keys()
    operator = node.with_signer(keys[0])  # the hot signer is admin and operator (the previous deploy)
    operator.deploy(claim_window_s=1_000, reclaim_window_s=5_000)
    alice = operator.with_signer(keys[1])
    alice.deposit(DEPOSIT)
    return operator, alice


def _v2(node):
    keys = node.dev_keys()
    operator = SettlementV2Client(node._conn, keys[0])
    admin = operator.with_signer(keys[7])
    operator.deploy(admin=admin.address, reclaim_window_s=86_400)
    admin.contract_address = operator.contract_address
    alice = operator.with_signer(keys[1])
    alice.deposit(DEPOSIT)
    return operator, admin, alice


def _order(consumer: SettlementV2Client, nonce: int, cap: int, amount: int | None = None):
    o = Order(consumer.address, job_hash(f"attack-{nonce}"), amount or cap, cap, nonce, FAR)
    return o, consumer.sign(o)


def test_operator_key_theft(node):
    """A stolen operator key commits a root paying the thief and debiting alice's whole escrow."""
    thief = _address("thief")
    operator, alice = _v1(node)
    leaf = Leaf(1, alice.address, thief, DEPOSIT)
    operator.commit_batch(keccak(b"theft"), [leaf])
    operator.claim(keccak(b"theft"), leaf, MerkleTree([leaf]).proof(0))
    assert operator.balance_wei(thief) == DEPOSIT  # previous contract: alice's escrow taken

    operator, _, alice = _v2(node)
    thief = _address("thief")
    forged = Order(alice.address, job_hash("theft"), DEPOSIT, DEPOSIT, 1, FAR)
    _refused(
        "InvalidSignature",
        operator.commit_credits,
        keccak(b"t1"),
        [(forged, operator.sign(forged), DEPOSIT)],
        [(thief, DEPOSIT)],
    )
    order, signature = _order(alice, 1, 100)  # alice signed for 100 wei once
    operator.commit_credits(keccak(b"t2"), [(order, signature, 100)], [(thief, 100)])
    _refused("OrderExceeded", operator.commit_credits, keccak(b"t3"), [(order, signature, 1)], [(thief, 101)])
    assert operator.escrow_of(alice.address)["escrow_wei"] == DEPOSIT - 100  # at most what she signed
    for fn, args in [
        ("proposeOperator", (thief,)),
        ("proposeWindow", (300 * 86400,)),
        ("setPaused", (True,)),
    ]:
        _refused("NotAdmin", operator.admin_call, fn, *args)


def test_freezing(node):
    """The admin stretches the reclaim window / the operator keeps the clock moving with 1-wei batches."""
    operator, alice = _v1(node)
    operator.set_windows(claim_window_s=1, reclaim_window_s=2**64 - 1 - operator.now())
    operator.advance_time(10_000)
    _refused("ReclaimWindowOpen", alice.reclaim)  # previous contract: frozen

    operator, admin, alice = _v2(node)
    order, signature = _order(alice, 1, 10)
    operator.commit_credits(keccak(b"f1"), [(order, signature, 1)], [(_address("p"), 1)])
    admin.admin_call("proposeWindow", 365 * 86400)
    for day in range(3):  # the operator re-uses the old order daily; the admin pauses
        operator.advance_time(86_400 // 3)
        operator.commit_credits(
            keccak(f"f2-{day}".encode()), [(order, signature, 1)], [(_address("p"), 2 + day)]
        )
    admin.admin_call("setPaused", True)
    operator.advance_time(60)
    before = alice.balance_wei(alice.address)
    fee = alice.reclaim()["fee_wei"]
    assert alice.balance_wei(alice.address) - before + fee == DEPOSIT - 4  # out, under its own window


def test_claw_back(node):
    """After the claim deadline the consumer takes back a provider's payment (`reclaimLeaf`)."""
    operator, alice = _v1(node)
    provider = _address("provider")
    leaf = Leaf(7, alice.address, provider, 500)
    operator.commit_batch(keccak(b"cb"), [leaf])
    operator.advance_time(1_001)
    alice.reclaim_leaf(keccak(b"cb"), leaf, MerkleTree([leaf]).proof(0))
    _refused("ClaimWindowClosed", operator.claim_many, keccak(b"cb"), *MerkleTree([leaf]).multiproof([0]))

    operator, _, alice = _v2(node)
    provider = _address("provider")
    order, signature = _order(alice, 1, 500)
    operator.commit_credits(keccak(b"cb"), [(order, signature, 500)], [(provider, 500)])
    operator.advance_time(400 * 86400)
    alice.reclaim()  # the consumer leaves with its escrow only: the pot is not its to take
    assert "reclaimLeaf" not in {item.get("name") for item in load_artifact("SettlementV2")["abi"]}
    operator.claim_credit(keccak(b"cb"), provider, 500, CreditTree([(provider, 500)]).proof(provider))
    assert operator.balance_wei(provider) == 500  # credits never expire


def test_double_payment_across_batches(node):
    """The same lease committed again under a new batch id is paid twice."""
    operator, alice = _v1(node)
    provider = _address("provider")
    leaf = Leaf(9, alice.address, provider, 300)
    for tag in (b"d1", b"d2"):
        operator.commit_batch(keccak(tag), [leaf])
        operator.claim(keccak(tag), leaf, MerkleTree([leaf]).proof(0))
    assert operator.balance_wei(provider) == 600  # previous contract: paid twice

    operator, _, alice = _v2(node)
    provider = _address("provider")
    order, signature = _order(alice, 1, 300)
    operator.commit_credits(keccak(b"d1"), [(order, signature, 300)], [(provider, 300)])
    _refused(
        "OrderExceeded", operator.commit_credits, keccak(b"d2"), [(order, signature, 300)], [(provider, 600)]
    )
    operator.commit_credits(keccak(b"d3"), [], [(provider, 300)])  # the same earnings again: no debit
    tree = CreditTree([(provider, 300)])
    operator.claim_credit(keccak(b"d1"), provider, 300, tree.proof(provider))
    _refused("NothingToClaim", operator.claim_credit, keccak(b"d3"), provider, 300, tree.proof(provider))
    assert operator.balance_wei(provider) == 300


def test_fee_on_transfer_token(node):
    keys = node.dev_keys()
    operator = node.with_signer(keys[0])
    token = operator.deploy_artifact("FeeOnTransferToken")
    consumer = operator.with_signer(keys[1])
    operator.transact_artifact(token, "FeeOnTransferToken", "mint", consumer.address, 20_000)
    operator.deploy(token_address=token, claim_window_s=1_000, reclaim_window_s=5_000)
    consumer.contract_address = operator.contract_address
    consumer.transact_artifact(token, "FeeOnTransferToken", "approve", operator.contract_address, 10_000)
    consumer.deposit(10_000, approve=False)
    held = operator.call_artifact(token, "FeeOnTransferToken", "balanceOf", operator.contract_address)
    assert operator.escrow_of(consumer.address)["escrow_wei"] == 10_000 > held == 9_900  # insolvent

    v2 = SettlementV2Client(node._conn, keys[0])
    v2.deploy(token_address=token, admin=node.with_signer(keys[7]).address, reclaim_window_s=86_400)
    payer = v2.with_signer(keys[1])
    payer.transact_artifact(token, "FeeOnTransferToken", "approve", v2.contract_address, 10_000)
    payer.deposit(10_000, approve=False)
    held = v2.call_artifact(token, "FeeOnTransferToken", "balanceOf", v2.contract_address)
    assert v2.escrow_of(payer.address)["escrow_wei"] == held == 9_900


@pytest.mark.django_db
def test_deploy_splits_admin_from_the_signer_and_proofs_come_from_chain_alone(node, settings):
    """`cpx_chain deploy --admin` (refused without it, or with the signer's own address), then
    `cpx_chain proofs --from-chain` rebuilds a payee's claim from the commit calldata alone."""
    import json
    from io import StringIO

    from django.core.management import CommandError, call_command

    keys = node.dev_keys()
    settings.CHAIN_RPC_URL = os.environ["CPX_ANVIL_URL"]
    settings.CHAIN_SIGNER_KEY = keys[0]
    signer = node.with_signer(keys[0]).address
    with pytest.raises(CommandError, match="--admin"):
        call_command("cpx_chain", "deploy")
    with pytest.raises(CommandError, match="operator signer"):
        call_command("cpx_chain", "deploy", "--admin", signer, "--contract", "settlement")
    with pytest.raises(CommandError, match="AdminIsOperator"):
        call_command("cpx_chain", "deploy", "--admin", signer)  # SettlementV2 is the default
    out = StringIO()
    admin = node.with_signer(keys[7]).address
    call_command("cpx_chain", "deploy", "--admin", admin, stdout=out)
    address = out.getvalue().strip().split("=")[1]
    operator = SettlementV2Client(node._conn, keys[0], address)
    assert operator.view("admin") == admin and operator.view("operator") == signer
    alice = operator.with_signer(keys[1])
    alice.deposit(DEPOSIT)
    provider = _address("provider")
    order, signature = _order(alice, 1, 700)
    operator.commit_credits(keccak(b"da"), [(order, signature, 700)], [(_address("x"), 200), (provider, 500)])

    out = StringIO()
    call_command("cpx_chain", "proofs", "--from-chain", address, stdout=out)
    row = json.loads(out.getvalue())[provider]

    assert row["cumulative_wei"] == 500 and row["claimed_wei"] == 0
    operator.claim_credit(row["batch_id"], provider, 500, row["proof"])
    assert operator.balance_wei(provider) == 500
