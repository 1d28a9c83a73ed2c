"""Broker fees at settlement: the third leg of the split (consumer → provider, broker, platform).

Which broker is owed, per lease:
- consumer side: the appointment a brokered job was placed under (market.BrokeredJob), at its rate,
  even if revoked since (the broker made the trade while appointed);
- provider side: the provider's appointment that was active when the lease was dispatched.

What it is owed: the rate times its principal's side of the trade — the consumer's `charge`, paid
on top of it out of what the escrow would refund (capped there: a consumer never pays beyond its
escrow); the provider's net payment, taken out of it. So the escrow still splits exactly:
escrow = provider_net + broker fees + platform + refund, every part at the money quantum.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Q

from auctions.models import Lease
from market.models import BrokerAppointment, BrokeredJob, BrokerFee, LedgerAccount, LedgerTransfer
from market.money import to_money
from market.services.ledger import ledger_account_for_user

ZERO = Decimal(0)


@dataclass(frozen=True)
class BrokerFeeDue:
    appointment: BrokerAppointment
    amount: Decimal
    reference: str


def lease_brokers(lease: Lease) -> list[BrokerAppointment]:
    """The appointments a lease owes fees under: the consumer side's first, then the provider's."""
    out = []
    brokered = BrokeredJob.objects.select_related("appointment").filter(job_id=lease.job_id).first()
    if brokered is not None:
        out.append(brokered.appointment)
    provider_side = (
        BrokerAppointment.objects.filter(
            principal_id=lease.provider.user_id,
            side=BrokerAppointment.Side.PROVIDER,
            created_at__lte=lease.dispatched_at,
        )
        .filter(Q(revoked_at__isnull=True) | Q(revoked_at__gt=lease.dispatched_at))
        .order_by("-created_at", "-id")
        .first()
    )
    if provider_side is not None:
        out.append(provider_side)
    return out


def broker_split(
    *, charge: Decimal, provider_net: Decimal, refund: Decimal, consumer_rate=None, provider_rate=None
) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(provider_net, refund, consumer-side fee, provider-side fee) after the brokers' fees (a rate of
    None: no broker on that side). The consumer side's fee is its rate of the charge, capped at the
    refund it comes out of; the provider side's its rate of the provider's net, out of it. Nothing is
    created or lost: provider_net + refund before = provider_net + refund + both fees after."""
    for_consumer = min(to_money(charge * consumer_rate), refund) if consumer_rate is not None else ZERO
    for_provider = (
        min(to_money(provider_net * provider_rate), provider_net) if provider_rate is not None else ZERO
    )
    return provider_net - for_provider, refund - for_consumer, for_consumer, for_provider


def broker_fees_due(
    *, lease: Lease, charge: Decimal, provider_net: Decimal, refund: Decimal
) -> tuple[Decimal, Decimal, list[BrokerFeeDue]]:
    """The fees a lease owes its brokers; returns (provider_net, refund) net of them, and the fees."""
    by_side = {appointment.side: appointment for appointment in lease_brokers(lease)}
    consumer_side = by_side.get(BrokerAppointment.Side.CONSUMER)
    provider_side = by_side.get(BrokerAppointment.Side.PROVIDER)
    provider_net, refund, for_consumer, for_provider = broker_split(
        charge=charge,
        provider_net=provider_net,
        refund=refund,
        consumer_rate=consumer_side.fee_rate if consumer_side else None,
        provider_rate=provider_side.fee_rate if provider_side else None,
    )
    due = [
        BrokerFeeDue(appointment, amount, f"lease:{lease.pk}:broker:{appointment.side}")
        for appointment, amount in ((consumer_side, for_consumer), (provider_side, for_provider))
        if appointment is not None
    ]
    return provider_net, refund, due


def broker_fee_moves(due: list[BrokerFeeDue]) -> list[tuple]:
    """The ledger moves of `due`, in lease_settle's (credit, amount, kind, reference) shape."""
    return [
        (
            ledger_account_for_user(user=fee.appointment.broker, kind=LedgerAccount.Kind.BROKER),
            fee.amount,
            LedgerTransfer.Kind.BROKER_FEE,
            fee.reference,
        )
        for fee in due
    ]


def broker_fees_record(*, lease: Lease, due: list[BrokerFeeDue]) -> None:
    """One BrokerFee row per fee paid, naming its transfer, appointment and rate."""
    paid = dict(
        LedgerTransfer.objects.filter(reference__in=[fee.reference for fee in due]).values_list(
            "reference", "pk"
        )
    )
    for fee in due:
        if fee.reference in paid:
            BrokerFee.objects.create(
                transfer_id=paid[fee.reference],
                appointment=fee.appointment,
                lease_id=lease.pk,
                fee_rate=fee.appointment.fee_rate,
            )


def broker_fees_paid(lease: Lease) -> tuple[Decimal, Decimal]:
    """What a settled lease paid its brokers: (consumer side, provider side)."""
    paid = dict(
        LedgerTransfer.objects.filter(
            reference__in=[f"lease:{lease.pk}:broker:{side}" for side in BrokerAppointment.Side.values]
        ).values_list("reference", "amount")
    )
    zero = Decimal(0)
    return (
        paid.get(f"lease:{lease.pk}:broker:consumer", zero),
        paid.get(f"lease:{lease.pk}:broker:provider", zero),
    )
