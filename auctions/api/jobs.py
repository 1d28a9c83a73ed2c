"""The consumer's cancel of a job (`POST /api/v1/jobs/{id}/cancel`): here, not in `market.api`,
because a cancel closes the job's offered lease too (`auctions.services.jobs`)."""

from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from auctions.services.jobs import job_request_cancel
from market.api.permissions import IsConsumer
from market.api.serializers import JobRequestSerializer


class JobCancelView(APIView):
    """Cancel a job before dispatch; its escrow returns to the balance."""

    permission_classes = [IsConsumer]

    @extend_schema(request=None, responses=JobRequestSerializer)
    def post(self, request, pk):
        job = job_request_cancel(consumer=request.user, job_id=pk, now=timezone.now())
        return Response(JobRequestSerializer(job).data)


urlpatterns = [
    path("jobs/<int:pk>/cancel", JobCancelView.as_view(), name="job-cancel"),
]
