"""A narrow web3 client for the Settlement contract.

The rest of CPX talks to the chain only through ``SettlementClient``. Its contract with callers:

* in and out go plain values: ints (amounts named ``*_wei``, in wei or token base units), checksummed
  address strings, ``0x`` hex strings for hashes; no web3 type leaks out;
* every failure is one of two errors defined here: ``ChainUnavailable`` (could not reach the node, or no
  receipt in time: the caller retries later, the batch id makes that safe) or ``ChainRejected`` (the
  chain said no: a revert, decoded to the contract's custom error name and arguments, or a node refusal;
  retrying the same call will fail the same way, so callers record it);
* transactions are built, signed with the signer key, sent raw and awaited (with a timeout) one at a time
  per connection, nonces taken from the node's pending count under a lock.

With no RPC URL the chain is an in-process EVM (web3's ``EthereumTesterProvider`` on py-evm): the embedded
default, and the chain the tests use. An RPC URL plus a signer key selects a real node (anvil in CI).
Django is imported only inside ``client_from_settings``. web3, eth_account and py-evm are imported only
when a chain is first used (``_chain_lib``), and with the interpreter's recursion limit kept: see there.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import json
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from eth_abi import decode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from contracts.merkle import Leaf, MerkleTree

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
NATIVE = "0x0000000000000000000000000000000000000000"
BATCH_KINDS = ("none", "merkle", "direct")
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
_ERC20_ABI = [
    {"type": "function", "name": n, "stateMutability": m, "inputs": i, "outputs": o}
    for n, m, i, o in [
        ("approve", "nonpayable", [{"name": "s", "type": "address"}, {"name": "v", "type": "uint256"}],
         [{"name": "", "type": "bool"}]),
        ("allowance", "view", [{"name": "o", "type": "address"}, {"name": "s", "type": "address"}],
         [{"name": "", "type": "uint256"}]),
        ("balanceOf", "view", [{"name": "a", "type": "address"}], [{"name": "", "type": "uint256"}]),
    ]
]  # fmt: skip


@contextlib.contextmanager
def _recursion_limit_kept():
    """Undo what importing the chain libraries does to the interpreter's recursion limit.

    py_ecc (imported by eth_account) raises it to 100,000 and py-evm to 12,288 at import. A thread's C
    stack (8 MB) overflows long before 100,000 nested calls of the JSON decoder or of repr(), so with
    that limit a nested request body killed a gunicorn worker with SIGSEGV instead of raising
    RecursionError. CPX's contract calls nest a few frames deep, far inside Python's default."""
    limit = sys.getrecursionlimit()
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


@functools.cache
def _chain_lib() -> SimpleNamespace:
    """web3 and eth_account, imported on first use: a process that never talks to a chain (settlement
    off, the web app's requests) never loads them."""
    with _recursion_limit_kept():
        from eth_account import Account
        from web3 import EthereumTesterProvider, HTTPProvider, Web3
        from web3.exceptions import ContractLogicError, ProviderConnectionError, TimeExhausted
    return SimpleNamespace(
        Account=Account,
        EthereumTesterProvider=EthereumTesterProvider,
        HTTPProvider=HTTPProvider,
        Web3=Web3,
        ContractLogicError=ContractLogicError,
        ProviderConnectionError=ProviderConnectionError,
        TimeExhausted=TimeExhausted,
    )


class ChainUnavailable(Exception):
    """The node could not be reached or did not answer in time: retry later."""

    code = "chain_unavailable"


class ChainRejected(Exception):
    """The chain refused the call; ``error_name`` is the contract's custom error (e.g. ``InvalidProof``)."""

    code = "chain_rejected"

    def __init__(self, error_name: str, error_args: dict[str, Any] | None = None, message: str = ""):
        self.error_name = error_name
        self.error_args = error_args or {}
        super().__init__(
            message or f"{error_name}({', '.join(f'{k}={v}' for k, v in self.error_args.items())})"
        )


@functools.cache
def load_artifact(name: str) -> dict[str, Any]:
    """ABI and bytecode of a compiled contract (``contracts/artifacts/<name>.json``)."""
    return json.loads((ARTIFACTS / f"{name}.json").read_text())


@functools.cache
def _error_selectors() -> dict[bytes, tuple[str, list[str], list[str]]]:
    """4-byte selector -> (error name, arg names, arg types) over every compiled artifact's ABI."""
    table = {
        bytes.fromhex("08c379a0"): ("Error", ["message"], ["string"]),
        bytes.fromhex("4e487b71"): ("Panic", ["code"], ["uint256"]),
    }
    for path in sorted(ARTIFACTS.glob("*.json")):
        for item in json.loads(path.read_text())["abi"]:
            if item["type"] == "error":
                types = [i["type"] for i in item["inputs"]]
                selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
                table[selector] = (item["name"], [i["name"] for i in item["inputs"]], types)
    return table


@functools.cache
def _event_topics(artifact: str = "Settlement") -> dict[bytes, str]:
    topics = {}
    for item in load_artifact(artifact)["abi"]:
        if item["type"] == "event":
            signature = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
            topics[_chain_lib().Web3.keccak(text=signature)] = item["name"]
    return topics


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str) and len(value) == 42 and value.startswith("0x"):
        return to_checksum_address(value)
    return value


