"""Chains and actors for the Settlement contract tests.

Every test that takes `chain` (directly or through `world` / `token_world`) runs on the in-process EVM
and, when CPX_ANVIL_URL names a node, on anvil too; with CPX_REQUIRE_SERVICES=1 and no anvil the anvil
tier fails instead of skipping. Each test deploys its own contract, so tests share nothing but the dev
accounts' native balances (tests assert on deltas and on the contract's own state).
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from eth_utils import keccak, to_checksum_address

from contracts.client import ChainRejected, SettlementClient
from contracts.merkle import Leaf
from tests.conftest import service_unavailable

CLAIM_WINDOW_S = 1_000
RECLAIM_WINDOW_S = 5_000
DEPOSIT_WEI = 10**15


@pytest.fixture(params=["evm", pytest.param("anvil", marks=pytest.mark.services)])
def chain(request) -> SettlementClient:
    """An operator/admin client with no contract yet, on the backend of this parametrisation."""
    if request.param == "evm":
        return SettlementClient.connect()
    url = os.environ.get("CPX_ANVIL_URL", "").strip()
    if not url:
        service_unavailable("CPX_ANVIL_URL is not set: no anvil node for the real-node tier")
    return SettlementClient.connect(url, timeout_s=20)


@dataclass
class World:
    """One deployed Settlement with its actors: dev-account consumers, key-less providers."""

    operator: SettlementClient
    consumers: list[SettlementClient]
    relayer: SettlementClient
    stranger: SettlementClient
    providers: list[str]
    token: str | None
    _counter: list[int] = field(default_factory=lambda: [0])

    @property
    def address(self) -> str:
        return self.operator.contract_address

    def batch_id(self) -> bytes:
        self._counter[0] += 1
        return keccak(f"{self.address}:batch:{self._counter[0]}".encode())

    def leaf(self, lease_id: int, consumer: int, provider: int, amount_wei: int, refund_wei: int = 0) -> Leaf:
        return Leaf(
            lease_id, self.consumers[consumer].address, self.providers[provider], amount_wei, refund_wei
        )

    def fund(self, consumer: int, amount_wei: int = DEPOSIT_WEI) -> None:
        if self.token:
            address = self.consumers[consumer].address
            self.operator.transact_artifact(self.token, "MockStablecoin", "mint", address, amount_wei)
        self.consumers[consumer].deposit(amount_wei)

    def held_wei(self) -> int:
        return self.operator.balance_wei(self.address)


def make_world(chain: SettlementClient, *, token: bool) -> World:
    """Deploy a fresh Settlement (native, or on a fresh test stablecoin); actors point at it."""
    keys = chain.dev_keys()
    operator = chain.with_signer(keys[0])  # its own client object: several worlds may share a chain
    token_address = operator.deploy_artifact("MockStablecoin", "tUSD") if token else None
    operator.deploy(
        token_address=token_address, claim_window_s=CLAIM_WINDOW_S, reclaim_window_s=RECLAIM_WINDOW_S
    )
    salt = operator.contract_address.encode()
    providers = [to_checksum_address(keccak(salt + b"provider" + bytes([i]))[-20:]) for i in range(4)]
    return World(
        operator=operator,
        consumers=[operator.with_signer(k) for k in keys[1:5]],
        relayer=operator.with_signer(keys[5]),
        stranger=operator.with_signer(keys[6]),
        providers=providers,
        token=token_address,
    )


@pytest.fixture
def world(chain) -> World:
    return make_world(chain, token=False)


@pytest.fixture
def token_world(chain) -> World:
    return make_world(chain, token=True)


@pytest.fixture(params=["native", "token"])
def any_world(request, chain) -> World:
    return make_world(chain, token=request.param == "token")


def rejected(name: str, fn: Callable, *args, **kwargs) -> ChainRejected:
    """Call fn and assert the chain rejects it with custom error `name`; return the error."""
    with pytest.raises(ChainRejected) as info:
        fn(*args, **kwargs)
    assert info.value.error_name == name, f"expected {name}, got {info.value!r}"
    return info.value
