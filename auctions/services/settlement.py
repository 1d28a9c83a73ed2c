"""Settlement in the ledger: a completed lease pays its provider out of the job's escrow, a failed
job is refunded, a failing provider pays its SLA penalty.

Every transfer carries a unique `reference` (`lease:<id>:payment`, `lease:<id>:fee`,
`lease:<id>:penalty`, `job:<id>:refund`, `lease:<id>:broker:<side>`), so a retried settlement can
never move money twice: the database refuses the second row and the whole transaction rolls back.

Lock order: the lifecycle's one order (auctions.services.leases): the caller holds the job's row
lock, then the provider row, then ledger accounts — provider earnings, brokers' fee accounts, house
accounts (platform fee, penalty), the consumer's balance. A job's escrow is touched only under its
job's row lock.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest

from auctions.models import Lease, LeaseSla
from auctions.services.broker_fees import (
    broker_fee_moves,
    broker_fees_due,
    broker_fees_paid,
    broker_fees_record,
)
from auctions.services.standby_fees import standby_release
from config.errors import Conflict
from market.models import JobRequest, LedgerAccount, LedgerTransfer, Provider
from market.money import to_money
from market.services.ledger import ledger_account_for_user, ledger_house_account, ledger_transfer

HOUR_QUANTUM = Decimal("0.000001")
ZERO = Decimal("0")


class LeaseNotCompleted(Conflict):
    code = "lease_not_completed"


@dataclass(frozen=True)
class LeaseSettlement:
    """What one completed lease moved: `charge` left the escrow; the provider got `provider_net`,
    the platform `platform` (fee + mechanism surplus), brokers `broker` (auctions.services.broker_fees),
    the consumer `refund` (the rest)."""

    lease_id: int
    device_hours: Decimal
    charge: Decimal
    provider_net: Decimal
    platform: Decimal
    refund: Decimal
    broker: Decimal = ZERO


def settlement_amounts(
    *,
    device_seconds: Decimal,
    unit_price_paid: Decimal,
    unit_price_received: Decimal,
    escrow: Decimal,
    fee_rate: Decimal,
) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
    """The split of one lease's escrow: (device_hours, charge, provider_net, platform, refund).

    hours    = device_seconds / 3600, to 1e-6 h
    charge   = min(unit_price_paid × hours, escrow)
    gross    = min(unit_price_received × hours, charge)
    fee      = gross × fee_rate
    provider = gross − fee;  platform = charge − provider (fee + surplus);  refund = escrow − charge
    Every amount is at the money quantum and the four parts sum to the escrow exactly.
    """
    hours = (Decimal(device_seconds) / 3600).quantize(HOUR_QUANTUM, rounding=ROUND_HALF_EVEN)
    charge = min(to_money(unit_price_paid * hours), escrow)
    gross = min(to_money(unit_price_received * hours), charge)
    provider_net = gross - to_money(gross * fee_rate)
    return hours, charge, provider_net, charge - provider_net, escrow - charge


@transaction.atomic
def lease_settle(*, lease: Lease, now: datetime) -> LeaseSettlement:
    """Pay a COMPLETED lease by metered usage at its cleared prices and refund the rest of the escrow.

    Idempotent: a lease already settled answers its settlement again without moving money.
    Raises LeaseNotCompleted.
    """
    if lease.status != Lease.Status.COMPLETED:
        raise LeaseNotCompleted("Only a completed lease is paid.", lease=lease.pk, status=lease.status)
    done = _settled(lease)
    if done is not None:
        return done
    job = lease.job
    standby_release(job=job, now=now)  # the job's standby fee leaves the escrow first (backup pool)
    escrow = LedgerAccount.objects.select_for_update().get(kind=LedgerAccount.Kind.ESCROW, job=job)
    hours, charge, provider_net, platform, refund = settlement_amounts(
        device_seconds=lease.device_seconds,
        unit_price_paid=lease.unit_price_paid,
        unit_price_received=lease.unit_price_received,
        escrow=escrow.balance,
        fee_rate=settings.CPX_PLATFORM_FEE_RATE,
    )
    provider_net, refund, brokers_due = broker_fees_due(
        lease=lease, charge=charge, provider_net=provider_net, refund=refund
    )
    provider_account = ledger_account_for_user(user=lease.provider.user, kind=LedgerAccount.Kind.PROVIDER)
    platform_account = ledger_house_account(kind=LedgerAccount.Kind.PLATFORM_FEE)
    consumer_account = ledger_account_for_user(user=job.consumer, kind=LedgerAccount.Kind.CONSUMER)
    memo = f"lease {lease.pk}: {hours} device-hours"
    output = JobRequest.objects.filter(pk=job.pk).values_list("output_file__sha256", flat=True).first()
    if output:  # a batch job: the settlement record names the results it paid for (issue 10)
        memo += f"; results sha256 {output}"
    moves = [
        (provider_account, provider_net, LedgerTransfer.Kind.PAYMENT, f"lease:{lease.pk}:payment"),
        *broker_fee_moves(brokers_due),  # the three-way split's broker leg (MECM, issue 12)
        (platform_account, platform, LedgerTransfer.Kind.FEE, f"lease:{lease.pk}:fee"),
        (consumer_account, refund, LedgerTransfer.Kind.REFUND, f"job:{job.pk}:refund"),
    ]
    for credit, amount, kind, reference in moves:
        if amount > 0:
            ledger_transfer(
                debit=escrow,
                credit=credit,
                amount=amount,
                kind=kind,
                now=now,
                job=job,
                reference=reference,
                memo=memo,
            )
    broker_fees_record(lease=lease, due=brokers_due)
    broker = sum((fee.amount for fee in brokers_due), ZERO)
    return LeaseSettlement(lease.pk, hours, charge, provider_net, platform, refund, broker)


def _settled(lease: Lease) -> LeaseSettlement | None:
    references = [f"lease:{lease.pk}:payment", f"lease:{lease.pk}:fee"]
    paid = dict(LedgerTransfer.objects.filter(reference__in=references).values_list("reference", "amount"))
    if not paid:
        return None
    refund = (
        LedgerTransfer.objects.filter(reference=f"job:{lease.job_id}:refund")
        .values_list("amount", flat=True)
        .first()
    )
    provider_net = paid.get(references[0], ZERO)
    platform = paid.get(references[1], ZERO)
    hours = (lease.device_seconds / 3600).quantize(HOUR_QUANTUM, rounding=ROUND_HALF_EVEN)
    for_consumer, for_provider = broker_fees_paid(lease)
    charge = provider_net + platform + for_provider
    return LeaseSettlement(
        lease.pk, hours, charge, provider_net, platform, refund or ZERO, for_consumer + for_provider
    )


@transaction.atomic
def job_refund(*, job: JobRequest, now: datetime, reason: str) -> Decimal:
    """Return everything the job's escrow still holds to its consumer; returns the amount.

    Idempotent: an empty escrow (already refunded or settled) moves nothing and returns 0. A standby
    the job still holds in the backup pool is released first (its fee paid or refunded).
    """
    standby_release(job=job, now=now)
    escrow = LedgerAccount.objects.select_for_update().get(kind=LedgerAccount.Kind.ESCROW, job=job)
    if escrow.balance <= 0:
        return ZERO
    consumer_account = ledger_account_for_user(user=job.consumer, kind=LedgerAccount.Kind.CONSUMER)
    ledger_transfer(
        debit=escrow,
        credit=consumer_account,
        amount=escrow.balance,
        kind=LedgerTransfer.Kind.REFUND,
        now=now,
        job=job,
        reference=f"job:{job.pk}:refund",
        memo=f"job {job.pk} refunded: {reason}"[:200],
    )
    return escrow.balance


def lease_penalty_due(lease: Lease) -> Decimal:
    """The penalty rate × the lease's expected cost (unit_price_paid × expected_device_hours). The rate
    is the lease's contract's `deadline_penalty_rate` when its deadline passed (auctions.services.sla),
    else CPX_SLA_PENALTY_RATE."""
    rate = settings.CPX_SLA_PENALTY_RATE
    if lease.close_reason == Lease.CloseReason.DEADLINE:
        contract = LeaseSla.objects.filter(lease=lease).values_list("terms", flat=True).first() or {}
        if contract.get("deadline_penalty_rate") is not None:
            rate = Decimal(str(contract["deadline_penalty_rate"]))
    return to_money(rate * lease.unit_price_paid * lease.expected_device_hours)


@transaction.atomic
def provider_penalise(*, provider: Provider, lease: Lease, now: datetime) -> Decimal:
    """Apply the SLA penalty of a lease the provider failed; returns the amount taken.

    The penalty (`lease_penalty_due`) moves from the provider's earnings to the PENALTY account,
    capped at what the earnings hold: a provider is never driven below zero. Reputation falls by
    CPX_SLA_REPUTATION_STEP for the fault, plus up to one more step in proportion to the part of the
    penalty the earnings could not cover — so a provider with nothing to lose still pays in its
    standing in the book. Call it once per failed lease (the caller that won the lease's
    compare-and-set does); the transfer's reference `lease:<id>:penalty` refuses a second payment.
    """
    due = lease_penalty_due(lease)
    # The provider row before its ledger accounts (lock order): a heartbeat holds it the same way.
    Provider.objects.select_for_update().filter(pk=provider.pk).values_list("pk", flat=True).first()
    account = ledger_account_for_user(user=provider.user, kind=LedgerAccount.Kind.PROVIDER)
    # Lock the earnings so the cap and the debit see the same balance.
    held = LedgerAccount.objects.select_for_update().get(pk=account.pk).balance
    taken = min(due, held)
    if taken > 0:
        ledger_transfer(
            debit=account,
            credit=ledger_house_account(kind=LedgerAccount.Kind.PENALTY),
            amount=taken,
            kind=LedgerTransfer.Kind.PENALTY,
            now=now,
            job=lease.job,
            reference=f"lease:{lease.pk}:penalty",
            memo=f"SLA penalty, lease {lease.pk}: {lease.close_reason or 'fault'}",
        )
    step = settings.CPX_SLA_REPUTATION_STEP
    uncovered = (due - taken) / due if due > 0 else ZERO
    loss = (step * (1 + uncovered)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)
    Provider.objects.filter(pk=provider.pk).update(reputation=Greatest(Value(ZERO), F("reputation") - loss))
    return taken
