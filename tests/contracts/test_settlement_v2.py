"""SettlementV2 through the Python client, on the in-process EVM and (CPX_ANVIL_URL) on anvil.

Each test is one rule of the contract's trust model (SettlementV2.sol's docstring): no debit without a
consumer-signed order, no order spent twice, cumulative claims paid once, no operator freeze, data
available from chain alone, solvency with fee-on-transfer tokens.
"""

from dataclasses import dataclass

import pytest
from eth_utils import keccak, to_checksum_address

from contracts.client import SettlementV2Client
from contracts.merkle import CreditTree
from contracts.orders import Order, job_hash, order_digest, verify_order
from tests.contracts.conftest import rejected

WINDOW_S = 86_400
DEPOSIT = 10**15
FAR = 2**40


@pytest.fixture
def chain_v2(chain):
    """The same backends as `chain`, as a SettlementV2 client."""
    return SettlementV2Client(chain._conn, chain._account.key, None)


@dataclass
class V2:
    operator: SettlementV2Client
    admin: SettlementV2Client
    consumers: list[SettlementV2Client]
    stranger: SettlementV2Client
    providers: list[str]
    token: str | None
    counter: int = 0
    nonces: dict | None = None

    @property
    def address(self) -> str:
        return self.operator.contract_address

    def batch_id(self) -> bytes:
        self.counter += 1
        return keccak(f"{self.address}:{self.counter}".encode())

    def order(self, consumer: int, max_wei: int, cumulative_wei: int, *, nonce=None, deadline=FAR):
        c = self.consumers[consumer]
        self.nonces = self.nonces or {}
        n = nonce if nonce is not None else self.nonces.get(consumer, 0) + 1
        self.nonces[consumer] = max(n, self.nonces.get(consumer, 0))
        o = Order(c.address, job_hash(f"{consumer}-{n}"), max_wei, cumulative_wei, n, deadline)
        return o, c.sign(o)

    def fund(self, consumer: int, amount: int = DEPOSIT) -> dict:
        if self.token:
            self.operator.transact_artifact(
                self.token, "MockStablecoin", "mint", self.consumers[consumer].address, amount
            )
        return self.consumers[consumer].deposit(amount)


def deploy_v2(chain: SettlementV2Client, *, token: bool = False) -> V2:
    keys = chain.dev_keys()
    operator = chain.with_signer(keys[0])
    admin = chain.with_signer(keys[7])
    token_address = operator.deploy_artifact("MockStablecoin", "tUSD") if token else None
    operator.deploy(token_address=token_address, admin=admin.address, reclaim_window_s=WINDOW_S)
    admin.contract_address = operator.contract_address
    salt = operator.contract_address.encode()
    providers = [to_checksum_address(keccak(salt + bytes([i]))[-20:]) for i in range(4)]
    return V2(
        operator=operator,
        admin=admin,
        consumers=[operator.with_signer(k) for k in keys[1:5]],
        stranger=operator.with_signer(keys[6]),
        providers=providers,
        token=token_address,
    )


@pytest.fixture
def v2(chain_v2) -> V2:
    return deploy_v2(chain_v2)


def test_order_signature_binds_chain_and_contract(v2):
    order, signature = v2.order(0, 100, 100)
    chain_id = v2.operator.chain_id()
    verify_order(order, signature, chain_id=chain_id, contract=v2.address)
    assert (
        v2.operator.view(
            "orderDigest",
            order.consumer,
            bytes.fromhex(order.job_hash[2:]),
            100,
            100,
            order.nonce,
            order.deadline,
        )
        == "0x" + order_digest(order, chain_id=chain_id, contract=v2.address).hex()
    )
    with pytest.raises(ValueError):
        verify_order(order, signature, chain_id=chain_id + 1, contract=v2.address)
    with pytest.raises(ValueError):
        verify_order(order, signature, chain_id=chain_id, contract=v2.providers[0])


def test_commit_then_one_cumulative_claim_pays_many_batches(v2):
    v2.fund(0)
    p = v2.providers
    o1, s1 = v2.order(0, 300, 300)
    b1 = v2.batch_id()
    v2.operator.commit_credits(b1, [(o1, s1, 300)], [(p[0], 200), (p[1], 100)])
    o2, s2 = v2.order(0, 500, 800)
    b2 = v2.batch_id()
    r2 = v2.operator.commit_credits(b2, [(o2, s2, 500)], [(p[0], 600), (p[2], 100)])
    assert v2.operator.root_of(b2) == r2["root"]
    tree = CreditTree([(p[0], 600), (p[2], 100)])
    before = v2.operator.balance_wei(p[0])
    v2.stranger.claim_credit(b2, p[0], 600, tree.proof(p[0]))  # anyone relays; the payee is paid
    assert v2.operator.balance_wei(p[0]) - before == 600
    assert v2.operator.claimed_wei(p[0]) == 600
    # double payment: the same (or an older) cumulative leaf pays nothing more
    rejected("NothingToClaim", v2.stranger.claim_credit, b2, p[0], 600, tree.proof(p[0]))
    old = CreditTree([(p[0], 200), (p[1], 100)])
    rejected("NothingToClaim", v2.stranger.claim_credit, b1, p[0], 200, old.proof(p[0]))
    rejected("InvalidProof", v2.stranger.claim_credit, b2, p[0], 700, tree.proof(p[0]))
    assert v2.operator.view("pot") == 800 - 600


