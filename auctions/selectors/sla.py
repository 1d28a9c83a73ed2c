"""Reads of the SLA contract: a job's terms and a lease's copy with what was measured."""

from auctions.models import JobTerms, Lease, LeaseSla
from auctions.services.sla import sla_terms_of
from market.models import JobRequest


def lease_sla_get(*, lease: Lease) -> LeaseSla | None:
    """The lease's SLA row (its copied terms and measurements), or None for a lease without one."""
    try:
        return lease.sla
    except LeaseSla.DoesNotExist:
        return None


def lease_sla_public(*, lease: Lease, row: LeaseSla | None = None) -> dict | None:
    """The lease's contract and measurements as the agent and the pages show them."""
    row = row or lease_sla_get(lease=lease)
    if row is None:
        return None
    return {
        "terms": row.terms,
        "probes": row.probes,
        "p50_ms": row.p50_ms,
        "p95_ms": row.p95_ms,
        "quality": None if row.quality is None else str(row.quality),
        "breaches": row.breaches,
        "penalty": str(row.penalty),
    }


def job_terms_get(*, job: JobRequest) -> JobTerms | None:
    """The terms the job's consumer stated, or None (the job then carries its defaults)."""
    return JobTerms.objects.filter(job=job).first()


def job_terms_public(*, job: JobRequest) -> dict:
    """The job's contract as it stands now: stated terms or defaults, every rate resolved."""
    return sla_terms_of(job, job_terms_get(job=job))


def job_sla_summary(*, job: JobRequest) -> dict:
    """The job's terms now and, per lease (oldest first), the copy it carries and what was measured:
    two queries."""
    rows = LeaseSla.objects.filter(lease__job=job).select_related("lease").order_by("lease_id")
    return {
        "terms": job_terms_public(job=job),
        "leases": [{"lease": row.lease, **lease_sla_public(lease=row.lease, row=row)} for row in rows],
    }
