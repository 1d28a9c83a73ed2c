"""On-chain settlement over REST: batches and their reconciliation (operator), Merkle proofs to claim
with (provider), the consumer's deposit wallet. Translate the request, call one service or selector,
translate back. On-chain amounts are strings of wei (JSON numbers lose precision past 2**53)."""

import django_filters
from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import NotFound
from config.openapi import ErrorSerializer
from contracts import selectors
from contracts.models import ConsumerWallet, ReconciliationIssue, SettlementBatch, SettlementLease
from contracts.services import (
    BatchNotFound,
    consumer_wallet_register,
    order_document,
    settlement_batch_retry,
    settlement_order_draft,
    settlement_order_submit,
)
from market.api.permissions import IsConsumer, IsOperator, IsProvider
from market.api.serializers import StrictSerializerMixin


class WeiField(serializers.CharField):
    """An uint256 as a decimal string."""

    def to_representation(self, value):
        return None if value is None else str(int(value))


class SettlementBatchSerializer(serializers.ModelSerializer):
    contract = serializers.CharField(source="deployment.address", read_only=True)
    network = serializers.CharField(source="deployment.network", read_only=True)
    total_wei = WeiField(read_only=True)
    fee_wei = WeiField(read_only=True)
    matched = serializers.IntegerField(read_only=True, required=False)
    differing = serializers.IntegerField(read_only=True, required=False)

    class Meta:
        model = SettlementBatch
        fields = [
            "id",
            "batch_key",
            "contract",
            "network",
            "status",
            "confirmed_via",
            "merkle_root",
            "lease_count",
            "leaf_count",
            "total",
            "total_wei",
            "tx_hash",
            "block_number",
            "gas_used",
            "fee_wei",
            "attempts",
            "error_code",
            "error",
            "next_attempt_at",
            "chain_seen",
            "matched",
            "differing",
            "created_at",
            "submitted_at",
            "confirmed_at",
            "failed_at",
        ]
        read_only_fields = fields


class SettlementLeaseSerializer(serializers.ModelSerializer):
    provider_wei = WeiField(read_only=True)
    fee_wei = WeiField(read_only=True)
    refund_wei = WeiField(read_only=True)
    job = serializers.IntegerField(source="lease.job_id", read_only=True)

    class Meta:
        model = SettlementLease
        fields = [
            "lease",
            "job",
            "consumer_address",
            "provider_address",
            "fee_address",
            "provider_amount",
            "fee_amount",
            "provider_wei",
            "fee_wei",
            "refund_wei",
            "recon_status",
            "recon_detail",
            "reconciled_at",
            "provider_claimed",
            "provider_claim_tx",
            "fee_claimed",
        ]
        read_only_fields = fields


class ReconciliationIssueSerializer(serializers.ModelSerializer):
    class Meta:
        model = ReconciliationIssue
        fields = ["kind", "key", "detail", "first_seen_at", "last_seen_at", "resolved_at"]
        read_only_fields = fields


class SettlementBatchDetailSerializer(SettlementBatchSerializer):
    leases = serializers.SerializerMethodField()
    issues = serializers.SerializerMethodField()

    class Meta(SettlementBatchSerializer.Meta):
        fields = [*SettlementBatchSerializer.Meta.fields, "leases", "issues"]
        read_only_fields = fields

    @extend_schema(responses=SettlementLeaseSerializer(many=True))
    def get_leases(self, batch) -> list[dict]:
        return SettlementLeaseSerializer(selectors.batch_leases(batch=batch), many=True).data

    @extend_schema(responses=ReconciliationIssueSerializer(many=True))
    def get_issues(self, batch) -> list[dict]:
        return ReconciliationIssueSerializer(selectors.batch_issues(batch=batch), many=True).data


class BatchFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=SettlementBatch.Status.choices)

    class Meta:
        model = SettlementBatch
        fields = ["status"]


class SettlementListView(generics.ListAPIView):
    """Settlement batches newest first, with how many of their leases reconcile (operator); filter
    `status` (PENDING, SUBMITTED, CONFIRMED, FAILED)."""

    permission_classes = [IsOperator]
    serializer_class = SettlementBatchSerializer
    filterset_class = BatchFilter

    def get_queryset(self):
        return selectors.batch_list()


class SettlementDetailView(APIView):
    """One batch with its leases (ledger vs chain, per lease) and the reconciler's issues (operator)."""

    permission_classes = [IsOperator]

    @extend_schema(responses=SettlementBatchDetailSerializer)
    def get(self, request, pk):
        batch = selectors.batch_get(batch_id=pk)
        if batch is None:
            raise BatchNotFound("No such settlement batch.", batch=pk)
        return Response(SettlementBatchDetailSerializer(batch).data)


