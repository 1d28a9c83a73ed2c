"""The provider-agent API (a provider's API key) and the consumer's view of its job's leases.

Another provider's lease answers 404 like a missing one; a state change out of order answers 409
with a stable code; a malformed body 400.
"""

import time

from django.conf import settings
from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from auctions.api import agent_serializers as s
from auctions.api.long_poll import long_poll_slots
from auctions.models import Lease
from auctions.selectors import leases as lease_selectors
from auctions.services.batches import (
    lease_artifact_store,
    lease_batch_record,
    lease_batch_state,
    lease_input_file,
)
from auctions.services.leases import (
    LeaseNotFound,
    lease_accept,
    lease_complete,
    lease_fail,
    lease_poll,
    lease_report_progress,
    provider_heartbeat,
)
from auctions.services.sla import probe_issue
from auctions.services.verification import verification_decide, verification_poll
from config.errors import NotFound
from contracts.selectors import lease_chain_status
from market import selectors
from market.api.permissions import IsConsumer, IsOperator, IsProvider
from market.api.serializers import FileSerializer
from market.api.views import file_download

# How often a long-poll looks for new offers: short enough to feel instant, long enough to be cheap.
LONG_POLL_STEP_S = 0.25


def _provider(request):
    provider = selectors.provider_for_user(user=request.user)
    if provider is None:
        raise NotFound("Register your provider profile first (POST /api/v1/provider).")
    return provider


def _caller_key(request) -> str:
    """Who holds a long-poll slot: the API key (a browser session counts as its user)."""
    prefix = getattr(request.auth, "prefix", None)
    return f"key:{prefix}" if prefix else f"user:{request.user.pk}"


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class HeartbeatView(APIView):
    """The agent is alive and runs these leases; answers which of them it should stop."""

    permission_classes = [IsProvider]

    @extend_schema(request=s.HeartbeatSerializer, responses=s.HeartbeatResultSerializer)
    def post(self, request):
        data = _valid(s.HeartbeatSerializer, request.data)
        provider = _provider(request)
        result = provider_heartbeat(provider=provider, now=timezone.now(), lease_ids=data["leases"])
        # The latency probe rides on the answer; its send time is taken last, just before it leaves.
        probe = probe_issue(provider=provider, now=timezone.now())
        return Response({**result, "heartbeat_timeout_s": settings.CPX_HEARTBEAT_TIMEOUT_S, "probe": probe})


class LeasePollView(APIView):
    """The leases offered to the caller (DISPATCHED). `wait=S` holds the request open up to S seconds
    (at most CPX_AGENT_LONG_POLL_S) until there is one, within the caps of held polls per key and per
    process (auctions/api/long_poll.py; beyond them: 429 with Retry-After at once)."""

    permission_classes = [IsProvider]

    @extend_schema(
        parameters=[OpenApiParameter("wait", float, description="seconds to wait for an offer")],
        responses=s.AgentLeaseSerializer(many=True),
    )
    def get(self, request):
        provider = _provider(request)
        wait = min(_valid(s.PollSerializer, request.query_params)["wait"], settings.CPX_AGENT_LONG_POLL_S)
        offers = Lease.objects.filter(provider=provider, status=Lease.Status.DISPATCHED)
        if wait > 0 and not offers.exists():
            # A waiting poll holds a server thread: only within this process's caps (long_poll.py).
            with long_poll_slots.hold(_caller_key(request)):
                give_up_at = time.monotonic() + wait
                while not offers.exists() and time.monotonic() < give_up_at:
                    time.sleep(min(LONG_POLL_STEP_S, max(0.0, give_up_at - time.monotonic())))
        leases = lease_poll(provider=provider, now=timezone.now())
        return Response(s.AgentLeaseSerializer(leases, many=True).data)


class LeaseDetailView(APIView):
    permission_classes = [IsProvider]

    @extend_schema(responses=s.AgentLeaseSerializer)
    def get(self, request, pk):
        lease = lease_selectors.lease_get_for_provider(provider=_provider(request), lease_id=pk)
        if lease is None:
            raise LeaseNotFound("No such lease.", lease=pk)
        return Response(s.AgentLeaseSerializer(lease).data)


