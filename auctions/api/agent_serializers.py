"""Request and response shapes of the provider-agent API and the consumer's view of its leases.
Types, ranges and lengths are checked here (malformed → 400); states and allocations in the services."""

from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from auctions.models import Lease, Verification
from auctions.selectors.sla import lease_sla_public
from auctions.services.leases import (
    AGENT_FAIL_REASONS,
    MAX_TOKENS,
    USAGE_INPUT_DECIMALS,
    lease_allocated_device_seconds,
)
from market.api.serializers import StrictSerializerMixin
from market.models import JobRequest
from market.units import per_reference_device_hour

MAX_LEASE_ID = 2**63 - 1


def _tokens():
    return serializers.IntegerField(min_value=0, max_value=MAX_TOKENS)


def _device_seconds():
    # Up to 10 integer digits (the column's range) and USAGE_INPUT_DECIMALS decimals; the service
    # meters to the millisecond, the precision every lease field is published in.
    return serializers.DecimalField(
        max_digits=10 + USAGE_INPUT_DECIMALS, decimal_places=USAGE_INPUT_DECIMALS, min_value=Decimal("0")
    )


class HeartbeatSerializer(StrictSerializerMixin, serializers.Serializer):
    leases = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_LEASE_ID),
        max_length=1000,
        required=False,
        default=list,
        help_text="ids of the leases the agent is running",
    )


class HeartbeatResultSerializer(serializers.Serializer):
    running = serializers.ListField(child=serializers.IntegerField())
    closed = serializers.ListField(child=serializers.IntegerField(), help_text="stop these: no longer yours")
    heartbeat_timeout_s = serializers.IntegerField()
    probe = serializers.CharField(help_text="echo it at once to POST /agent/probes: CPX measures the RTT")


class PollSerializer(StrictSerializerMixin, serializers.Serializer):
    wait = serializers.FloatField(min_value=0, max_value=3600, required=False, default=0)


class AcceptSerializer(StrictSerializerMixin, serializers.Serializer):
    simulated = serializers.BooleanField(required=False, default=False)


class UsageSerializer(StrictSerializerMixin, serializers.Serializer):
    tokens_in = _tokens()
    tokens_out = _tokens()
    device_seconds = _device_seconds()


class ProgressSerializer(UsageSerializer):
    progress = serializers.FloatField(min_value=0, max_value=1)


class FailSerializer(StrictSerializerMixin, serializers.Serializer):
    reason = serializers.ChoiceField(choices=[(r.value, r.label) for r in AGENT_FAIL_REASONS])
    detail = serializers.CharField(max_length=300, allow_blank=True, required=False, default="")


class LeaseJobSerializer(serializers.ModelSerializer):
    input_file = serializers.SerializerMethodField(help_text="batch or dataset file id (read with the lease)")

    def get_input_file(self, job) -> str | None:
        return f"file-{job.input_file_id}" if job.input_file_id else None

    class Meta:
        model = JobRequest
        fields = [
            "id",
            "kind",
            "model_name",
            "params_billion",
            "quant_bits",
            "context_length",
            "batch_size",
            "workload_tokens",
            "workload_device_hours",
            "deadline",
            "input_file",
        ]
        read_only_fields = fields


class AgentLeaseSerializer(serializers.ModelSerializer):
    """A lease as its provider's agent sees it: the job to run, the allocation, the usage so far."""

    job = LeaseJobSerializer(read_only=True)
    resource_device_count = serializers.IntegerField(source="resource.device_count", read_only=True)
    allocated_device_seconds = serializers.SerializerMethodField()
    sla = serializers.SerializerMethodField(
        help_text="the SLA contract the lease carries, and its measurements"
    )

    class Meta:
        model = Lease
        fields = [
            "id",
            "status",
            "close_reason",
            "close_detail",
            "sla",
            "job",
            "resource",
            "resource_device_count",
            "resource_class",
            "devices",
            "unit_price_received",
            "expected_device_hours",
            "max_device_hours",
            "allocated_device_seconds",
            "progress",
            "tokens_in",
            "tokens_out",
            "device_seconds",
            "simulated",
            "gang",
            "dispatched_at",
            "accepted_at",
            "last_heartbeat_at",
            "ended_at",
        ]
        read_only_fields = fields

    def get_allocated_device_seconds(self, lease) -> Decimal:
        return str(lease_allocated_device_seconds(lease))

    def get_sla(self, lease) -> dict | None:
        return lease_sla_public(lease=lease)


