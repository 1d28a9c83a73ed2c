from django.db import models
from django.db.models import Q

from market.models.accounts import User
from market.models.files import DataFile
from market.models.providers import DeviceClass
from market.money import MoneyField


class JobRequest(models.Model):
    """An LLM job a consumer wants run, with its bid (max price per device-hour) and budget.

    The requirement (memory per device, device count) is derived at submission by
    `auctions.mechanisms.llm_sizing` unless the consumer states it. The budget is held in the
    job's escrow account from submission until the job ends.
    """

    class Kind(models.TextChoices):
        INFERENCE = "INFERENCE", "Inference"
        FINE_TUNE = "FINE_TUNE", "Fine-tuning"
        TRAINING = "TRAINING", "Training"

    class Status(models.TextChoices):
        SUBMITTED = "SUBMITTED", "Submitted"
        QUEUED = "QUEUED", "Queued"
        MATCHED = "MATCHED", "Matched"
        DISPATCHED = "DISPATCHED", "Dispatched"
        RUNNING = "RUNNING", "Running"
        COMPLETED = "COMPLETED", "Completed"
        FAILED = "FAILED", "Failed"
        CANCELLED = "CANCELLED", "Cancelled"
        EXPIRED = "EXPIRED", "Expired"

    class Placement(models.TextChoices):
        """Where the job may run (market.services.placement): strict = within its latency SLA of its
        region, or in its region without one; preferred = its region first, any region otherwise."""

        STRICT = "strict", "Strict"
        PREFERRED = "preferred", "Preferred"

    consumer = models.ForeignKey(User, on_delete=models.PROTECT, related_name="jobs")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    model_name = models.CharField(max_length=100)
    params_billion = models.DecimalField(max_digits=9, decimal_places=3)
    quant_bits = models.PositiveSmallIntegerField()
    context_length = models.PositiveIntegerField()
    batch_size = models.PositiveIntegerField(default=1)
    workload_tokens = models.BigIntegerField(null=True, blank=True, help_text="inference: tokens to process")
    workload_device_hours = models.DecimalField(
        max_digits=12, decimal_places=3, null=True, blank=True, help_text="training/fine-tuning: base hours"
    )
    device_class = models.CharField(max_length=8, choices=DeviceClass.choices, default=DeviceClass.GPU)
    max_price_per_device_hour = MoneyField(help_text="the bid")
    budget = MoneyField(help_text="held in escrow at submission")
    deadline = models.DateTimeField()
    latency_sla_ms = models.PositiveIntegerField(null=True, blank=True)
    region = models.CharField(max_length=32)
    placement = models.CharField(max_length=9, choices=Placement.choices, default=Placement.PREFERRED)
    # Elastic demand (EETORP, docs/eetorp.md): a utility and bounds instead of a fixed size; the round
    # that matches the job adds what it bought under "bought". Null for a fixed-size job.
    elastic = models.JSONField(null=True, blank=True, help_text="elastic demand: utility, bounds, purchase")
    # Opt-in gang (market.services.gangs): {max_members, max_latency_ms, layers, layer_gib}; null: none.
    gang = models.JSONField(null=True, blank=True, help_text="gang terms and pipeline unit, if a gang")
    # Backup pool (auctions.services.backup_pool): the consumer asks for a standby, for a fee.
    standby = models.BooleanField(default=False, help_text="keep a standby in the backup pool")
    # What the consumer stated, if anything, and what CPX derived (and will match on).
    requested_memory_per_device_gib = models.DecimalField(
        max_digits=8, decimal_places=2, null=True, blank=True
    )
    requested_device_count = models.PositiveIntegerField(null=True, blank=True)
    memory_per_device_gib = models.DecimalField(max_digits=8, decimal_places=2)
    device_count = models.PositiveIntegerField()
    sizing = models.JSONField(default=dict, help_text="the sizing breakdown in GB")
    # A batch inference job carries its requests in an input file (OpenAI Batch JSONL) and gets its
    # results and errors back as files; a training or fine-tuning job may carry an opaque dataset
    # and get an opaque artifact back as its output file.
    input_file = models.ForeignKey(
        DataFile, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    output_file = models.ForeignKey(
        DataFile, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    error_file = models.ForeignKey(
        DataFile, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    batch_totals = models.JSONField(
        default=dict, blank=True, help_text="batch: requests done/failed and metered tokens so far"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SUBMITTED)
    close_reason = models.CharField(max_length=32, blank=True)
    waiting_reason = models.JSONField(
        null=True,
        blank=True,
        help_text="why the last round did not match this queued job: {code, message, round, ...}",
    )
    idempotency_key = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001 - NULL = no key; unique when set
    request_fingerprint = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["consumer", "-created_at"]),
            models.Index(fields=["status", "created_at"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["consumer", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="job_idempotency_key_unique_per_consumer",
            ),
            models.CheckConstraint(condition=Q(max_price_per_device_hour__gt=0), name="job_bid_positive"),
            models.CheckConstraint(condition=Q(budget__gt=0), name="job_budget_positive"),
            models.CheckConstraint(condition=Q(params_billion__gt=0), name="job_params_positive"),
            models.CheckConstraint(condition=Q(device_count__gte=1), name="job_needs_a_device"),
            models.CheckConstraint(
                condition=Q(workload_tokens__isnull=False) | Q(workload_device_hours__isnull=False),
                name="job_has_a_workload",
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} {self.kind} {self.model_name}"
