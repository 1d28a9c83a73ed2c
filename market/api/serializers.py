"""Request and response shapes of the market API. Validation of types, ranges and lengths lives
here; rules across fields and state live in the services."""

from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from auctions.mechanisms.llm_sizing import SUPPORTED_BITS
from market.models import DataFile, JobRequest, LedgerTransfer, Provider, Resource, User
from market.models.providers import region_validator
from market.money import DECIMAL_PLACES, MAX_AMOUNT, MAX_DIGITS, to_money
from market.selectors import job_ran_where
from market.units import price_unit


def money_field(**kwargs):
    kwargs.setdefault("min_value", 0)
    return serializers.DecimalField(
        max_digits=MAX_DIGITS, decimal_places=DECIMAL_PLACES, max_value=MAX_AMOUNT, **kwargs
    )


class StrictSerializerMixin:
    """Unknown fields are an error, not silently dropped: a typo must not go unnoticed."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class ProviderSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    class Meta:
        model = Provider
        fields = [
            "id",
            "display_name",
            "wallet_address",
            "tier",
            "region",
            "site",
            "latitude",
            "longitude",
            "status",
            "reputation",
            "stake",
            "last_heartbeat_at",
            "created_at",
        ]
        read_only_fields = ["id", "status", "reputation", "stake", "last_heartbeat_at", "created_at"]
        extra_kwargs = {"wallet_address": {"validators": []}, "region": {"validators": [region_validator]}}


class ResourceSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    device_count = serializers.IntegerField(min_value=1, max_value=4096)
    memory_per_device_gib = serializers.DecimalField(
        max_digits=8, decimal_places=2, min_value=Decimal("0.01")
    )
    host_ram_gib = serializers.DecimalField(max_digits=9, decimal_places=2, min_value=0)
    vcpu = serializers.IntegerField(min_value=0, max_value=100_000)
    fp16_tflops = serializers.DecimalField(max_digits=9, decimal_places=2, min_value=0)
    speed_factor = serializers.DecimalField(
        max_digits=6, decimal_places=3, min_value=Decimal("0.001"), required=False
    )
    ask_per_device_hour = money_field()
    price_floor = money_field(required=False)
    status = serializers.ChoiceField(choices=Resource.Status.choices, required=False)

    class Meta:
        model = Resource
        fields = [
            "id",
            "provider",
            "device_class",
            "model_name",
            "device_count",
            "memory_per_device_gib",
            "host_ram_gib",
            "vcpu",
            "fp16_tflops",
            "speed_factor",
            "interconnect",
            "ask_per_device_hour",
            "price_floor",
            "auto_pricing",
            "available_from",
            "available_until",
            "status",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "provider", "created_at", "updated_at"]


class ElasticDemandSerializer(StrictSerializerMixin, serializers.Serializer):
    """Elastic demand (EETORP's follower, docs/eetorp.md): what the job is worth instead of its size."""

    unit = serializers.ChoiceField(
        choices=["device_hours", "million_tokens"],
        help_text="what it buys: reference device-hours, or millions of tokens of its model (inference)",
    )
    utility_weight = money_field(
        min_value=Decimal("0.000001"),
        help_text="a in a ln(1 + q): q units are worth a ln(1 + q); the first unit is worth a",
    )
    min_quantity = serializers.DecimalField(
        max_digits=15, decimal_places=6, min_value=0, required=False, help_text="less is not worth running"
    )
    max_quantity = serializers.DecimalField(
        max_digits=15,
        decimal_places=6,
        min_value=Decimal("0.000001"),
        required=False,
        help_text="more is of no use (its deadline bounds it too)",
    )


class JobSubmitSerializer(StrictSerializerMixin, serializers.Serializer):
    kind = serializers.ChoiceField(choices=JobRequest.Kind.choices)
    model_name = serializers.CharField(max_length=100)
    params_billion = serializers.DecimalField(
        max_digits=9, decimal_places=3, min_value=Decimal("0.001"), max_value=100_000
    )
    quant_bits = serializers.ChoiceField(choices=SUPPORTED_BITS)
    context_length = serializers.IntegerField(min_value=1, max_value=10_000_000)
    batch_size = serializers.IntegerField(min_value=1, max_value=100_000, default=1)
    workload_tokens = serializers.IntegerField(min_value=1, max_value=10**15, required=False)
    workload_device_hours = serializers.DecimalField(
        max_digits=12, decimal_places=3, min_value=Decimal("0.001"), required=False
    )
    device_class = serializers.ChoiceField(choices=Resource.DeviceClass.choices, default="GPU")
    max_price_per_device_hour = money_field(
        min_value=Decimal("0.000001"),
        required=False,
        help_text="the bid, in CPX_CURRENCY per reference device-hour "
        "(one hour of a speed-1 device of the class); required unless `elastic` derives it",
    )
    elastic = ElasticDemandSerializer(
        required=False, help_text="elastic demand instead of a fixed size and bid (docs/eetorp.md)"
    )
    budget = money_field(min_value=Decimal("0.000001"), help_text="in CPX_CURRENCY, for the whole job")
    deadline = serializers.DateTimeField()
    latency_sla_ms = serializers.IntegerField(min_value=1, max_value=600_000, required=False)
    region = serializers.CharField(
        max_length=32,
        validators=[region_validator],
        help_text="one of GET /api/v1/regions; unknown regions answer 400 unknown_region",
    )
    placement = serializers.ChoiceField(
        choices=JobRequest.Placement.choices,
        required=False,
        help_text="strict (implied by latency_sla_ms): only in its region or within its SLA; "
        "preferred (the default without an SLA): its region first, any region otherwise",
    )
    requested_memory_per_device_gib = serializers.DecimalField(
        max_digits=8, decimal_places=2, min_value=Decimal("0.01"), required=False
    )
    requested_device_count = serializers.IntegerField(min_value=1, max_value=4096, required=False)
    standby = serializers.BooleanField(
        required=False,
        help_text="keep a standby in the backup pool while the job runs, for a standby fee "
        "(CPX_STANDBY_FEE_RATE of the lease's expected cost); see docs/fusionai.md",
    )
    input_file_id = serializers.CharField(
        max_length=40,
        required=False,
        help_text="a file uploaded through POST /api/v1/files: batch (inference) or dataset (training)",
    )
    gang = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="opt-in gang for a model too large for one device: {max_members: 2..16, "
        "max_latency_ms: 1..1000 or null}; checked with codes gang_invalid, gang_unservable",
    )
    sla = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="the job's own SLA terms, shown to providers before they accept: {latency_p95_ms, "
        "complete_by, min_quality, latency_/deadline_/quality_penalty_rate}, each optional; checked "
        "with codes sla_*; see docs/sla.md (PUT /jobs/{id}/sla restates them until the job is matched)",
    )

    def validate(self, attrs):
        if "elastic" not in attrs and attrs.get("max_price_per_device_hour") is None:
            raise serializers.ValidationError({"max_price_per_device_hour": ["This field is required."]})
        return attrs


