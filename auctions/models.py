"""Rounds of clearing, the leases they create, and the price quotes of the pricing game."""

from django.db import models
from django.db.models import Q

from market.models import JobRequest, Provider, Resource
from market.money import MoneyField


class Round(models.Model):
    """One batch clearing of the book, re-runnable by anyone from its published snapshot.

    `snapshot` is the canonical JSON of every book the round cleared (sha256 in
    `snapshot_sha256`); `result` is the engine's answer (sha256 in `result_sha256`). At most one
    round is OPEN or CLEARING at a time: `active_slot` is 1 for those and NULL otherwise, and it
    is unique, so the database — not a hope — refuses a second one.
    """

    class Status(models.TextChoices):
        OPEN = "OPEN", "Open"
        CLEARING = "CLEARING", "Clearing"
        CLEARED = "CLEARED", "Cleared"
        FAILED = "FAILED", "Failed"

    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    active_slot = models.PositiveSmallIntegerField(null=True, blank=True, unique=True, default=1)
    mechanism = models.JSONField(default=dict, help_text="mechanisms and parameters, per kind of book")
    engine_version = models.CharField(max_length=16, blank=True)
    snapshot = models.TextField(blank=True, help_text="canonical JSON of the books cleared")
    snapshot_sha256 = models.CharField(max_length=64, blank=True)
    result = models.JSONField(null=True, blank=True)
    result_sha256 = models.CharField(max_length=64, blank=True)
    welfare = models.FloatField(null=True, blank=True)
    lp_bound = models.FloatField(null=True, blank=True)
    optimality_gap = models.FloatField(null=True, blank=True)
    prices = models.JSONField(default=dict, help_text="clearing prices per resource class")
    jobs_in_book = models.PositiveIntegerField(default=0)
    resources_in_book = models.PositiveIntegerField(default=0)
    jobs_matched = models.PositiveIntegerField(default=0)
    timings_ms = models.JSONField(default=dict, help_text="snapshot, clear, write")
    error = models.TextField(blank=True)
    opened_at = models.DateTimeField()
    cleared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(status__in=["OPEN", "CLEARING"]) & Q(active_slot=1))
                | (Q(status__in=["CLEARED", "FAILED"]) & Q(active_slot__isnull=True)),
                name="round_active_slot_matches_status",
            ),
        ]

    def __str__(self) -> str:
        return f"round {self.pk} {self.status}"