def decode_revert(data: bytes) -> ChainRejected:
    """Turn raw revert data into ``ChainRejected`` with the custom error's name and arguments."""
    if len(data) < 4:
        return ChainRejected("Reverted", message="reverted without a reason")
    known = _error_selectors().get(data[:4])
    if known is None:
        return ChainRejected("UnknownError", {"data": "0x" + data.hex()})
    name, arg_names, types = known
    try:
        values = decode(types, data[4:])
    except Exception:
        return ChainRejected(name, {"data": "0x" + data.hex()})
    return ChainRejected(name, {n: _plain(v) for n, v in zip(arg_names, values, strict=True)})


def _revert_bytes(exc: BaseException) -> bytes | None:
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    arg = exc.args[0] if exc.args else None
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str) and arg.startswith("execution reverted: b"):
        # eth-tester renders the revert data as a bytes literal inside the message.
        try:
            return ast.literal_eval(arg[len("execution reverted: ") :])
        except (ValueError, SyntaxError):
            return None
    return None


def map_chain_error(exc: BaseException) -> ChainUnavailable | ChainRejected:
    """Map any exception raised by web3 / eth-tester / the transport to one of our two errors."""
    if isinstance(exc, ChainUnavailable | ChainRejected):
        return exc
    lib = _chain_lib()
    transport = (lib.TimeExhausted, lib.ProviderConnectionError, ConnectionError, TimeoutError, OSError)
    if isinstance(exc, transport):
        return ChainUnavailable(str(exc) or type(exc).__name__)
    if type(exc).__module__.startswith(("requests", "urllib3", "aiohttp")):
        return ChainUnavailable(str(exc) or type(exc).__name__)
    revert = _revert_bytes(exc)
    if revert is not None:
        return decode_revert(revert)
    if isinstance(exc, lib.ContractLogicError):
        return ChainRejected("Reverted", message=str(exc))
    return ChainRejected(type(exc).__name__, message=str(exc))


class _Connection:
    """One web3 connection shared by clients of several signers (the in-process chain lives in it)."""

    def __init__(self, rpc_url: str | None, timeout_s: float):
        lib = _chain_lib()
        if rpc_url:
            provider = lib.HTTPProvider(
                rpc_url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None
            )
        else:
            with _recursion_limit_kept():  # the provider imports eth-tester and py-evm on first use
                provider = lib.EthereumTesterProvider()
        self.w3 = lib.Web3(provider)
        self.in_process = not rpc_url
        self.lock = threading.Lock()
        self.timeout_s = timeout_s
        self._contracts: dict[tuple[str, str | None], Any] = {}

    def contract(self, abi_name: str, address: str | None, abi: list | None = None):
        """web3 contract objects are costly to build (every ABI entry is parsed): build each once."""
        key = (abi_name, address)
        if key not in self._contracts:
            abi = abi if abi is not None else load_artifact(abi_name)["abi"]
            self._contracts[key] = (
                self.w3.eth.contract(address=address, abi=abi) if address else self.w3.eth.contract(abi=abi)
            )
        return self._contracts[key]


@functools.cache
def _shared_in_process_connection() -> _Connection:
    return _Connection(None, 30.0)


