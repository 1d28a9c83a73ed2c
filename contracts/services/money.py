"""Ledger amounts and on-chain amounts, and the leaves a lease gives.

Money. Ledger Decimal (6 dp) × CHAIN_WEI_PER_UNIT = wei (exact: the unit is a multiple of 10**6). Each
lease gives up to two leaves: the provider's payment (leaf id = lease id) and the platform's fee and
surplus (leaf id = FEE_LEAF_BASE + lease id, paid to CHAIN_FEE_ADDRESS). Together they are the lease's
charge, which the commit debits from the consumer's on-chain escrow; the refund stays in that escrow just
as it returns to the consumer's ledger balance, so the escrow keeps backing the balance.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings

from market.models import LedgerTransfer
from market.money import DECIMAL_PLACES, QUANTUM

FEE_LEAF_BASE = 1 << 128  # fee leaves' on-chain ids: FEE_LEAF_BASE + lease id (never a lease id)


def _wei_per_quantum() -> int:
    per_unit = settings.CHAIN_WEI_PER_UNIT
    if per_unit <= 0 or per_unit % 10**DECIMAL_PLACES:
        raise ValueError("CHAIN_WEI_PER_UNIT must be a positive multiple of 10**6 (the ledger's quantum)")
    return per_unit // 10**DECIMAL_PLACES


def to_wei(amount: Decimal) -> int:
    """A ledger amount (at the quantum) in wei or token base units, exactly."""
    quanta = Decimal(amount) / QUANTUM
    if quanta != quanta.to_integral_value():
        raise ValueError(f"{amount} is not at the ledger's quantum")
    return int(quanta) * _wei_per_quantum()


def from_wei(amount_wei: int) -> tuple[Decimal, int]:
    """(the ledger amount, the dust below the quantum) of an on-chain amount."""
    step = _wei_per_quantum()
    return Decimal(int(amount_wei) // step) * QUANTUM, int(amount_wei) % step


def lease_ledger_amounts(lease_ids) -> dict[int, tuple[Decimal, Decimal]]:
    """Per lease, (payment to the provider, fee + surplus to the platform) as the ledger holds them."""
    refs = {f"lease:{i}:payment": (i, 0) for i in lease_ids} | {f"lease:{i}:fee": (i, 1) for i in lease_ids}
    out: dict[int, list[Decimal]] = {i: [Decimal(0), Decimal(0)] for i in lease_ids}
    rows = LedgerTransfer.objects.filter(reference__in=list(refs)).values_list("reference", "amount")
    for reference, amount in rows:
        lease_id, part = refs[reference]
        out[lease_id][part] = amount
    return {i: (p, f) for i, (p, f) in out.items()}
