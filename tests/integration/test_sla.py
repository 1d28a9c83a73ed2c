"""SLA terms that bite (auctions.services.sla): a job's own terms, validated, copied to the lease a
round writes, latency measured by probes, and breaches charged at settlement in the ledger."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import override_settings

from auctions.models import JobTerms, Lease, LeaseSla
from auctions.services.leases import lease_accept, lease_complete, lease_sweep
from auctions.services.rounds import round_clear, round_open, round_replay
from auctions.services.sla import (
    ProbeExpired,
    ProbeInvalid,
    SlaDeadlineInvalid,
    SlaLatencyInvalid,
    SlaQualityInvalid,
    SlaRateInvalid,
    SlaTermsLocked,
    SlaTermUnknown,
    job_terms_set,
    lease_sla_quality,
    probe_issue,
    probe_record,
)
from market.models import LedgerAccount, LedgerTransfer, Provider
from market.selectors import ledger_is_balanced
from market.services.ledger import ledger_account_for_user, ledger_transfer
from tests.conftest import NOW, later
from tests.factories import ConsumerFactory, ProviderFactory, ResourceFactory, job_submit

pytestmark = pytest.mark.django_db

TERMS = {
    "latency_p95_ms": 100,
    "complete_by": (NOW + timedelta(hours=2)).isoformat(),
    "min_quality": "0.9",
    "latency_penalty_rate": "0.25",
    "deadline_penalty_rate": "0.5",
}


def online_resource(**fields):
    provider = ProviderFactory(region="eu-west")
    Provider.objects.filter(pk=provider.pk).update(last_heartbeat_at=NOW)
    fields.setdefault("price_floor", Decimal("0"))
    return ResourceFactory(provider=provider, **fields)


def matched_lease(*, terms=None, asks=("0.10",)) -> Lease:
    """One job with `terms`, cleared by a real round against resources asking `asks`."""
    resources = [online_resource(ask_per_device_hour=Decimal(a), device_count=1) for a in asks]
    consumer = ConsumerFactory(balance=Decimal("100"))
    job = job_submit(consumer=consumer, budget=Decimal("10"), requested_device_count=1)
    if terms is not None:
        job_terms_set(consumer=consumer, job_id=job.pk, data=terms, now=NOW)
    round_clear(round_id=round_open(now=NOW).pk, now=NOW)
    lease = Lease.objects.filter(job=job).first()
    assert lease is not None, [r.pk for r in resources]
    return lease


def probe(provider, *, at, rtt_ms: float) -> dict:
    token = probe_issue(provider=provider, now=at)
    return probe_record(provider=provider, token=token, now=at + timedelta(milliseconds=rtt_ms))


def earnings(provider) -> Decimal:
    account = LedgerAccount.objects.filter(kind=LedgerAccount.Kind.PROVIDER, user=provider.user).first()
    return account.balance if account else Decimal(0)


class TestJobTermsSet:
    def test_states_the_terms_of_a_queued_job(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = job_submit(consumer=consumer)

        row = job_terms_set(consumer=consumer, job_id=job.pk, data=TERMS, now=NOW)

        assert (row.latency_p95_ms, row.min_quality, row.latency_penalty_rate) == (
            100,
            Decimal("0.9000"),
            Decimal("0.2500"),
        )
        assert row.quality_penalty_rate is None

    @pytest.mark.parametrize(
        ("data", "error"),
        [
            ({"latency_p95_ms": 0}, SlaLatencyInvalid),
            ({"latency_p95_ms": "fast"}, SlaLatencyInvalid),
            ({"complete_by": "tomorrow"}, SlaDeadlineInvalid),
            ({"complete_by": (NOW - timedelta(hours=1)).isoformat()}, SlaDeadlineInvalid),
            ({"complete_by": (NOW + timedelta(days=3)).isoformat()}, SlaDeadlineInvalid),
            ({"min_quality": "1.5"}, SlaQualityInvalid),
            ({"latency_penalty_rate": -1}, SlaRateInvalid),
            ({"deadline_penalty_rate": "NaN"}, SlaRateInvalid),
            ({"refund_everything": True}, SlaTermUnknown),
        ],
    )
    def test_refuses_bad_terms_with_a_stable_code_and_writes_nothing(self, data, error):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = job_submit(consumer=consumer)

        with pytest.raises(error) as raised:
            job_terms_set(consumer=consumer, job_id=job.pk, data=data, now=NOW)

        assert raised.value.code.startswith("sla_")
        assert not JobTerms.objects.filter(job=job).exists()

    def test_refuses_to_change_the_terms_of_a_matched_job(self):
        lease = matched_lease()

        with pytest.raises(SlaTermsLocked):
            job_terms_set(consumer=lease.job.consumer, job_id=lease.job_id, data=TERMS, now=NOW)


class TestTermsCopiedToTheLease:
    def test_the_round_copies_the_stated_terms_with_every_rate_resolved(self):
        lease = matched_lease(terms=TERMS)

        terms = LeaseSla.objects.get(lease=lease).terms

        assert terms["latency_p95_ms"] == 100
        assert terms["min_quality"] == "0.9000"
        assert (terms["latency_penalty_rate"], terms["deadline_penalty_rate"]) == ("0.2500", "0.5000")
        assert terms["quality_penalty_rate"] == "0.10"  # unset: the global CPX_SLA_PENALTY_RATE
        assert terms["stated"] is True

    def test_a_job_without_stated_terms_carries_its_latency_sla_and_deadline(self):
        lease = matched_lease()

        terms = LeaseSla.objects.get(lease=lease).terms

        assert terms["stated"] is False
        assert terms["complete_by"] == lease.job.deadline.isoformat()


class TestProbes:
    def test_records_the_rtt_on_the_providers_running_leases(self):
        lease = matched_lease(terms=TERMS)
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW)

        for i, rtt in enumerate([40, 60, 80]):
            probe(lease.provider, at=later(seconds=10 * i), rtt_ms=rtt)

        row = LeaseSla.objects.get(lease=lease)
        assert (row.probes, row.rtt_ms, row.p50_ms, row.p95_ms) == (3, [40.0, 60.0, 80.0], 60.0, 80.0)

    def test_an_echo_replayed_counts_once(self):
        lease = matched_lease()
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW)
        token = probe_issue(provider=lease.provider, now=later(seconds=1))
        probe_record(provider=lease.provider, token=token, now=later(seconds=2))

        again = probe_record(provider=lease.provider, token=token, now=later(seconds=3))

        assert again["leases"] == []
        assert LeaseSla.objects.get(lease=lease).probes == 1

    def test_refuses_a_forged_or_anothers_token(self):
        lease = matched_lease()
        other = ProviderFactory()
        token = probe_issue(provider=other, now=NOW)
        sent = token.split(".")[0]

        for forged in (token, f"{int(sent) - 50_000}.{token.split('.')[1]}", "nonsense"):
            with pytest.raises(ProbeInvalid):
                probe_record(provider=lease.provider, token=forged, now=later(seconds=1))

    @override_settings(CPX_SLA_PROBE_MAX_AGE_S=5)
    def test_refuses_a_stale_echo(self):
        provider = ProviderFactory()
        token = probe_issue(provider=provider, now=NOW)

        with pytest.raises(ProbeExpired):
            probe_record(provider=provider, token=token, now=later(seconds=6))


class TestBreachesAtSettlement:
    def complete(self, lease, *, at):
        return lease_complete(
            provider=lease.provider,
            lease_id=lease.pk,
            tokens_in=10,
            tokens_out=10,
            device_seconds=Decimal("1800"),
            now=at,
        )

    def test_a_lease_within_its_terms_completes_clean(self):
        lease = matched_lease(terms=TERMS)
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW)
        for i in range(10):
            probe(lease.provider, at=later(seconds=10 * i), rtt_ms=50)

        lease, _ = self.complete(lease, at=later(hours=1))

        assert lease.close_reason == Lease.CloseReason.COMPLETED
        assert LeaseSla.objects.get(lease=lease).breaches == []
        assert not LedgerTransfer.objects.filter(reference=f"lease:{lease.pk}:sla").exists()

    def test_measured_latency_and_a_late_finish_are_charged_to_the_provider_for_the_consumer(self):
        lease = matched_lease(terms=TERMS)
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW)
        for i in range(10):
            probe(lease.provider, at=later(seconds=10 * i), rtt_ms=50 if i < 5 else 400)
        reputation = lease.provider.reputation

        lease, settlement = self.complete(lease, at=later(hours=3))

        row = LeaseSla.objects.get(lease=lease)
        assert [b["kind"] for b in row.breaches] == ["latency", "deadline"]
        assert row.breaches[0]["measured"] == 400.0
        assert lease.close_reason == Lease.CloseReason.SLA_BREACH
        assert lease.status == Lease.Status.COMPLETED
        # 0.25 + 0.5 of the charge, capped at what the provider's earnings hold.
        due = min(settlement.charge * Decimal("0.75"), settlement.provider_net).quantize(Decimal("0.000001"))
        penalty = LedgerTransfer.objects.get(reference=f"lease:{lease.pk}:sla")
        assert penalty.amount == due == row.penalty
        assert penalty.credit.user_id == lease.job.consumer_id
        assert earnings(lease.provider) == settlement.provider_net - due
        provider = Provider.objects.get(pk=lease.provider_id)
        assert provider.reputation == reputation - 2 * Decimal("0.05")
        assert ledger_is_balanced()

    def test_a_provider_whose_reputation_reaches_zero_is_suspended(self):
        lease = matched_lease(terms=TERMS)
        Provider.objects.filter(pk=lease.provider_id).update(reputation=Decimal("0.05"))
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW)

        self.complete(lease, at=later(hours=3))

        provider = Provider.objects.get(pk=lease.provider_id)
        assert (provider.reputation, provider.status) == (0, Provider.Status.SUSPENDED)

    def test_a_verified_quality_below_the_minimum_is_charged_once(self):
        lease = matched_lease(terms=TERMS)
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW)
        lease, settlement = self.complete(lease, at=later(hours=1))

        first = lease_sla_quality(lease=lease, checked=4, mismatched=1, now=later(hours=2))
        again = lease_sla_quality(lease=lease, checked=4, mismatched=1, now=later(hours=2))

        assert [b["kind"] for b in first] == ["quality"] and first[0]["measured"] == 0.75
        assert LedgerTransfer.objects.filter(reference=f"lease:{lease.pk}:sla:quality").count() == 1
        row = LeaseSla.objects.get(lease=lease)
        assert row.quality == Decimal("0.7500")
        assert len(again) == 1 and len(row.breaches) == 1
        assert ledger_is_balanced()


class TestReputationInClearing:
    def clear_two_sellers(self):
        """Two one-device sellers; the cheaper ask has a poor record (reputation 0.2)."""
        poor = online_resource(ask_per_device_hour=Decimal("0.10"), device_count=1)
        good = online_resource(ask_per_device_hour=Decimal("0.12"), device_count=1)
        Provider.objects.filter(pk=poor.provider_id).update(reputation=Decimal("0.2"))
        consumer = ConsumerFactory(balance=Decimal("100"))
        for price in ("1.00", "0.90", "0.80"):
            job_submit(
                consumer=consumer,
                budget=Decimal("10"),
                requested_device_count=1,
                max_price_per_device_hour=Decimal(price),
            )
        round_obj = round_clear(round_id=round_open(now=NOW).pk, now=NOW)
        return round_obj, poor, good, list(Lease.objects.filter(round=round_obj))

    @override_settings(CPX_SLA_QUALITY_WEIGHT=0.0)
    def test_without_the_weight_the_cheaper_ask_wins(self):
        round_obj, poor, _, leases = self.clear_two_sellers()

        assert [lease.resource_id for lease in leases] == [poor.pk]
        assert '"quality"' not in round_obj.snapshot

    @override_settings(CPX_SLA_QUALITY_WEIGHT=0.5)
    def test_a_poor_record_raises_the_effective_ask_and_the_better_record_wins(self):
        # 0.10 × (1 + 0.5 × 0.8) = 0.14 > 0.12
        round_obj, poor, good, leases = self.clear_two_sellers()

        assert [lease.resource_id for lease in leases] == [good.pk]
        # The reputation and its factor are in the replayable snapshot.
        (quality,) = [book["quality"] for book in json.loads(round_obj.snapshot) if "quality" in book]
        assert quality == {
            "weight": 0.5,
            "reputation": {f"r{poor.pk}": 0.2},
            "factor": {f"r{poor.pk}": 1.4},
            "reported_ask": {f"r{poor.pk}": 0.1},
        }
        assert leases[0].unit_price_received <= leases[0].unit_price_paid
        assert round_replay(round_id=round_obj.pk)["match"]


def ledger_deposit_earnings(provider, amount: Decimal) -> None:
    """Earnings for the provider, paid from a funded consumer's balance (a balanced transfer)."""
    payer = ConsumerFactory(balance=Decimal("100"))
    ledger_transfer(
        debit=ledger_account_for_user(user=payer, kind=LedgerAccount.Kind.CONSUMER),
        credit=ledger_account_for_user(user=provider.user, kind=LedgerAccount.Kind.PROVIDER),
        amount=amount,
        kind=LedgerTransfer.Kind.PAYMENT,
        now=NOW,
    )


