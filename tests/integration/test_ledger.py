"""The ledger against the database: deposits, transfers, and balance after any sequence of use."""

import random
from decimal import Decimal

import pytest

from auctions.services.jobs import job_request_cancel
from config.errors import Conflict, InvalidInput
from market.models import JobRequest, LedgerAccount, LedgerTransfer
from market.selectors import balance_get, ledger_is_balanced
from market.services.jobs import job_request_submit, job_request_transition
from market.services.ledger import InsufficientFunds, ledger_deposit, ledger_house_account, ledger_transfer
from tests.conftest import NOW, run_together
from tests.factories import ConsumerFactory, ProviderUserFactory, job_spec

pytestmark = pytest.mark.django_db


class TestLedgerDeposit:
    def test_credits_the_consumer_from_the_outside_world(self):
        consumer = ConsumerFactory()

        transfer = ledger_deposit(user=consumer, amount=Decimal("12.5"), now=NOW, reference="bank:1")

        assert transfer.kind == LedgerTransfer.Kind.DEPOSIT
        assert transfer.debit.kind == LedgerAccount.Kind.EXTERNAL
        assert transfer.credit == LedgerAccount.objects.get(user=consumer, kind=LedgerAccount.Kind.CONSUMER)
        assert balance_get(user=consumer)["available"] == Decimal("12.5")
        assert ledger_is_balanced()

    def test_is_idempotent_by_reference(self):
        consumer = ConsumerFactory()
        first = ledger_deposit(user=consumer, amount=Decimal("10"), now=NOW, reference="bank:2")

        again = ledger_deposit(user=consumer, amount=Decimal("10"), now=NOW, reference="bank:2")

        assert again.pk == first.pk
        assert LedgerTransfer.objects.filter(reference="bank:2").count() == 1
        assert balance_get(user=consumer)["available"] == Decimal("10")

    @pytest.mark.parametrize("other", ["amount", "user"])
    def test_refuses_a_reference_reused_for_another_deposit(self, other):
        consumer = ConsumerFactory()
        ledger_deposit(user=consumer, amount=Decimal("10"), now=NOW, reference="bank:3")
        user = ConsumerFactory() if other == "user" else consumer
        amount = Decimal("11") if other == "amount" else Decimal("10")

        with pytest.raises(Conflict):
            ledger_deposit(user=user, amount=amount, now=NOW, reference="bank:3")

        assert balance_get(user=consumer)["available"] == Decimal("10")
        assert balance_get(user=user)["available"] == Decimal("10" if user == consumer else "0")

    @pytest.mark.parametrize("amount", [Decimal("0"), Decimal("-1"), Decimal("1e18"), Decimal("0.0000004")])
    def test_refuses_an_amount_out_of_range(self, amount):
        consumer = ConsumerFactory()

        with pytest.raises(InvalidInput):
            ledger_deposit(user=consumer, amount=amount, now=NOW)

        assert not LedgerAccount.objects.filter(user=consumer).exists()

    def test_refuses_a_deposit_to_a_provider(self):
        provider = ProviderUserFactory()

        with pytest.raises(InvalidInput):
            ledger_deposit(user=provider, amount=Decimal("10"), now=NOW)

        assert not LedgerAccount.objects.filter(user=provider).exists()

    def test_rounds_the_amount_to_the_quantum(self):
        consumer = ConsumerFactory()

        transfer = ledger_deposit(user=consumer, amount=Decimal("1.0000005"), now=NOW)

        assert transfer.amount == Decimal("1.000000")


class TestLedgerTransfer:
    def test_refuses_to_overdraw_and_moves_nothing(self):
        consumer = ConsumerFactory(balance=Decimal("3"))
        account = LedgerAccount.objects.get(user=consumer)
        fees = ledger_house_account(kind=LedgerAccount.Kind.PLATFORM_FEE)

        with pytest.raises(InsufficientFunds):
            ledger_transfer(debit=account, credit=fees, amount=Decimal("3.000001"), kind="FEE", now=NOW)

        account.refresh_from_db()
        assert account.balance == Decimal("3")
        assert not LedgerTransfer.objects.filter(debit=account).exists()

    @pytest.mark.parametrize("amount", [Decimal("0"), Decimal("-5")])
    def test_refuses_a_non_positive_amount(self, amount):
        consumer = ConsumerFactory(balance=Decimal("3"))
        account = LedgerAccount.objects.get(user=consumer)
        fees = ledger_house_account(kind=LedgerAccount.Kind.PLATFORM_FEE)

        with pytest.raises(InvalidInput):
            ledger_transfer(debit=account, credit=fees, amount=amount, kind="FEE", now=NOW)

        assert not LedgerTransfer.objects.filter(debit=account).exists()

    def test_has_one_house_account_per_kind(self):
        first = ledger_house_account(kind=LedgerAccount.Kind.PLATFORM_FEE)

        second = ledger_house_account(kind=LedgerAccount.Kind.PLATFORM_FEE)

        assert first.pk == second.pk


class TestLedgerBalance:
    @pytest.mark.parametrize("seed", range(6))
    def test_stays_balanced_through_any_sequence_of_deposits_submits_and_cancels(self, seed):
        rng = random.Random(seed)
        consumers = [ConsumerFactory() for _ in range(3)]
        deposited = {c.pk: Decimal(0) for c in consumers}
        jobs: list[JobRequest] = []

        for step in range(40):
            consumer = rng.choice(consumers)
            action = rng.choice(["deposit", "submit", "submit", "cancel", "dispatch"])
            if action == "deposit":
                amount = Decimal(rng.randint(1, 5000)) / 100
                ledger_deposit(user=consumer, amount=amount, now=NOW, reference=f"s{seed}:{step}")
                deposited[consumer.pk] += amount
            elif action == "submit":
                budget = Decimal(rng.randint(1, 3000)) / 100
                try:
                    job, _ = job_request_submit(consumer=consumer, spec=job_spec(budget=budget), now=NOW)
                    jobs.append(job)
                except InsufficientFunds:
                    pass
            elif jobs:
                job = rng.choice(jobs)
                if action == "cancel":
                    try:
                        job_request_cancel(consumer=job.consumer, job_id=job.pk, now=NOW)
                    except Conflict:
                        pass
                else:
                    job_request_transition(
                        job=job, from_statuses=(JobRequest.Status.QUEUED,), to="DISPATCHED", now=NOW
                    )
            assert ledger_is_balanced(), f"unbalanced after step {step} ({action})"

        for consumer in consumers:
            balance = balance_get(user=consumer)
            assert balance["available"] + balance["held_in_escrow"] == deposited[consumer.pk]
            assert balance["available"] >= 0
        for job in jobs:
            job.refresh_from_db()
            escrow = LedgerAccount.objects.get(job=job).balance
            assert escrow == (0 if job.status == JobRequest.Status.CANCELLED else job.budget)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
class TestConcurrentDeposits:
    def test_one_reference_deposited_at_once_from_many_workers_credits_once(self, require_postgres):
        consumer = ConsumerFactory()

        results = run_together(
            6, lambda i: ledger_deposit(user=consumer, amount=Decimal("7"), now=NOW, reference="chain:0xabc")
        )

        assert [r for r in results if isinstance(r, BaseException)] == []
        assert len({transfer.pk for transfer in results}) == 1
        assert balance_get(user=consumer)["available"] == Decimal("7")
        assert ledger_is_balanced()