class LeaseAcceptView(APIView):
    permission_classes = [IsProvider]

    @extend_schema(request=s.AcceptSerializer, responses=s.AgentLeaseSerializer)
    def post(self, request, pk):
        data = _valid(s.AcceptSerializer, request.data)
        lease = lease_accept(provider=_provider(request), lease_id=pk, now=timezone.now(), **data)
        return Response(s.AgentLeaseSerializer(lease).data)


class LeaseProgressView(APIView):
    """Cumulative progress (0–1) and usage; also a heartbeat of the lease."""

    permission_classes = [IsProvider]

    @extend_schema(request=s.ProgressSerializer, responses=s.AgentLeaseSerializer)
    def post(self, request, pk):
        data = _valid(s.ProgressSerializer, request.data)
        lease = lease_report_progress(provider=_provider(request), lease_id=pk, now=timezone.now(), **data)
        return Response(s.AgentLeaseSerializer(lease).data)


class LeaseCompleteView(APIView):
    """Final usage; the escrow is settled in the same transaction. A replay answers 409."""

    permission_classes = [IsProvider]

    @extend_schema(request=s.UsageSerializer, responses=s.CompletedLeaseSerializer)
    def post(self, request, pk):
        data = _valid(s.UsageSerializer, request.data)
        lease, settlement = lease_complete(
            provider=_provider(request), lease_id=pk, now=timezone.now(), **data
        )
        return Response(
            s.CompletedLeaseSerializer({"lease": lease, "settlement": settlement}).data,
        )


class LeaseFailView(APIView):
    """Give a lease up: JOB_ERROR (the job cannot run) or PROVIDER_FAULT (it fails over)."""

    permission_classes = [IsProvider]

    @extend_schema(request=s.FailSerializer, responses=s.AgentLeaseSerializer)
    def post(self, request, pk):
        data = _valid(s.FailSerializer, request.data)
        lease = lease_fail(provider=_provider(request), lease_id=pk, now=timezone.now(), **data)
        return Response(s.AgentLeaseSerializer(lease).data)


class LeaseInputView(APIView):
    """The job's input file, for the provider holding a live lease on it (403 once the lease is
    closed, 404 for another provider's lease); its sha256 in X-CPX-SHA256."""

    permission_classes = [IsProvider]

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    def get(self, request, pk):
        return file_download(lease_input_file(provider=_provider(request), lease_id=pk))


class LeaseBatchView(APIView):
    """A batch lease's state: the input file (id, sha256, bytes, lines) and the custom_ids already
    answered for the job, so a restarted or failed-over agent runs only the rest."""

    permission_classes = [IsProvider]

    @extend_schema(responses=s.BatchStateSerializer)
    def get(self, request, pk):
        return Response(lease_batch_state(provider=_provider(request), lease_id=pk))


class LeaseResultsView(APIView):
    """Record answered requests (OpenAI Batch output lines, at most 1000 per call); each request is
    kept once per job. An implausible usage block answers 422 and records nothing."""

    permission_classes = [IsProvider]

    @extend_schema(request=s.BatchResultsSerializer, responses=s.BatchRecordedSerializer)
    def post(self, request, pk):
        data = _valid(s.BatchResultsSerializer, request.data)
        answer = lease_batch_record(
            provider=_provider(request), lease_id=pk, results=data["results"], now=timezone.now()
        )
        return Response(answer)


class OctetStreamParser(BaseParser):
    """Raw bytes, read up to one byte past the limit (the service refuses what is over it)."""

    media_type = "application/octet-stream"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream.read(settings.CPX_FILE_MAX_BYTES + 1) if stream is not None else b""


class LeaseArtifactView(APIView):
    """A training or fine-tuning lease's artifact (raw bytes, `X-Filename` names it): kept as the
    job's output file, for its consumer (`GET /jobs/{id}/output`)."""

    permission_classes = [IsProvider]
    parser_classes = [OctetStreamParser]

    @extend_schema(request={"application/octet-stream": bytes}, responses={201: FileSerializer})
    def post(self, request, pk):
        artifact = lease_artifact_store(
            provider=_provider(request),
            lease_id=pk,
            data=request.data or b"",
            filename=request.headers.get("X-Filename", ""),
            now=timezone.now(),
        )
        return Response(FileSerializer(artifact).data, status=201)


