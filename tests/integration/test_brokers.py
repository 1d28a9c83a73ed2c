"""Brokers (MECM's middle tier, issue 12): consented, revocable appointments; a broker trading for
its principals through a real round; the three-way split of every brokered payment."""

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auctions.models import Lease
from auctions.services.broker_fees import broker_split
from auctions.services.leases import lease_accept, lease_complete
from auctions.services.rounds import round_clear, round_open
from auctions.services.settlement import lease_settle
from config.errors import DomainError
from market.broker_selectors import broker_fees_earned, broker_principal_list
from market.models import (
    BrokerAppointment,
    BrokeredJob,
    BrokerFee,
    LedgerAccount,
    LedgerTransfer,
    Resource,
    Role,
)
from market.money import QUANTUM
from market.selectors import ledger_is_balanced
from market.services.brokers import (
    broker_appoint,
    broker_job_submit,
    broker_resource_update,
    broker_revoke,
)
from tests.conftest import NOW, later
from tests.factories import UserFactory, job_spec, job_submit
from tests.integration.test_leases import escrow, usage
from tests.integration.test_rounds import funded_consumer, online_resource

pytestmark = pytest.mark.django_db


def a_broker(name="acme-broker"):
    return UserFactory(username=name, role=Role.BROKER)


def code_of(call) -> str:
    with pytest.raises(DomainError) as error:
        call()
    return error.value.code


class TestAppointments:
    def test_a_consumer_appoints_a_broker_who_lists_it_as_principal(self):
        broker, consumer = a_broker(), funded_consumer()

        appointment = broker_appoint(
            principal=consumer, broker_username=broker.username, fee_rate="0.02", now=NOW
        )

        assert (appointment.side, appointment.fee_rate, appointment.status) == (
            "consumer",
            Decimal("0.02"),
            "ACTIVE",
        )
        assert [a.principal for a in broker_principal_list(broker=broker)] == [consumer]

    def test_refusals_carry_stable_codes(self):
        broker, consumer = a_broker(), funded_consumer()
        other_broker = a_broker("other-broker")
        broker_appoint(principal=consumer, broker_username=broker.username, fee_rate="0.02", now=NOW)

        assert code_of(
            lambda: broker_appoint(principal=consumer, broker_username="nobody", fee_rate="0", now=NOW)
        ) == ("broker_not_found")
        assert code_of(
            lambda: broker_appoint(
                principal=funded_consumer(), broker_username=broker.username, fee_rate="0.9", now=NOW
            )
        ) == ("broker_fee_rate_invalid")
        assert code_of(
            lambda: broker_appoint(
                principal=consumer, broker_username=other_broker.username, fee_rate="0", now=NOW
            )
        ) == ("broker_already_appointed")
        assert code_of(
            lambda: broker_appoint(
                principal=other_broker, broker_username=broker.username, fee_rate="0", now=NOW
            )
        ) == ("broker_principal_role")
        assert code_of(
            lambda: broker_job_submit(
                broker=other_broker, principal_username=consumer.username, spec=job_spec(), now=NOW
            )
        ) == ("broker_not_appointed")

    def test_either_side_revokes_and_the_broker_can_no_longer_act(self):
        broker, consumer = a_broker(), funded_consumer()
        appointment = broker_appoint(
            principal=consumer, broker_username=broker.username, fee_rate="0.02", now=NOW
        )

        revoked = broker_revoke(appointment_id=appointment.pk, by=broker, now=later(minutes=1))

        assert (revoked.status, revoked.revoked_by) == ("REVOKED", broker)
        assert code_of(
            lambda: broker_revoke(appointment_id=appointment.pk, by=consumer, now=later(minutes=2))
        ) == ("broker_appointment_revoked")
        assert code_of(
            lambda: broker_job_submit(
                broker=broker, principal_username=consumer.username, spec=job_spec(), now=NOW
            )
        ) == ("broker_not_appointed")
        again = broker_appoint(
            principal=consumer, broker_username=broker.username, fee_rate="0.03", now=later(minutes=3)
        )
        assert again.status == "ACTIVE"

    def test_a_third_party_cannot_revoke(self):
        broker, consumer = a_broker(), funded_consumer()
        appointment = broker_appoint(
            principal=consumer, broker_username=broker.username, fee_rate="0.02", now=NOW
        )

        assert code_of(
            lambda: broker_revoke(appointment_id=appointment.pk, by=funded_consumer(), now=NOW)
        ) == ("broker_appointment_not_found")
        appointment.refresh_from_db()
        assert appointment.status == BrokerAppointment.Status.ACTIVE