def test_no_debit_without_the_consumers_signature(v2):
    v2.fund(0)
    v2.fund(1)
    order, _ = v2.order(0, 10**14, 10**14)
    forged = v2.consumers[1].sign(order)  # signed by another consumer
    rejected(
        "InvalidSignature",
        v2.operator.commit_credits,
        v2.batch_id(),
        [(order, forged, 1)],
        [(v2.providers[0], 1)],
    )
    stolen = v2.operator.sign(order)  # the operator's own (stolen) key
    rejected(
        "InvalidSignature",
        v2.operator.commit_credits,
        v2.batch_id(),
        [(order, stolen, 1)],
        [(v2.providers[0], 1)],
    )
    assert v2.operator.escrow_of(v2.consumers[0].address)["escrow_wei"] == DEPOSIT


def test_an_order_is_spent_at_most_once_across_batches(v2):
    v2.fund(0)
    order, signature = v2.order(0, 1000, 1000)
    v2.operator.commit_credits(v2.batch_id(), [(order, signature, 1000)], [(v2.providers[0], 1000)])
    # replaying the same signed order in a new batch cannot spend it again
    rejected(
        "OrderExceeded",
        v2.operator.commit_credits,
        v2.batch_id(),
        [(order, signature, 1)],
        [(v2.providers[0], 1001)],
    )
    assert v2.operator.escrow_of(v2.consumers[0].address)["debited_wei"] == 1000


def test_expired_and_stale_orders_are_refused(v2):
    v2.fund(0)
    now = v2.operator.now()
    expired, s = v2.order(0, 10, 10, deadline=now - 1)
    rejected(
        "OrderExpired", v2.operator.commit_credits, v2.batch_id(), [(expired, s, 10)], [(v2.providers[0], 10)]
    )
    newer, s2 = v2.order(0, 10, 10, nonce=5)
    v2.operator.commit_credits(v2.batch_id(), [(newer, s2, 5)], [(v2.providers[0], 5)])
    older, s3 = v2.order(0, 10, 20, nonce=3)
    rejected(
        "OrderStale", v2.operator.commit_credits, v2.batch_id(), [(older, s3, 5)], [(v2.providers[0], 10)]
    )


def test_operator_key_theft_takes_nothing_unsigned_and_admin_is_split(v2):
    """The hot operator key can neither debit without orders nor change roles/windows; admin != operator."""
    v2.fund(0)
    # the contract refuses a deploy whose admin is the hot operator signer
    rejected("AdminIsOperator", v2.operator.deploy, admin=v2.operator.address)
    rejected("NotAdmin", v2.operator.admin_call, "proposeOperator", v2.stranger.address)
    rejected("NotAdmin", v2.operator.admin_call, "proposeWindow", 400 * 86400)
    rejected("NotAdmin", v2.operator.admin_call, "setPaused", True)
    rejected("NotOperator", v2.stranger.commit_credits, v2.batch_id(), [], [(v2.stranger.address, 1)])
    # a commit with no debit at all only publishes credits: nothing leaves any escrow
    b = v2.batch_id()
    v2.operator.commit_credits(b, [], [(v2.operator.address, 10**15)])
    tree = CreditTree([(v2.operator.address, 10**15)])
    rejected(
        "PotExhausted",
        v2.stranger.claim_credit,
        b,
        v2.operator.address,
        10**15,
        tree.proof(v2.operator.address),
    )
    assert v2.operator.escrow_of(v2.consumers[0].address)["escrow_wei"] == DEPOSIT


