"""Reads for brokers: their principals (appointments, newest first) and the fees they earned."""

from decimal import Decimal

from django.db.models import Count, DecimalField, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce

from market.models import BrokerAppointment, BrokeredJob, BrokerFee, LedgerAccount, User


def broker_principal_list(*, broker: User, active_only: bool = False) -> QuerySet[BrokerAppointment]:
    """The broker's appointments with each principal, newest first, with fees earned under each."""
    rows = BrokerAppointment.objects.filter(broker=broker).select_related("principal")
    if active_only:
        rows = rows.filter(status=BrokerAppointment.Status.ACTIVE)
    return rows.annotate(
        fees_earned=Coalesce(Sum("fees__transfer__amount"), Value(Decimal(0)), output_field=DecimalField()),
        trades=Count("fees"),
    ).order_by("-created_at", "-id")


def broker_appointments_of(*, principal: User) -> QuerySet[BrokerAppointment]:
    """The brokers a principal appointed, newest first."""
    return (
        BrokerAppointment.objects.filter(principal=principal)
        .select_related("broker")
        .order_by("-created_at", "-id")
    )


def broker_fees_earned(*, broker: User) -> list[dict]:
    """Fees earned per principal (username, side, earned, trades), largest first. Summed in Python
    with Decimal: SQLite's SUM over decimals goes through floats."""
    totals: dict[tuple, list] = {}
    rows = BrokerFee.objects.filter(appointment__broker=broker).values_list(
        "appointment__principal__username", "appointment__side", "transfer__amount"
    )
    for username, side, amount in rows:
        entry = totals.setdefault((username, side), [Decimal(0), 0])
        entry[0] += amount
        entry[1] += 1
    out = [
        {"principal__username": u, "side": s, "earned": e, "trades": n} for (u, s), (e, n) in totals.items()
    ]
    return sorted(out, key=lambda row: (-row["earned"], row["principal__username"]))


def broker_balance(*, broker: User) -> Decimal:
    """What the broker's fee account holds."""
    account = LedgerAccount.objects.filter(kind=LedgerAccount.Kind.BROKER, user=broker).first()
    return account.balance if account else Decimal(0)


def broker_job_list(*, broker: User, limit: int = 50) -> QuerySet[BrokeredJob]:
    """The jobs the broker placed for its principals, newest first."""
    return (
        BrokeredJob.objects.filter(appointment__broker=broker)
        .select_related("job", "appointment__principal")
        .order_by("-job__created_at", "-job_id")[:limit]
    )


def broker_summary() -> list[dict]:
    """Per broker, for the operators' dashboard, in ONE query: active principals, brokered trades and
    fees earned, most fees first. (For display: SQLite sums decimals as floats; the ledger is exact.)"""
    rows = (
        BrokerAppointment.objects.values("broker__username")
        .annotate(
            active=Count("id", filter=Q(status=BrokerAppointment.Status.ACTIVE), distinct=True),
            trades=Count("fees"),
            earned=Coalesce(Sum("fees__transfer__amount"), Value(Decimal(0)), output_field=DecimalField()),
        )
        .order_by("-earned", "broker__username")
    )
    return [
        {"broker": r["broker__username"], **{k: r[k] for k in ("active", "trades", "earned")}} for r in rows
    ]