class SettlementRetryView(APIView):
    """Send a FAILED batch again, same key and leaves (operator); 409 unless it is FAILED."""

    permission_classes = [IsOperator]

    @extend_schema(request=None, responses=SettlementBatchSerializer)
    def post(self, request, pk):
        batch = settlement_batch_retry(batch_id=pk, now=timezone.now())
        from workers.tasks import submit_batch  # the interface enqueues; services never import tasks

        submit_batch.delay_on_commit(batch_id=batch.pk)
        return Response(SettlementBatchSerializer(batch).data)


class ProofQuerySerializer(StrictSerializerMixin, serializers.Serializer):
    batch = serializers.IntegerField(required=False, min_value=1)
    include_claimed = serializers.BooleanField(required=False, default=False)


class ProviderProofListView(APIView):
    """The caller's leases in confirmed batches with what it needs to claim them (provider). On
    SettlementV2 (`kind: cumulative`), one group per contract: call `claim(batch_key, payee,
    cumulative_wei, proof)` with its `credit` once for all its leases. On the previous contract, per
    batch: `claim(batchId, leaf, proof)` per leaf, or `claimMany(batchId, leaves, proof, flags)` with
    the multiproof. Unclaimed only unless `include_claimed=true`; `batch` narrows to one batch."""

    permission_classes = [IsProvider]

    @extend_schema(
        parameters=[
            OpenApiParameter("batch", int, required=False),
            OpenApiParameter("include_claimed", bool, required=False),
        ],
        responses={200: dict},
    )
    def get(self, request):
        params = ProofQuerySerializer(data=request.query_params.dict())
        params.is_valid(raise_exception=True)
        provider = getattr(request.user, "provider", None)
        if provider is None:
            raise NotFound("Register a provider profile first.")
        document = selectors.provider_proofs_document(
            provider=provider,
            batch_id=params.validated_data.get("batch"),
            include_claimed=params.validated_data["include_claimed"],
        )
        return Response(document)


class WalletSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    class Meta:
        model = ConsumerWallet
        fields = ["address", "created_at"]
        read_only_fields = ["created_at"]
        extra_kwargs = {"address": {"validators": []}}


class WalletView(APIView):
    """The address the caller deposits from (consumer). Deposits into the Settlement contract from it
    are credited to the caller's balance once each; PUT sets it (once: another address is 409)."""

    permission_classes = [IsConsumer]

    @extend_schema(responses={200: WalletSerializer, 404: ErrorSerializer})  # no wallet yet
    def get(self, request):
        wallet = ConsumerWallet.objects.filter(user=request.user).first()
        if wallet is None:
            raise NotFound("No wallet registered.")
        return Response(WalletSerializer(wallet).data)

    @extend_schema(request=WalletSerializer, responses=WalletSerializer)
    def put(self, request):
        body = WalletSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        wallet = consumer_wallet_register(
            user=request.user, address=body.validated_data["address"], now=timezone.now()
        )
        return Response(WalletSerializer(wallet).data)


class OrderSerializer(StrictSerializerMixin, serializers.Serializer):
    """The order fields of the draft, as signed, and the 65-byte signature (0x hex)."""

    nonce = serializers.IntegerField(min_value=1, max_value=2**32 - 1)
    deadline = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    max_amount_wei = serializers.RegexField(r"^[0-9]{1,78}$")
    cumulative_max_wei = serializers.RegexField(r"^[0-9]{1,78}$")
    signature = serializers.RegexField(r"^0x[0-9a-fA-F]{130}$")


class JobOrderView(APIView):
    """The consumer's EIP-712 settlement order for one of its jobs. GET: the job's settlement path
    ("on-chain", "awaiting-order" or "ledger") and the typed data to sign (eth_signTypedData_v4) or the
    stored order; POST: the signed order (verified, then stored; the contract debits only under it)."""

    permission_classes = [IsConsumer]

    @extend_schema(responses={200: dict})
    def get(self, request, pk):
        return Response(settlement_order_draft(user=request.user, job_id=pk, now=timezone.now()))

    @extend_schema(request=OrderSerializer, responses={201: dict})
    def post(self, request, pk):
        body = OrderSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        row = settlement_order_submit(
            user=request.user,
            job_id=pk,
            nonce=data["nonce"],
            deadline=data["deadline"],
            max_amount_wei=int(data["max_amount_wei"]),
            cumulative_max_wei=int(data["cumulative_max_wei"]),
            signature=data["signature"],
            now=timezone.now(),
        )
        return Response({"job": pk, "path": "on-chain", "order": order_document(row)}, status=201)


urlpatterns = [
    path("settlements", SettlementListView.as_view(), name="settlement-list"),
    path("settlements/<int:pk>", SettlementDetailView.as_view(), name="settlement-detail"),
    path("settlements/<int:pk>/retry", SettlementRetryView.as_view(), name="settlement-retry"),
    path("provider/proofs", ProviderProofListView.as_view(), name="provider-proofs"),
    path("wallet", WalletView.as_view(), name="consumer-wallet"),
    path("jobs/<int:pk>/order", JobOrderView.as_view(), name="job-order"),
]
