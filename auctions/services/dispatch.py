"""What a round may dispatch: a lease whose job's budget covers its expected usage.

A round's trade gives a job devices at a price per device-hour; the job's escrow then pays for at
most `max_device_hours` = budget / price. When that is less than the `expected_device_hours` the
throughput model expects the job to use on those devices, the lease could never finish within its
budget: the agent would run to the cap and stop with the job undone, and the provider be failed for
a limit CPX set (issue 9, defect 7). Such a job is not dispatched: it is FAILED with reason
INSUFFICIENT_FUNDS and its escrow refunded, in the round's transaction (the round holds the job's
row lock, step 2 of the lifecycle's lock order in auctions.services.leases), and the consumer can
submit it again with a budget that covers it.
"""

import logging
from datetime import datetime

from auctions.models import Lease
from auctions.services.settlement import job_refund
from market.models import JobRequest

logger = logging.getLogger(__name__)

INSUFFICIENT_FUNDS = Lease.CloseReason.INSUFFICIENT_FUNDS


def lease_budget_covers(lease: Lease) -> bool:
    """Whether the job's escrow pays for the lease's expected device-hours at its price."""
    return lease.max_device_hours >= lease.expected_device_hours


def jobs_refuse_uncovered(*, leases: list[Lease], now: datetime) -> tuple[list[Lease], int, int]:
    """Split a round's new leases into those it may dispatch and the jobs it must refuse; fail and
    refund the refused jobs (QUEUED → FAILED, INSUFFICIENT_FUNDS, each a compare-and-set).
    Returns (leases to dispatch, jobs refused, jobs of those the compare-and-set moved): the caller
    treats a difference like its own compare-and-set's (the book changed under the round). A gang
    is refused whole when any member's share cannot pay for it (counted once per job)."""
    uncovered = {lease.job_id for lease in leases if not lease_budget_covers(lease)}
    dispatch = [lease for lease in leases if lease.job_id not in uncovered]
    refused = list({lease.job_id: lease for lease in leases if lease.job_id in uncovered}.values())
    failed = 0
    for lease in refused:
        moved = JobRequest.objects.filter(pk=lease.job_id, status=JobRequest.Status.QUEUED).update(
            status=JobRequest.Status.FAILED, close_reason=INSUFFICIENT_FUNDS, updated_at=now
        )
        failed += moved
        if moved:
            job = JobRequest.objects.get(pk=lease.job_id)
            job_refund(
                job=job,
                now=now,
                reason=(
                    f"budget {job.budget} pays {lease.max_device_hours} of the {lease.expected_device_hours} "
                    f"device-hours expected at {lease.unit_price_paid} per device-hour"
                ),
            )
            logger.info("job %s not dispatched: its budget cannot pay its expected usage", job.pk)
    return dispatch, len(refused), failed
