from django.contrib.auth.models import AbstractUser
from django.db import models


class Role(models.TextChoices):
    PROVIDER = "provider", "Provider"
    CONSUMER = "consumer", "Consumer"
    OPERATOR = "operator", "Operator"
    BROKER = "broker", "Broker"  # trades for appointed providers or consumers (MECM, issue 12)


class User(AbstractUser):
    """A person or organisation on CPX. `role` says what they do; operators are also staff."""

    Role = Role

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.CONSUMER)

    def holds_role(self, role: str) -> bool:
        return self.role == role or (role == Role.OPERATOR and self.is_staff)


class ApiKey(models.Model):
    """A revocable API key scoped to one role. Only its sha256 is stored: the key is shown once.

    A key is `cpx_<prefix>_<secret>` with 256 random bits of secret, so a fast hash is as safe
    as a slow password hash here and keeps authentication off the hot path's budget.
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    role = models.CharField(max_length=16, choices=Role.choices)
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"cpx_{self.prefix}… ({self.role}, {self.user})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
