"""Settlement in the ledger: payment by metered usage, fee, refund, penalties; and the ledger's
balance after random sequences of market operations."""

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from auctions.models import Lease
from auctions.services.jobs import job_request_cancel
from auctions.services.leases import (
    lease_accept,
    lease_complete,
    lease_fail,
    lease_poll,
    lease_report_progress,
    lease_sweep,
)
from auctions.services.settlement import (
    LeaseNotCompleted,
    job_refund,
    lease_settle,
    provider_penalise,
    settlement_amounts,
)
from config.errors import DomainError
from market.models import JobRequest, LedgerAccount, LedgerTransfer, Provider
from market.selectors import ledger_is_balanced
from tests.conftest import NOW, later
from tests.factories import ConsumerFactory, ResourceFactory, job_submit
from tests.integration.test_leases import earnings, escrow, funded_job, make_lease, running_lease, usage

pytestmark = pytest.mark.django_db


class TestSettlementAmounts:
    def test_splits_the_escrow_exactly(self):
        hours, charge, provider, platform, refund = settlement_amounts(
            device_seconds=Decimal("5400"),
            unit_price_paid=Decimal("0.8"),
            unit_price_received=Decimal("0.5"),
            escrow=Decimal("10"),
            fee_rate=Decimal("0.05"),
        )

        assert (hours, charge, provider, platform, refund) == (
            Decimal("1.5"),
            Decimal("1.200000"),
            Decimal("0.712500"),
            Decimal("0.487500"),
            Decimal("8.800000"),
        )

    def test_caps_the_charge_at_the_escrow(self):
        _, charge, provider, platform, refund = settlement_amounts(
            device_seconds=Decimal("36000"),
            unit_price_paid=Decimal("0.8"),
            unit_price_received=Decimal("0.5"),
            escrow=Decimal("3"),
            fee_rate=Decimal("0.05"),
        )

        assert (charge, refund) == (Decimal("3"), 0)
        assert provider + platform == charge
        assert provider == Decimal("2.850000")

    @given(
        seconds=st.decimals(min_value=0, max_value=10**7, places=3),
        paid=st.decimals(min_value=Decimal("0.000001"), max_value=1000, places=6),
        share=st.decimals(min_value=0, max_value=1, places=3),
        escrow=st.decimals(min_value=0, max_value=10**6, places=6),
        fee=st.decimals(min_value=0, max_value=1, places=3),
    )
    def test_never_pays_out_more_than_the_escrow_nor_anything_negative(
        self, seconds, paid, share, escrow, fee
    ):
        received = (paid * share).quantize(Decimal("0.000001"))

        _, charge, provider, platform, refund = settlement_amounts(
            device_seconds=seconds,
            unit_price_paid=paid,
            unit_price_received=received,
            escrow=escrow,
            fee_rate=fee,
        )

        assert min(charge, provider, platform, refund) >= 0
        assert charge + refund == escrow
        assert provider + platform == charge


class TestLeaseSettle:
    def test_refuses_a_lease_that_is_not_completed(self):
        lease = running_lease()

        with pytest.raises(LeaseNotCompleted):
            lease_settle(lease=lease, now=NOW)

        assert escrow(lease.job) == Decimal("10")

    def test_settling_again_moves_nothing(self):
        lease = running_lease()
        lease, first = lease_complete(
            provider=lease.provider, lease_id=lease.pk, now=later(hours=1), **usage()
        )
        transfers = LedgerTransfer.objects.filter(job=lease.job).count()

        second = lease_settle(lease=lease, now=later(hours=1, seconds=1))

        assert second == first
        assert LedgerTransfer.objects.filter(job=lease.job).count() == transfers
        assert ledger_is_balanced()

    def test_every_transfer_has_a_unique_reference(self):
        lease = running_lease()

        lease_complete(provider=lease.provider, lease_id=lease.pk, now=later(hours=1), **usage())

        references = set(
            LedgerTransfer.objects.filter(job=lease.job)
            .exclude(kind="HOLD")
            .values_list("reference", flat=True)
        )
        assert references == {
            f"lease:{lease.pk}:payment",
            f"lease:{lease.pk}:fee",
            f"job:{lease.job_id}:refund",
        }


class TestJobRefund:
    def test_returns_the_escrow_once(self):
        job = funded_job()

        assert job_refund(job=job, now=NOW, reason="test") == Decimal("10")
        assert job_refund(job=job, now=NOW, reason="test") == 0

        assert LedgerTransfer.objects.filter(job=job, kind="REFUND").count() == 1
        assert ledger_is_balanced()


class TestProviderPenalise:
    def test_takes_the_penalty_from_earnings_up_to_what_they_hold(self):
        paid = running_lease()
        provider = paid.provider
        lease_complete(provider=provider, lease_id=paid.pk, now=later(hours=1), **usage())  # earns 0.2375
        failed = running_lease(resource=ResourceFactory(provider=provider))

        taken = provider_penalise(provider=provider, lease=failed, now=NOW)

        # due 0.10 × 0.8 × 2 h = 0.16, all covered: one reputation step.
        assert taken == Decimal("0.160000")
        assert earnings(provider) == Decimal("0.077500")
        assert Provider.objects.get(pk=provider.pk).reputation == Decimal("0.95")
        assert LedgerAccount.objects.get(kind="PENALTY").balance == Decimal("0.16")

    def test_caps_at_the_earnings_and_lowers_reputation_for_the_rest(self):
        lease = running_lease()

        taken = provider_penalise(provider=lease.provider, lease=lease, now=NOW)

        assert taken == 0
        assert earnings(lease.provider) == 0
        assert Provider.objects.get(pk=lease.provider_id).reputation == Decimal("0.9")

    def test_reputation_never_goes_below_zero(self):
        lease = running_lease()
        Provider.objects.filter(pk=lease.provider_id).update(reputation=Decimal("0.01"))

        provider_penalise(provider=lease.provider, lease=lease, now=NOW)

        assert Provider.objects.get(pk=lease.provider_id).reputation == 0


