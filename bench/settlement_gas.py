"""All-in gas per settled lease, previous contract (Settlement) vs the new one (SettlementV2), measured
side by side in the same run, on the in-process EVM and (--anvil URL or CPX_ANVIL_URL) on anvil.

The realistic mix (the issue's): PROVIDERS providers (100) each get 1–5 leases per batch, each lease from
one of CONSUMERS consumers; BATCHES batches (10) are committed, then every payee claims once. Every lease
also carries the platform's fee.

* previous — one leaf per lease for the provider and one for the fee (as contracts.services batches them);
  after the batches each provider claims each batch with one multiproof (claimMany), the platform claims
  its fee leaves per batch the same way;
* new — each batch debits every consumer once under its newest signed EIP-712 order and publishes every
  payee's cumulative earnings; after the batches each payee (provider, platform) claims once.

Figures (gas / one 21,000-gas native transfer measured on the same chain):

* commit_per_lease_vs_transfer — commit gas of all batches / leases;
* all_in_per_lease_vs_transfer — (commits + every claim) / leases;
* worst_single_lease_provider_vs_transfer — a provider with one lease in every batch, claiming by itself
  (previous: each batch; new: once after the batches): commit per lease + its claim gas / its leases.

    .venv/bin/python bench/settlement_gas.py [--anvil URL] [--json] [--batches 10] [--providers 100]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eth_utils import keccak, to_checksum_address  # noqa: E402

from contracts.client import SettlementClient, SettlementV2Client  # noqa: E402
from contracts.merkle import CreditTree, Leaf, MerkleTree  # noqa: E402
from contracts.orders import Order, job_hash  # noqa: E402

CONSUMERS = 8
FEE_LEAF_BASE = 1 << 128
TRANSFER = 21_000
FAR = 2**40


def _mix(rng: random.Random, providers: list[str], consumers: int, batches: int):
    """Per batch, the leases: (lease id, consumer index, provider, amount wei, fee wei)."""
    lease = 0
    out = []
    for _ in range(batches):
        rows = []
        for k, provider in enumerate(providers):
            for _ in range(1 if k == 0 else rng.randint(1, 5)):
                lease += 1
                rows.append((lease, rng.randrange(consumers), provider, rng.randrange(10**9, 10**10), 10**8))
        out.append(rows)
    return out


def _actors(base: SettlementClient, providers: list[str], salt: bytes):
    keys = base.dev_keys()
    operator = base.with_signer(keys[0])
    fee = to_checksum_address(keccak(salt + b"fee")[-20:])
    for address in [*providers, fee]:  # payees already hold a balance: no new-account surcharge
        operator.send_native(address, 1)
    transfer = operator.send_native(providers[0], 1)["gas_used"]
    assert transfer == TRANSFER, transfer
    return keys, operator, fee


def measure_previous(base: SettlementClient, batches, providers: list[str]) -> dict:
    keys, operator, fee = _actors(base, providers, b"previous")
    operator.deploy(claim_window_s=7 * 86400, reclaim_window_s=30 * 86400)
    consumers = [operator.with_signer(k) for k in keys[1 : 1 + CONSUMERS]]
    for consumer in consumers:
        consumer.deposit(10**17)
    commits = claims = leases = 0
    committed = []
    for b, rows in enumerate(batches):
        leaves = []
        for lease, c, provider, amount, fee_wei in rows:
            leaves.append(Leaf(lease, consumers[c].address, provider, amount))
            leaves.append(Leaf(FEE_LEAF_BASE + lease, consumers[c].address, fee, fee_wei))
        batch_id = keccak(f"prev-{b}".encode())
        commits += operator.commit_batch(batch_id, leaves)["gas_used"]
        leases += len(rows)
        committed.append((batch_id, MerkleTree(leaves)))
    lone = batches[0][0][2]
    lone_gas = 0
    for batch_id, tree in committed:  # claims every BATCHES batches: one claimMany per payee per batch
        by_payee = defaultdict(list)
        for i, leaf in enumerate(tree.leaves):
            by_payee[leaf.provider].append(i)
        for payee, indices in by_payee.items():
            gas = operator.claim_many(batch_id, *tree.multiproof(indices))["gas_used"]
            claims += gas
            lone_gas += gas if payee == lone else 0
    return _figures(commits, claims, leases, commits / leases + lone_gas / len(batches))


def measure_new(base: SettlementClient, batches, providers: list[str], *, relayed: bool) -> dict:
    keys, _, fee = _actors(base, providers, b"new" + bytes([relayed]))
    v2 = SettlementV2Client(base._conn, keys[0])
    admin = to_checksum_address(keccak(b"cold admin")[-20:])
    v2.deploy(admin=admin, reclaim_window_s=30 * 86400)
    consumers = [v2.with_signer(k) for k in keys[1 : 1 + CONSUMERS]]
    for consumer in consumers:
        consumer.deposit(10**17)
    state = {"nonce": defaultdict(int), "cap": defaultdict(int), "earned": defaultdict(int)}
    # Steady state: one earlier batch, claimed by every payee, so claims write words already set.
    _, tree = _commit_new(v2, consumers, batches[0], fee, keccak(b"warm-up"), state)
    v2.claim_credits([(keccak(b"warm-up"), p, c, tree.proof(p)) for p, c in tree.credits])
    commits = claims = leases = 0
    last_batch: dict[str, bytes] = {}
    trees: dict[bytes, CreditTree] = {}
    for b, rows in enumerate(batches):
        batch_id = keccak(f"new-{b}".encode())
        gas, tree = _commit_new(v2, consumers, rows, fee, batch_id, state)
        commits += gas
        leases += len(rows)
        trees[batch_id] = tree
        for payee, _ in tree.credits:
            last_batch[payee] = batch_id
    lone = batches[0][0][2]  # the provider with one lease per batch claims by itself
    owed = [(b, p, trees[b].cumulative(p), trees[b].proof(p)) for p, b in last_batch.items() if p != lone]
    if relayed:  # one relayer (the platform's beat task) claims for every other payee in one transaction
        claims += v2.claim_credits(owed)["gas_used"]
    else:  # each payee claims once, by itself, for all batches
        claims += sum(v2.claim_credit(b, p, c, proof)["gas_used"] for b, p, c, proof in owed)
    b = last_batch[lone]
    lone_gas = v2.claim_credit(b, lone, trees[b].cumulative(lone), trees[b].proof(lone))["gas_used"]
    claims += lone_gas
    return _figures(commits, claims, leases, commits / leases + lone_gas / len(batches))


def _commit_new(v2, consumers, rows, fee, batch_id, state):
    """One commit: every consumer of the batch signs a new order (its newest), debited once."""
    charge: dict[int, int] = defaultdict(int)
    for _lease, c, provider, amount, fee_wei in rows:
        charge[c] += amount + fee_wei
        state["earned"][provider] += amount
        state["earned"][fee] += fee_wei
    debits = []
    for c, amount in sorted(charge.items()):
        consumer = consumers[c]
        state["nonce"][c] += 1
        state["cap"][c] += amount
        order = Order(consumer.address, job_hash(f"{c}-{state['nonce'][c]}"), amount, state["cap"][c],
                      state["nonce"][c], FAR)  # fmt: skip
        debits.append((order, consumer.sign(order), amount))
    payees = list(dict.fromkeys([r[2] for r in rows] + [fee]))
    credits = [(p, state["earned"][p]) for p in payees]
    receipt = v2.commit_credits(batch_id, debits, credits)
    return receipt["gas_used"], CreditTree(credits)


def _figures(commits: int, claims: int, leases: int, worst: float) -> dict:
    return {
        "leases": leases,
        "commit_gas": commits,
        "claim_gas": claims,
        "commit_per_lease_vs_transfer": round(commits / leases / TRANSFER, 4),
        "all_in_per_lease_vs_transfer": round((commits + claims) / leases / TRANSFER, 4),
        "worst_single_lease_provider_vs_transfer": round(worst / TRANSFER, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anvil", default=os.environ.get("CPX_ANVIL_URL", ""), help="anvil JSON-RPC URL")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--providers", type=int, default=100)
    parser.add_argument("--no-evm", action="store_true", help="skip the in-process EVM (anvil only)")
    args = parser.parse_args(argv)
    rng = random.Random(11)
    providers_for_mix = [f"p{i}" for i in range(args.providers)]
    mix = _mix(rng, providers_for_mix, CONSUMERS, args.batches)
    backends = (
        [] if args.no_evm else [("in-process EVM (py-evm)", lambda: SettlementClient.connect(timeout_s=300))]
    )
    if args.anvil:
        backends.append((f"anvil {args.anvil}", lambda: SettlementClient.connect(args.anvil, timeout_s=300)))
    results = []
    for name, connect in backends:
        row = {"backend": name, "batches": args.batches, "providers": args.providers, "consumers": CONSUMERS}
        variants = (
            ("previous", measure_previous),
            ("new", lambda *a: measure_new(*a, relayed=True)),
            ("new_self_claims", lambda *a: measure_new(*a, relayed=False)),
        )
        for label, fn in variants:
            base = connect()
            salt = f"{label}-{name}".encode()
            real = [
                to_checksum_address(keccak(salt + i.to_bytes(4, "big"))[-20:]) for i in range(args.providers)
            ]
            by_name = dict(zip(providers_for_mix, real, strict=True))
            batches = [[(lease, c, by_name[p], a, f) for lease, c, p, a, f in rows] for rows in mix]
            row[label] = fn(base, batches, real)
            if not args.json:
                print(f"{name:28} {label:9} {row[label]}", flush=True)
        results.append(row)
    if args.json:
        print(json.dumps({"transfer_gas": TRANSFER, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
