"""contracts.merkle agrees with OpenZeppelin's MerkleProof as the contract runs it."""

import random

import pytest
from eth_utils import to_checksum_address

from contracts.merkle import Leaf, MerkleTree, hash_pair, leaf_hash, process_proof


def _leaves(n: int, seed: int = 7) -> list[Leaf]:
    rng = random.Random(seed)
    return [
        Leaf(
            rng.randrange(1, 10**9),
            to_checksum_address(rng.randbytes(20)),
            to_checksum_address(rng.randbytes(20)),
            rng.randrange(1, 10**20),
            rng.choice([0, rng.randrange(1, 10**18)]),
        )
        for _ in range(n)
    ]


class TestMerkleTree:
    @pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
    def test_every_proof_leads_to_the_root(self, n):
        tree = MerkleTree(_leaves(n))

        assert all(
            process_proof(leaf_hash(leaf), tree.proof(i)) == tree.root for i, leaf in enumerate(tree.leaves)
        )

    def test_a_single_leaf_is_its_own_root(self):
        [leaf] = _leaves(1)

        assert MerkleTree([leaf]).root == leaf_hash(leaf) and MerkleTree([leaf]).proof(0) == []

    def test_the_root_does_not_depend_on_leaf_order(self):
        leaves = _leaves(9)

        assert MerkleTree(leaves).root == MerkleTree(list(reversed(leaves))).root

    def test_pairs_hash_commutatively(self):
        a, b = b"\x01" * 32, b"\x02" * 32

        assert hash_pair(a, b) == hash_pair(b, a)

    def test_a_tampered_leaf_does_not_reach_the_root(self):
        leaves = _leaves(6)
        tree = MerkleTree(leaves)
        tampered = Leaf(leaves[0].lease_id, leaves[0].consumer, leaves[0].provider, leaves[0].amount_wei + 1)

        assert process_proof(leaf_hash(tampered), tree.proof(0)) != tree.root

    def test_refuses_empty_trees_and_negative_amounts(self):
        with pytest.raises(ValueError):
            MerkleTree([])
        with pytest.raises(ValueError):
            Leaf(1, "0x" + "11" * 20, "0x" + "22" * 20, -1)


class TestAgreementWithTheContract:
    def test_leaf_hashes_match_and_random_multiproofs_verify_on_chain(self, world):
        world.fund(0, 10**12)
        rng = random.Random(11)
        leaves = [world.leaf(i, 0, rng.randrange(2), rng.randrange(1, 1_000)) for i in range(1, 40)]
        tree = MerkleTree(leaves)
        batch_id = world.batch_id()

        world.operator.commit_batch(batch_id, leaves)

        assert world.operator.batch_status(batch_id)["root"] == tree.root_hex
        assert all(world.operator.leaf_hash(leaf) == "0x" + leaf_hash(leaf).hex() for leaf in leaves[:5])
        for provider in world.providers[:2]:
            mine = [i for i, leaf in enumerate(leaves) if leaf.provider == provider]
            world.operator.claim_many(batch_id, *tree.multiproof(rng.sample(mine, len(mine) // 2)))
        for i, leaf in enumerate(leaves):
            if not world.operator.claimed_of(batch_id, leaf.lease_id)["provider"]:
                world.operator.claim(batch_id, leaf, tree.proof(i))
        assert world.operator.batch_status(batch_id)["remaining_wei"] == 0