class SettlementClient:
    """Deploy, fund, settle and read the Settlement contract; see the module docstring for the rules."""

    ARTIFACT = "Settlement"

    def __init__(self, connection: _Connection, signer_key: str | bytes, contract_address: str | None = None):
        self._conn = connection
        self._w3 = connection.w3
        self._account = _chain_lib().Account.from_key(signer_key)
        self.contract_address = to_checksum_address(contract_address) if contract_address else None
        self._token_address: str | None = None

    # -------------------------------------------------------------- construction

    @classmethod
    def connect(
        cls,
        rpc_url: str | None = None,
        signer_key: str | None = None,
        contract_address: str | None = None,
        *,
        timeout_s: float = 30.0,
        shared: bool = False,
    ) -> SettlementClient:
        """A client on a real node (``rpc_url`` + ``signer_key``) or on an in-process EVM.

        In process, ``shared=True`` reuses one chain per Python process (the app's embedded default);
        otherwise every call makes a fresh chain (tests). Without a key, the first dev account signs.
        """
        if rpc_url:
            conn = _Connection(rpc_url, timeout_s)
        else:
            conn = _shared_in_process_connection() if shared else _Connection(None, timeout_s)
        client = cls(conn, signer_key or _dev_keys(conn)[0], contract_address)
        return client

    def with_signer(self, signer_key: str) -> SettlementClient:
        """The same chain and contract, signing as another account."""
        return type(self)(self._conn, signer_key, self.contract_address)

    def dev_keys(self) -> list[str]:
        """Private keys of the funded development accounts (in-process chain or anvil only)."""
        return _dev_keys(self._conn)

    @property
    def address(self) -> str:
        return self._account.address

    # -------------------------------------------------------------- writes

    def deploy(
        self,
        *,
        token_address: str | None = None,
        admin: str | None = None,
        operator: str | None = None,
        claim_window_s: int = 7 * 86400,
        reclaim_window_s: int = 30 * 86400,
    ) -> str:
        """Deploy Settlement (native escrow unless ``token_address``); the client then points at it."""
        self.contract_address = self.deploy_artifact(
            "Settlement",
            to_checksum_address(token_address or NATIVE),
            to_checksum_address(admin or self.address),
            to_checksum_address(operator or self.address),
            claim_window_s,
            reclaim_window_s,
        )
        self._token_address = None
        return self.contract_address

    def deposit(self, amount_wei: int, *, approve: bool = True, value_wei: int | None = None) -> dict:
        """Deposit into the signer's escrow (approving the token first in the token variant)."""
        token = self.token_address()
        if (
            token != NATIVE
            and approve
            and self._erc20(token).functions.allowance(self.address, self.contract_address).call()
            < amount_wei
        ):
            self._send(self._erc20(token).functions.approve(self.contract_address, amount_wei))
        value = value_wei if value_wei is not None else (amount_wei if token == NATIVE else 0)
        return self._send(self._contract().functions.deposit(amount_wei), value_wei=value)

    def commit_batch(self, batch_id: bytes | str, leaves: Sequence[Leaf]) -> dict:
        """Commit a Merkle batch: its root and one escrow debit per consumer. Returns the receipt + root."""
        tree = MerkleTree(leaves)
        debits = tree.debits()
        receipt = self._send(
            self._contract().functions.commitBatch(
                _b32(batch_id), tree.root, list(debits), list(debits.values()), len(leaves)
            )
        )
        return {**receipt, "root": tree.root_hex}

    def estimate_commit_cost(self, batch_id: bytes | str, leaves: Sequence[Leaf]) -> int:
        """What ``commit_batch`` of these leaves would cost now, in wei (estimated gas × gas price)."""
        tree = MerkleTree(leaves)
        debits = tree.debits()
        call = self._contract().functions.commitBatch(
            _b32(batch_id), tree.root, list(debits), list(debits.values()), len(leaves)
        )
        gas = self._read(lambda: call.estimate_gas({"from": self.address}))
        return gas * self._read(lambda: self._w3.eth.gas_price)

    def settle_direct(self, batch_id: bytes | str, leaves: Sequence[Leaf]) -> dict:
        """Settle leaves at once (sorted by lease id here, as the contract requires)."""
        ordered = sorted(leaves, key=lambda leaf: leaf.lease_id)
        return self._send(
            self._contract().functions.settleDirect(_b32(batch_id), [x.as_tuple() for x in ordered])
        )

    def claim(self, batch_id: bytes | str, leaf: Leaf, proof: Iterable[bytes | str]) -> dict:
        return self._send(self._contract().functions.claim(_b32(batch_id), leaf.as_tuple(), _proof(proof)))

    def claim_many(
        self,
        batch_id: bytes | str,
        leaves: Sequence[Leaf],
        proof: Iterable[bytes | str],
        flags: Sequence[bool],
    ) -> dict:
        """Claim one provider's leaves with a multiproof (``MerkleTree.multiproof`` gives all three)."""
        return self._send(
            self._contract().functions.claimMany(
                _b32(batch_id), [x.as_tuple() for x in leaves], _proof(proof), list(flags)
            )
        )

    def claim_refund(self, batch_id: bytes | str, leaf: Leaf, proof: Iterable[bytes | str]) -> dict:
        return self._send(
            self._contract().functions.claimRefund(_b32(batch_id), leaf.as_tuple(), _proof(proof))
        )

    def reclaim_leaf(self, batch_id: bytes | str, leaf: Leaf, proof: Iterable[bytes | str]) -> dict:
        return self._send(
            self._contract().functions.reclaimLeaf(_b32(batch_id), leaf.as_tuple(), _proof(proof))
        )

    def refund(self, consumer: str, amount_wei: int) -> dict:
        return self._send(self._contract().functions.refund(to_checksum_address(consumer), amount_wei))

    def reclaim(self) -> dict:
        return self._send(self._contract().functions.reclaim())

    def pause(self) -> dict:
        return self._send(self._contract().functions.pause())

    def unpause(self) -> dict:
        return self._send(self._contract().functions.unpause())

    def set_windows(self, *, claim_window_s: int, reclaim_window_s: int) -> dict:
        return self._send(self._contract().functions.setWindows(claim_window_s, reclaim_window_s))

    def grant_operator(self, account: str) -> dict:
        role = self._contract().functions.OPERATOR_ROLE().call()
        return self._send(self._contract().functions.grantRole(role, to_checksum_address(account)))

    def send_native(self, to: str, amount_wei: int) -> dict:
        """A plain value transfer (funding accounts; the 21,000-gas baseline of the benchmark)."""
        tx = {"to": to_checksum_address(to), "value": amount_wei, "gas": 100_000}
        return self._send(None, tx_fields=tx)

    # -------------------------------------------------------------- reads

    def token_address(self) -> str:
        if self._token_address is None:
            self._token_address = self._read(lambda: self._contract().functions.token().call())
        return self._token_address

    def escrow_of(self, consumer: str) -> dict:
        escrow, last = self._read(
            lambda: self._contract().functions.escrowOf(to_checksum_address(consumer)).call()
        )
        return {"escrow_wei": escrow, "last_activity": last}

    def batch_status(self, batch_id: bytes | str) -> dict:
        """Whether a batch id is settled on chain (``kind`` none / merkle / direct), its root and pot."""
        kind, root, remaining, deadline = self._read(
            lambda: self._contract().functions.batchOf(_b32(batch_id)).call()
        )
        return {
            "batch_id": "0x" + _b32(batch_id).hex(),
            "kind": BATCH_KINDS[kind],
            "settled": kind != 0,
            "root": "0x" + root.hex(),
            "remaining_wei": remaining,
            "claim_deadline": deadline,
        }

    def claimed_of(self, batch_id: bytes | str, lease_id: int) -> dict:
        provider, refund = self._read(
            lambda: self._contract().functions.claimedOf(_b32(batch_id), lease_id).call()
        )
        return {"provider": provider, "refund": refund}

    def leaf_hash(self, leaf: Leaf) -> str:
        return "0x" + self._read(lambda: self._contract().functions.leafHash(leaf.as_tuple()).call()).hex()

    def balance_wei(self, account: str) -> int:
        """``account``'s balance of the escrowed asset (native or token)."""
        token, account = self.token_address(), to_checksum_address(account)
        if token == NATIVE:
            return self._read(lambda: self._w3.eth.get_balance(account))
        return self._read(lambda: self._erc20(token).functions.balanceOf(account).call())

    def native_balance_wei(self, account: str) -> int:
        return self._read(lambda: self._w3.eth.get_balance(to_checksum_address(account)))

    def transaction_receipt(self, tx_hash: str) -> dict | None:
        """Where a transaction is mined now ({block_number, block_hash, status}), or None if the chain
        does not hold it (never mined, or dropped by a reorg)."""
        from web3.exceptions import TransactionNotFound

        try:
            receipt = self._w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            return None
        except Exception as exc:
            raise map_chain_error(exc) from exc
        if receipt is None:
            return None
        return {
            "block_number": receipt["blockNumber"],
            "block_hash": "0x" + bytes(receipt["blockHash"]).hex(),
            "status": receipt["status"],
        }

    def block_number(self) -> int:
        return self._read(lambda: self._w3.eth.block_number)

    def chain_id(self) -> int:
        return self._read(lambda: self._w3.eth.chain_id)

    def now(self) -> int:
        return self._read(lambda: self._w3.eth.get_block("latest")["timestamp"])

    def events(
        self, *, from_block: int = 0, to_block: int | None = None, names: Iterable[str] = ()
    ) -> list[dict]:
        """Decoded Settlement events in chain order: {event, block_number, tx_hash, log_index, args}."""
        contract = self._contract()
        wanted = set(names)
        by_topic = {t: n for t, n in _event_topics(self.ARTIFACT).items() if not wanted or n in wanted}
        to_block = self.block_number() if to_block is None else to_block
        if from_block > to_block:  # real nodes refuse a range that starts past their head
            return []
        params = {
            "address": contract.address,
            "fromBlock": from_block,
            "toBlock": to_block,
            "topics": [["0x" + t.hex() for t in by_topic]],  # by topic: the node filters, not us
        }
        logs = self._read(lambda: self._w3.eth.get_logs(params))
        out = []
        for log in logs:
            name = by_topic.get(bytes(log["topics"][0])) if log["topics"] else None
            if name is None:
                continue
            event = contract.events[name]().process_log(log)
            out.append(
                {
                    "event": name,
                    "block_number": log["blockNumber"],
                    "block_hash": "0x" + bytes(log["blockHash"]).hex(),
                    "tx_hash": "0x" + bytes(log["transactionHash"]).hex(),
                    "log_index": log["logIndex"],
                    "args": {k: _plain(v) for k, v in event["args"].items()},
                }
            )
        return sorted(out, key=lambda e: (e["block_number"], e["log_index"]))

    def deposits_since(self, block: int) -> list[dict]:
        return self.events(from_block=block, names=["Deposited"])

    def batch_events(self, batch_id: bytes | str, *, from_block: int = 0) -> list[dict]:
        """Every event of one batch id (commit, debits, claims, direct payments)."""
        key = "0x" + _b32(batch_id).hex()
        return [e for e in self.events(from_block=from_block) if e["args"].get("batchId") == key]

    # -------------------------------------------------------------- generic (test doubles, benchmarks)

    def deploy_artifact(self, name: str, *args: Any) -> str:
        artifact = load_artifact(name)
        factory = self._w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        return self._send(factory.constructor(*args))["contract_address"]

    def transact_artifact(self, address: str, name: str, fn: str, *args: Any, value_wei: int = 0) -> dict:
        contract = self._conn.contract(name, to_checksum_address(address))
        return self._send(contract.functions[fn](*args), value_wei=value_wei)

    def call_artifact(self, address: str, name: str, fn: str, *args: Any) -> Any:
        contract = self._conn.contract(name, to_checksum_address(address))
        return _plain(self._read(lambda: contract.functions[fn](*args).call()))

    def encode_call(self, name: str, fn: str, *args: Any) -> bytes:
        """Calldata for ``fn`` of artifact ``name`` (for the reentrancy test double's payload)."""
        contract = self._conn.contract(name, None)
        return bytes.fromhex(contract.encode_abi(fn, args=list(args))[2:])

    def advance_time(self, seconds: int) -> None:
        """Move a development chain's clock forward and mine a block (in-process EVM or anvil)."""
        target = self.now() + seconds
        if self._conn.in_process:
            self._w3.provider.ethereum_tester.time_travel(target)
        else:
            self._read(lambda: self._w3.provider.make_request("evm_setNextBlockTimestamp", [target]))
            self._read(lambda: self._w3.provider.make_request("evm_mine", []))

    # -------------------------------------------------------------- internals

    def _contract(self):
        if not self.contract_address:
            raise ChainRejected("NoContract", message="no Settlement address configured: deploy first")
        return self._conn.contract(self.ARTIFACT, self.contract_address)

    def _erc20(self, address: str):
        return self._conn.contract("erc20", to_checksum_address(address), _ERC20_ABI)

    def _read(self, fn):
        try:
            return fn()
        except Exception as exc:  # every chain error leaves as one of ours
            raise map_chain_error(exc) from exc

    def _send(self, call, *, value_wei: int = 0, tx_fields: dict | None = None) -> dict:
        with self._conn.lock:
            try:
                base = {
                    "from": self.address,
                    "nonce": self._w3.eth.get_transaction_count(self.address, "pending"),
                }
                if call is None:
                    tx = {**base, **(tx_fields or {}), "chainId": self._w3.eth.chain_id}
                    fees = self._w3.eth.get_block("latest").get("baseFeePerGas", 10**9)
                    tx.update(maxFeePerGas=2 * fees + 10**9, maxPriorityFeePerGas=10**9)
                else:
                    tx = call.build_transaction({**base, "value": value_wei})
                signed = self._account.sign_transaction(tx)
                tx_hash = self._w3.eth.send_raw_transaction(signed.raw_transaction)
                receipt = self._w3.eth.wait_for_transaction_receipt(
                    tx_hash, timeout=self._conn.timeout_s, poll_latency=0.05
                )
            except Exception as exc:
                raise map_chain_error(exc) from exc
        if receipt["status"] != 1:
            raise ChainRejected("Reverted", {"tx_hash": "0x" + bytes(tx_hash).hex()}, "transaction reverted")
        return {
            "tx_hash": "0x" + bytes(tx_hash).hex(),
            "block_number": receipt["blockNumber"],
            "gas_used": receipt["gasUsed"],
            "fee_wei": receipt["gasUsed"] * receipt.get("effectiveGasPrice", 0),
            "contract_address": receipt.get("contractAddress"),
        }