class TestBrokerTradesForPrincipals:
    def test_the_round_clears_the_brokered_trade_and_the_payment_splits_three_ways_balanced(self):
        broker = a_broker()
        consumer = funded_consumer()
        resource = online_resource(ask_per_device_hour=Decimal("0.40"))
        provider_user = resource.provider.user
        broker_appoint(principal=consumer, broker_username=broker.username, fee_rate="0.02", now=NOW)
        broker_appoint(principal=provider_user, broker_username=broker.username, fee_rate="0.05", now=NOW)
        # The broker prices its provider principal's capacity, then bids for its consumer principal.
        broker_resource_update(
            broker=broker,
            principal_username=provider_user.username,
            resource_id=resource.pk,
            ask_per_device_hour=Decimal("0.20"),
        )
        job, created = broker_job_submit(
            broker=broker,
            principal_username=consumer.username,
            spec=job_spec(max_price_per_device_hour=Decimal("1.00"), budget=Decimal("10")),
            now=NOW,
        )

        round_clear(round_id=round_open(now=NOW).pk, now=NOW)
        lease = Lease.objects.get(job=job)
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW)
        lease, settlement = lease_complete(
            provider=lease.provider,
            lease_id=lease.pk,
            now=later(hours=1),
            **usage(device_seconds=Decimal("3600")),
        )

        assert created and job.consumer == consumer
        assert Resource.objects.get(pk=resource.pk).ask_per_device_hour == Decimal("0.20")
        moved = dict(
            LedgerTransfer.objects.filter(job=job)
            .exclude(kind=LedgerTransfer.Kind.HOLD)
            .values_list("reference", "amount")
        )
        paid, received = lease.unit_price_paid, lease.unit_price_received
        assert received >= Decimal("0.20") and paid <= Decimal("1.00")
        charge = paid  # one device-hour
        provider_gross_net = received - (received * Decimal("0.05")).quantize(Decimal("0.000001"))
        provider_fee = (provider_gross_net * Decimal("0.05")).quantize(Decimal("0.000001"))
        consumer_fee = (charge * Decimal("0.02")).quantize(Decimal("0.000001"))
        assert moved[f"lease:{lease.pk}:broker:consumer"] == consumer_fee
        assert moved[f"lease:{lease.pk}:broker:provider"] == provider_fee
        assert moved[f"lease:{lease.pk}:payment"] == provider_gross_net - provider_fee
        assert settlement.broker == consumer_fee + provider_fee
        # The escrow splits exactly: provider + brokers + platform + refund = the hold.
        assert sum(moved.values()) == Decimal("10")
        assert escrow(job) == 0
        assert ledger_is_balanced()
        fees = BrokerFee.objects.filter(lease_id=lease.pk).order_by("fee_rate")
        assert [(f.appointment.side, f.fee_rate) for f in fees] == [
            ("consumer", Decimal("0.02")),
            ("provider", Decimal("0.05")),
        ]
        broker_account = LedgerAccount.objects.get(kind=LedgerAccount.Kind.BROKER, user=broker)
        assert broker_account.balance == consumer_fee + provider_fee
        earned = {row["principal__username"]: row["earned"] for row in broker_fees_earned(broker=broker)}
        assert earned == {consumer.username: consumer_fee, provider_user.username: provider_fee}

    def test_a_revoked_provider_appointment_takes_no_fee_on_later_trades(self):
        broker = a_broker()
        consumer = funded_consumer()
        resource = online_resource(ask_per_device_hour=Decimal("0.40"))
        appointment = broker_appoint(
            principal=resource.provider.user,
            broker_username=broker.username,
            fee_rate="0.05",
            now=NOW - timedelta(hours=2),
        )
        broker_revoke(appointment_id=appointment.pk, by=resource.provider.user, now=NOW - timedelta(hours=1))

        job = job_submit(consumer=consumer, max_price_per_device_hour=Decimal("1.00"))

        round_clear(round_id=round_open(now=NOW).pk, now=NOW)
        lease = Lease.objects.get(job=job)
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW)
        lease, settlement = lease_complete(
            provider=lease.provider, lease_id=lease.pk, now=later(hours=1), **usage()
        )

        assert settlement.broker == 0
        assert not LedgerTransfer.objects.filter(kind=LedgerTransfer.Kind.BROKER_FEE).exists()
        assert ledger_is_balanced()


