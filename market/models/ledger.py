from django.db import models
from django.db.models import Q

from market.models.accounts import User
from market.models.jobs import JobRequest
from market.money import MoneyField


class LedgerAccount(models.Model):
    """One account of the double-entry ledger. `balance` is the sum of its transfers, kept
    in step by the transfer service with F() updates in the same transaction.

    EXTERNAL is the world outside CPX (deposits come from it, withdrawals go to it); it is the
    only account allowed below zero, so the sum of all balances is always exactly zero.
    """

    class Kind(models.TextChoices):
        CONSUMER = "CONSUMER", "Consumer balance"
        PROVIDER = "PROVIDER", "Provider earnings"
        ESCROW = "ESCROW", "Job escrow"
        PLATFORM_FEE = "PLATFORM_FEE", "Platform fees"
        PENALTY = "PENALTY", "SLA penalties"
        EXTERNAL = "EXTERNAL", "Outside world"
        BROKER = "BROKER", "Broker fees"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    user = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_accounts"
    )
    job = models.OneToOneField(
        JobRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="escrow_account"
    )
    balance = MoneyField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="EXTERNAL") | Q(balance__gte=0), name="ledger_balance_non_negative"
            ),
            models.UniqueConstraint(
                fields=["kind", "user"],
                condition=Q(user__isnull=False),
                name="ledger_one_account_per_user_kind",
            ),
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(kind__in=["PLATFORM_FEE", "PENALTY", "EXTERNAL"]),
                name="ledger_one_house_account_per_kind",
            ),
            models.CheckConstraint(
                condition=(Q(kind="ESCROW") & Q(job__isnull=False) & Q(user__isnull=True))
                | (
                    Q(kind__in=["CONSUMER", "PROVIDER", "BROKER"])
                    & Q(user__isnull=False)
                    & Q(job__isnull=True)
                )
                | (
                    Q(kind__in=["PLATFORM_FEE", "PENALTY", "EXTERNAL"])
                    & Q(user__isnull=True)
                    & Q(job__isnull=True)
                ),
                name="ledger_account_owner_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        owner = self.user or (f"job {self.job_id}" if self.job_id else "house")
        return f"{self.kind} {owner}"


class LedgerTransfer(models.Model):
    """A balanced movement of money: `amount` leaves `debit` and arrives in `credit`.

    One row is both legs of the double entry, so no transfer can be unbalanced. `reference` is
    unique when given: it makes deposits and settlements idempotent under retries.
    """

    class Kind(models.TextChoices):
        DEPOSIT = "DEPOSIT", "Deposit"
        WITHDRAWAL = "WITHDRAWAL", "Withdrawal"
        HOLD = "HOLD", "Escrow hold"
        RELEASE = "RELEASE", "Escrow release"
        PAYMENT = "PAYMENT", "Payment to provider"
        FEE = "FEE", "Platform fee"
        REFUND = "REFUND", "Refund"
        PENALTY = "PENALTY", "SLA penalty"
        BROKER_FEE = "BROKER_FEE", "Broker fee"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    debit = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="debits")
    credit = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="credits")
    amount = MoneyField()
    job = models.ForeignKey(
        JobRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="transfers"
    )
    reference = models.CharField(max_length=160, null=True, blank=True, unique=True)
    memo = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="ledger_transfer_amount_positive"),
            models.CheckConstraint(
                condition=~Q(debit=models.F("credit")), name="ledger_transfer_two_accounts"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} {self.debit_id}→{self.credit_id}"


class Deposit(LedgerTransfer):
    """Deposits seen on their own in the admin, where operators credit consumers."""

    class Meta:
        proxy = True
        ordering = ["-created_at", "-id"]
