"""The chain and the contract CPX talks to (one ChainDeployment row per contract per chain), and the
addresses given to it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from eth_utils import is_address, to_checksum_address

from config.errors import InvalidInput
from contracts.client import SettlementClient, client_from_settings
from contracts.models import ChainDeployment


def chain_client() -> SettlementClient:
    """The app's client (contracts.client.client_from_settings): in-process EVM unless CHAIN_RPC_URL."""
    return client_from_settings()


def _network(client: SettlementClient) -> str:
    # The client has no public notion of "which chain": read its connection once and remember it there.
    conn = client._conn  # noqa: SLF001
    cached = conn.__dict__.get("cpx_network")
    if cached:
        return cached
    if conn.in_process:
        network = f"in-process:{uuid.uuid4().hex[:16]}"
    else:
        network = f"rpc:{client._read(lambda: client._w3.eth.chain_id)}"  # noqa: SLF001
    conn.__dict__["cpx_network"] = network
    return network


def deployment_for(client: SettlementClient, *, now: datetime) -> ChainDeployment:
    """The ChainDeployment row of the client's contract on the client's chain (created on first use)."""
    if not client.contract_address:
        raise InvalidInput("The settlement client has no contract address.")
    network, address = _network(client), to_checksum_address(client.contract_address)
    try:
        with transaction.atomic():
            deployment, _ = ChainDeployment.objects.get_or_create(
                network=network, address=address, defaults={"created_at": now}
            )
    except IntegrityError:  # created by a concurrent caller between our get and our insert
        deployment = ChainDeployment.objects.get(network=network, address=address)
    return deployment


def checked_address(address: str, *, field_name: str = "address") -> str:
    if not isinstance(address, str) or not is_address(address):
        raise InvalidInput("Not an Ethereum address (0x and 40 hex digits).", field=field_name)
    if address != address.lower() and address != to_checksum_address(address):
        raise InvalidInput("The address fails its EIP-55 checksum: check for a typo.", field=field_name)
    return to_checksum_address(address)


@contextlib.contextmanager
def signer_lock(client: SettlementClient) -> Iterator[None]:
    """Hold the database's lock of the client's signer while it sends: the nonce comes from the node's
    pending count, so two workers (processes or machines) sending as one signer at once would take the
    same nonce. On PostgreSQL a session advisory lock keyed by the signer address serialises them across
    processes; SQLite runs one worker process (TOOLCHAIN.md), where the client's own lock suffices."""
    if connection.vendor != "postgresql":
        yield
        return
    key = int(client.address[2:18], 16) - (1 << 63)  # 64 signed bits of the address
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