class TestBrokeredSettlementEdges:
    def _settled_brokered_job(self, *, revoke_before_settling: bool):
        broker = a_broker()
        consumer = funded_consumer()
        online_resource(ask_per_device_hour=Decimal("0.40"))
        appointment = broker_appoint(
            principal=consumer, broker_username=broker.username, fee_rate="0.10", now=NOW
        )
        job, _ = broker_job_submit(
            broker=broker, principal_username=consumer.username, spec=job_spec(budget=Decimal("10")), now=NOW
        )
        round_clear(round_id=round_open(now=NOW).pk, now=NOW)
        lease = Lease.objects.get(job=job)
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW)
        if revoke_before_settling:
            broker_revoke(appointment_id=appointment.pk, by=consumer, now=NOW)
        lease, settlement = lease_complete(
            provider=lease.provider,
            lease_id=lease.pk,
            now=later(hours=1),
            **usage(device_seconds=Decimal("3600")),
        )
        return broker, job, lease, settlement

    def test_a_job_placed_before_the_revocation_still_pays_its_broker(self):
        broker, job, lease, settlement = self._settled_brokered_job(revoke_before_settling=True)

        fee = LedgerTransfer.objects.get(reference=f"lease:{lease.pk}:broker:consumer")
        assert fee.amount == (lease.unit_price_paid * Decimal("0.10")).quantize(Decimal("0.000001"))
        assert settlement.broker == fee.amount
        assert ledger_is_balanced()

    def test_settling_again_moves_nothing_and_answers_the_same_split(self):
        broker, job, lease, settlement = self._settled_brokered_job(revoke_before_settling=False)
        transfers = LedgerTransfer.objects.filter(job=job).count()

        again = lease_settle(lease=lease, now=later(hours=2))

        assert LedgerTransfer.objects.filter(job=job).count() == transfers
        assert BrokerFee.objects.filter(lease_id=lease.pk).count() == 1
        assert (again.charge, again.provider_net, again.platform, again.refund, again.broker) == (
            settlement.charge,
            settlement.provider_net,
            settlement.platform,
            settlement.refund,
            settlement.broker,
        )


class TestBrokerJobIdempotency:
    def test_a_retry_answers_the_same_job_and_the_principals_own_key_is_refused(self):
        broker, consumer = a_broker(), funded_consumer()
        online_resource()
        broker_appoint(principal=consumer, broker_username=broker.username, fee_rate="0.02", now=NOW)
        own = job_submit(consumer=consumer, idempotency_key="mine")

        first, created = broker_job_submit(
            broker=broker,
            principal_username=consumer.username,
            spec=job_spec(),
            now=NOW,
            idempotency_key="k1",
        )
        again, created_again = broker_job_submit(
            broker=broker,
            principal_username=consumer.username,
            spec=job_spec(),
            now=NOW,
            idempotency_key="k1",
        )
        refused = code_of(
            lambda: broker_job_submit(
                broker=broker,
                principal_username=consumer.username,
                spec=job_spec(),
                now=NOW,
                idempotency_key="mine",
            )
        )

        assert (created, created_again, again.pk) == (True, False, first.pk)
        assert refused == "idempotency_key_reused"
        assert not BrokeredJob.objects.filter(job=own).exists()


class TestBrokerSplit:
    @given(
        charge=st.decimals(min_value=0, max_value=10**6, places=6),
        provider_net=st.decimals(min_value=0, max_value=10**6, places=6),
        refund=st.decimals(min_value=0, max_value=10**6, places=6),
        consumer_rate=st.none() | st.decimals(min_value=0, max_value=Decimal("0.5"), places=6),
        provider_rate=st.none() | st.decimals(min_value=0, max_value=Decimal("0.5"), places=6),
    )
    def test_moves_money_between_parts_without_creating_or_losing_any(
        self, charge, provider_net, refund, consumer_rate, provider_rate
    ):
        net, back, for_consumer, for_provider = broker_split(
            charge=charge,
            provider_net=provider_net,
            refund=refund,
            consumer_rate=consumer_rate,
            provider_rate=provider_rate,
        )

        assert net + back + for_consumer + for_provider == provider_net + refund
        assert min(net, back, for_consumer, for_provider) >= 0
        assert all(x == x.quantize(QUANTUM) for x in (net, back, for_consumer, for_provider))
        assert consumer_rate is not None or for_consumer == 0
        assert provider_rate is not None or for_provider == 0
