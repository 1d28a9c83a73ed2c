"""Gas per round of the match on chain (issue 12): committing a cleared round's snapshot and result hashes
to SettlementV2 alone, several rounds per transaction, and in the same transaction as a settlement batch,
measured side by side in the same run on the in-process EVM and (--anvil URL or CPX_ANVIL_URL) on anvil.

* alone — one `commitRounds` transaction per round (what a market clearing rarely pays);
* batched_K — `commitRounds` with K rounds per transaction (the task's CPX_ROUND_COMMIT_BATCH);
* with_settlement_K — `commitBatchWithRounds`: K rounds riding on a settlement batch (a consumer debit and
  PAYEES credits); gas per round is the difference from the same batch committed without rounds, over K.

Figures: gas per round, and that over one 21,000-gas native transfer measured on the same chain; the
ratio alone / batched_20 says what batching saves.

    .venv/bin/python bench/round_commit_gas.py [--anvil URL] [--json] [--rounds 40]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eth_utils import keccak, to_checksum_address  # noqa: E402

from contracts.client import SettlementClient, SettlementV2Client  # noqa: E402
from contracts.orders import Order, job_hash  # noqa: E402

TRANSFER = 21_000
FAR = 2**40
PAYEES = 10
BATCH_SIZES = (5, 20, 100)
RIDERS = (1, 20)


class Rounds:
    """Round ids and hashes that look like CPX's (sha256 hex), fresh for every call."""

    def __init__(self):
        self.next_id = 1

    def take(self, n: int) -> list[tuple[int, str, str]]:
        out = []
        for _ in range(n):
            i = self.next_id
            self.next_id += 1
            snapshot, result = hashlib.sha256(b"snap%d" % i), hashlib.sha256(b"res%d" % i)
            out.append((i, snapshot.hexdigest(), result.hexdigest()))
        return out


def measure(base: SettlementClient, rounds_alone: int) -> dict:
    keys = base.dev_keys()
    v2 = SettlementV2Client(base._conn, keys[0])  # noqa: SLF001
    v2.deploy(admin=to_checksum_address(keccak(b"cold admin")[-20:]), reclaim_window_s=30 * 86400)
    transfer = v2.send_native(to_checksum_address(keccak(b"payee 0")[-20:]), 1)["gas_used"]
    assert transfer == TRANSFER, transfer
    rounds = Rounds()
    out: dict[str, dict] = {}
    alone = [v2.commit_rounds(rounds.take(1))["gas_used"] for _ in range(rounds_alone)]
    out["alone"] = _figure(sum(alone), rounds_alone)
    for k in BATCH_SIZES:
        gas = sum(v2.commit_rounds(rounds.take(k))["gas_used"] for _ in range(max(1, rounds_alone // k)))
        out[f"batched_{k}"] = _figure(gas, k * max(1, rounds_alone // k))
    consumer = v2.with_signer(keys[1])
    consumer.deposit(10**17)
    payees = [to_checksum_address(keccak(b"payee %d" % i)[-20:]) for i in range(PAYEES)]
    for payee in payees:  # payees already hold a balance, as in bench/settlement_gas.py
        v2.send_native(payee, 1)
    state = {"nonce": 0, "cap": 0, "earned": 0, "batch": 0}

    def settle(riders: list) -> int:
        state["nonce"] += 1
        state["batch"] += 1
        amount = 10**12
        state["cap"] += amount
        state["earned"] += amount // PAYEES
        order = Order(consumer.address, job_hash(f"job-{state['nonce']}"), amount, state["cap"],
                      state["nonce"], FAR)  # fmt: skip
        debits = [(order, consumer.sign(order), amount)]
        credits = [(p, state["earned"]) for p in payees]
        batch_id = keccak(b"batch %d" % state["batch"])
        if riders:
            return v2.commit_credits_with_rounds(batch_id, debits, credits, riders)["gas_used"]
        return v2.commit_credits(batch_id, debits, credits)["gas_used"]

    settle([])  # warm-up: every payee's first credit, the consumer's first debit
    for k in RIDERS:
        without = with_rounds = 0
        for _ in range(3):  # alternate, so the two sides see the same state on average
            without += settle([])
            with_rounds += settle(rounds.take(k))
        out[f"with_settlement_{k}"] = _figure(with_rounds - without, 3 * k)
        out[f"with_settlement_{k}"]["settlement_batch_gas"] = without // 3
    out["alone_vs_batched_20"] = round(out["alone"]["gas_per_round"] / out["batched_20"]["gas_per_round"], 3)
    out["alone_vs_with_settlement_20"] = round(
        out["alone"]["gas_per_round"] / out["with_settlement_20"]["gas_per_round"], 3
    )
    return out


def _figure(gas: int, rounds: int) -> dict:
    return {
        "rounds": rounds,
        "gas_per_round": round(gas / rounds),
        "per_round_vs_transfer": round(gas / rounds / TRANSFER, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anvil", default=os.environ.get("CPX_ANVIL_URL", ""), help="anvil JSON-RPC URL")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--rounds", type=int, default=40, help="rounds committed one per transaction")
    parser.add_argument("--no-evm", action="store_true", help="skip the in-process EVM (anvil only)")
    args = parser.parse_args(argv)
    backends = (
        [] if args.no_evm else [("in-process EVM (py-evm)", lambda: SettlementClient.connect(timeout_s=300))]
    )
    if args.anvil:
        backends.append((f"anvil {args.anvil}", lambda: SettlementClient.connect(args.anvil, timeout_s=300)))
    results = []
    for name, connect in backends:
        row = {"backend": name, **measure(connect(), args.rounds)}
        results.append(row)
        if not args.json:
            for label, figure in row.items():
                print(f"{name:28} {label:28} {figure}", flush=True)
    if args.json:
        print(json.dumps({"transfer_gas": TRANSFER, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
