"""The consumer's cancel: a job and its offered lease close together, and the escrow is released.

It lives here, beside the leases, because it changes a job and its leases in one transaction
(`market` knows no lease). It takes rows in the lifecycle's one lock order (job, leases, then
ledger accounts), documented in `auctions.services.leases`.
"""

from datetime import datetime

from django.db import transaction

from auctions.models import Lease
from config.errors import Conflict, NotFound
from market.models import JobRequest, LedgerAccount, LedgerTransfer, User
from market.services.jobs import job_request_transition
from market.services.ledger import ledger_transfer

Status = JobRequest.Status
CANCELLABLE = (Status.SUBMITTED, Status.QUEUED, Status.MATCHED)


@transaction.atomic
def job_request_cancel(*, consumer: User, job_id: int, now: datetime) -> JobRequest:
    """Cancel a job that has not been dispatched and release its escrow to the consumer. A MATCHED
    job's lease (offered, not yet taken by the agent) closes with reason OWNER, in the same
    transaction.

    Raises NotFound (no such job of this consumer), Conflict (already dispatched or ended).
    """
    # The job row first (lock order, auctions.services.leases): a round clearing this job holds
    # it FOR UPDATE until it has written the lease, so the cancel waits, then sees the job MATCHED
    # and the lease the round wrote, and closes both. Without the lock the lease update below ran
    # before the round committed and left the round's lease live on a cancelled job (issue 9,
    # defect 2). If the job turns out not cancellable, the Conflict rolls the lease back.
    job = JobRequest.objects.select_for_update().filter(pk=job_id, consumer=consumer).first()
    if job is None:
        raise NotFound("No such job.", job=job_id)
    Lease.objects.filter(job=job, status=Lease.Status.DISPATCHED).update(
        status=Lease.Status.FAILED,
        close_reason=Lease.CloseReason.OWNER,
        close_detail="cancelled by the consumer",
        ended_at=now,
    )
    if not job_request_transition(
        job=job, from_statuses=CANCELLABLE, to=Status.CANCELLED, now=now, close_reason="OWNER"
    ):
        job.refresh_from_db(fields=["status"])
        raise Conflict(f"A {job.status.lower()} job cannot be cancelled.", status=job.status)
    _release_escrow(job=job, now=now)
    job.refresh_from_db()
    return job


def _release_escrow(*, job: JobRequest, now: datetime) -> None:
    escrow = LedgerAccount.objects.select_for_update().get(job=job)
    if escrow.balance > 0:
        balance = LedgerAccount.objects.get(kind=LedgerAccount.Kind.CONSUMER, user_id=job.consumer_id)
        ledger_transfer(
            debit=escrow,
            credit=balance,
            amount=escrow.balance,
            kind=LedgerTransfer.Kind.RELEASE,
            now=now,
            job=job,
        )