class TestContractRateOnFailover:
    def test_a_lease_failed_over_past_its_deadline_pays_its_contracts_deadline_rate(self):
        lease = matched_lease(terms={"deadline_penalty_rate": "0.5"})
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW)
        # Earnings to pay from: another lease of the provider, completed and settled.
        ledger_deposit_earnings(lease.provider, Decimal("5"))

        lease_sweep(now=lease.job.deadline + timedelta(seconds=1))

        lease.refresh_from_db()
        assert lease.close_reason == Lease.CloseReason.DEADLINE
        penalty = LedgerTransfer.objects.get(reference=f"lease:{lease.pk}:penalty")
        expected = (Decimal("0.5") * lease.unit_price_paid * lease.expected_device_hours).quantize(
            Decimal("0.000001")
        )
        assert penalty.amount == expected
        assert ledger_is_balanced()


class TestReputationInGangs:
    @override_settings(CPX_SLA_QUALITY_WEIGHT=0.5)
    def test_a_gang_member_with_a_poor_record_is_paid_its_cost_deflated(self):
        from tests.integration.test_gangs import FRANKFURT, PARIS, big_job, clear_round, consumer_gpus

        paris, frankfurt = consumer_gpus(PARIS), consumer_gpus(FRANKFURT)
        Provider.objects.filter(pk=paris.provider_id).update(reputation=Decimal("0.6"))  # f = 1.2
        job = big_job(ConsumerFactory(balance=Decimal("10000")))

        round_obj = clear_round()

        leases = {lease.resource_id: lease for lease in Lease.objects.filter(job=job)}
        assert set(leases) == {paris.pk, frankfurt.pk}
        # Each member's receipt is its cost at its effective ask, divided by its factor: the ask.
        assert leases[paris.pk].unit_price_received == Decimal("0.400000")
        assert leases[frankfurt.pk].unit_price_received == Decimal("0.400000")
        assert leases[paris.pk].unit_price_paid >= leases[paris.pk].unit_price_received
        assert round_replay(round_id=round_obj.pk)["match"]
