"""Rounds and quotes over REST: translate the request, call one service or selector, translate back."""

import django_filters
from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.response import Response
from rest_framework.views import APIView

from auctions.api import serializers as s
from auctions.models import Round
from auctions.selectors import rounds as selectors
from auctions.services.pricing import job_quote
from auctions.services.rounds import RoundNotFound, round_replay
from contracts.selectors import round_commitment_document
from market.api.permissions import IsConsumer
from market.services.jobs import job_spec_with_input


class QuoteListView(generics.ListAPIView):
    """The latest price quote per resource class; filters `region`, `device_class`. Any role."""

    serializer_class = s.PriceQuoteSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return selectors.quote_latest_list()
        params = s.QuoteFilterSerializer(data=self.request.query_params.dict())
        params.is_valid(raise_exception=True)
        return selectors.quote_latest_list(
            region=params.validated_data.get("region"), device_class=params.validated_data.get("device_class")
        )


class JobQuoteView(APIView):
    """For a job spec (as POST /api/v1/jobs takes it): expected price, whether it would clear now,
    its chance over recent rounds, and when it would not, why and what bid or spec would."""

    permission_classes = [IsConsumer]

    @extend_schema(request=s.JobQuoteRequestSerializer, responses=s.JobQuoteSerializer)
    def post(self, request):
        serializer = s.JobQuoteRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        spec = job_spec_with_input(consumer=request.user, spec=serializer.validated_data)
        answer = job_quote(spec=spec, now=timezone.now())
        return Response(s.JobQuoteSerializer(answer).data)


class RoundFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Round.Status.choices)

    class Meta:
        model = Round
        fields = ["status"]


class RoundListView(generics.ListAPIView):
    """Rounds newest first; filter `status`. Any signed-in role: clearing anyone can re-run."""

    serializer_class = s.RoundSerializer
    filterset_class = RoundFilter

    def get_queryset(self):
        return selectors.round_list()


class RoundDetailView(APIView):
    """One round with a summary of its leases (counts per status and class). Any signed-in role."""

    @extend_schema(responses=s.RoundDetailSerializer)
    def get(self, request, pk):
        round_obj = selectors.round_get(round_id=pk)
        if round_obj is None:
            raise RoundNotFound("No such round.", round=pk)
        leases = selectors.round_lease_summary(round_obj=round_obj)
        commitment = round_commitment_document(round_id=round_obj.pk)
        context = {"leases": leases, "chain_commitment": commitment}
        return Response(s.RoundDetailSerializer(round_obj, context=context).data)


class RoundReplayView(APIView):
    """Re-run a round from its snapshot and compare hashes. Any signed-in role."""

    @extend_schema(request=None, responses=s.RoundReplaySerializer)
    def post(self, request, pk):
        return Response(s.RoundReplaySerializer(round_replay(round_id=pk)).data)


urlpatterns = [
    path("quotes", QuoteListView.as_view(), name="quote-list"),
    path("quote", JobQuoteView.as_view(), name="job-quote"),
    path("rounds", RoundListView.as_view(), name="round-list"),
    path("rounds/<int:pk>", RoundDetailView.as_view(), name="round-detail"),
    path("rounds/<int:pk>/replay", RoundReplayView.as_view(), name="round-replay"),
]