def _file_id(pk) -> str | None:
    return f"file-{pk}" if pk else None


class RanWhereSerializer(serializers.Serializer):
    region = serializers.CharField()
    site = serializers.CharField()
    provider = serializers.CharField()
    resource = serializers.CharField()
    devices = serializers.IntegerField()
    lease = serializers.IntegerField()
    lease_status = serializers.CharField()


class JobRequestSerializer(serializers.ModelSerializer):
    """A job, with what it has spent (payments and fees so far) and where it ran (its latest lease)."""

    consumer = serializers.CharField(source="consumer.username", read_only=True)
    price_unit = serializers.SerializerMethodField(help_text="the unit of max_price_per_device_hour")
    spent = serializers.SerializerMethodField()
    ran_where = serializers.SerializerMethodField()

    def get_price_unit(self, job) -> str:
        return price_unit()

    @extend_schema_field(money_field(allow_null=True))
    def get_spent(self, job) -> str | None:
        if not hasattr(job, "spent"):
            return None  # not read (a job returned by a state change): see GET /jobs/{id}
        return str(to_money(job.spent or 0))  # SQLite sums decimals as floats

    @extend_schema_field(RanWhereSerializer(allow_null=True))
    def get_ran_where(self, job) -> dict | None:
        return job_ran_where(job)

    input_file_id = serializers.SerializerMethodField()
    output_file_id = serializers.SerializerMethodField()
    error_file_id = serializers.SerializerMethodField()
    output_sha256 = serializers.CharField(source="output_file.sha256", default=None, read_only=True)
    error_sha256 = serializers.CharField(source="error_file.sha256", default=None, read_only=True)

    def get_input_file_id(self, job) -> str | None:
        return _file_id(job.input_file_id)

    def get_output_file_id(self, job) -> str | None:
        return _file_id(job.output_file_id)

    def get_error_file_id(self, job) -> str | None:
        return _file_id(job.error_file_id)

    class Meta:
        model = JobRequest
        fields = [
            "id",
            "consumer",
            "status",
            "close_reason",
            "waiting_reason",
            "kind",
            "model_name",
            "params_billion",
            "quant_bits",
            "context_length",
            "batch_size",
            "workload_tokens",
            "workload_device_hours",
            "device_class",
            "max_price_per_device_hour",
            "price_unit",
            "budget",
            "deadline",
            "latency_sla_ms",
            "region",
            "placement",
            "elastic",
            "gang",
            "standby",
            "requested_memory_per_device_gib",
            "requested_device_count",
            "memory_per_device_gib",
            "device_count",
            "sizing",
            "spent",
            "ran_where",
            "input_file_id",
            "output_file_id",
            "error_file_id",
            "output_sha256",
            "error_sha256",
            "batch_totals",
            "idempotency_key",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class JobSubmittedSerializer(JobRequestSerializer):
    """A job just created: it has spent nothing and run nowhere (no query to say so)."""

    def get_spent(self, job) -> str | None:
        return str(to_money(0))

    def get_ran_where(self, job) -> dict | None:
        return None


class BalanceSerializer(serializers.Serializer):
    available = money_field(read_only=True)
    held_in_escrow = money_field(read_only=True)
    earnings = money_field(read_only=True)


class LedgerTransferSerializer(serializers.ModelSerializer):
    debit_account = serializers.CharField(source="debit.__str__", read_only=True)
    credit_account = serializers.CharField(source="credit.__str__", read_only=True)

    class Meta:
        model = LedgerTransfer
        fields = [
            "id",
            "kind",
            "amount",
            "debit_account",
            "credit_account",
            "job",
            "reference",
            "memo",
            "created_at",
        ]
        read_only_fields = fields


class DepositSerializer(StrictSerializerMixin, serializers.Serializer):
    username = serializers.CharField(max_length=150)
    amount = money_field(min_value=Decimal("0.000001"))
    memo = serializers.CharField(max_length=200, required=False, default="")

    def validate_username(self, value):
        user = User.objects.filter(username=value).first()
        if user is None:
            raise serializers.ValidationError("No such user.")
        return user


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    role = serializers.CharField()
    key_role = serializers.CharField(allow_null=True)


class RegionSerializer(serializers.Serializer):
    name = serializers.CharField()
    latitude = serializers.FloatField(help_text="the region's centroid, for latency estimates")
    longitude = serializers.FloatField()
    providers = serializers.IntegerField(help_text="active providers listing resources there")


class FileSerializer(serializers.ModelSerializer):
    """A file as the OpenAI Files API shows one, plus its sha256 and what validation learned."""

    id = serializers.CharField(source="public_id", read_only=True)
    object = serializers.SerializerMethodField()
    created_at = serializers.SerializerMethodField()
    expires_at = serializers.SerializerMethodField()
    expired = serializers.SerializerMethodField()

    class Meta:
        model = DataFile
        fields = [
            "id",
            "object",
            "purpose",
            "filename",
            "bytes",
            "sha256",
            "lines",
            "model_name",
            "prompt_tokens_estimate",
            "max_tokens_total",
            "created_at",
            "expires_at",
            "expired",
        ]
        read_only_fields = fields

    def get_object(self, data_file) -> str:
        return "file"

    def get_created_at(self, data_file) -> int:
        return int(data_file.created_at.timestamp())

    def get_expires_at(self, data_file) -> int:
        return int(data_file.expires_at.timestamp())

    def get_expired(self, data_file) -> bool:
        return data_file.deleted_at is not None


class FileUploadSerializer(StrictSerializerMixin, serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)
    purpose = serializers.ChoiceField(choices=[DataFile.Purpose.BATCH, DataFile.Purpose.DATASET])
