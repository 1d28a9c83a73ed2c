"""The job and lease lifecycle heals and meters honestly (issue 9): the sweeper never stops on one
bad row, deadlines are bounded, usage is accepted at the precision the API publishes and bounded by
elapsed time, and no provider is penalised for a limit CPX set."""

import logging
from datetime import timedelta

import pytest

from auctions.models import Lease
from auctions.services.leases import lease_sweep
from market.models import JobRequest, LedgerTransfer, Provider
from market.selectors import ledger_is_balanced
from tests.conftest import NOW
from tests.integration.test_leases import escrow, funded_job, make_lease, running_lease

pytestmark = pytest.mark.django_db

S = Lease.Status
J = JobRequest.Status


def penalties(lease) -> int:
    return LedgerTransfer.objects.filter(reference=f"lease:{lease.pk}:penalty").count()


class TestSweepNeverStopsOnOneRow:
    def test_a_live_lease_on_a_closed_job_is_closed_without_penalty_and_the_sweep_goes_on(self, settings):
        orphan = make_lease(job=funded_job())
        # What defect 2 left behind: the job cancelled (escrow released) under a DISPATCHED lease.
        JobRequest.objects.filter(pk=orphan.job_id).update(status=J.CANCELLED, close_reason="OWNER")
        stale = make_lease(job=funded_job())
        reputation = Provider.objects.get(pk=orphan.provider_id).reputation

        summary = lease_sweep(now=NOW + timedelta(seconds=settings.CPX_OFFER_TIMEOUT_S + 1))

        orphan.refresh_from_db()
        stale.refresh_from_db()
        assert (orphan.status, orphan.close_reason) == (S.FAILED, "OWNER")
        assert JobRequest.objects.get(pk=orphan.job_id).status == J.CANCELLED
        assert penalties(orphan) == 0
        assert Provider.objects.get(pk=orphan.provider_id).reputation == reputation
        assert stale.status == S.REASSIGNED
        assert (summary.not_accepted, summary.requeued, summary.orphaned, summary.failed) == (2, 1, 1, 0)
        assert ledger_is_balanced()

    def test_a_lease_that_cannot_be_swept_is_recorded_and_the_sweep_moves_on(self, settings, caplog):
        broken = running_lease()
        # Out of step and not closed either: the job was put back in the queue behind the lease.
        JobRequest.objects.filter(pk=broken.job_id).update(status=J.QUEUED)
        silent = running_lease()
        sweep_at = NOW + timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S + 1)

        with caplog.at_level(logging.WARNING, logger="auctions.services.leases"):
            summary = lease_sweep(now=sweep_at)

        broken.refresh_from_db()
        silent.refresh_from_db()
        assert broken.status == S.RUNNING  # its transaction rolled back whole
        assert penalties(broken) == 0
        assert silent.status == S.REASSIGNED
        assert (summary.unstable, summary.failed, summary.failed_leases) == (1, 1, [broken.pk])
        assert f"lease {broken.pk}" in caplog.text and "lease_job_out_of_step" in caplog.text
        assert summary.as_dict()["failed_leases"] == [broken.pk]

    def test_a_sweep_after_a_failed_row_still_expires_queued_jobs(self):
        broken = running_lease(job=funded_job(deadline=NOW + timedelta(days=2)))
        JobRequest.objects.filter(pk=broken.job_id).update(status=J.QUEUED)
        overdue = funded_job()

        summary = lease_sweep(now=NOW + timedelta(days=1, seconds=1))

        overdue.refresh_from_db()
        assert (overdue.status, escrow(overdue)) == (J.EXPIRED, 0)
        assert (summary.failed, summary.queued_expired) == (1, 1)