class MarketRun:
    """Random operations on a small market, as a clearing round, agents, sweeps and consumers would."""

    def __init__(self):
        self.consumers = [ConsumerFactory(balance=Decimal("50")) for _ in range(2)]
        self.resources = [ResourceFactory() for _ in range(3)]
        self.now = NOW

    def _pick(self, items, seed):
        return items[seed % len(items)] if items else None

    def submit(self, seed):
        consumer = self._pick(self.consumers, seed)
        budget = Decimal(1 + seed % 7)
        if LedgerAccount.objects.get(kind="CONSUMER", user=consumer).balance >= budget:
            job_submit(consumer=consumer, now=self.now, budget=budget, deadline=self.now + timedelta(hours=2))

    def match(self, seed):
        job = self._pick(list(JobRequest.objects.filter(status="QUEUED").order_by("id")), seed)
        if job is None:
            return
        excluded = set(Lease.objects.filter(job=job).values_list("provider_id", flat=True))
        free = [r for r in self.resources if r.provider_id not in excluded]
        resource = self._pick(free, seed)
        if resource is not None:
            paid = Decimal("0.5") + Decimal(seed % 5) / 10
            make_lease(job=job, resource=resource, now=self.now, paid=paid, received=paid - Decimal("0.1"))

    def _lease(self, seed, *statuses):
        return self._pick(list(Lease.objects.filter(status__in=statuses).order_by("id")), seed)

    def poll(self, seed):
        lease = self._lease(seed, "DISPATCHED")
        if lease:
            lease_poll(provider=lease.provider, now=self.now)

    def accept(self, seed):
        lease = self._lease(seed, "DISPATCHED")
        if lease:
            lease_accept(provider=lease.provider, lease_id=lease.pk, now=self.now, simulated=bool(seed % 2))

    def progress(self, seed):
        lease = self._lease(seed, "RUNNING")
        if lease:
            seconds = lease.device_seconds + seed % 900
            lease_report_progress(
                provider=lease.provider,
                lease_id=lease.pk,
                progress=min(1.0, lease.progress + 0.1),
                tokens_in=lease.tokens_in + seed % 100,
                tokens_out=lease.tokens_out + seed % 50,
                device_seconds=seconds,
                now=self.now,
            )

    def complete(self, seed):
        lease = self._lease(seed, "RUNNING", "DISPATCHED", "COMPLETED")
        if lease:
            lease_complete(
                provider=lease.provider,
                lease_id=lease.pk,
                tokens_in=lease.tokens_in,
                tokens_out=lease.tokens_out,
                device_seconds=lease.device_seconds + seed % 20000,
                now=self.now,
            )

    def fail(self, seed):
        lease = self._lease(seed, "RUNNING", "DISPATCHED", "REASSIGNED")
        if lease:
            reason = ("JOB_ERROR", "PROVIDER_FAULT")[seed % 2]
            lease_fail(
                provider=lease.provider, lease_id=lease.pk, reason=reason, detail="random", now=self.now
            )

    def sweep(self, seed):
        lease_sweep(now=self.now)

    def cancel(self, seed):
        job = self._pick(list(JobRequest.objects.order_by("id")), seed)
        if job:
            job_request_cancel(consumer=job.consumer, job_id=job.pk, now=self.now)

    def tick(self, seed):
        self.now += timedelta(seconds=30 * (1 + seed % 8))


OPERATIONS = ["submit", "match", "poll", "accept", "progress", "complete", "fail", "sweep", "cancel", "tick"]


def assert_ledger_sound():
    assert ledger_is_balanced()
    assert not LedgerAccount.objects.exclude(kind="EXTERNAL").filter(balance__lt=0).exists()
    for job in JobRequest.objects.filter(status__in=["COMPLETED", "FAILED", "CANCELLED", "EXPIRED"]):
        assert escrow(job) == 0, job.status
    # Charged once: at most one lease of a job is paid.
    for job_id in JobRequest.objects.values_list("id", flat=True):
        assert LedgerTransfer.objects.filter(job_id=job_id, kind="PAYMENT").count() <= 1


class TestLedgerUnderRandomOperations:
    @hypothesis_settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        steps=st.lists(st.tuples(st.sampled_from(OPERATIONS), st.integers(0, 10**6)), min_size=1, max_size=40)
    )
    def test_the_ledger_balances_after_every_step(self, steps):
        market = MarketRun()

        for name, seed in steps:
            try:
                getattr(market, name)(seed)
            except DomainError:
                pass  # a refused operation is part of the game; it must leave the ledger sound
            assert_ledger_sound()

    def test_a_long_seeded_run_balances_too(self):
        market = MarketRun()
        rng = random.Random(4)

        for _ in range(300):
            try:
                getattr(market, rng.choice(OPERATIONS))(rng.randrange(10**6))
            except DomainError:
                pass
            assert_ledger_sound()

        assert LedgerTransfer.objects.filter(kind="PAYMENT").exists()
