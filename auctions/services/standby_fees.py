"""Standby fees in the ledger (the backup pool's money; the model is in auctions/services/backup_pool.py).

A standby's fee is escrowed from the consumer when the round reserves it (consumer balance → the
job's escrow, `standby:<id>:hold`) and leaves the escrow exactly once when the reservation ends:
to the standby's provider (`standby:<id>:payment`) when the standby was used or stood by until the
job ended, back to the consumer (`standby:<id>:refund`) when the standby was gone (its provider
offline or its listing withdrawn) when it was needed or released. The reservation's status moves by
compare-and-set from HELD, and each transfer's reference is unique, so a retry moves nothing twice.

Every function here runs under the job's row lock (the lifecycle's lock order, auctions.services.leases):
the escrow is touched only there. Ledger accounts come after job, lease and provider rows.
"""

from datetime import datetime
from decimal import Decimal

from django.db import transaction

from auctions.models import StandbyReservation
from auctions.selectors.leases import provider_is_online
from market.models import JobRequest, LedgerAccount, LedgerTransfer, Resource
from market.money import to_money
from market.services.ledger import ledger_account_for_user, ledger_transfer

Standby = StandbyReservation.Status
ZERO = Decimal("0")


def standby_fee_due(*, rate: Decimal, unit_price_paid: Decimal, expected_device_hours: Decimal) -> Decimal:
    """rate × the running lease's expected cost (unit_price_paid × expected_device_hours), at the money
    quantum: the same base as the SLA penalty the failing provider pays."""
    return to_money(Decimal(rate) * Decimal(unit_price_paid) * Decimal(expected_device_hours))


def standby_fee_hold(*, reservation: StandbyReservation, job: JobRequest, now: datetime) -> None:
    """Escrow the reservation's fee from the consumer's balance into the job's escrow.
    Raises InsufficientFunds (nothing written: the caller drops the reservation)."""
    if reservation.fee <= 0:
        return
    ledger_transfer(
        debit=ledger_account_for_user(user=job.consumer, kind=LedgerAccount.Kind.CONSUMER),
        credit=LedgerAccount.objects.get(kind=LedgerAccount.Kind.ESCROW, job_id=job.pk),
        amount=reservation.fee,
        kind=LedgerTransfer.Kind.HOLD,
        now=now,
        job=job,
        reference=f"standby:{reservation.pk}:hold",
        memo=f"standby fee held, standby {reservation.pk} on resource {reservation.resource_id}",
    )


def standby_stood_by(reservation: StandbyReservation, *, now: datetime) -> bool:
    """Whether the standby is still there: its provider online and active, its listing LISTED."""
    listed = Resource.objects.filter(pk=reservation.resource_id, status=Resource.Status.LISTED).exists()
    return listed and provider_is_online(provider=reservation.provider, now=now)


@transaction.atomic
def standby_fee_settle(*, reservation: StandbyReservation, now: datetime) -> Decimal:
    """Move the fee of an ended reservation out of the escrow: to the standby's provider (USED,
    RELEASED) or back to the consumer (LAPSED). Returns the amount moved; 0 for a HELD reservation,
    a zero fee, or one already settled (its reference exists)."""
    if reservation.status == Standby.HELD or reservation.fee <= 0:
        return ZERO
    paid = reservation.status in (Standby.USED, Standby.RELEASED)
    reference = f"standby:{reservation.pk}:{'payment' if paid else 'refund'}"
    if LedgerTransfer.objects.filter(reference=reference).exists():
        return ZERO
    job = reservation.job
    if paid:
        credit = ledger_account_for_user(user=reservation.provider.user, kind=LedgerAccount.Kind.PROVIDER)
    else:
        credit = ledger_account_for_user(user=job.consumer, kind=LedgerAccount.Kind.CONSUMER)
    ledger_transfer(
        debit=LedgerAccount.objects.get(kind=LedgerAccount.Kind.ESCROW, job_id=job.pk),
        credit=credit,
        amount=reservation.fee,
        kind=LedgerTransfer.Kind.PAYMENT if paid else LedgerTransfer.Kind.REFUND,
        now=now,
        job=job,
        reference=reference,
        memo=f"standby fee {'paid' if paid else 'refunded'}, standby {reservation.pk} ({reservation.status})",
    )
    return reservation.fee


def standby_close(*, reservation: StandbyReservation, to: str, now: datetime, detail: str = "") -> bool:
    """Compare-and-set a reservation HELD → `to`; True if this caller closed it."""
    won = StandbyReservation.objects.filter(pk=reservation.pk, status=Standby.HELD).update(
        status=to, ended_at=now, detail=detail[:200]
    )
    if won:
        reservation.status, reservation.ended_at, reservation.detail = to, now, detail[:200]
    return bool(won)


def standby_release(*, job: JobRequest, now: datetime) -> Decimal:
    """The job ended: end each HELD standby of it and settle its fee: RELEASED and paid when the standby
    stood by to the end, LAPSED and refunded when it had left. Called by the settlement of the job's
    lease and by its refund, under the job's row lock, before the escrow's remainder is paid or
    refunded. Returns the fees moved. Idempotent."""
    moved = ZERO
    held = StandbyReservation.objects.filter(job_id=job.pk, status=Standby.HELD).select_related(
        "provider", "job__consumer"
    )
    for reservation in held.order_by("id"):
        stood_by = standby_stood_by(reservation, now=now)
        to = Standby.RELEASED if stood_by else Standby.LAPSED
        detail = "the job ended" if stood_by else "the job ended; the standby had left"
        if standby_close(reservation=reservation, to=to, now=now, detail=detail):
            moved += standby_fee_settle(reservation=reservation, now=now)
    return moved
