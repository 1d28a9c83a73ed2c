"""Gas per settled lease: Merkle batches (commit + claims) and direct payout vs one transfer per lease.

For batches of 1, 10, 100 and 1,000 leases (lease ids dense, 8 consumers, up to 10 providers that already
hold a balance), on the in-process EVM and, with CPX_ANVIL_URL or --anvil URL, on anvil in the same run:

* commit/lease  — commitBatch gas / N (root + one escrow debit per distinct consumer);
* many/lease    — every provider claims all its leaves with one multiproof (claimMany), summed / N;
* claim/lease   — one single-leaf claim, averaged over up to 20 leaves (the worst case for a provider);
* merkle/lease  — commit + claimMany, the all-in cost of settling and paying a lease through a batch;
* direct/lease  — settleDirect gas / N (pays providers in the same transaction);
* transfer      — one plain transfer measured on the same chain (21,000 native; an ERC-20 transfer).

The ratios divide by the transfer. DESIGN.md's target (<= 1/10) is about the settlement itself
(commit/lease); claim costs are shown beside it so the whole bill is visible. The per-consumer marginal
cost of a commit is measured too (100 leases from 1 vs 8 consumers): a batch whose leases all belong to
different consumers costs that much per lease.

    .venv/bin/python bench/settlement_gas.py [--anvil URL] [--sizes 1,10,100,1000] [--asset native,token]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eth_utils import keccak, to_checksum_address  # noqa: E402

from contracts.client import ChainRejected, SettlementClient  # noqa: E402
from contracts.merkle import Leaf, MerkleTree  # noqa: E402

CONSUMERS = 8
PROVIDERS = 10
SINGLE_CLAIM_SAMPLE = 20


def _setup(base: SettlementClient, asset: str, sizes: list[int]):
    keys = base.dev_keys()
    operator = base.with_signer(keys[0])
    token = operator.deploy_artifact("MockStablecoin", "tUSD") if asset == "token" else None
    operator.deploy(token_address=token, claim_window_s=7 * 86400, reclaim_window_s=30 * 86400)
    consumers = [operator.with_signer(k) for k in keys[1 : 1 + CONSUMERS]]
    salt = operator.contract_address.encode()
    providers = [to_checksum_address(keccak(salt + bytes([i]))[-20:]) for i in range(PROVIDERS)]
    per_consumer = 10**15
    for consumer in consumers:
        if token:
            operator.transact_artifact(token, "MockStablecoin", "mint", consumer.address, per_consumer)
        consumer.deposit(per_consumer)
    # Providers already hold a balance (they pay gas / hold the stablecoin): no first-write surcharge.
    for provider in providers:
        if token:
            operator.transact_artifact(token, "MockStablecoin", "mint", provider, 1)
        else:
            operator.send_native(provider, 1)
    if token:
        operator.transact_artifact(token, "MockStablecoin", "mint", operator.address, 10**12)
        receipt = operator.transact_artifact(token, "MockStablecoin", "transfer", providers[0], 1)
    else:
        receipt = operator.send_native(providers[0], 1)
    return operator, consumers, providers, receipt["gas_used"]


def _leaves(n: int, start: int, consumers, providers, n_consumers: int, rng) -> list[Leaf]:
    return [
        Leaf(
            start + i,
            consumers[i % n_consumers].address,
            providers[i % min(PROVIDERS, n)],
            rng.randrange(10**9, 10**10),
        )
        for i in range(n)
    ]


def measure(base: SettlementClient, asset: str, sizes: list[int]) -> tuple[list[dict], dict]:
    rng = random.Random(5)
    operator, consumers, providers, transfer = _setup(base, asset, sizes)
    rows = []
    next_lease = 1
    for n in sizes:
        leaves = _leaves(n, next_lease, consumers, providers, min(CONSUMERS, n), rng)
        next_lease += n + 1000
        tree = MerkleTree(leaves)
        batch_id = keccak(f"merkle-{asset}-{n}".encode())
        commit = operator.commit_batch(batch_id, leaves)["gas_used"]
        sample = list(range(min(SINGLE_CLAIM_SAMPLE, n)))
        single = [operator.claim(batch_id, leaves[i], tree.proof(i))["gas_used"] for i in sample]
        many = 0
        for provider in sorted({x.provider for x in leaves}):
            mine = [i for i, x in enumerate(leaves) if x.provider == provider and i not in sample]
            if mine:
                many += operator.claim_many(batch_id, *tree.multiproof(mine))["gas_used"]
        # Claims of the sampled leaves, had they gone through claimMany: scale to the whole batch.
        claimed = n - len(sample)
        many_per_lease = many / claimed if claimed else single[0]
        direct_leaves = _leaves(n, next_lease, consumers, providers, min(CONSUMERS, n), rng)
        next_lease += n + 1000
        try:
            direct = (
                operator.settle_direct(keccak(f"direct-{asset}-{n}".encode()), direct_leaves)["gas_used"] / n
            )
        except ChainRejected as exc:
            direct = float("nan")
            print(f"  direct payout of {n} leases refused: {exc}", file=sys.stderr)
        rows.append(
            {
                "n": n,
                "commit": commit / n,
                "many": many_per_lease,
                "single": sum(single) / len(single),
                "merkle": commit / n + many_per_lease,
                "direct": direct,
                "transfer": transfer,
            }
        )
    # Marginal cost of one more distinct consumer in a commit.
    one = _leaves(100, next_lease, consumers, providers, 1, rng)
    eight = _leaves(100, next_lease + 1000, consumers, providers, CONSUMERS, rng)
    gas_one = operator.commit_batch(keccak(f"c1-{asset}".encode()), one)["gas_used"]
    gas_eight = operator.commit_batch(keccak(f"c8-{asset}".encode()), eight)["gas_used"]
    marginal = {"per_consumer": (gas_eight - gas_one) / (CONSUMERS - 1), "transfer": transfer}
    return rows, marginal


def _print(backend: str, asset: str, rows: list[dict], marginal: dict) -> None:
    t = rows[0]["transfer"]
    print(f"\n{backend} / {asset}   (one transfer = {t:,} gas; ratios are gas per lease / transfer)")
    head = ("leases", "commit/lease", "many/lease", "claim/lease", "merkle/lease", "direct/lease",
            "commit ratio", "merkle ratio", "direct ratio")  # fmt: skip
    print("  ".join(f"{h:>12}" for h in head))
    for r in rows:
        cells = [f"{r['n']:>12,}"] + [
            f"{r[k]:>12,.0f}" for k in ("commit", "many", "single", "merkle", "direct")
        ]
        cells += [f"{r[k] / t:>12.3f}" for k in ("commit", "merkle", "direct")]
        print("  ".join(cells))
    per = marginal["per_consumer"]
    print(f"  each extra distinct consumer in a commit: {per:,.0f} gas ({per / t:.3f} of a transfer)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anvil", default=os.environ.get("CPX_ANVIL_URL", ""), help="anvil JSON-RPC URL")
    parser.add_argument("--sizes", default="1,10,100,1000")
    parser.add_argument("--asset", default="native,token")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = [("in-process EVM (py-evm)", SettlementClient.connect(timeout_s=120))]
    if args.anvil:
        backends.append((f"anvil {args.anvil}", SettlementClient.connect(args.anvil, timeout_s=120)))
    else:
        print("anvil: skipped (set CPX_ANVIL_URL or pass --anvil URL)")
    for name, base in backends:
        for asset in args.asset.split(","):
            rows, marginal = measure(base, asset, sizes)
            _print(name, asset, rows, marginal)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