def test_no_freeze_replayed_orders_do_not_move_the_reclaim_clock(v2):
    v2.fund(0)
    order, signature = v2.order(0, 100, 100)
    v2.operator.commit_credits(v2.batch_id(), [(order, signature, 1)], [(v2.providers[0], 1)])
    start = v2.operator.escrow_of(v2.consumers[0].address)["last_activity"]
    v2.operator.advance_time(WINDOW_S // 2)
    # the operator keeps re-using the consumer's old order with 1-wei debits: the clock stays put
    v2.operator.commit_credits(v2.batch_id(), [(order, signature, 1)], [(v2.providers[0], 2)])
    assert v2.operator.escrow_of(v2.consumers[0].address)["last_activity"] == start
    # the admin lengthens the window (timelocked): escrow already deposited keeps its window
    v2.admin.admin_call("proposeWindow", 365 * 86400)
    rejected("TimelockActive", v2.admin.admin_call, "executeWindow")
    v2.operator.advance_time(WINDOW_S // 2 + 10)
    v2.admin.admin_call("setPaused", True)  # a pause does not stop a reclaim
    before = v2.operator.balance_wei(v2.consumers[0].address)
    receipt = v2.consumers[0].reclaim()
    after = v2.operator.balance_wei(v2.consumers[0].address)
    assert after - before + receipt["fee_wei"] == DEPOSIT - 2


def test_window_change_never_applies_to_existing_escrow(v2):
    v2.fund(0)
    v2.admin.admin_call("proposeWindow", 300 * 86400)
    v2.operator.advance_time(2 * 86400 + 1)
    v2.admin.admin_call("executeWindow")
    assert v2.operator.view("reclaimWindow") == 300 * 86400
    assert v2.operator.escrow_of(v2.consumers[0].address)["window_s"] == WINDOW_S
    v2.consumers[0].reclaim()  # 2 days > the 1-day window in force when it deposited
    v2.fund(1)
    assert v2.operator.escrow_of(v2.consumers[1].address)["window_s"] == 300 * 86400


def test_claim_many_skips_a_front_run_payee(v2):
    v2.fund(0)
    o, s = v2.order(0, 300, 300)
    b = v2.batch_id()
    credits = [(v2.providers[0], 100), (v2.providers[1], 200)]
    v2.operator.commit_credits(b, [(o, s, 300)], credits)
    tree = CreditTree(credits)
    v2.stranger.claim_credit(b, v2.providers[0], 100, tree.proof(v2.providers[0]))  # front-run
    v2.operator.claim_credits([(b, p, c, tree.proof(p)) for p, c in credits])
    assert v2.operator.claimed_wei(v2.providers[1]) == 200
    assert v2.operator.view("pot") == 0


def test_a_payee_that_rejects_payment_is_parked_not_blocking(v2):
    receiver = v2.operator.deploy_artifact("ReentrantReceiver")
    v2.operator.transact_artifact(receiver, "ReentrantReceiver", "setRejectPayments", True)
    v2.fund(0)
    o, s = v2.order(0, 300, 300)
    b = v2.batch_id()
    credits = [(receiver, 100), (v2.providers[1], 200)]
    v2.operator.commit_credits(b, [(o, s, 300)], credits)
    tree = CreditTree(credits)
    v2.operator.claim_credits([(b, p, c, tree.proof(p)) for p, c in credits])
    assert v2.operator.view("parked", receiver) == 100
    assert v2.operator.balance_wei(v2.providers[1]) == 200


def test_proofs_from_chain_alone(v2):
    v2.fund(0)
    p = v2.providers
    o1, s1 = v2.order(0, 300, 300)
    v2.operator.commit_credits(v2.batch_id(), [(o1, s1, 300)], [(p[0], 200), (p[1], 100)])
    o2, s2 = v2.order(0, 300, 600)
    b2 = v2.batch_id()
    v2.operator.commit_credits(b2, [(o2, s2, 300)], [(p[2], 50), (p[0], 450)])
    fresh = SettlementV2Client(v2.stranger._conn, v2.stranger._account.key, v2.address)
    proofs = fresh.proofs_from_chain()
    assert proofs[p[0]]["cumulative_wei"] == 450 and proofs[p[1]]["cumulative_wei"] == 100
    row = proofs[p[0]]
    fresh.claim_credit(row["batch_id"], p[0], row["cumulative_wei"], row["proof"])
    assert fresh.balance_wei(p[0]) == 450


def test_fee_on_transfer_token_credits_what_arrived(chain_v2):
    keys = chain_v2.dev_keys()
    operator = chain_v2.with_signer(keys[0])
    token = operator.deploy_artifact("FeeOnTransferToken")
    operator.deploy(
        token_address=token, admin=chain_v2.with_signer(keys[7]).address, reclaim_window_s=WINDOW_S
    )
    consumer = operator.with_signer(keys[1])
    operator.transact_artifact(token, "FeeOnTransferToken", "mint", consumer.address, 10_000)
    consumer.transact_artifact(token, "FeeOnTransferToken", "approve", operator.contract_address, 10_000)
    consumer.deposit(10_000, approve=False)
    escrow = operator.escrow_of(consumer.address)["escrow_wei"]
    held = operator.call_artifact(token, "FeeOnTransferToken", "balanceOf", operator.contract_address)
    assert escrow == held == 9_900


def test_the_contract_builds_the_same_credit_root_as_python_for_every_shape(v2):
    for n in (1, 2, 3, 5, 7, 8, 9):
        credits = [(to_checksum_address(keccak(bytes([n, i]))[-20:]), 10**9 + i) for i in range(n)]
        batch = v2.batch_id()
        receipt = v2.operator.commit_credits(batch, [], credits)
        assert v2.operator.root_of(batch) == receipt["root"] == CreditTree(credits).root_hex
