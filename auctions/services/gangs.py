"""A gang's life after its round: members complete one by one and are paid together, and a member
that fails takes the whole gang down with it (docs/fusionai-gangs.md).

A gang is the leases one round wrote for one job (`Lease.gang` set, one per pipeline stage). Each
member accepts, reports and completes its own lease through the ordinary agent calls
(auctions.services.leases), which hand over to this module where a gang differs:

- completion: a member's lease goes COMPLETED with its own metered usage; when the last member of
  the gang completes, the job completes and every member is paid from the job's escrow by its own
  usage at its own cleared prices (payment and fee per lease, as `lease_settle`), then the rest is
  refunded; each member's SLA terms are then settled as a single lease's (auctions.services.sla).
  Until then nothing is paid: a pipeline's output exists only once every stage has run.
- failover: when one member fails (a provider fault, silence, an offer not taken), its lease is
  failed over and penalised as any other; its peers' leases close REASSIGNED with reason GANG
  (no penalty: they did not fail, and the round's exclusions do not count them), including peers
  that had completed but were not yet paid, and the job goes back to the book once, whole.
  Nothing was paid for the broken gang, so nothing can be paid twice.
- a job error reported by one member fails the job; its live peers close FAILED with reason GANG.

Every close is a compare-and-set on the lease's status; the caller holds the job's row lock (the
lock order of auctions.services.leases), and peers are locked in pk order.
"""

from dataclasses import replace
from datetime import datetime

from django.conf import settings

from auctions.models import Lease
from auctions.services.settlement import (
    HOUR_QUANTUM,
    ZERO,
    LeaseSettlement,
    _settled,
    job_refund,
    settlement_amounts,
)
from auctions.services.sla import lease_sla_settle
from market.models import JobRequest, LedgerAccount, LedgerTransfer
from market.services.jobs import job_request_transition
from market.services.ledger import ledger_account_for_user, ledger_house_account, ledger_transfer

Status = Lease.Status
GANG = Lease.CloseReason.GANG


def gang_peers(lease: Lease) -> list[Lease]:
    """The other members of the lease's gang (same round, same job), locked, in pk order."""
    return list(
        Lease.objects.select_for_update()
        .filter(round_id=lease.round_id, job_id=lease.job_id)
        .exclude(pk=lease.pk)
        .order_by("pk")
    )


def gang_close_peers(*, lease: Lease, now: datetime, status: str) -> list[int]:
    """Close the peers of a member that failed: live ones, and completed ones not yet paid (the
    gang's output never came). Returns the ids closed."""
    closed = []
    for peer in gang_peers(lease):
        if peer.status == Status.COMPLETED and _settled(peer) is not None:
            continue
        if peer.status not in (*Lease.ACTIVE, Status.COMPLETED):
            continue
        won = Lease.objects.filter(pk=peer.pk, status=peer.status).update(
            status=status,
            close_reason=GANG,
            close_detail=f"stage {lease.gang_stage} (lease {lease.pk}) failed: the gang is re-run whole",
            ended_at=now,
        )
        if won:
            closed.append(peer.pk)
    return closed


def gang_member_complete(*, lease: Lease, now: datetime) -> LeaseSettlement:
    """After a member's lease went COMPLETED: complete the job and pay every member once the whole
    gang has, else answer a settlement of zeros (this member is paid with the last one)."""
    peers = gang_peers(lease)
    if any(peer.status != Status.COMPLETED for peer in peers):
        hours = (lease.device_seconds / 3600).quantize(HOUR_QUANTUM)
        return LeaseSettlement(lease.pk, hours, ZERO, ZERO, ZERO, ZERO)
    job_request_transition(
        job=lease.job,
        from_statuses=(JobRequest.Status.RUNNING,),
        to=JobRequest.Status.COMPLETED,
        now=now,
        close_reason=Lease.CloseReason.COMPLETED,
    )
    members = sorted([*peers, lease], key=lambda member: member.pk)
    settlements = {member.pk: _pay(member, now=now) for member in members}
    for member in members:  # each member's own SLA terms, measured, as for a single lease
        lease_sla_settle(lease=member, now=now)
    refund = job_refund(job=lease.job, now=now, reason="gang completed: unused escrow")
    return replace(settlements[lease.pk], refund=refund)


def _pay(lease: Lease, *, now: datetime) -> LeaseSettlement:
    """Pay one member from the escrow as `lease_settle` does, leaving the rest for its peers."""
    done = _settled(lease)
    if done is not None:
        return done
    job = lease.job
    escrow = LedgerAccount.objects.select_for_update().get(kind=LedgerAccount.Kind.ESCROW, job=job)
    hours, charge, provider_net, platform, _ = settlement_amounts(
        device_seconds=lease.device_seconds,
        unit_price_paid=lease.unit_price_paid,
        unit_price_received=lease.unit_price_received,
        escrow=escrow.balance,
        fee_rate=settings.CPX_PLATFORM_FEE_RATE,
    )
    memo = f"lease {lease.pk} (gang stage {lease.gang_stage}): {hours} device-hours"
    moves = (
        (
            ledger_account_for_user(user=lease.provider.user, kind=LedgerAccount.Kind.PROVIDER),
            provider_net,
            LedgerTransfer.Kind.PAYMENT,
            f"lease:{lease.pk}:payment",
        ),
        (
            ledger_house_account(kind=LedgerAccount.Kind.PLATFORM_FEE),
            platform,
            LedgerTransfer.Kind.FEE,
            f"lease:{lease.pk}:fee",
        ),
    )
    for credit, amount, kind, reference in moves:
        if amount > 0:
            ledger_transfer(
                debit=escrow,
                credit=credit,
                amount=amount,
                kind=kind,
                now=now,
                job=job,
                reference=reference,
                memo=memo,
            )
    return LeaseSettlement(lease.pk, hours, charge, provider_net, platform, ZERO)