class VerificationPollView(APIView):
    """Spot checks for a verifier: `models=a,b` names the models the caller's server serves; each
    check handed out is ASSIGNED to the caller, with the requests to re-run at temperature 0."""

    permission_classes = [IsProvider]

    @extend_schema(
        parameters=[OpenApiParameter("models", str, description="comma-separated model names")],
        responses=s.VerificationOfferSerializer(many=True),
    )
    def get(self, request):
        models = [m.strip() for m in request.query_params.get("models", "").split(",") if m.strip()][:20]
        return Response(verification_poll(provider=_provider(request), models=models, now=timezone.now()))


class VerificationResultsView(APIView):
    """The verifier's answers (OpenAI Batch output lines); the check is decided at once."""

    permission_classes = [IsProvider]

    @extend_schema(request=s.BatchResultsSerializer, responses=s.VerificationSerializer)
    def post(self, request, pk):
        data = _valid(s.BatchResultsSerializer, request.data)
        verification = verification_decide(
            provider=_provider(request), verification_id=pk, results=data["results"], now=timezone.now()
        )
        return Response(s.VerificationSerializer(verification).data)


class OperatorVerificationListView(generics.ListAPIView):
    """Every spot check, newest first (operator); filter `status`."""

    permission_classes = [IsOperator]
    serializer_class = s.VerificationSerializer
    filterset_fields = ["status"]

    def get_queryset(self):
        return lease_selectors.verification_list()


class JobLeaseListView(APIView):
    """Every lease of one of the caller's jobs, oldest first, with how and why each ended."""

    permission_classes = [IsConsumer]

    @extend_schema(responses=s.ConsumerLeaseSerializer(many=True))
    def get(self, request, pk):
        job = lease_selectors.job_for_consumer(consumer=request.user, job_id=pk)
        if job is None:
            raise NotFound("No such job.", job=pk)
        leases = list(lease_selectors.lease_list_for_job(job=job))
        chain = lease_chain_status(lease_ids=[lease.pk for lease in leases])
        return Response(s.ConsumerLeaseSerializer(leases, many=True, context={"chain": chain}).data)


urlpatterns = [
    path("agent/heartbeat", HeartbeatView.as_view(), name="agent-heartbeat"),
    path("agent/leases", LeasePollView.as_view(), name="agent-leases"),
    path("agent/leases/<int:pk>", LeaseDetailView.as_view(), name="agent-lease"),
    path("agent/leases/<int:pk>/accept", LeaseAcceptView.as_view(), name="agent-lease-accept"),
    path("agent/leases/<int:pk>/progress", LeaseProgressView.as_view(), name="agent-lease-progress"),
    path("agent/leases/<int:pk>/complete", LeaseCompleteView.as_view(), name="agent-lease-complete"),
    path("agent/leases/<int:pk>/fail", LeaseFailView.as_view(), name="agent-lease-fail"),
    path("agent/leases/<int:pk>/input", LeaseInputView.as_view(), name="agent-lease-input"),
    path("agent/leases/<int:pk>/batch", LeaseBatchView.as_view(), name="agent-lease-batch"),
    path("agent/leases/<int:pk>/results", LeaseResultsView.as_view(), name="agent-lease-results"),
    path("agent/leases/<int:pk>/artifact", LeaseArtifactView.as_view(), name="agent-lease-artifact"),
    path("agent/verifications", VerificationPollView.as_view(), name="agent-verifications"),
    path(
        "agent/verifications/<int:pk>/results",
        VerificationResultsView.as_view(),
        name="agent-verification-results",
    ),
    path("operator/verifications", OperatorVerificationListView.as_view(), name="operator-verifications"),
    path("jobs/<int:pk>/leases", JobLeaseListView.as_view(), name="job-leases"),
]
