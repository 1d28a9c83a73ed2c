"""SLA contracts: the terms a job states and the copy each of its leases carries, with what CPX
measured on the lease (latency probes) and the breaches found (auctions.services.sla)."""

from django.db import models
from django.db.models import Q

from market.money import MoneyField

RATE = {"max_digits": 6, "decimal_places": 4}


class JobTerms(models.Model):
    """A job's own SLA terms, stated by its consumer before the job is matched.

    Every bound is optional (null: no such term). Penalty rates are shares of the lease's charge,
    paid by the provider to the consumer per breach; null means the global CPX_SLA_PENALTY_RATE.
    """

    job = models.OneToOneField("market.JobRequest", on_delete=models.CASCADE, related_name="sla_terms")
    latency_p95_ms = models.PositiveIntegerField(null=True, blank=True, help_text="bound on the p95 RTT")
    complete_by = models.DateTimeField(null=True, blank=True, help_text="completion deadline")
    min_quality = models.DecimalField(
        null=True, blank=True, help_text="minimum verified quality, 0–1", **RATE
    )
    latency_penalty_rate = models.DecimalField(null=True, blank=True, **RATE)
    deadline_penalty_rate = models.DecimalField(null=True, blank=True, **RATE)
    quality_penalty_rate = models.DecimalField(null=True, blank=True, **RATE)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(min_quality__isnull=True) | (Q(min_quality__gte=0) & Q(min_quality__lte=1)),
                name="job_terms_quality_0_1",
            ),
        ]

    def __str__(self) -> str:
        return f"terms of job {self.job_id}"


class LeaseSla(models.Model):
    """The terms copied to one lease when the round wrote it (what the provider accepts), the RTT
    samples CPX measured while it ran, and the breaches and penalty its settlement found."""

    lease = models.OneToOneField("auctions.Lease", on_delete=models.CASCADE, related_name="sla")
    terms = models.JSONField(default=dict, help_text="the contract: bounds and penalty rates")
    rtt_ms = models.JSONField(default=list, help_text="the latest RTT samples, in ms")
    probes = models.PositiveIntegerField(default=0)
    last_probe_us = models.BigIntegerField(default=0, help_text="send time of the newest probe counted")
    p50_ms = models.FloatField(null=True, blank=True)
    p95_ms = models.FloatField(null=True, blank=True)
    quality = models.DecimalField(null=True, blank=True, **RATE)
    breaches = models.JSONField(default=list, help_text="[{kind, measured, bound, penalty}]")
    penalty = MoneyField(default=0)

    def __str__(self) -> str:
        return f"SLA of lease {self.lease_id}"
