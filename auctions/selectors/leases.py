"""Reads of leases and of provider liveness.

A provider is *online* while its agent has heartbeated within CPX_HEARTBEAT_TIMEOUT_S; the book
(`providers_online`) holds only online, active providers, so a provider that goes silent leaves
it with no write at all and returns with its next heartbeat.
"""

from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet

from auctions.models import Lease, Verification
from market.models import JobRequest, Provider, User

# Leases that ended without completing: the next round must not give the job to the same
# provider again (the rest of the book is its backup pool, as in FusionAI).
FAILED_OVER = (Lease.Status.REASSIGNED, Lease.Status.FAILED)


def provider_online_since(*, now: datetime) -> datetime:
    """The oldest heartbeat that still counts as online at `now`."""
    return now - timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S)


def providers_online(*, now: datetime) -> QuerySet[Provider]:
    """Active providers whose agent heartbeated within CPX_HEARTBEAT_TIMEOUT_S: the book's sellers."""
    return Provider.objects.filter(
        status=Provider.Status.ACTIVE, last_heartbeat_at__gte=provider_online_since(now=now)
    ).order_by("id")


def provider_is_online(*, provider: Provider, now: datetime) -> bool:
    """Whether the provider's agent heartbeated within CPX_HEARTBEAT_TIMEOUT_S (and it is active)."""
    return (
        provider.status == Provider.Status.ACTIVE
        and provider.last_heartbeat_at is not None
        and provider.last_heartbeat_at >= provider_online_since(now=now)
    )


def lease_list_for_provider(*, provider: Provider, status: str | None = None) -> QuerySet[Lease]:
    """The provider's leases, oldest first, with job and resource joined."""
    leases = Lease.objects.filter(provider=provider).select_related("job", "resource").order_by("id")
    return leases.filter(status=status) if status else leases


def lease_get_for_provider(*, provider: Provider, lease_id: int) -> Lease | None:
    """One of the provider's leases, or None (another provider's answers None too)."""
    return lease_list_for_provider(provider=provider).filter(pk=lease_id).first()


def job_for_consumer(*, consumer: User, job_id: int) -> JobRequest | None:
    files = ("input_file", "output_file", "error_file")  # the batch card of the job's page
    return JobRequest.objects.select_related(*files).filter(pk=job_id, consumer=consumer).first()


def lease_list_for_job(*, job: JobRequest) -> QuerySet[Lease]:
    """Every lease the job has had, oldest first: its failover history with close reasons."""
    return Lease.objects.filter(job=job).select_related("resource", "provider").order_by("id")


def job_failed_provider_ids(*, job_ids) -> dict[int, set[int]]:
    """For each job, the providers whose lease of it was REASSIGNED or FAILED: exclude them when
    matching the job again. One query."""
    excluded: dict[int, set[int]] = defaultdict(set)
    rows = Lease.objects.filter(job_id__in=list(job_ids), status__in=FAILED_OVER)
    for job_id, provider_id in rows.values_list("job_id", "provider_id"):
        excluded[job_id].add(provider_id)
    return dict(excluded)


def job_failed_resource_ids(*, job_ids) -> dict[int, set[int]]:
    """For each job, the resources whose lease of it was REASSIGNED or FAILED. One query."""
    excluded: dict[int, set[int]] = defaultdict(set)
    rows = Lease.objects.filter(job_id__in=list(job_ids), status__in=FAILED_OVER)
    for job_id, resource_id in rows.values_list("job_id", "resource_id"):
        excluded[job_id].add(resource_id)
    return dict(excluded)


def verification_list() -> QuerySet[Verification]:
    """Spot checks newest first, with the lease's provider and the verifier (operator dashboard)."""
    return Verification.objects.select_related("lease__provider", "verifier").order_by("-id")