def _b32(batch_id: bytes | str) -> bytes:
    raw = bytes.fromhex(batch_id[2:]) if isinstance(batch_id, str) else bytes(batch_id)
    if len(raw) != 32:
        raise ValueError("a batch id is 32 bytes")
    return raw


def round_commitment_of(snapshot_sha256: str, result_sha256: str) -> str:
    """What ``roundCommitment`` stores for these hashes: keccak256(abi.encode(bytes32, bytes32))."""
    from eth_utils import keccak

    return "0x" + keccak(_h32(snapshot_sha256) + _h32(result_sha256)).hex()


def _h32(digest: str) -> bytes:
    raw = bytes.fromhex(digest[2:] if digest.startswith("0x") else digest)
    if len(raw) != 32:
        raise ValueError("a round hash is 32 bytes (a sha256)")
    return raw


def _debit_rows(debits: Sequence[tuple[Any, str, int]]) -> list[tuple]:
    """A batch's debits as the contract's rows: the signed order's fields, the amount, (v, r, s)."""
    from contracts.orders import split_signature

    rows = []
    for order, signature, amount in debits:
        v, r, s = split_signature(signature)
        rows.append(
            (order.consumer, bytes.fromhex(order.job_hash[2:]), order.max_amount_wei,
             order.cumulative_max_wei, order.nonce, order.deadline, amount, v, r, s)
        )  # fmt: skip
    return rows


