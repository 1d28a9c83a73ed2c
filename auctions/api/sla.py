"""The SLA contract's API: a consumer states its job's terms; an agent echoes latency probes."""

from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from auctions.selectors import leases as lease_selectors
from auctions.selectors.sla import job_terms_public
from auctions.services.sla import job_terms_set, probe_record
from config.errors import InvalidInput, NotFound
from market import selectors
from market.api.permissions import IsConsumer, IsProvider


class ProbeSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=100)


class JobTermsView(APIView):
    """GET: the job's SLA terms (stated, or its defaults). PUT: state them before the job is matched
    ({latency_p95_ms, complete_by, min_quality, latency_/deadline_/quality_penalty_rate})."""

    permission_classes = [IsConsumer]

    def _job(self, request, pk):
        job = lease_selectors.job_for_consumer(consumer=request.user, job_id=pk)
        if job is None:
            raise NotFound("No such job.", job=pk)
        return job

    @extend_schema(responses={200: dict})
    def get(self, request, pk):
        return Response(job_terms_public(job=self._job(request, pk)))

    @extend_schema(request=dict, responses={200: dict})
    def put(self, request, pk):
        job_terms_set(consumer=request.user, job_id=pk, data=request.data, now=timezone.now())
        return Response(job_terms_public(job=self._job(request, pk)))


class ProbeEchoView(APIView):
    """The agent echoes the probe token of its last heartbeat: CPX records the RTT on its leases."""

    permission_classes = [IsProvider]

    @extend_schema(request=ProbeSerializer, responses={200: dict})
    def post(self, request):
        serializer = ProbeSerializer(data=request.data)
        if not serializer.is_valid():
            raise InvalidInput('Send {"token": <the heartbeat\'s probe>}.', field="token")
        provider = selectors.provider_for_user(user=request.user)
        if provider is None:
            raise NotFound("Register your provider profile first (POST /api/v1/provider).")
        now = timezone.now()
        return Response(probe_record(provider=provider, token=serializer.validated_data["token"], now=now))


urlpatterns = [
    path("jobs/<int:pk>/sla", JobTermsView.as_view(), name="job-sla"),
    path("agent/probes", ProbeEchoView.as_view(), name="agent-probes"),
]
