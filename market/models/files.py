from django.db import models
from django.db.models import Q

from market.models.accounts import User


class DataFile(models.Model):
    """A file held by CPX through Django's storage API: a consumer's batch input or dataset, or the
    results and artifacts a job returns.

    The bytes live in the configured storage (local files under CPX_DATA_DIR by default, S3-compatible
    object storage through django-storages when configured); the row records who owns them, their
    sha256 and size, and, for a batch input, what validation learned from it (line count, model,
    the prompt-token estimate and the sum of max_tokens that size and quote the job). Expired files
    keep their row (the sha256 stays on the record) and lose their bytes (`deleted_at`).
    """

    class Purpose(models.TextChoices):
        BATCH = "batch", "Batch input (OpenAI Batch JSONL)"
        BATCH_OUTPUT = "batch_output", "Batch results"
        BATCH_ERRORS = "batch_errors", "Batch errors"
        DATASET = "dataset", "Training or fine-tuning dataset"
        ARTIFACT = "artifact", "Training or fine-tuning artifact"

    owner = models.ForeignKey(User, on_delete=models.PROTECT, related_name="files")
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    filename = models.CharField(max_length=255)
    content = models.FileField(upload_to="files/%Y/%m/", max_length=255)
    bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    lines = models.PositiveIntegerField(default=0, help_text="batch: requests in the file")
    model_name = models.CharField(max_length=100, blank=True, help_text="batch: the model every line names")
    prompt_tokens_estimate = models.BigIntegerField(default=0, help_text="batch: stated estimate")
    max_tokens_total = models.BigIntegerField(default=0, help_text="batch: sum of each request's max_tokens")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(
                fields=["expires_at"], condition=Q(deleted_at__isnull=True), name="file_expiry_live"
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(bytes__gte=0), name="file_bytes_non_negative"),
        ]

    def __str__(self) -> str:
        return f"file-{self.pk} {self.purpose} {self.filename}"

    @property
    def public_id(self) -> str:
        return f"file-{self.pk}"
