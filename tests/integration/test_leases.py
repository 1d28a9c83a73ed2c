"""Lease services against the database: dispatch, acceptance, metering, completion, failure,
failover by the sweeper, and the consumer's cancel of a matched job."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection

from auctions.models import Lease, Round
from auctions.selectors.leases import (
    job_failed_provider_ids,
    job_failed_resource_ids,
    provider_is_online,
    providers_online,
)
from auctions.services.jobs import job_request_cancel
from auctions.services.leases import (
    LeaseAlreadyAccepted,
    LeaseAlreadyClosed,
    LeaseDeadlinePassed,
    LeaseNotFound,
    LeaseNotRunning,
    UsageExceedsAllocation,
    UsageWentBackwards,
    lease_accept,
    lease_complete,
    lease_fail,
    lease_poll,
    lease_report_progress,
    lease_sweep,
    provider_heartbeat,
)
from config.errors import Conflict, InvalidInput
from market.models import JobRequest, LedgerAccount, LedgerTransfer, Provider
from market.selectors import ledger_is_balanced
from market.services.jobs import job_request_transition
from tests.conftest import NOW, later
from tests.factories import ConsumerFactory, ResourceFactory, job_submit

pytestmark = pytest.mark.django_db

S = Lease.Status
J = JobRequest.Status


def make_lease(
    *,
    job: JobRequest,
    resource=None,
    now=NOW,
    paid=Decimal("0.800000"),
    received=Decimal("0.500000"),
    expected_hours=Decimal("2"),
    max_hours=None,
    devices=1,
) -> Lease:
    """What a clearing round leaves behind: a CLEARED round, a DISPATCHED lease, the job MATCHED."""
    resource = resource or ResourceFactory()
    round_ = Round.objects.create(
        status=Round.Status.CLEARED, active_slot=None, opened_at=now, cleared_at=now
    )
    assert job_request_transition(job=job, from_statuses=(J.QUEUED,), to=J.MATCHED, now=now)
    return Lease.objects.create(
        round=round_,
        job=job,
        resource=resource,
        provider=resource.provider,
        devices=devices,
        resource_class=f"{resource.device_class}:{resource.model_name}",
        unit_price_paid=paid,
        unit_price_received=received,
        max_device_hours=max_hours
        if max_hours is not None
        else (job.budget / paid).quantize(Decimal("0.000001")),
        expected_device_hours=expected_hours,
        dispatched_at=now,
    )


def funded_job(**overrides) -> JobRequest:
    consumer = ConsumerFactory(balance=Decimal("100"))
    return job_submit(consumer=consumer, budget=Decimal("10"), **overrides)


def running_lease(**kwargs) -> Lease:
    lease = make_lease(job=kwargs.pop("job", None) or funded_job(), **kwargs)
    return lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW)


def escrow(job) -> Decimal:
    return LedgerAccount.objects.get(kind=LedgerAccount.Kind.ESCROW, job=job).balance


def earnings(provider) -> Decimal:
    account = LedgerAccount.objects.filter(kind=LedgerAccount.Kind.PROVIDER, user=provider.user).first()
    return account.balance if account else Decimal(0)


def snapshot(lease: Lease) -> tuple:
    """Everything a refused call must leave as it was."""
    lease.refresh_from_db()
    job = JobRequest.objects.get(pk=lease.job_id)
    return (
        lease.status,
        lease.close_reason,
        lease.progress,
        lease.tokens_in,
        lease.tokens_out,
        lease.device_seconds,
        lease.simulated,
        lease.accepted_at,
        job.status,
        escrow(job),
        LedgerTransfer.objects.filter(job=job).count(),
    )


def usage(**overrides) -> dict:
    return {"tokens_in": 100, "tokens_out": 50, "device_seconds": Decimal("1800"), **overrides}


class TestProviderHeartbeat:
    def test_brings_a_silent_provider_back_into_the_book(self):
        provider = ResourceFactory().provider
        assert not provider_is_online(provider=provider, now=NOW)

        provider_heartbeat(provider=provider, now=NOW)

        provider.refresh_from_db()
        assert provider_is_online(provider=provider, now=NOW)
        assert provider in providers_online(now=NOW)

    def test_a_provider_silent_past_the_timeout_leaves_the_book(self, settings):
        provider = ResourceFactory().provider
        provider_heartbeat(provider=provider, now=NOW)
        provider.refresh_from_db()

        later_now = NOW + timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S + 1)

        assert not provider_is_online(provider=provider, now=later_now)
        assert provider not in providers_online(now=later_now)

    def test_never_moves_the_heartbeat_back_in_time(self):
        provider = ResourceFactory().provider
        provider_heartbeat(provider=provider, now=later(seconds=10))

        provider_heartbeat(provider=provider, now=NOW)

        provider.refresh_from_db()
        assert provider.last_heartbeat_at == later(seconds=10)

    def test_refreshes_the_running_leases_it_lists_and_names_the_closed_ones(self):
        lease = running_lease()
        other = running_lease()

        answer = provider_heartbeat(
            provider=lease.provider, now=later(seconds=30), lease_ids=[lease.pk, other.pk]
        )

        lease.refresh_from_db()
        other.refresh_from_db()
        assert answer == {"running": [lease.pk], "closed": [other.pk]}
        assert lease.last_heartbeat_at == later(seconds=30)
        assert other.last_heartbeat_at == NOW


class TestLeasePoll:
    def test_offers_the_dispatched_leases_and_dispatches_their_jobs(self):
        lease = make_lease(job=funded_job())

        offers = lease_poll(provider=lease.provider, now=NOW)

        assert [offer.pk for offer in offers] == [lease.pk]
        assert JobRequest.objects.get(pk=lease.job_id).status == J.DISPATCHED
        assert Provider.objects.get(pk=lease.provider_id).last_heartbeat_at == NOW

    def test_offers_nothing_of_another_provider(self):
        make_lease(job=funded_job())
        stranger = ResourceFactory().provider

        assert lease_poll(provider=stranger, now=NOW) == []

    def test_a_second_poll_offers_the_same_lease_again_until_it_is_accepted(self):
        lease = make_lease(job=funded_job())
        lease_poll(provider=lease.provider, now=NOW)

        offers = lease_poll(provider=lease.provider, now=NOW)

        assert [offer.pk for offer in offers] == [lease.pk]


class TestLeaseAccept:
    def test_runs_the_lease_and_its_job(self):
        lease = make_lease(job=funded_job())

        accepted = lease_accept(
            provider=lease.provider, lease_id=lease.pk, now=later(seconds=5), simulated=True
        )

        assert (accepted.status, accepted.accepted_at, accepted.simulated) == (
            S.RUNNING,
            later(seconds=5),
            True,
        )
        assert JobRequest.objects.get(pk=lease.job_id).status == J.RUNNING

    def test_refuses_to_accept_twice_and_changes_nothing(self):
        lease = running_lease()
        before = snapshot(lease)

        with pytest.raises(LeaseAlreadyAccepted):
            lease_accept(provider=lease.provider, lease_id=lease.pk, now=later(seconds=5), simulated=True)

        assert snapshot(lease) == before

    def test_answers_another_providers_lease_as_not_found(self):
        lease = make_lease(job=funded_job())
        stranger = ResourceFactory().provider
        before = snapshot(lease)

        with pytest.raises(LeaseNotFound):
            lease_accept(provider=stranger, lease_id=lease.pk, now=NOW)

        assert snapshot(lease) == before

    def test_refuses_a_lease_past_its_jobs_deadline(self):
        lease = make_lease(job=funded_job())
        before = snapshot(lease)

        with pytest.raises(LeaseDeadlinePassed):
            lease_accept(provider=lease.provider, lease_id=lease.pk, now=later(days=2))

        assert snapshot(lease) == before


class TestLeaseReportProgress:
    def test_records_cumulative_usage_as_a_heartbeat(self):
        lease = running_lease()

        lease = lease_report_progress(
            provider=lease.provider, lease_id=lease.pk, progress=0.5, now=later(hours=1), **usage()
        )

        assert (lease.progress, lease.tokens_in, lease.device_seconds) == (0.5, 100, Decimal("1800"))
        assert lease.last_heartbeat_at == later(hours=1)

    def test_refuses_usage_beyond_the_allocation_and_changes_nothing(self):
        lease = running_lease(max_hours=Decimal("1"))
        before = snapshot(lease)

        with pytest.raises(UsageExceedsAllocation) as error:
            lease_report_progress(
                provider=lease.provider,
                lease_id=lease.pk,
                progress=0.5,
                now=NOW,
                **usage(device_seconds=Decimal("3600.001")),
            )

        assert error.value.code == "usage_exceeds_allocation"
        assert snapshot(lease) == before

    def test_refuses_counters_that_go_backwards(self):
        lease = running_lease()
        lease_report_progress(
            provider=lease.provider, lease_id=lease.pk, progress=0.5, now=later(hours=1), **usage()
        )
        before = snapshot(lease)

        with pytest.raises(UsageWentBackwards):
            lease_report_progress(
                provider=lease.provider,
                lease_id=lease.pk,
                progress=0.6,
                now=later(hours=1),
                **usage(tokens_in=99),
            )

        assert snapshot(lease) == before

    def test_refuses_a_report_before_the_lease_is_accepted(self):
        lease = make_lease(job=funded_job())
        before = snapshot(lease)

        with pytest.raises(LeaseNotRunning):
            lease_report_progress(
                provider=lease.provider, lease_id=lease.pk, progress=0.1, now=NOW, **usage()
            )

        assert snapshot(lease) == before

    @pytest.mark.parametrize(
        "bad",
        [
            {"progress": float("nan")},
            {"progress": 1.5},
            {"progress": -0.1},
            {"tokens_in": -1},
            {"tokens_out": 10**16},
            {"device_seconds": Decimal("NaN")},
            {"device_seconds": Decimal("-1")},
            {"device_seconds": Decimal("1e30")},
            {"device_seconds": float("inf")},
        ],
    )
    def test_refuses_negative_nan_and_huge_numbers(self, bad):
        lease = running_lease()
        before = snapshot(lease)
        arguments = {"progress": 0.5, **usage(), **bad}

        with pytest.raises(InvalidInput):
            lease_report_progress(provider=lease.provider, lease_id=lease.pk, now=NOW, **arguments)

        assert snapshot(lease) == before


class TestLeaseComplete:
    def test_completes_the_job_and_settles_the_escrow(self):
        lease = running_lease()

        lease, settlement = lease_complete(
            provider=lease.provider, lease_id=lease.pk, now=later(hours=1), **usage()
        )

        assert (lease.status, lease.close_reason, lease.progress) == (S.COMPLETED, "COMPLETED", 1)
        assert JobRequest.objects.get(pk=lease.job_id).status == J.COMPLETED
        # 0.5 device-hours: 0.40 charged; provider 0.25 − 5 % fee; platform the rest; 9.60 back.
        assert settlement.charge == Decimal("0.400000")
        assert settlement.provider_net == Decimal("0.237500")
        assert settlement.platform == Decimal("0.162500")
        assert settlement.refund == Decimal("9.600000")
        assert escrow(lease.job) == 0
        assert earnings(lease.provider) == Decimal("0.237500")
        assert ledger_is_balanced()

    def test_a_replayed_completion_is_refused_and_pays_nothing_more(self):
        lease = running_lease()
        lease_complete(provider=lease.provider, lease_id=lease.pk, now=later(hours=1), **usage())
        before = snapshot(lease)

        with pytest.raises(LeaseAlreadyClosed) as error:
            lease_complete(provider=lease.provider, lease_id=lease.pk, now=later(hours=1), **usage())

        assert error.value.extra["status"] == S.COMPLETED
        assert snapshot(lease) == before
        assert earnings(lease.provider) == Decimal("0.237500")

    def test_refuses_completion_before_acceptance(self):
        lease = make_lease(job=funded_job())
        before = snapshot(lease)

        with pytest.raises(LeaseNotRunning):
            lease_complete(provider=lease.provider, lease_id=lease.pk, now=NOW, **usage())

        assert snapshot(lease) == before

    def test_refuses_completion_beyond_the_allocation(self):
        lease = running_lease(max_hours=Decimal("0.1"))
        before = snapshot(lease)

        with pytest.raises(UsageExceedsAllocation):
            lease_complete(provider=lease.provider, lease_id=lease.pk, now=NOW, **usage())

        assert snapshot(lease) == before

    def test_answers_another_providers_lease_as_not_found(self):
        lease = running_lease()
        before = snapshot(lease)

        with pytest.raises(LeaseNotFound):
            lease_complete(provider=ResourceFactory().provider, lease_id=lease.pk, now=NOW, **usage())

        assert snapshot(lease) == before


class TestLeaseFail:
    def test_a_job_error_fails_the_job_and_refunds_it(self):
        lease = running_lease()

        lease = lease_fail(
            provider=lease.provider, lease_id=lease.pk, reason="JOB_ERROR", detail="OOM", now=NOW
        )

        job = JobRequest.objects.get(pk=lease.job_id)
        assert (lease.status, lease.close_reason, lease.close_detail) == (S.FAILED, "JOB_ERROR", "OOM")
        assert (job.status, job.close_reason) == (J.FAILED, "JOB_ERROR")
        assert escrow(job) == 0
        assert LedgerTransfer.objects.get(reference=f"job:{job.pk}:refund").amount == Decimal("10")

    def test_a_provider_fault_requeues_the_job_without_that_provider_and_penalises_it(self):
        lease = running_lease()

        lease = lease_fail(
            provider=lease.provider, lease_id=lease.pk, reason="PROVIDER_FAULT", detail="", now=NOW
        )

        job = JobRequest.objects.get(pk=lease.job_id)
        assert (lease.status, lease.close_reason) == (S.REASSIGNED, "PROVIDER_FAULT")
        assert job.status == J.QUEUED
        assert escrow(job) == Decimal("10")
        assert job_failed_provider_ids(job_ids=[job.pk]) == {job.pk: {lease.provider_id}}
        assert job_failed_resource_ids(job_ids=[job.pk]) == {job.pk: {lease.resource_id}}
        # No earnings to take: reputation pays, twice the step.
        assert Provider.objects.get(pk=lease.provider_id).reputation == Decimal("0.9")

    def test_refuses_another_reason_and_a_closed_lease(self):
        lease = running_lease()
        before = snapshot(lease)

        with pytest.raises(InvalidInput):
            lease_fail(provider=lease.provider, lease_id=lease.pk, reason="COMPLETED", detail="", now=NOW)
        assert snapshot(lease) == before

        lease_fail(provider=lease.provider, lease_id=lease.pk, reason="JOB_ERROR", detail="", now=NOW)
        before = snapshot(lease)
        with pytest.raises(LeaseAlreadyClosed):
            lease_fail(
                provider=lease.provider, lease_id=lease.pk, reason="PROVIDER_FAULT", detail="", now=NOW
            )
        assert snapshot(lease) == before


class TestLeaseSweep:
    def test_fails_over_a_running_lease_whose_agent_went_silent(self, settings):
        lease = running_lease()
        sweep_at = NOW + timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S + 1)

        summary = lease_sweep(now=sweep_at)

        lease.refresh_from_db()
        assert (lease.status, lease.close_reason) == (S.REASSIGNED, "UNSTABLE")
        assert JobRequest.objects.get(pk=lease.job_id).status == J.QUEUED
        assert (summary.unstable, summary.requeued) == (1, 1)

    def test_spares_a_lease_that_reported_progress_in_time(self, settings):
        lease = running_lease()
        lease_report_progress(
            provider=lease.provider,
            lease_id=lease.pk,
            progress=0.1,
            now=later(seconds=50),
            **usage(device_seconds=Decimal("50")),
        )

        lease_sweep(now=NOW + timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S + 1))

        lease.refresh_from_db()
        assert lease.status == S.RUNNING

    def test_reoffers_a_lease_not_accepted_in_time(self, settings):
        lease = make_lease(job=funded_job())

        summary = lease_sweep(now=NOW + timedelta(seconds=settings.CPX_OFFER_TIMEOUT_S + 1))

        lease.refresh_from_db()
        assert (lease.status, lease.close_reason) == (S.REASSIGNED, "PROVIDER_FAULT")
        assert JobRequest.objects.get(pk=lease.job_id).status == J.QUEUED
        assert summary.not_accepted == 1

    def test_expires_and_refunds_a_job_whose_lease_passed_the_deadline(self):
        lease = running_lease()

        summary = lease_sweep(now=later(days=1, seconds=1))

        lease.refresh_from_db()
        job = JobRequest.objects.get(pk=lease.job_id)
        assert (lease.status, lease.close_reason) == (S.FAILED, "DEADLINE")
        assert (job.status, job.close_reason) == (J.EXPIRED, "DEADLINE")
        assert escrow(job) == 0
        assert (summary.deadline, summary.expired) == (1, 1)

    def test_expires_and_refunds_a_queued_job_past_its_deadline(self):
        job = funded_job()

        summary = lease_sweep(now=later(days=1, seconds=1))

        job.refresh_from_db()
        assert (job.status, job.close_reason, escrow(job)) == (J.EXPIRED, "DEADLINE", 0)
        assert summary.queued_expired == 1

    def test_a_second_sweep_changes_nothing(self, settings):
        lease = running_lease()
        sweep_at = NOW + timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S + 1)
        lease_sweep(now=sweep_at)
        before = snapshot(lease)
        reputation = Provider.objects.get(pk=lease.provider_id).reputation

        summary = lease_sweep(now=sweep_at)

        assert snapshot(lease) == before
        assert Provider.objects.get(pk=lease.provider_id).reputation == reputation
        assert (summary.unstable, summary.requeued) == (0, 0)

    def test_a_completion_after_the_sweep_is_refused(self, settings):
        lease = running_lease()
        lease_sweep(now=NOW + timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S + 1))

        with pytest.raises(LeaseAlreadyClosed):
            lease_complete(provider=lease.provider, lease_id=lease.pk, now=NOW, **usage())

        assert earnings(lease.provider) == 0

    def test_a_sweep_after_the_completion_changes_nothing(self, settings):
        lease = running_lease()
        lease_complete(provider=lease.provider, lease_id=lease.pk, now=later(hours=1), **usage())
        before = snapshot(lease)

        lease_sweep(now=NOW + timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S + 1))

        assert snapshot(lease) == before

    def test_the_consumer_is_charged_once_across_a_failover(self, settings):
        first = running_lease()
        job = first.job
        consumer_before = LedgerAccount.objects.get(
            kind=LedgerAccount.Kind.CONSUMER, user=job.consumer
        ).balance
        lease_sweep(now=NOW + timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S + 1))
        job.refresh_from_db()
        second = make_lease(job=job, now=later(minutes=5))
        lease_accept(provider=second.provider, lease_id=second.pk, now=later(minutes=5))

        _, settlement = lease_complete(
            provider=second.provider, lease_id=second.pk, now=later(hours=1), **usage()
        )

        consumer_after = LedgerAccount.objects.get(
            kind=LedgerAccount.Kind.CONSUMER, user=job.consumer
        ).balance
        assert consumer_before + Decimal("10") - consumer_after == settlement.charge == Decimal("0.4")
        assert not LedgerTransfer.objects.filter(reference__startswith=f"lease:{first.pk}:pay").exists()
        assert earnings(second.provider) == settlement.provider_net
        assert ledger_is_balanced()


class TestJobCancelWithALease:
    def test_cancelling_a_matched_job_closes_its_lease_as_the_owners(self):
        lease = make_lease(job=funded_job())

        job = job_request_cancel(consumer=lease.job.consumer, job_id=lease.job_id, now=later(seconds=1))

        lease.refresh_from_db()
        assert job.status == J.CANCELLED
        assert (lease.status, lease.close_reason, lease.ended_at) == (S.FAILED, "OWNER", later(seconds=1))
        assert escrow(job) == 0

    def test_a_running_job_cannot_be_cancelled_and_its_lease_stays(self):
        lease = running_lease()
        before = snapshot(lease)

        with pytest.raises(Conflict):
            job_request_cancel(consumer=lease.job.consumer, job_id=lease.job_id, now=NOW)

        assert snapshot(lease) == before

    def test_a_polled_job_cannot_be_cancelled_and_its_lease_stays_offered(self):
        lease = make_lease(job=funded_job())
        lease_poll(provider=lease.provider, now=NOW)
        before = snapshot(lease)

        with pytest.raises(Conflict):
            job_request_cancel(consumer=lease.job.consumer, job_id=lease.job_id, now=NOW)

        assert snapshot(lease) == before


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
class TestRaces:
    def _race(self, *calls):
        barrier = threading.Barrier(len(calls))
        results = [None] * len(calls)

        def run(index, call):
            barrier.wait()
            try:
                results[index] = call()
            except Exception as error:  # noqa: BLE001 - the outcome is what the test looks at
                results[index] = error
            finally:
                connection.close()

        threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    def test_two_sweeps_and_a_completion_race_and_one_wins(self, require_postgres, settings):
        lease = running_lease()
        sweep_at = NOW + timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S + 1)

        results = self._race(
            lambda: lease_sweep(now=sweep_at),
            lambda: lease_sweep(now=sweep_at),
            lambda: lease_complete(provider=lease.provider, lease_id=lease.pk, now=later(hours=1), **usage()),
        )

        lease.refresh_from_db()
        job = JobRequest.objects.get(pk=lease.job_id)
        sweeps_won = sum(r.unstable for r in results[:2])
        if lease.status == S.COMPLETED:
            assert sweeps_won == 0 and job.status == J.COMPLETED
            assert earnings(lease.provider) > 0
        else:
            assert isinstance(results[2], LeaseAlreadyClosed)
            assert sweeps_won == 1 and job.status == J.QUEUED
            assert earnings(lease.provider) == 0
        assert LedgerTransfer.objects.filter(reference__startswith=f"lease:{lease.pk}:").count() <= 2
        assert ledger_is_balanced()

    def test_two_completions_race_and_pay_once(self, require_postgres):
        lease = running_lease()

        results = self._race(
            *[
                lambda: lease_complete(
                    provider=lease.provider, lease_id=lease.pk, now=later(hours=1), **usage()
                )
            ]
            * 2
        )

        assert sum(isinstance(r, LeaseAlreadyClosed) for r in results) == 1
        assert LedgerTransfer.objects.filter(reference=f"lease:{lease.pk}:payment").count() == 1
        assert ledger_is_balanced()
