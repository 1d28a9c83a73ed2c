"""EIP-712 settlement orders: what a consumer signs so that the contract may debit its escrow.

One order per job (``SettlementV2.Order``): the job's hash, its maximum amount, the running total of the
consumer's orders' maximums (``cumulative_max``), a nonce one more than the consumer's previous order,
and a deadline. The domain binds the signature to one chain id and one contract address, so it cannot be
replayed on another chain or another deployment. The contract debits a consumer only under a signed,
unexpired order whose ``cumulative_max`` covers the consumer's lifetime debits (see SettlementV2.sol).

Pure Python over eth_account: wallets sign the same typed data (``eth_signTypedData_v4``).
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address

DOMAIN_NAME = "CPX Settlement"
DOMAIN_VERSION = "2"
ORDER_FIELDS = [
    {"name": "consumer", "type": "address"},
    {"name": "jobHash", "type": "bytes32"},
    {"name": "maxAmount", "type": "uint256"},
    {"name": "cumulativeMax", "type": "uint256"},
    {"name": "nonce", "type": "uint64"},
    {"name": "deadline", "type": "uint64"},
]


class InvalidOrder(ValueError):
    """The order or its signature does not hold (wrong signer, malformed signature, bad fields)."""


@dataclass(frozen=True, slots=True)
class Order:
    consumer: str
    job_hash: str  # 0x + 64 hex
    max_amount_wei: int
    cumulative_max_wei: int
    nonce: int
    deadline: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "consumer", to_checksum_address(self.consumer))
        if not (
            isinstance(self.job_hash, str) and self.job_hash.startswith("0x") and len(self.job_hash) == 66
        ):
            raise InvalidOrder("job_hash must be 0x + 32 bytes hex")
        if self.max_amount_wei <= 0 or self.cumulative_max_wei < self.max_amount_wei:
            raise InvalidOrder("max amount must be positive and within the cumulative maximum")
        if not (0 < self.nonce < 2**32) or not (0 < self.deadline < 2**64):
            raise InvalidOrder("nonce and deadline out of range")

    def message(self) -> dict:
        return {
            "consumer": self.consumer,
            "jobHash": bytes.fromhex(self.job_hash[2:]),
            "maxAmount": self.max_amount_wei,
            "cumulativeMax": self.cumulative_max_wei,
            "nonce": self.nonce,
            "deadline": self.deadline,
        }


def job_hash(job_id: int | str, spec: str = "") -> str:
    """The hash a consumer signs for one job: keccak of the job's id and its spec (prompt, model, limits)."""
    return "0x" + keccak(text=f"cpx-job|{job_id}|{spec}").hex()


def typed_data(order: Order, *, chain_id: int, contract: str) -> dict:
    """The full EIP-712 payload (what ``eth_signTypedData_v4`` takes)."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Order": ORDER_FIELDS,
        },
        "primaryType": "Order",
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(contract),
        },
        "message": order.message(),
    }


def sign_order(order: Order, private_key: str | bytes, *, chain_id: int, contract: str) -> str:
    """The consumer's 65-byte signature (0x hex, r ‖ s ‖ v)."""
    signed = Account.sign_typed_data(
        private_key, full_message=typed_data(order, chain_id=chain_id, contract=contract)
    )
    return "0x" + bytes(signed.signature).hex()


def order_digest(order: Order, *, chain_id: int, contract: str) -> bytes:
    """The 32-byte EIP-712 digest (``SettlementV2.orderDigest``)."""
    signable = encode_typed_data(full_message=typed_data(order, chain_id=chain_id, contract=contract))
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def recover_signer(order: Order, signature: str, *, chain_id: int, contract: str) -> str:
    try:
        signable = encode_typed_data(full_message=typed_data(order, chain_id=chain_id, contract=contract))
        return Account.recover_message(signable, signature=bytes.fromhex(signature.removeprefix("0x")))
    except Exception as exc:  # malformed signature bytes, bad v, s out of range
        raise InvalidOrder(f"unreadable signature: {exc}") from exc


def verify_order(order: Order, signature: str, *, chain_id: int, contract: str) -> None:
    """Raise InvalidOrder unless ``signature`` is the order's consumer's."""
    signer = recover_signer(order, signature, chain_id=chain_id, contract=contract)
    if signer != order.consumer:
        raise InvalidOrder(f"signed by {signer}, not by the order's consumer {order.consumer}")


def split_signature(signature: str) -> tuple[int, bytes, bytes]:
    """(v, r, s) of a 65-byte signature, v as 27/28."""
    raw = bytes.fromhex(signature.removeprefix("0x"))
    if len(raw) != 65:
        raise InvalidOrder("a signature is 65 bytes")
    v = raw[64] if raw[64] >= 27 else raw[64] + 27
    return v, raw[:32], raw[32:64]
