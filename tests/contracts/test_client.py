"""SettlementClient's boundary: two errors of ours, plain values out, the settings factory."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from contracts.client import (
    ChainRejected,
    ChainUnavailable,
    SettlementClient,
    SettlementV2Client,
    client_from_settings,
    decode_revert,
)
from tests.conftest import service_unavailable

ROOT = Path(__file__).resolve().parents[2]


def _is_plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    return value is None or type(value) in (int, str, bool)


class TestSettlementClient:
    def test_an_unreachable_node_is_chain_unavailable(self):
        client = SettlementClient.connect(
            "http://127.0.0.1:9", contract_address="0x" + "11" * 20, timeout_s=2
        )

        with pytest.raises(ChainUnavailable):
            client.deposit(1)
        with pytest.raises(ChainUnavailable):
            client.batch_status(b"\1" * 32)

    def test_reverts_carry_the_decoded_custom_error(self, world):
        with pytest.raises(ChainRejected) as info:
            world.operator.refund(world.consumers[0].address, 5)

        assert info.value.error_name == "InsufficientEscrow"
        assert info.value.error_args == {"consumer": world.consumers[0].address, "available": 0, "needed": 5}
        assert info.value.code == "chain_rejected"

    def test_returns_only_plain_values(self, world):
        world.fund(0, 100)
        leaf = world.leaf(1, 0, 0, 100)
        batch_id = world.batch_id()

        outputs = [
            world.operator.commit_batch(batch_id, [leaf]),
            world.operator.batch_status(batch_id),
            world.operator.escrow_of(world.consumers[0].address),
            world.operator.claim(batch_id, leaf, []),
            world.operator.claimed_of(batch_id, 1),
            world.operator.events(),
        ]

        assert all(_is_plain(o) for o in outputs)
        assert world.operator.batch_status(b"\7" * 32)["kind"] == "none"

    def test_unknown_revert_data_is_still_rejected(self):
        assert decode_revert(b"").error_name == "Reverted"
        assert decode_revert(b"\xde\xad\xbe\xef").error_name == "UnknownError"

    def test_settings_factory_deploys_once_on_the_shared_in_process_chain(self, settings):
        settings.CHAIN_RPC_URL = ""
        settings.CHAIN_CONTRACT_ADDRESS = ""
        settings.CHAIN_SIGNER_KEY = ""

        first, second = client_from_settings(), client_from_settings()

        assert first.contract_address == second.contract_address
        assert first.batch_status(b"\1" * 32)["kind"] == "none"

    def test_the_app_runs_on_settlement_v2_with_an_admin_that_is_not_the_operator(self, settings):
        settings.CHAIN_RPC_URL = ""
        settings.CHAIN_CONTRACT_ADDRESS = ""
        settings.CHAIN_SIGNER_KEY = ""

        client = client_from_settings()

        assert isinstance(client, SettlementV2Client)
        assert client.view("operator") == client.address
        assert client.view("admin") not in ("0x" + "00" * 20, client.address)
        settings.CHAIN_CONTRACT_VERSION = "v1"
        previous = client_from_settings()
        assert type(previous) is SettlementClient and previous.contract_address != client.contract_address
        settings.CHAIN_CONTRACT_VERSION = "v3"
        with pytest.raises(ChainRejected):
            client_from_settings()


class TestArtifacts:
    def test_committed_artifacts_are_what_the_sources_compile_to(self):
        if not (ROOT / "node_modules" / "solc").is_dir() or shutil.which("node") is None:
            service_unavailable("node_modules/solc is absent (run npm ci): cannot recompile the contracts")

        result = subprocess.run(
            ["node", "contracts/build.js", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ},
        )  # fmt: skip

        assert result.returncode == 0, result.stderr