class Lease(models.Model):
    """A job placed on a resource by a round: the allocation and its life at the provider.

    Prices are per device-hour: the consumer pays `unit_price_paid`, the provider earns
    `unit_price_received`; the difference (the mechanism's surplus) and the fee go to the platform.
    `max_device_hours` is what the job's escrow can pay for at the paid price and
    `expected_device_hours` what the throughput model expects the job to use; both, like the
    metered `device_seconds`, are totals over the lease's devices.
    """

    class Status(models.TextChoices):
        DISPATCHED = "DISPATCHED", "Dispatched"
        RUNNING = "RUNNING", "Running"
        COMPLETED = "COMPLETED", "Completed"
        FAILED = "FAILED", "Failed"
        REASSIGNED = "REASSIGNED", "Reassigned"

    class CloseReason(models.TextChoices):
        COMPLETED = "COMPLETED", "Completed"
        OWNER = "OWNER", "Cancelled by the consumer"
        PROVIDER_FAULT = "PROVIDER_FAULT", "Provider fault"
        UNSTABLE = "UNSTABLE", "Provider missed heartbeats"
        DEADLINE = "DEADLINE", "Deadline passed"
        INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS", "Escrow exhausted"
        VERIFICATION_FAILED = "VERIFICATION_FAILED", "Verification failed"
        JOB_ERROR = "JOB_ERROR", "The job itself failed"
        SLA_BREACH = "SLA_BREACH", "Completed in breach of its SLA"
        GANG = "GANG", "Another member of its gang failed"

    ACTIVE = (Status.DISPATCHED, Status.RUNNING)

    round = models.ForeignKey(Round, on_delete=models.PROTECT, related_name="leases")
    job = models.ForeignKey(JobRequest, on_delete=models.PROTECT, related_name="leases")
    resource = models.ForeignKey(Resource, on_delete=models.PROTECT, related_name="leases")
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="leases")
    devices = models.PositiveIntegerField()
    resource_class = models.CharField(max_length=64)
    unit_price_paid = MoneyField()
    unit_price_received = MoneyField()
    max_device_hours = models.DecimalField(max_digits=14, decimal_places=6)
    expected_device_hours = models.DecimalField(max_digits=14, decimal_places=6)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DISPATCHED)
    close_reason = models.CharField(max_length=20, choices=CloseReason.choices, blank=True)
    close_detail = models.CharField(max_length=300, blank=True)
    progress = models.FloatField(default=0)
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    device_seconds = models.DecimalField(max_digits=16, decimal_places=3, default=0)
    simulated = models.BooleanField(
        default=False, help_text="run by the simulation backend, not a real model"
    )
    dispatched_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # A gang member's pipeline stage (0 for a lease that is not a gang's) and its stage, layers, peers.
    gang_stage = models.PositiveSmallIntegerField(default=0)
    gang = models.JSONField(null=True, blank=True, help_text="gang member: stage, stages, layer range")

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["provider", "status"]),
            models.Index(fields=["status", "last_heartbeat_at"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["round", "job", "gang_stage"], name="lease_one_per_job_stage_per_round"
            ),
            models.UniqueConstraint(
                fields=["job", "gang_stage"],
                condition=Q(status__in=["DISPATCHED", "RUNNING"]),
                name="lease_one_active_per_job_stage",
            ),
            models.CheckConstraint(condition=Q(devices__gte=1), name="lease_has_devices"),
            models.CheckConstraint(
                condition=Q(unit_price_paid__gte=models.F("unit_price_received")),
                name="lease_no_deficit_per_unit",
            ),
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=1), name="lease_progress_0_1"
            ),
            models.CheckConstraint(
                condition=Q(tokens_in__gte=0) & Q(tokens_out__gte=0) & Q(device_seconds__gte=0),
                name="lease_usage_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"lease {self.pk} job {self.job_id} on resource {self.resource_id} {self.status}"


class PriceQuote(models.Model):
    """A Stackelberg recommendation for one resource class: the ask a provider should set and
    the price a consumer should expect, with the game's inputs so it can be re-derived."""

    resource_class = models.CharField(max_length=64)
    device_class = models.CharField(max_length=8)
    region = models.CharField(max_length=32)
    memory_tier_gib = models.PositiveIntegerField()
    recommended_ask = MoneyField()
    expected_price = MoneyField()
    expected_utilisation = models.FloatField()
    demand_device_hours = models.FloatField()
    capacity_device_hours = models.FloatField()
    followers = models.PositiveIntegerField()
    inputs = models.JSONField(default=dict)
    result = models.JSONField(default=dict)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["resource_class", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.resource_class}: ask {self.recommended_ask}"


class BatchResult(models.Model):
    """One request of a batch job, answered: the OpenAI Batch output line a provider's agent sent,
    with the usage CPX checked. One row per (job, custom_id), whichever lease ran it: a request
    finished before a failover is carried over and never run (or paid) twice.

    `status_code` 200 with a body is a result; anything else (another status, or `error` when the
    server gave no answer) goes to the job's error file and is not billed.
    """

    job = models.ForeignKey(JobRequest, on_delete=models.PROTECT, related_name="batch_results")
    lease = models.ForeignKey(Lease, on_delete=models.PROTECT, related_name="batch_results")
    custom_id = models.CharField(max_length=64)
    line = models.PositiveIntegerField(help_text="1-based line of the request in the input file")
    request_id = models.CharField(max_length=100, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    body = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0, help_text="billed: at most max_tokens")
    reported_completion_tokens = models.PositiveIntegerField(default=0, help_text="as the server said")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["job", "line"]
        constraints = [
            models.UniqueConstraint(fields=["job", "custom_id"], name="batch_result_one_per_request"),
        ]
        indexes = [models.Index(fields=["lease", "line"])]

    def __str__(self) -> str:
        return f"job {self.job_id} {self.custom_id} {self.status_code}"

    @property
    def succeeded(self) -> bool:
        return self.status_code == 200 and self.error is None


class Verification(models.Model):
    """A spot check of a completed batch lease: k of its greedy (temperature 0) requests re-run by a
    different provider serving the same model, their texts compared exactly with what the lease
    returned (auctions.services.verification states the rule and the consequences).

    PENDING (waiting for a verifier) → ASSIGNED (a verifier's agent took it) → PASSED | FAILED.
    """

    class Status(models.TextChoices):
        PENDING = "PENDING", "Waiting for a verifier"
        ASSIGNED = "ASSIGNED", "Being re-run"
        PASSED = "PASSED", "Passed"
        FAILED = "FAILED", "Failed"

    job = models.ForeignKey(JobRequest, on_delete=models.PROTECT, related_name="verifications")
    lease = models.OneToOneField(Lease, on_delete=models.PROTECT, related_name="verification")
    verifier = models.ForeignKey(
        Provider, on_delete=models.PROTECT, null=True, blank=True, related_name="verifications_run"
    )
    custom_ids = models.JSONField(default=list, help_text="the sampled requests")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    mismatches = models.JSONField(default=list, help_text="custom_ids whose text differed")
    refunded = MoneyField(default=0)
    created_at = models.DateTimeField()
    assigned_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "id"])]

    def __str__(self) -> str:
        return f"verification {self.pk} of lease {self.lease_id} {self.status}"


