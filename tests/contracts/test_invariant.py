"""Property-style runs: a seeded random sequence of 200 operations, valid and invalid, against a model.

After every operation, from events and views alone:
    total deposited == total paid + total refunded + held,
    held == the contract's balance == sum of escrows + sum of batch pots,
and each consumer's escrow equals the model's (so none was ever overdrawn: a debit beyond it must revert).
"""

import random

import pytest

from contracts.client import ChainRejected
from contracts.merkle import MerkleTree
from tests.contracts.conftest import CLAIM_WINDOW_S, make_world

PAID = {"Claimed": "amount"}
OPS = {"native": 200, "token": 100}  # the token variant shares all code paths but the transfer
REFUNDED = {"Refunded": "amount", "Reclaimed": "amount", "RefundClaimed": "amount", "LeafReclaimed": "amount"}


class Ledger:
    """Running totals read from the contract's events."""

    def __init__(self, client):
        self.client = client
        self.next_block = 0
        self.deposited = self.paid = self.refunded = 0

    def catch_up(self) -> None:
        for e in self.client.events(from_block=self.next_block):
            args = e["args"]
            if e["event"] == "Deposited":
                self.deposited += args["amount"]
            elif e["event"] in PAID:
                self.paid += args["amount"]
            elif e["event"] in REFUNDED:
                self.refunded += args["amount"]
            elif e["event"] == "LeaseSettled":
                self.paid += args["amount"]
                self.refunded += args["refund"]
        self.next_block = self.client.block_number() + 1


@pytest.mark.parametrize("asset", ["native", "token"])
def test_random_sequences_keep_the_books_balanced(chain, asset):
    world = make_world(chain, token=asset == "token")
    rng = random.Random(20261126 + (asset == "token"))
    op = world.operator
    escrow = {c.address: 0 for c in world.consumers}
    batches: dict[bytes, tuple[MerkleTree, int]] = {}  # batch id -> (tree, claim deadline)
    done: set[tuple[bytes, int, str]] = set()  # (batch, lease, "provider" | "refund")
    ledger = Ledger(op)
    lease_ids = iter(range(1, 10**6))
    rejections = 0

    def random_leaves(allow_overdraw: bool):
        leaves, debit = [], dict.fromkeys(escrow, 0)
        for _ in range(rng.randint(1, 5)):
            c = rng.randrange(len(world.consumers))
            address = world.consumers[c].address
            room = escrow[address] - debit[address]
            if room <= 0 and not allow_overdraw:
                continue
            amount = rng.randint(1, max(1, room if allow_overdraw else room // 2 or 1))
            refund = rng.choice([0, 0, rng.randint(0, max(0, room - amount))]) if room > amount else 0
            leaf = world.leaf(next(lease_ids), c, rng.randrange(len(world.providers)), amount, refund)
            leaves.append(leaf)
            debit[address] += leaf.debit_wei
        return leaves, debit

    for step in range(OPS[asset]):
        kind = rng.choices(
            ["deposit", "commit", "direct", "claim", "claim_many", "refund_claim", "reclaim_leaf", "refund",
             "reclaim", "time", "double_claim"],
            weights=[14, 12, 6, 16, 6, 5, 5, 5, 5, 6, 4],
        )[0]  # fmt: skip
        try:
            if kind == "deposit":
                c = rng.randrange(len(world.consumers))
                amount = rng.randint(1, 10**6)
                world.fund(c, amount)
                escrow[world.consumers[c].address] += amount
            elif kind in ("commit", "direct"):
                overdraw = rng.random() < 0.15
                leaves, debit = random_leaves(allow_overdraw=overdraw)
                if not leaves:
                    continue
                batch_id = world.batch_id()
                if kind == "commit":
                    op.commit_batch(batch_id, leaves)
                    batches[batch_id] = (MerkleTree(leaves), op.batch_status(batch_id)["claim_deadline"])
                else:
                    op.settle_direct(batch_id, leaves)
                assert all(escrow[a] >= d for a, d in debit.items()), "an overdraw was accepted"
                for a, d in debit.items():
                    escrow[a] -= d
            elif kind in ("claim", "refund_claim", "reclaim_leaf", "double_claim", "claim_many") and batches:
                batch_id = rng.choice(list(batches))
                tree, deadline = batches[batch_id]
                i = rng.randrange(len(tree.leaves))
                leaf = tree.leaves[i]
                now = op.now()
                if abs(now - deadline) <= 3:  # a real node's next block may land on either side of it
                    continue
                open_ = now < deadline
                if kind == "claim_many":
                    mine = [j for j, x in enumerate(tree.leaves) if x.provider == leaf.provider]
                    mine = [j for j in mine if (batch_id, tree.leaves[j].lease_id, "provider") not in done]
                    if not mine or not open_:
                        continue
                    op.claim_many(batch_id, *tree.multiproof(mine))
                    done.update((batch_id, tree.leaves[j].lease_id, "provider") for j in mine)
                    continue
                part = "refund" if kind == "refund_claim" else "provider"
                if kind == "double_claim" and (batch_id, leaf.lease_id, part) not in done:
                    continue
                fn = {"claim": op.claim, "double_claim": op.claim, "refund_claim": op.claim_refund,
                      "reclaim_leaf": op.reclaim_leaf}[kind]  # fmt: skip
                try:
                    fn(batch_id, leaf, tree.proof(i))
                except ChainRejected as exc:
                    expected = {
                        "LeafAlreadyClaimed": (batch_id, leaf.lease_id, part) in done,
                        "ZeroAmount": (leaf.refund_wei if part == "refund" else leaf.amount_wei) == 0,
                        "ClaimWindowClosed": kind in ("claim", "double_claim") and not open_,
                        "ClaimWindowOpen": kind == "reclaim_leaf" and open_,
                    }
                    assert expected.get(exc.error_name), f"step {step}: unexpected {exc!r}"
                    raise
                assert kind != "double_claim", "a double claim was accepted"
                done.add((batch_id, leaf.lease_id, part))
            elif kind == "refund":
                c = world.consumers[rng.randrange(len(world.consumers))].address
                amount = rng.randint(1, max(1, escrow[c] // 3))
                op.refund(c, amount)
                assert amount <= escrow[c]
                escrow[c] -= amount
            elif kind == "reclaim":
                consumer = world.consumers[rng.randrange(len(world.consumers))]
                consumer.reclaim()
                escrow[consumer.address] = 0
            elif kind == "time":
                op.advance_time(rng.choice([10, 100, CLAIM_WINDOW_S, 3 * CLAIM_WINDOW_S]))
        except ChainRejected:
            rejections += 1

        ledger.catch_up()
        held = world.held_wei()
        assert ledger.deposited == ledger.paid + ledger.refunded + held, f"books unbalanced after step {step}"
        escrows = {a: op.escrow_of(a)["escrow_wei"] for a in escrow}
        assert escrows == escrow, f"escrow differs from the model after step {step} ({kind})"
        if step % 10 == 9:  # the pot decomposition costs one call per batch: checked every tenth step
            pots = sum(op.batch_status(b)["remaining_wei"] for b in batches)
            assert held == sum(escrows.values()) + pots

    assert rejections > 0 and ledger.paid > 0 and ledger.refunded > 0
