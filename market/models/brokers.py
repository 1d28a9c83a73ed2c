"""Brokers (MECM's middle tier, issue 12): a provider or consumer appoints a broker, who then trades
for it at an agreed fee rate until either side revokes the appointment."""

from decimal import Decimal

from django.db import models
from django.db.models import Q

from market.models.accounts import User
from market.models.jobs import JobRequest


class BrokerAppointment(models.Model):
    """A principal's consent for `broker` to trade for it (`side`: its provider capacity or its
    consumer demand) at `fee_rate` of each brokered trade's value. ACTIVE until revoked by either
    party; a principal has at most one active broker per side. The row stays: settlements name it."""

    class Side(models.TextChoices):
        PROVIDER = "provider", "Provider capacity"
        CONSUMER = "consumer", "Consumer demand"

    class Status(models.TextChoices):
        ACTIVE = "ACTIVE", "Active"
        REVOKED = "REVOKED", "Revoked"

    broker = models.ForeignKey(User, on_delete=models.PROTECT, related_name="broker_principals")
    principal = models.ForeignKey(User, on_delete=models.PROTECT, related_name="broker_appointments")
    side = models.CharField(max_length=8, choices=Side.choices)
    fee_rate = models.DecimalField(max_digits=7, decimal_places=6)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["principal", "side"],
                condition=Q(status="ACTIVE"),
                name="broker_one_active_appointment_per_side",
            ),
            models.CheckConstraint(
                condition=Q(fee_rate__gte=Decimal(0)) & Q(fee_rate__lt=Decimal(1)),
                name="broker_fee_rate_in_range",
            ),
            models.CheckConstraint(
                condition=~Q(broker=models.F("principal")), name="broker_not_own_principal"
            ),
            models.CheckConstraint(
                condition=Q(status="ACTIVE", revoked_at__isnull=True)
                | Q(status="REVOKED", revoked_at__isnull=False),
                name="broker_revoked_when_revoked_at",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.broker} for {self.principal} ({self.side}, {self.fee_rate}, {self.status})"


class BrokeredJob(models.Model):
    """A job a broker submitted for a consumer principal: the appointment it acted under (its fee
    rate is charged at settlement, even if the appointment is revoked before the job ends)."""

    job = models.OneToOneField(JobRequest, on_delete=models.PROTECT, related_name="brokered")
    appointment = models.ForeignKey(BrokerAppointment, on_delete=models.PROTECT, related_name="jobs")

    def __str__(self) -> str:
        return f"job {self.job_id} via appointment {self.appointment_id}"


class BrokerFee(models.Model):
    """The record of one broker fee: the ledger transfer that paid it, the appointment it was due
    under, the lease it came from, and the rate applied."""

    transfer = models.OneToOneField(
        "market.LedgerTransfer", on_delete=models.PROTECT, related_name="broker_fee"
    )
    appointment = models.ForeignKey(BrokerAppointment, on_delete=models.PROTECT, related_name="fees")
    lease_id = models.BigIntegerField()  # auctions.Lease (market models import no auctions model)
    fee_rate = models.DecimalField(max_digits=7, decimal_places=6)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"fee of lease {self.lease_id} under appointment {self.appointment_id}"