class StandbyReservation(models.Model):
    """A standby in the backup pool (auctions.services.backup_pool): `devices` idle devices of
    `resource` that the round `round` holds for the running `job`, for a standby `fee` the job's
    escrow holds from the consumer until the reservation ends.

    HELD ──the job's provider fails──▶ USED      (the job restarts on the standby; fee paid)
    HELD ──the job ends otherwise──▶ RELEASED    (fee paid: the standby stood by)
    HELD ──the standby is gone when needed, or when released──▶ LAPSED (fee refunded)
    """

    class Status(models.TextChoices):
        HELD = "HELD", "Held"
        USED = "USED", "Used"
        RELEASED = "RELEASED", "Released"
        LAPSED = "LAPSED", "Lapsed"

    round = models.ForeignKey(Round, on_delete=models.PROTECT, related_name="standbys")
    job = models.ForeignKey(JobRequest, on_delete=models.PROTECT, related_name="standbys")
    lease = models.ForeignKey(
        Lease, on_delete=models.PROTECT, related_name="standbys", help_text="the lease it stands behind"
    )
    resource = models.ForeignKey(Resource, on_delete=models.PROTECT, related_name="standbys")
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="standbys")
    devices = models.PositiveIntegerField()
    unit_price = MoneyField(help_text="per device-hour the job pays if it restarts on it (the standby's ask)")
    unit_price_received = MoneyField(help_text="per device-hour its provider then receives")
    expected_device_hours = models.DecimalField(max_digits=14, decimal_places=6)
    fee = MoneyField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.HELD)
    takeover = models.OneToOneField(
        Lease, on_delete=models.PROTECT, null=True, blank=True, related_name="took_over_from"
    )
    detail = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "resource"])]
        constraints = [
            models.UniqueConstraint(fields=["round", "job"], name="standby_one_per_job_per_round"),
            models.UniqueConstraint(
                fields=["job"], condition=Q(status="HELD"), name="standby_one_held_per_job"
            ),
            models.CheckConstraint(condition=Q(devices__gte=1), name="standby_has_devices"),
            models.CheckConstraint(condition=Q(fee__gte=0), name="standby_fee_non_negative"),
            models.CheckConstraint(
                condition=Q(unit_price__gte=models.F("unit_price_received")),
                name="standby_no_deficit_per_unit",
            ),
        ]

    def __str__(self) -> str:
        return f"standby {self.pk} of job {self.job_id} on resource {self.resource_id} {self.status}"


from auctions.models_sla import JobTerms, LeaseSla  # noqa: E402 - the SLA contract's models (issue 12)

__all__ = [
    "BatchResult",
    "JobTerms",
    "Lease",
    "LeaseSla",
    "PriceQuote",
    "Round",
    "StandbyReservation",
    "Verification",
]
