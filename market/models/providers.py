from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q

from market.models.accounts import User
from market.money import MoneyField

# A region is a label of resource-class keys ("GPU/24G/eu-west"), of URLs and of CSV cells: lower-case
# letters and digits in words joined by single hyphens ("eu-west", "ap-south-1"). The API and the
# pages refuse anything else at input; what is already stored is made safe where a key is built.
REGION_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*\Z"
region_validator = RegexValidator(
    REGION_PATTERN,
    "A region is lower-case letters and digits in words joined by hyphens, e.g. eu-west.",
    code="invalid_region",
)


class Provider(models.Model):
    """Someone who sells computing power: a person with a gaming GPU, an edge site, a cloud."""

    class Tier(models.TextChoices):
        END = "END", "End device"
        EDGE = "EDGE", "Edge server"
        CLOUD = "CLOUD", "Cloud"

    class Status(models.TextChoices):
        ACTIVE = "ACTIVE", "Active"
        SUSPENDED = "SUSPENDED", "Suspended"

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="provider")
    display_name = models.CharField(max_length=100)
    wallet_address = models.CharField(max_length=42, help_text="EIP-55 checksummed address")
    tier = models.CharField(max_length=8, choices=Tier.choices, default=Tier.EDGE)
    region = models.CharField(max_length=32)
    site = models.CharField(max_length=100, blank=True)
    latitude = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(-90), MaxValueValidator(90)]
    )
    longitude = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(-180), MaxValueValidator(180)]
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    # 1 = spotless. Lowered by SLA faults, breaches and failed spot checks; read by clearing as the
    # quality factor of the provider's asks (auctions.mechanisms.quality, docs/sla.md).
    reputation = models.DecimalField(max_digits=5, decimal_places=4, default=1)
    stake = MoneyField(default=0)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(reputation__gte=0) & Q(reputation__lte=1), name="provider_reputation_0_1"
            ),
            models.CheckConstraint(condition=Q(stake__gte=0), name="provider_stake_non_negative"),
        ]

    def __str__(self) -> str:
        return self.display_name


class DeviceClass(models.TextChoices):
    GPU = "GPU", "GPU"
    CPU = "CPU", "CPU"
    NPU = "NPU", "NPU"
    TPU = "TPU", "TPU"
    FPGA = "FPGA", "FPGA"
    ASIC = "ASIC", "ASIC"


class Resource(models.Model):
    """A listing: N identical devices on one node, offered at an ask per device-hour."""

    DeviceClass = DeviceClass

    class Status(models.TextChoices):
        LISTED = "LISTED", "Listed"
        PAUSED = "PAUSED", "Paused"
        RETIRED = "RETIRED", "Retired"

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="resources")
    device_class = models.CharField(max_length=8, choices=DeviceClass.choices)
    model_name = models.CharField(max_length=100, help_text="e.g. RTX 4090, A100-80G, Jetson Orin")
    device_count = models.PositiveIntegerField()
    memory_per_device_gib = models.DecimalField(max_digits=8, decimal_places=2)
    host_ram_gib = models.DecimalField(max_digits=9, decimal_places=2)
    vcpu = models.PositiveIntegerField()
    fp16_tflops = models.DecimalField(max_digits=9, decimal_places=2)
    speed_factor = models.DecimalField(
        max_digits=6, decimal_places=3, default=1, help_text="throughput relative to the class reference"
    )
    interconnect = models.CharField(max_length=32, blank=True, help_text="e.g. PCIe4, NVLink, Ethernet")
    ask_per_device_hour = MoneyField()
    price_floor = MoneyField(default=0, help_text="auto-pricing never asks below this")
    auto_pricing = models.BooleanField(default=False)
    available_from = models.DateTimeField(null=True, blank=True)
    available_until = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.LISTED)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["status", "device_class"])]
        constraints = [
            models.CheckConstraint(condition=Q(device_count__gte=1), name="resource_has_devices"),
            models.CheckConstraint(condition=Q(memory_per_device_gib__gt=0), name="resource_memory_positive"),
            models.CheckConstraint(condition=Q(host_ram_gib__gte=0), name="resource_ram_non_negative"),
            models.CheckConstraint(condition=Q(fp16_tflops__gte=0), name="resource_tflops_non_negative"),
            models.CheckConstraint(condition=Q(speed_factor__gt=0), name="resource_speed_positive"),
            models.CheckConstraint(condition=Q(price_floor__gte=0), name="resource_floor_non_negative"),
            models.CheckConstraint(
                condition=Q(ask_per_device_hour__gte=F("price_floor")), name="resource_ask_at_least_floor"
            ),
            models.CheckConstraint(
                condition=Q(available_from__isnull=True)
                | Q(available_until__isnull=True)
                | Q(available_until__gt=F("available_from")),
                name="resource_window_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.device_count}× {self.model_name} ({self.provider})"
