"""Response and request shapes of rounds and quotes."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from auctions.models import PriceQuote, Round
from market.api.serializers import JobSubmitSerializer, StrictSerializerMixin, money_field


class RoundSerializer(serializers.ModelSerializer):
    class Meta:
        model = Round
        fields = [
            "id",
            "status",
            "mechanism",
            "engine_version",
            "snapshot_sha256",
            "result_sha256",
            "welfare",
            "lp_bound",
            "optimality_gap",
            "prices",
            "jobs_in_book",
            "resources_in_book",
            "jobs_matched",
            "timings_ms",
            "error",
            "opened_at",
            "cleared_at",
        ]
        read_only_fields = fields


class LeaseSummarySerializer(serializers.Serializer):
    leases = serializers.IntegerField()
    by_status = serializers.DictField(child=serializers.IntegerField())
    by_class = serializers.DictField()


class ChainCommitmentSerializer(serializers.Serializer):
    """The round's hashes committed on chain (issue 12): the transaction, its block, the reconciler's word."""

    status = serializers.CharField()
    contract = serializers.CharField()
    network = serializers.CharField()
    snapshot_sha256 = serializers.CharField()
    result_sha256 = serializers.CharField()
    tx_hash = serializers.CharField(allow_null=True)
    block_number = serializers.IntegerField(allow_null=True)
    rounds_in_tx = serializers.IntegerField()
    gas_used = serializers.IntegerField(allow_null=True)
    chain_status = serializers.CharField()
    chain_detail = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_null=True)


class RoundDetailSerializer(RoundSerializer):
    leases = serializers.SerializerMethodField()
    chain_commitment = serializers.SerializerMethodField()

    class Meta(RoundSerializer.Meta):
        fields = [*RoundSerializer.Meta.fields, "leases", "chain_commitment"]
        read_only_fields = fields

    def get_leases(self, round_obj) -> dict:
        return LeaseSummarySerializer(self.context["leases"]).data

    @extend_schema_field(ChainCommitmentSerializer(allow_null=True))
    def get_chain_commitment(self, round_obj) -> dict | None:
        commitment = self.context.get("chain_commitment")
        return ChainCommitmentSerializer(commitment).data if commitment else None


class RoundReplaySerializer(serializers.Serializer):
    round = serializers.IntegerField()
    status = serializers.CharField()
    snapshot_sha256 = serializers.CharField(allow_blank=True)
    recomputed_snapshot_sha256 = serializers.CharField(allow_blank=True)
    result_sha256 = serializers.CharField(allow_blank=True)
    stored_result_sha256 = serializers.CharField(allow_blank=True)
    recomputed_result_sha256 = serializers.CharField(allow_blank=True)
    match = serializers.BooleanField()
    error = serializers.CharField(required=False)


class PriceQuoteSerializer(serializers.ModelSerializer):
    class Meta:
        model = PriceQuote
        fields = [
            "id",
            "resource_class",
            "device_class",
            "region",
            "memory_tier_gib",
            "recommended_ask",
            "expected_price",
            "expected_utilisation",
            "demand_device_hours",
            "capacity_device_hours",
            "followers",
            "created_at",
        ]
        read_only_fields = fields


class QuoteFilterSerializer(StrictSerializerMixin, serializers.Serializer):
    region = serializers.CharField(max_length=32, required=False)
    device_class = serializers.CharField(max_length=8, required=False)
    limit = serializers.IntegerField(required=False, min_value=1)
    offset = serializers.IntegerField(required=False, min_value=0)


class JobQuoteRequestSerializer(JobSubmitSerializer):
    """The job spec of POST /api/v1/jobs, unchanged: a quote answers for exactly what would be submitted."""


class JobQuoteSerializer(serializers.Serializer):
    resource_class = serializers.CharField(allow_null=True)
    device_count = serializers.IntegerField()
    memory_per_device_gib = serializers.CharField()
    expected_price = money_field(allow_null=True)
    would_clear_now = serializers.BooleanField()
    chance_of_clearing = serializers.FloatField(allow_null=True)
    reason = serializers.CharField(allow_null=True)
    min_bid_to_clear = money_field(allow_null=True)
    suggestion = serializers.CharField(allow_blank=True)
    elastic = serializers.DictField(
        required=False,
        help_text="elastic jobs only: its purchase if it cleared now: unit, quantity, price_per_unit, "
        "device_hours, spend, utility",
    )
