"""A hostile payee (contracts/solidity/test/ReentrantReceiver.sol) calls back into Settlement when paid.

Each attack must fail inside the payment with ReentrancyGuardReentrantCall while the outer call
completes, and the attacker is paid exactly once.
"""

from contracts.client import decode_revert
from contracts.merkle import Leaf, MerkleTree


def _receiver(world) -> str:
    receiver = world.operator.deploy_artifact("ReentrantReceiver")
    world.operator.transact_artifact(receiver, "ReentrantReceiver", "setTarget", world.address)
    return receiver


def _arm(world, receiver: str, fn: str, *args) -> None:
    payload = world.operator.encode_call("Settlement", fn, *args)
    world.operator.transact_artifact(receiver, "ReentrantReceiver", "arm", payload)


def _attack_outcome(world, receiver: str) -> tuple[bool, bool, str]:
    read = world.operator.call_artifact
    attacked = read(receiver, "ReentrantReceiver", "attacked")
    succeeded = read(receiver, "ReentrantReceiver", "attackSucceeded")
    result = read(receiver, "ReentrantReceiver", "attackResult")
    return attacked, succeeded, decode_revert(bytes.fromhex(result[2:])).error_name


class TestReentrancy:
    def test_a_provider_cannot_claim_its_leaf_again_from_inside_the_payment(self, world):
        world.fund(0, 1_000)
        receiver = _receiver(world)
        leaves = [Leaf(1, world.consumers[0].address, receiver, 300), world.leaf(2, 0, 0, 10)]
        tree = MerkleTree(leaves)
        batch_id = world.batch_id()
        world.operator.commit_batch(batch_id, leaves)
        _arm(world, receiver, "claim", batch_id, leaves[0].as_tuple(), tree.proof(0))

        world.relayer.claim(batch_id, leaves[0], tree.proof(0))

        assert _attack_outcome(world, receiver) == (True, False, "ReentrancyGuardReentrantCall")
        assert world.operator.balance_wei(receiver) == 300
        assert world.operator.batch_status(batch_id)["remaining_wei"] == 10

    def test_a_consumer_cannot_reclaim_from_inside_a_refund(self, world):
        receiver = _receiver(world)
        deposit = world.operator.encode_call("Settlement", "deposit", 100)
        world.operator.transact_artifact(receiver, "ReentrantReceiver", "callTarget", deposit, value_wei=100)
        world.operator.advance_time(10**6)  # the reclaim window is open: only the guard stands in the way
        _arm(world, receiver, "reclaim")

        world.operator.refund(receiver, 40)

        assert _attack_outcome(world, receiver) == (True, False, "ReentrancyGuardReentrantCall")
        assert world.operator.escrow_of(receiver)["escrow_wei"] == 60
        assert world.operator.balance_wei(receiver) == 40

    def test_a_provider_paid_directly_cannot_claim_elsewhere_during_the_payment(self, world):
        world.fund(0, 1_000)
        receiver = _receiver(world)
        merkle = [Leaf(7, world.consumers[0].address, receiver, 50), world.leaf(8, 0, 0, 5)]
        tree = MerkleTree(merkle)
        merkle_id = world.batch_id()
        world.operator.commit_batch(merkle_id, merkle)
        _arm(world, receiver, "claim", merkle_id, merkle[0].as_tuple(), tree.proof(0))

        world.operator.settle_direct(world.batch_id(), [Leaf(1, world.consumers[0].address, receiver, 20)])

        assert _attack_outcome(world, receiver) == (True, False, "ReentrancyGuardReentrantCall")
        assert world.operator.balance_wei(receiver) == 20
        assert world.operator.claimed_of(merkle_id, 7) == {"provider": False, "refund": False}
