"""Merkle trees of settlement leaves, as OpenZeppelin's StandardMerkleTree builds them.

The contract verifies with OpenZeppelin's ``MerkleProof`` (sorted-pair keccak256), so the tree here must
be bit-for-bit the one ``@openzeppelin/merkle-tree`` would build:

* leaf = keccak256(keccak256(abi.encode(leaseId, consumer, provider, amount, refund))) — double hashing
  keeps a 64-byte leaf preimage from ever being mistaken for an inner node (second-preimage attack);
* leaves sorted by hash, laid out in a flat array ``tree`` of 2n-1 nodes, leaves at the end in reverse
  order, node i's children at 2i+1 and 2i+2, root at 0;
* inner node = keccak256(min(a, b) ++ max(a, b)) — sorted pairs, so proofs need no left/right bits;
* multiproofs as ``getMultiProof`` (leaves in the order the verifier consumes them, flags saying
  "take the next hash from the leaves/stack" (True) or "from the proof" (False)).

Pure Python over eth_abi / eth_utils: no web3, no Django.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from eth_abi import encode
from eth_utils import keccak, to_checksum_address

LEAF_TYPES = ("uint256", "address", "address", "uint256", "uint256")


@dataclass(frozen=True, slots=True)
class Leaf:
    """One settled lease: ``amount_wei`` to the provider, ``refund_wei`` back to the consumer."""

    lease_id: int
    consumer: str
    provider: str
    amount_wei: int
    refund_wei: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "consumer", to_checksum_address(self.consumer))
        object.__setattr__(self, "provider", to_checksum_address(self.provider))
        if min(self.lease_id, self.amount_wei, self.refund_wei) < 0:
            raise ValueError("lease id and amounts must be non-negative")

    def as_tuple(self) -> tuple[int, str, str, int, int]:
        """The ``Settlement.Leaf`` struct as the ABI encoder wants it."""
        return (self.lease_id, self.consumer, self.provider, self.amount_wei, self.refund_wei)

    @property
    def debit_wei(self) -> int:
        """What this leaf takes from the consumer's escrow."""
        return self.amount_wei + self.refund_wei


def leaf_hash(leaf: Leaf) -> bytes:
    """keccak256(bytes.concat(keccak256(abi.encode(leaseId, consumer, provider, amount, refund))))."""
    return keccak(keccak(encode(LEAF_TYPES, leaf.as_tuple())))


def hash_pair(a: bytes, b: bytes) -> bytes:
    """OpenZeppelin ``Hashes.commutativeKeccak256``."""
    return keccak(a + b) if a < b else keccak(b + a)


def process_proof(leaf_digest: bytes, proof: Iterable[bytes]) -> bytes:
    """The root a proof leads to (``MerkleProof.processProof``)."""
    node = leaf_digest
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node


class MerkleTree:
    """A StandardMerkleTree over settlement leaves; proofs address leaves by their input position."""

    def __init__(self, leaves: Sequence[Leaf]):
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        self.leaves: tuple[Leaf, ...] = tuple(leaves)
        hashed = sorted(((leaf_hash(leaf), i) for i, leaf in enumerate(self.leaves)), key=lambda p: p[0])
        n = len(hashed)
        self._tree: list[bytes] = [b""] * (2 * n - 1)
        self._tree_index: list[int] = [0] * n
        for position, (digest, input_index) in enumerate(hashed):
            tree_index = len(self._tree) - 1 - position
            self._tree[tree_index] = digest
            self._tree_index[input_index] = tree_index
        for i in range(len(self._tree) - 1 - n, -1, -1):
            self._tree[i] = hash_pair(self._tree[2 * i + 1], self._tree[2 * i + 2])

    @property
    def root(self) -> bytes:
        return self._tree[0]

    @property
    def root_hex(self) -> str:
        return "0x" + self.root.hex()

    def proof(self, index: int) -> list[bytes]:
        """Sibling hashes from the leaf at input position ``index`` up to the root."""
        node = self._tree_index[index]
        proof = []
        while node > 0:
            proof.append(self._tree[node - 1 if node % 2 == 0 else node + 1])
            node = (node - 1) // 2
        return proof

    def multiproof(self, indices: Iterable[int]) -> tuple[list[Leaf], list[bytes], list[bool]]:
        """(leaves in verifier order, proof, proof flags) for ``MerkleProof.multiProofVerify``."""
        tree_indices = sorted({self._tree_index[i] for i in indices}, reverse=True)
        if not tree_indices:
            raise ValueError("a multiproof needs at least one leaf")
        by_tree_index = {self._tree_index[i]: leaf for i, leaf in enumerate(self.leaves)}
        stack = list(tree_indices)
        proof: list[bytes] = []
        flags: list[bool] = []
        while stack and stack[0] > 0:
            j = stack.pop(0)
            sibling = j - 1 if j % 2 == 0 else j + 1
            parent = (j - 1) // 2
            if stack and stack[0] == sibling:
                flags.append(True)
                stack.pop(0)
            else:
                flags.append(False)
                proof.append(self._tree[sibling])
            stack.append(parent)
        return [by_tree_index[t] for t in tree_indices], proof, flags

    def debits(self) -> dict[str, int]:
        """Per consumer, the escrow the batch takes (sum of amount + refund over its leaves)."""
        totals: dict[str, int] = {}
        for leaf in self.leaves:
            totals[leaf.consumer] = totals.get(leaf.consumer, 0) + leaf.debit_wei
        return totals


# ---------------------------------------------------------------------------------------------------------
# Cumulative credit trees (SettlementV2): one leaf per payee of a batch, (payee, cumulative earnings).


def credit_leaf(payee: str, cumulative_wei: int) -> bytes:
    """keccak256(bytes.concat(keccak256(abi.encode(payee, cumulative)))) (``SettlementV2.creditLeaf``)."""
    return keccak(keccak(encode(("address", "uint256"), (to_checksum_address(payee), cumulative_wei))))


class CreditTree:
    """The tree SettlementV2 builds on chain from a commit's credits: leaves in the given order, each
    level pairs neighbours with the sorted-pair hash, an odd last node moves up unchanged. Anyone holding
    a commit's calldata rebuilds the same tree, hence every payee's proof."""

    def __init__(self, credits: Sequence[tuple[str, int]]):
        if not credits:
            raise ValueError("a credit tree needs at least one payee")
        self.credits: tuple[tuple[str, int], ...] = tuple(
            (to_checksum_address(p), int(c)) for p, c in credits
        )
        payees = [p for p, _ in self.credits]
        if len(set(payees)) != len(payees):
            raise ValueError("a payee appears once per credit tree")
        self._levels: list[list[bytes]] = [[credit_leaf(p, c) for p, c in self.credits]]
        while len(self._levels[-1]) > 1:
            level = self._levels[-1]
            up = [hash_pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                up.append(level[-1])
            self._levels.append(up)
        self._index = {p: i for i, p in enumerate(payees)}

    @property
    def root(self) -> bytes:
        return self._levels[-1][0]

    @property
    def root_hex(self) -> str:
        return "0x" + self.root.hex()

    def cumulative(self, payee: str) -> int:
        return self.credits[self._index[to_checksum_address(payee)]][1]

    def proof(self, payee: str) -> list[bytes]:
        i = self._index[to_checksum_address(payee)]
        proof = []
        for level in self._levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):
                proof.append(level[sibling])
            i >>= 1
        return proof
