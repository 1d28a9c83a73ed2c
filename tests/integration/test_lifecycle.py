"""The job and lease lifecycle heals and meters honestly (issue 9): the sweeper never stops on one
bad row, deadlines are bounded, usage is accepted at the precision the API publishes and bounded by
elapsed time, and no provider is penalised for a limit CPX set."""

import logging
from datetime import timedelta
from decimal import Decimal

import pytest

from auctions.models import Lease
from auctions.services.leases import (
    UsageExceedsElapsedTime,
    lease_accept,
    lease_complete,
    lease_report_progress,
    lease_sweep,
)
from auctions.services.rounds import round_clear, round_open
from market.models import JobRequest, LedgerTransfer, Provider
from market.selectors import ledger_is_balanced
from tests.conftest import NOW
from tests.integration.test_leases import escrow, funded_job, make_lease, running_lease, snapshot
from tests.integration.test_rounds import bid, funded_consumer, online_resource

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


def report(lease, seconds: str, *, at, complete: bool = False):
    numbers = {"tokens_in": 10, "tokens_out": 10, "device_seconds": Decimal(seconds), "now": at}
    if complete:
        return lease_complete(provider=lease.provider, lease_id=lease.pk, **numbers)
    return lease_report_progress(provider=lease.provider, lease_id=lease.pk, progress=0.5, **numbers)


class TestMeteringBoundedByElapsedTime:
    def test_refuses_more_device_seconds_than_wall_time_since_accept(self, settings):
        settings.CPX_METERING_TOLERANCE_S = 5
        lease = running_lease()  # accepted at NOW, one device, 12.5 device-hours allocated
        before = snapshot(lease)

        with pytest.raises(UsageExceedsElapsedTime) as refused:
            report(lease, "40000", at=NOW + timedelta(seconds=1))

        assert refused.value.code == "usage_exceeds_elapsed_time"
        assert refused.value.extra["max_device_seconds"] == "6.000"
        assert snapshot(lease) == before

    def test_a_completion_beyond_wall_time_is_refused_and_charges_nothing(self, settings):
        settings.CPX_METERING_TOLERANCE_S = 5
        lease = running_lease()
        before = snapshot(lease)

        with pytest.raises(UsageExceedsElapsedTime):
            report(lease, "40000", at=NOW + timedelta(seconds=1), complete=True)

        assert snapshot(lease) == before

    def test_accepts_up_to_wall_time_times_devices_plus_the_tolerance(self, settings):
        settings.CPX_METERING_TOLERANCE_S = 5
        lease = running_lease(devices=2)

        report(lease, "210", at=NOW + timedelta(seconds=100))  # 2 × (100 + 5)

        lease.refresh_from_db()
        assert lease.device_seconds == Decimal("210")
        with pytest.raises(UsageExceedsElapsedTime):
            report(lease, "210.001", at=NOW + timedelta(seconds=100))

    def test_a_simulated_lease_may_run_at_the_simulation_speedup(self, settings):
        settings.CPX_METERING_TOLERANCE_S = 0
        settings.CPX_SIMULATION_SPEEDUP = 600
        lease = make_lease(job=funded_job())
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW, simulated=True)

        report(lease, "6000", at=NOW + timedelta(seconds=10), complete=True)

        lease.refresh_from_db()
        assert lease.status == S.COMPLETED


class TestRoundDispatchesOnlyWhatTheBudgetCovers:
    def test_a_job_whose_budget_cannot_pay_its_expected_usage_is_refunded_not_dispatched(self):
        # Bids 1.00, 0.90, 0.40 against asks 0.10 x 2 and 0.50: the 1.00 and 0.90 jobs trade.
        online_resource(ask_per_device_hour=Decimal("0.10"), device_count=2)
        online_resource(ask_per_device_hour=Decimal("0.50"))
        consumer = funded_consumer()
        covered = bid(consumer, "1.00")
        short = bid(consumer, "0.90", budget=Decimal("0.001"))  # a thousandth of a device-hour's pay
        bid(consumer, "0.40")

        round_obj = round_clear(round_id=round_open(now=NOW).pk, now=NOW)

        covered_lease = Lease.objects.get(job=covered)
        assert covered_lease.max_device_hours >= covered_lease.expected_device_hours
        assert not Lease.objects.filter(job=short).exists()
        short.refresh_from_db()
        assert (short.status, short.close_reason) == (J.FAILED, "INSUFFICIENT_FUNDS")
        assert escrow(short) == 0
        assert round_obj.jobs_matched == 1
        assert ledger_is_balanced()

    def test_every_lease_a_round_dispatches_can_pay_its_expected_usage(self):
        online_resource(ask_per_device_hour=Decimal("0.10"), device_count=4)
        consumer = funded_consumer()
        for budget in ("50", "0.001", "5", "0.05"):  # equal bids: the first two submitted trade
            bid(consumer, "1.00", budget=Decimal(budget), requested_device_count=2)

        round_clear(round_id=round_open(now=NOW).pk, now=NOW)

        leases = Lease.objects.filter(job__consumer=consumer)
        assert leases.exists()
        assert all(lease.max_device_hours >= lease.expected_device_hours for lease in leases)
