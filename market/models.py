from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A person or organisation on CPX; `role` decides which API keys and pages they get."""

    class Role(models.TextChoices):
        PROVIDER = "provider", "Provider"
        CONSUMER = "consumer", "Consumer"
        OPERATOR = "operator", "Operator"

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.CONSUMER)