class SettlementSerializer(serializers.Serializer):
    device_hours = serializers.DecimalField(max_digits=14, decimal_places=6)
    charge = serializers.DecimalField(max_digits=24, decimal_places=6)
    provider_net = serializers.DecimalField(max_digits=24, decimal_places=6)
    platform = serializers.DecimalField(max_digits=24, decimal_places=6)
    refund = serializers.DecimalField(max_digits=24, decimal_places=6)


class CompletedLeaseSerializer(serializers.Serializer):
    lease = AgentLeaseSerializer()
    settlement = SettlementSerializer()


class ConsumerLeaseSerializer(serializers.ModelSerializer):
    """A lease as the job's consumer sees it: who ran it, how it ended and why, what it used."""

    provider = serializers.CharField(source="provider.display_name", read_only=True)
    close_reason_label = serializers.CharField(source="get_close_reason_display", read_only=True)
    # On-chain settlement (issue 5): batch, tx hash, reconciliation status; null until batched.
    # The view passes them in context["chain"] (contracts.selectors.lease_chain_status, one query).
    settlement_on_chain = serializers.SerializerMethodField()
    # Issue 14: the price in the unit of the bid, and where the lease ran.
    speed_factor = serializers.DecimalField(
        source="resource.speed_factor", max_digits=6, decimal_places=3, read_only=True
    )
    unit_price_paid_per_reference_device_hour = serializers.SerializerMethodField()
    region = serializers.CharField(source="provider.region", read_only=True)
    site = serializers.CharField(source="provider.site", read_only=True)

    class Meta:
        model = Lease
        fields = [
            "id",
            "round",
            "status",
            "close_reason",
            "close_reason_label",
            "close_detail",
            "provider",
            "region",
            "site",
            "resource_class",
            "devices",
            "speed_factor",
            "unit_price_paid",
            "unit_price_paid_per_reference_device_hour",
            "expected_device_hours",
            "max_device_hours",
            "progress",
            "tokens_in",
            "tokens_out",
            "device_seconds",
            "simulated",
            "gang",
            "dispatched_at",
            "accepted_at",
            "ended_at",
            "settlement_on_chain",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DecimalField(max_digits=24, decimal_places=6))
    def get_unit_price_paid_per_reference_device_hour(self, lease) -> str:
        """What the bid is in: the price per device-hour of this hardware ÷ its speed."""
        return str(per_reference_device_hour(lease.unit_price_paid, lease.resource.speed_factor))

    def get_settlement_on_chain(self, lease) -> dict | None:
        return self.context.get("chain", {}).get(lease.pk)


class BatchFileSerializer(serializers.Serializer):
    id = serializers.CharField()
    sha256 = serializers.CharField()
    bytes = serializers.IntegerField()
    lines = serializers.IntegerField()


class BatchStateSerializer(serializers.Serializer):
    input_file = BatchFileSerializer()
    done = serializers.ListField(child=serializers.CharField())
    default_max_tokens = serializers.IntegerField()


class BatchResultsSerializer(StrictSerializerMixin, serializers.Serializer):
    results = serializers.ListField(child=serializers.DictField(), max_length=1000)


class BatchRecordedSerializer(serializers.Serializer):
    recorded = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    done = serializers.IntegerField()
    lines = serializers.IntegerField()


class VerificationOfferSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    requests = serializers.ListField(child=serializers.DictField())


class VerificationSerializer(serializers.ModelSerializer):
    """A spot check: which lease, who re-ran it, the sampled requests, the outcome."""

    provider = serializers.CharField(source="lease.provider.display_name", read_only=True)
    verifier_name = serializers.CharField(source="verifier.display_name", default=None, read_only=True)

    class Meta:
        model = Verification
        fields = [
            "id",
            "job",
            "lease",
            "provider",
            "verifier",
            "verifier_name",
            "custom_ids",
            "status",
            "mismatches",
            "refunded",
            "created_at",
            "assigned_at",
            "decided_at",
        ]
        read_only_fields = fields