def _round_rows(rounds: Sequence[tuple[int, str, str]]) -> list[tuple[int, bytes, bytes]]:
    return [(int(round_id), _h32(snapshot), _h32(result)) for round_id, snapshot, result in rounds]


def _proof(proof: Iterable[bytes | str]) -> list[bytes]:
    return [bytes.fromhex(p[2:]) if isinstance(p, str) else bytes(p) for p in proof]


def _dev_keys(conn: _Connection) -> list[str]:
    if conn.in_process:
        return ["0x" + k.to_bytes().hex() for k in conn.w3.provider.ethereum_tester.backend.account_keys]
    account = _chain_lib().Account
    account.enable_unaudited_hdwallet_features()
    return [
        "0x" + account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key.hex()
        for i in range(10)
    ]


def client_from_settings() -> SettlementClient:
    """The app's client: ``CHAIN_RPC_URL`` + ``CHAIN_SIGNER_KEY`` for a real node, else the shared
    in-process chain, on which the contract is deployed once per process when no address is configured."""
    from django.conf import settings

    rpc_url = settings.CHAIN_RPC_URL or None
    if rpc_url and not settings.CHAIN_SIGNER_KEY:
        # Never sign real-node transactions with a well-known development key by default.
        raise ChainRejected("NoSigner", message="CHAIN_SIGNER_KEY is required with CHAIN_RPC_URL")
    version = settings.CHAIN_CONTRACT_VERSION
    if version not in ("v1", "v2"):
        raise ChainRejected(
            "BadContractVersion", message=f"CHAIN_CONTRACT_VERSION is v1 or v2, not {version!r}"
        )
    kind = SettlementV2Client if version == "v2" else SettlementClient
    client = kind.connect(
        rpc_url,
        settings.CHAIN_SIGNER_KEY or None,
        settings.CHAIN_CONTRACT_ADDRESS or None,
        shared=not rpc_url,
    )
    if client.contract_address is None:
        if rpc_url:
            raise ChainRejected("NoContract", message="CHAIN_CONTRACT_ADDRESS is required with CHAIN_RPC_URL")
        client.contract_address = _in_process_contract(client)
    return client


