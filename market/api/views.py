"""Market API views: translate the request, call one service or selector, translate back."""

import django_filters
from django.http import FileResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import InvalidInput, NotFound
from config.filters import UtcIsoDateTimeFilter
from market import selectors
from market.api import serializers as s
from market.api.permissions import IsConsumer, IsOperator, IsProvider
from market.models import ApiKey, DataFile, JobRequest, LedgerTransfer, Resource
from market.services.files import file_get_for_owner, file_open, file_upload
from market.services.jobs import job_request_submit
from market.services.ledger import ledger_deposit
from market.services.providers import provider_register, provider_update, resource_create, resource_update

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Up to 128 printable characters; a retry with the same key returns the first result.",
)


def idempotency_key(request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not (1 <= len(key) <= 128) or not key.isprintable() or not key.isascii():
        raise InvalidInput(
            "Idempotency-Key must be 1 to 128 printable ASCII characters.", field="Idempotency-Key"
        )
    return key


class MeView(APIView):
    """Who the caller is, and the role its API key acts in."""

    @extend_schema(responses=s.MeSerializer)
    def get(self, request):
        key_role = request.auth.role if isinstance(request.auth, ApiKey) else None
        return Response({"username": request.user.username, "role": request.user.role, "key_role": key_role})


def _own_provider(request):
    provider = selectors.provider_for_user(user=request.user)
    if provider is None:
        raise NotFound("Register your provider profile first (POST /api/v1/provider).")
    return provider


class ProviderProfileView(APIView):
    """The calling provider's own profile: read, create once, change."""

    permission_classes = [IsProvider]

    @extend_schema(responses=s.ProviderSerializer)
    def get(self, request):
        return Response(s.ProviderSerializer(_own_provider(request)).data)

    @extend_schema(request=s.ProviderSerializer, responses={201: s.ProviderSerializer})
    def post(self, request):
        serializer = s.ProviderSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        provider = provider_register(user=request.user, **serializer.validated_data)
        return Response(s.ProviderSerializer(provider).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.ProviderSerializer, responses=s.ProviderSerializer)
    def patch(self, request):
        provider = _own_provider(request)
        serializer = s.ProviderSerializer(provider, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        provider = provider_update(provider=provider, **serializer.validated_data)
        return Response(s.ProviderSerializer(provider).data)


class ResourceFilter(django_filters.FilterSet):
    class Meta:
        model = Resource
        fields = ["status", "device_class"]


class ResourceListView(generics.ListAPIView):
    """The calling provider's listings (GET) and a new listing (POST)."""

    permission_classes = [IsProvider]
    serializer_class = s.ResourceSerializer
    filterset_class = ResourceFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no caller
            return Resource.objects.none()
        return selectors.resource_list(provider=_own_provider(self.request))

    @extend_schema(request=s.ResourceSerializer, responses={201: s.ResourceSerializer})
    def post(self, request):
        serializer = s.ResourceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        resource = resource_create(provider=_own_provider(request), **serializer.validated_data)
        return Response(s.ResourceSerializer(resource).data, status=status.HTTP_201_CREATED)


class ResourceDetailView(APIView):
    """One of the caller's listings: read, change, retire (DELETE). Another's answers 404."""

    permission_classes = [IsProvider]

    def _get(self, request, pk):
        resource = selectors.resource_list(provider=_own_provider(request)).filter(pk=pk).first()
        if resource is None:
            raise NotFound("No such resource.", resource=pk)
        return resource

    @extend_schema(responses=s.ResourceSerializer)
    def get(self, request, pk):
        return Response(s.ResourceSerializer(self._get(request, pk)).data)

    @extend_schema(request=s.ResourceSerializer, responses=s.ResourceSerializer)
    def patch(self, request, pk):
        serializer = s.ResourceSerializer(self._get(request, pk), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        resource = resource_update(
            provider=_own_provider(request), resource_id=pk, **serializer.validated_data
        )
        return Response(s.ResourceSerializer(resource).data)

    @extend_schema(responses={200: s.ResourceSerializer})  # retired, not removed: the listing answers
    def delete(self, request, pk):
        resource = resource_update(
            provider=_own_provider(request), resource_id=pk, status=Resource.Status.RETIRED
        )
        return Response(s.ResourceSerializer(resource).data)


class JobFilter(django_filters.FilterSet):
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = JobRequest
        fields = ["status", "kind", "device_class", "region"]


# Building a ModelSerializer's fields costs ten times more than rendering them (~0.6 ms of a
# submission's CPU, bench/api_submit.py): the submission's answer reuses one instance. Its fields are
# read-only and need no context, so the rendered bytes are the same as from a fresh instance.
_JOB_REPRESENTATION = s.JobRequestSerializer()


class JobListView(generics.ListAPIView):
    """The caller's jobs, newest first (GET); submit a job (POST, with an Idempotency-Key)."""

    permission_classes = [IsConsumer]
    serializer_class = s.JobRequestSerializer
    filterset_class = JobFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no caller
            return JobRequest.objects.none()
        return selectors.job_request_list(consumer=self.request.user)

    @extend_schema(
        request=s.JobSubmitSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: s.JobRequestSerializer, 200: s.JobRequestSerializer},
    )
    def post(self, request):
        key = idempotency_key(request)
        serializer = s.JobSubmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job, created = job_request_submit(
            consumer=request.user, spec=serializer.validated_data, now=timezone.now(), idempotency_key=key
        )
        headers = {} if created else {"Idempotent-Replayed": "true"}
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(_JOB_REPRESENTATION.to_representation(job), status=code, headers=headers)


class JobDetailView(generics.RetrieveAPIView):
    """One of the caller's jobs; another consumer's answers 404."""

    permission_classes = [IsConsumer]
    serializer_class = s.JobRequestSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no caller
            return JobRequest.objects.none()
        return selectors.job_request_list(consumer=self.request.user)


def file_download(data_file) -> FileResponse:
    """The bytes as an attachment, with their sha256 in X-CPX-SHA256 (the client can check them)."""
    response = FileResponse(
        file_open(data_file=data_file),
        as_attachment=True,
        filename=data_file.filename,
        content_type="application/jsonl"
        if data_file.filename.endswith(".jsonl")
        else "application/octet-stream",
    )
    response["X-CPX-SHA256"] = data_file.sha256
    return response


class FileListView(generics.ListAPIView):
    """The caller's files (GET); upload one (POST multipart: `file`, `purpose` batch | dataset).

    A batch file is checked line by line (OpenAI Batch JSONL): a bad line answers 400 naming it and
    nothing is kept; a file over CPX_FILE_MAX_BYTES answers 413."""

    serializer_class = s.FileSerializer
    filterset_fields = ["purpose"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return DataFile.objects.none()
        return selectors.file_list(owner=self.request.user)

    @extend_schema(request={"multipart/form-data": s.FileUploadSerializer}, responses={201: s.FileSerializer})
    def post(self, request):
        serializer = s.FileUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        data_file = file_upload(
            owner=request.user, purpose=data["purpose"], upload=data["file"], now=timezone.now()
        )
        return Response(s.FileSerializer(data_file).data, status=status.HTTP_201_CREATED)

    def get_parsers(self):
        if self.request is not None and self.request.method == "POST":
            return [MultiPartParser()]
        return super().get_parsers()


class FileDetailView(APIView):
    """One of the caller's files; another user's answers 404."""

    @extend_schema(responses=s.FileSerializer)
    def get(self, request, file_id):
        return Response(s.FileSerializer(file_get_for_owner(owner=request.user, file_id=file_id)).data)


class FileContentView(APIView):
    """The bytes of one of the caller's files (410 once expired)."""

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    def get(self, request, file_id):
        return file_download(file_get_for_owner(owner=request.user, file_id=file_id))


class JobResultFileView(APIView):
    """A batch job's results (`output`) or errors (`errors`) file, OpenAI Batch output format."""

    permission_classes = [IsConsumer]
    which = "output"

    @extend_schema(responses={(200, "application/jsonl"): bytes})
    def get(self, request, pk):
        job = selectors.job_request_list(consumer=request.user).filter(pk=pk).first()
        if job is None:
            raise NotFound("No such job.", job=pk)
        data_file = job.output_file if self.which == "output" else job.error_file
        if data_file is None:
            raise NotFound(f"The job has no {self.which} file yet.", job=pk, status=job.status)
        return file_download(data_file)


class BalanceView(APIView):
    """The caller's available balance, escrow held for its jobs, and provider earnings."""

    @extend_schema(responses=s.BalanceSerializer)
    def get(self, request):
        return Response(s.BalanceSerializer(selectors.balance_get(user=request.user)).data)


class LedgerListView(generics.ListAPIView):
    """Ledger transfers touching the caller's accounts and its jobs' escrow, newest first."""

    serializer_class = s.LedgerTransferSerializer
    filterset_fields = ["kind"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return LedgerTransfer.objects.none()
        return selectors.ledger_transfer_list(user=self.request.user)


class OperatorDepositView(APIView):
    """Credit a consumer's balance (until on-chain deposits arrive). Idempotent by key."""

    permission_classes = [IsOperator]

    @extend_schema(
        request=s.DepositSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: s.LedgerTransferSerializer},
    )
    def post(self, request):
        key = idempotency_key(request)
        serializer = s.DepositSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        transfer = ledger_deposit(
            user=data["username"],
            amount=data["amount"],
            now=timezone.now(),
            reference=f"deposit:{key}" if key else None,
            memo=data["memo"] or f"deposit by {request.user.username}",
        )
        return Response(s.LedgerTransferSerializer(transfer).data, status=status.HTTP_201_CREATED)


class OperatorJobListView(generics.ListAPIView):
    permission_classes = [IsOperator]
    serializer_class = s.JobRequestSerializer
    filterset_class = JobFilter

    def get_queryset(self):
        return selectors.job_request_list()


class OperatorProviderListView(generics.ListAPIView):
    permission_classes = [IsOperator]
    serializer_class = s.ProviderSerializer
    filterset_fields = ["tier", "status", "region"]

    def get_queryset(self):
        return selectors.provider_list()


class OperatorResourceListView(generics.ListAPIView):
    permission_classes = [IsOperator]
    serializer_class = s.ResourceSerializer
    filterset_class = ResourceFilter

    def get_queryset(self):
        return selectors.resource_list()


class OperatorLedgerListView(generics.ListAPIView):
    permission_classes = [IsOperator]
    serializer_class = s.LedgerTransferSerializer
    filterset_fields = ["kind"]

    def get_queryset(self):
        return selectors.ledger_transfer_list()