_deploy_lock = threading.Lock()
_in_process_address: dict[str, str] = {}


def _in_process_contract(client: SettlementClient) -> str:
    """The in-process chain's contract, deployed once per process and contract version. SettlementV2's
    admin is the chain's last development account, never the operator signer (the contract refuses
    admin == operator): a leaked hot key cannot change windows, roles or pause."""
    with _deploy_lock:
        version = client.ARTIFACT
        if version not in _in_process_address:
            if isinstance(client, SettlementV2Client):
                admin = _chain_lib().Account.from_key(client.dev_keys()[-1]).address
                _in_process_address[version] = client.deploy(admin=admin)
            else:
                _in_process_address[version] = client.deploy()
        return _in_process_address[version]


class SettlementV2Client(SettlementClient):
    """The consumer-signed, cumulative-claims contract (``SettlementV2``): same rules as SettlementClient.

    Debits are ``(Order, signature, amount)``; credits are ``(payee, cumulative wei)`` in the order the
    contract hashes them (``contracts.merkle.CreditTree``)."""

    ARTIFACT = "SettlementV2"

    def deploy(  # type: ignore[override]
        self,
        *,
        token_address: str | None = None,
        admin: str,
        operator: str | None = None,
        reclaim_window_s: int = 30 * 86400,
    ) -> str:
        """Deploy with ``admin`` (a cold key, never the operator: the contract refuses admin == operator)."""
        self.contract_address = self.deploy_artifact(
            "SettlementV2",
            to_checksum_address(token_address or NATIVE),
            to_checksum_address(admin),
            to_checksum_address(operator or self.address),
            reclaim_window_s,
        )
        self._token_address = None
        return self.contract_address

    def sign(self, order) -> str:
        """Sign ``order`` with this client's key (the consumer's wallet, in tests and the demo)."""
        from contracts.orders import sign_order

        return sign_order(order, self._account.key, chain_id=self.chain_id(), contract=self.contract_address)

    def commit_credits(
        self,
        batch_id: bytes | str,
        debits: Sequence[tuple[Any, str, int]],
        credits: Sequence[tuple[str, int]],
    ) -> dict:
        """Commit a batch: ``debits`` = (Order, signature, amount wei), ``credits`` = (payee, cumulative)."""
        from contracts.merkle import CreditTree

        rows = _debit_rows(debits)
        tree = CreditTree(credits)
        receipt = self._send(
            self._contract().functions.commitBatch(_b32(batch_id), rows, [list(c) for c in tree.credits])
        )
        return {**receipt, "root": tree.root_hex}

    def claim_credit(self, batch_id: bytes | str, payee: str, cumulative_wei: int, proof) -> dict:
        return self._send(
            self._contract().functions.claim(
                _b32(batch_id), to_checksum_address(payee), cumulative_wei, _proof(proof)
            )
        )

    def claim_credits(self, claims: Sequence[tuple[bytes | str, str, int, Iterable[bytes | str]]]) -> dict:
        """Relay several payees' claims in one transaction: (batch id, payee, cumulative, proof) each."""
        return self._send(
            self._contract().functions.claimMany(
                [_b32(b) for b, _, _, _ in claims],
                [to_checksum_address(p) for _, p, _, _ in claims],
                [c for _, _, c, _ in claims],
                [_proof(pr) for _, _, _, pr in claims],
            )
        )

    def withdraw(self) -> dict:
        return self._send(self._contract().functions.withdraw())

    def admin_call(self, fn: str, *args: Any) -> dict:
        """proposeOperator / executeOperator / revokeOperator / proposeWindow / executeWindow /
        proposeAdmin / executeAdmin / setPaused (the signer must be the admin)."""
        return self._send(self._contract().functions[fn](*args))

    def view(self, fn: str, *args: Any) -> Any:
        return _plain(self._read(lambda: self._contract().functions[fn](*args).call()))

    def escrow_of(self, consumer: str) -> dict:  # type: ignore[override]
        escrow, debited, nonce, last, window = self._read(
            lambda: self._contract().functions.escrowOf(to_checksum_address(consumer)).call()
        )
        return {
            "escrow_wei": escrow,
            "debited_wei": debited,
            "nonce": nonce,
            "last_activity": last,
            "window_s": window,
        }

    def claimed_wei(self, payee: str) -> int:
        return self.view("claimed", to_checksum_address(payee))

    def batch_status(self, batch_id: bytes | str) -> dict:  # type: ignore[override]
        """Whether a batch id is committed (``kind`` none / credits) and its root: the outbox's recovery
        look-up, same shape as SettlementClient.batch_status (no per-batch pot or claim deadline here:
        claims never expire)."""
        root = _b32(self.root_of(batch_id))
        settled = root != bytes(32)
        return {
            "batch_id": "0x" + _b32(batch_id).hex(),
            "kind": "credits" if settled else "none",
            "settled": settled,
            "root": "0x" + root.hex(),
            "remaining_wei": 0,
            "claim_deadline": 2**64 - 1,
        }

    def root_of(self, batch_id: bytes | str) -> str:
        return self.view("rootOf", _b32(batch_id))

    def commits_from_chain(self, *, from_block: int = 0, to_block: int | None = None) -> list[dict]:
        """Every commit's credits, decoded from the commit transactions' calldata (data availability):
        [{batch_id, root, index, block_number, tx_hash, credits: [(payee, cumulative)]}] in chain order."""
        contract = self._contract()
        out = []
        for event in self.events(from_block=from_block, to_block=to_block, names=["BatchCommitted"]):
            tx = self._read(lambda e=event: self._w3.eth.get_transaction(e["tx_hash"]))
            fn, args = contract.decode_function_input(tx["input"])
            credits = [
                (to_checksum_address(c["payee"]), int(c["cumulative"]))
                if isinstance(c, dict)
                else (to_checksum_address(c[0]), int(c[1]))
                for c in args["credits"]
            ]
            out.append(
                {
                    "batch_id": event["args"]["batchId"],
                    "root": event["args"]["root"],
                    "index": event["args"]["index"],
                    "block_number": event["block_number"],
                    "tx_hash": event["tx_hash"],
                    "credits": credits,
                }
            )
        return out

    # -------------------------------------------------------------- round commitments (the match on chain)

    def commit_rounds(self, rounds: Sequence[tuple[int, str, str]]) -> dict:
        """Commit cleared rounds' hashes in one transaction: (round id, snapshot sha256, result sha256)
        each, hashes as hex (with or without 0x). The contract refuses a round id already committed."""
        return self._send(self._contract().functions.commitRounds(_round_rows(rounds)))

    def commit_credits_with_rounds(
        self,
        batch_id: bytes | str,
        debits: Sequence[tuple[Any, str, int]],
        credits: Sequence[tuple[str, int]],
        rounds: Sequence[tuple[int, str, str]],
    ) -> dict:
        """``commit_credits`` and ``commit_rounds`` in one transaction (``commitBatchWithRounds``)."""
        from contracts.merkle import CreditTree

        rows = _debit_rows(debits)
        tree = CreditTree(credits)
        receipt = self._send(
            self._contract().functions.commitBatchWithRounds(
                _b32(batch_id), rows, [list(c) for c in tree.credits], _round_rows(rounds)
            )
        )
        return {**receipt, "root": tree.root_hex}

    def round_commitment(self, round_id: int) -> str:
        """The round's stored commitment, keccak256(snapshot hash, result hash); 0x00…0 if none."""
        return self.view("roundCommitment", round_id)

    def round_committed(self, round_id: int, *, at_block: int | None = None) -> dict | None:
        """The round's ``RoundCommitted`` event ({round_id, snapshot_sha256, result_sha256, tx_hash,
        block_number}, hashes as bare hex like the database's), or None when the chain has none. The node
        filters by the indexed round id, so this reads one log, not the contract's history. ``at_block``
        is a hint (where CPX recorded the commit): looked at first, the whole chain only if it misses
        (a node that caps eth_getLogs ranges answers the hint)."""
        contract = self._contract()
        topic = self._w3.keccak(text="RoundCommitted(uint256,bytes32,bytes32)")
        topics = ["0x" + bytes(topic).hex(), "0x" + int(round_id).to_bytes(32, "big").hex()]
        ranges = [(at_block, at_block)] if at_block is not None else []
        logs: list = []
        for low, high in [*ranges, (0, "latest")]:
            params = {"address": contract.address, "fromBlock": low, "toBlock": high, "topics": topics}
            logs = self._read(lambda p=params: self._w3.eth.get_logs(p))
            if logs:
                break
        if not logs:
            return None
        event = contract.events.RoundCommitted().process_log(logs[0])
        return {
            "round_id": int(event["args"]["roundId"]),
            "snapshot_sha256": bytes(event["args"]["snapshotHash"]).hex(),
            "result_sha256": bytes(event["args"]["resultHash"]).hex(),
            "tx_hash": "0x" + bytes(logs[0]["transactionHash"]).hex(),
            "block_number": logs[0]["blockNumber"],
        }

    def proofs_from_chain(self, *, from_block: int = 0) -> dict[str, dict]:
        """Per payee, its newest cumulative amount and the proof against the batch that carries it, rebuilt
        from chain data alone (no CPX database): {payee: {batch_id, cumulative_wei, claimed_wei, proof}}."""
        from contracts.merkle import CreditTree

        latest: dict[str, dict] = {}
        for commit in self.commits_from_chain(from_block=from_block):
            tree = CreditTree(commit["credits"])
            if tree.root_hex != commit["root"]:  # cannot happen: the contract builds the root itself
                raise ChainRejected("RootMismatch", {"batch_id": commit["batch_id"]})
            for payee, cumulative in tree.credits:
                latest[payee] = {
                    "batch_id": commit["batch_id"],
                    "cumulative_wei": cumulative,
                    "proof": ["0x" + p.hex() for p in tree.proof(payee)],
                }
        for payee, row in latest.items():
            row["claimed_wei"] = self.claimed_wei(payee)
        return latest
