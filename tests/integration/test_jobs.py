"""Job services against the database: sizing, escrow holds, cancel, idempotency, compare-and-set."""

from decimal import Decimal

import pytest

from auctions.services.jobs import job_request_cancel
from config.errors import Conflict, InvalidInput, NotFound
from market.models import JobRequest, LedgerAccount, LedgerTransfer
from market.selectors import balance_get, ledger_is_balanced
from market.services import jobs as job_services
from market.services.jobs import (
    IdempotencyKeyReused,
    job_request_submit,
    job_request_transition,
)
from market.services.ledger import InsufficientFunds, ledger_deposit
from tests.conftest import NOW, later, run_together
from tests.factories import ConsumerFactory, job_spec, job_submit

pytestmark = pytest.mark.django_db

Status = JobRequest.Status


def consumer_account(user) -> LedgerAccount:
    return LedgerAccount.objects.get(kind=LedgerAccount.Kind.CONSUMER, user=user)


class TestJobSubmit:
    def test_holds_the_budget_from_the_balance_in_the_jobs_escrow(self):
        consumer = ConsumerFactory(balance=Decimal("100"))

        job, created = job_request_submit(consumer=consumer, spec=job_spec(budget=Decimal("30")), now=NOW)

        assert created is True
        assert job.status == Status.QUEUED
        assert consumer_account(consumer).balance == Decimal("70")
        assert LedgerAccount.objects.get(kind=LedgerAccount.Kind.ESCROW, job=job).balance == Decimal("30")
        hold = LedgerTransfer.objects.get(job=job)
        assert (hold.kind, hold.amount) == (LedgerTransfer.Kind.HOLD, Decimal("30"))
        assert (hold.debit, hold.credit.job_id) == (consumer_account(consumer), job.pk)

    def test_queues_the_job_in_the_database_not_only_in_memory(self):
        consumer = ConsumerFactory(balance=Decimal("100"))

        job = job_submit(consumer=consumer)

        job.refresh_from_db()
        assert job.status == Status.QUEUED

    def test_sizes_the_job_from_its_model(self):
        consumer = ConsumerFactory(balance=Decimal("100"))

        job = job_submit(consumer=consumer, params_billion=Decimal("70"), quant_bits=16)

        assert job.sizing["weights_gb"] == pytest.approx(140.0)
        assert job.device_count == job.sizing["device_count"] >= 2
        assert job.memory_per_device_gib == Decimal(str(job.sizing["memory_per_device_gib"]))

    def test_keeps_the_memory_and_devices_the_consumer_states(self):
        consumer = ConsumerFactory(balance=Decimal("100"))

        job = job_submit(
            consumer=consumer, requested_memory_per_device_gib=Decimal("40.00"), requested_device_count=4
        )

        assert (job.memory_per_device_gib, job.device_count) == (Decimal("40.00"), 4)

    def test_puts_hold_and_job_in_one_transaction(self, monkeypatch):
        consumer = ConsumerFactory(balance=Decimal("100"))

        def fail(**kwargs):
            raise RuntimeError("crash between the hold and the queueing")

        monkeypatch.setattr(job_services, "job_request_transition", fail)
        with pytest.raises(RuntimeError):
            job_request_submit(consumer=consumer, spec=job_spec(), now=NOW)

        assert not JobRequest.objects.filter(consumer=consumer).exists()
        assert not LedgerAccount.objects.filter(job__consumer=consumer).exists()
        assert consumer_account(consumer).balance == Decimal("100")
        assert LedgerTransfer.objects.filter(debit__user=consumer).count() == 0

    def test_refuses_an_unfunded_job_and_writes_nothing(self):
        consumer = ConsumerFactory(balance=Decimal("5"))

        with pytest.raises(InsufficientFunds) as error:
            job_request_submit(consumer=consumer, spec=job_spec(budget=Decimal("10")), now=NOW)

        assert error.value.code == "insufficient_funds"
        assert not JobRequest.objects.filter(consumer=consumer).exists()
        assert not LedgerAccount.objects.filter(job__consumer=consumer).exists()
        assert not LedgerTransfer.objects.filter(kind=LedgerTransfer.Kind.HOLD, debit__user=consumer).exists()
        assert consumer_account(consumer).balance == Decimal("5")
        assert ledger_is_balanced()

    def test_refuses_a_consumer_without_any_account_and_writes_nothing(self):
        consumer = ConsumerFactory()

        with pytest.raises(InsufficientFunds):
            job_request_submit(consumer=consumer, spec=job_spec(), now=NOW, idempotency_key="first")

        assert not JobRequest.objects.filter(consumer=consumer).exists()
        assert not LedgerAccount.objects.filter(user=consumer).exists()

    def test_lets_a_refused_key_be_retried_once_funded(self):
        consumer = ConsumerFactory(balance=Decimal("5"))
        spec = job_spec(budget=Decimal("10"))
        with pytest.raises(InsufficientFunds):
            job_request_submit(consumer=consumer, spec=spec, now=NOW, idempotency_key="retry-me")

        ledger_deposit(user=consumer, amount=Decimal("5"), now=NOW)
        job, created = job_request_submit(consumer=consumer, spec=spec, now=NOW, idempotency_key="retry-me")

        assert created is True
        assert consumer_account(consumer).balance == Decimal("0")

    @pytest.mark.parametrize(
        ("overrides", "field"),
        [
            ({"deadline": NOW}, "deadline"),
            ({"workload_tokens": None}, "workload_tokens"),
            ({"kind": JobRequest.Kind.TRAINING}, "workload_device_hours"),
            ({"budget": Decimal("1000000.000001")}, "budget"),
            ({"params_billion": Decimal("0")}, "sizing"),
            (
                {
                    "kind": JobRequest.Kind.TRAINING,
                    "workload_device_hours": Decimal("1"),
                    "params_billion": Decimal("100000"),
                    "context_length": 10_000_000,
                    "batch_size": 100_000,
                },
                "sizing",
            ),
        ],
        ids=["deadline-passed", "no-tokens", "no-hours", "over-cap", "zero-params", "beyond-any-device"],
    )
    def test_refuses_an_invalid_job_and_writes_nothing(self, overrides, field):
        consumer = ConsumerFactory(balance=Decimal("2000000"))

        with pytest.raises(InvalidInput) as error:
            job_request_submit(consumer=consumer, spec=job_spec(**overrides), now=NOW)

        assert error.value.extra["field"] == field
        assert not JobRequest.objects.filter(consumer=consumer).exists()
        assert consumer_account(consumer).balance == Decimal("2000000")


class TestJobSubmitIdempotency:
    def test_returns_the_same_job_for_the_same_key_and_spec(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        first, _ = job_request_submit(consumer=consumer, spec=job_spec(), now=NOW, idempotency_key="k-1")

        again, created = job_request_submit(
            consumer=consumer, spec=job_spec(), now=later(seconds=5), idempotency_key="k-1"
        )

        assert created is False
        assert again.pk == first.pk
        assert LedgerTransfer.objects.filter(job=first, kind=LedgerTransfer.Kind.HOLD).count() == 1
        assert consumer_account(consumer).balance == Decimal("90")

    def test_refuses_the_same_key_with_another_spec(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        first = job_submit(consumer=consumer, idempotency_key="k-1")

        with pytest.raises(IdempotencyKeyReused) as error:
            job_request_submit(
                consumer=consumer, spec=job_spec(budget=Decimal("11")), now=NOW, idempotency_key="k-1"
            )

        assert error.value.code == "idempotency_key_reused"
        assert error.value.status == 409
        assert list(JobRequest.objects.filter(consumer=consumer)) == [first]

    def test_scopes_keys_to_the_consumer(self):
        alice = ConsumerFactory(balance=Decimal("100"))
        bob = ConsumerFactory(balance=Decimal("100"))

        alices = job_submit(consumer=alice, idempotency_key="shared")
        bobs = job_submit(consumer=bob, idempotency_key="shared")

        assert alices.pk != bobs.pk
        assert (alices.consumer, bobs.consumer) == (alice, bob)

    def test_without_a_key_every_submission_is_a_new_job(self):
        consumer = ConsumerFactory(balance=Decimal("100"))

        first = job_submit(consumer=consumer)
        second = job_submit(consumer=consumer)

        assert first.pk != second.pk
        assert consumer_account(consumer).balance == Decimal("80")


class TestJobCancel:
    def test_releases_the_escrow_to_the_balance(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = job_submit(consumer=consumer, budget=Decimal("25"))

        cancelled = job_request_cancel(consumer=consumer, job_id=job.pk, now=later(minutes=1))

        assert (cancelled.status, cancelled.close_reason) == (Status.CANCELLED, "OWNER")
        assert consumer_account(consumer).balance == Decimal("100")
        assert LedgerAccount.objects.get(job=job).balance == Decimal("0")
        release = LedgerTransfer.objects.get(job=job, kind=LedgerTransfer.Kind.RELEASE)
        assert release.amount == Decimal("25")
        assert balance_get(user=consumer)["held_in_escrow"] == Decimal("0")

    @pytest.mark.parametrize("status", [Status.QUEUED, Status.MATCHED])
    def test_is_allowed_before_dispatch(self, status):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = job_submit(consumer=consumer)
        job_request_transition(job=job, from_statuses=(Status.QUEUED,), to=status, now=NOW)

        cancelled = job_request_cancel(consumer=consumer, job_id=job.pk, now=NOW)

        assert cancelled.status == Status.CANCELLED

    @pytest.mark.parametrize(
        "status", [Status.DISPATCHED, Status.RUNNING, Status.COMPLETED, Status.FAILED, Status.EXPIRED]
    )
    def test_is_refused_after_dispatch_and_keeps_the_escrow(self, status):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = job_submit(consumer=consumer, budget=Decimal("25"))
        assert job_request_transition(job=job, from_statuses=(Status.QUEUED,), to=status, now=NOW)

        with pytest.raises(Conflict) as error:
            job_request_cancel(consumer=consumer, job_id=job.pk, now=NOW)

        assert error.value.extra["status"] == status
        job.refresh_from_db()
        assert job.status == status
        assert LedgerAccount.objects.get(job=job).balance == Decimal("25")
        assert consumer_account(consumer).balance == Decimal("75")

    def test_is_refused_twice_and_releases_once(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = job_submit(consumer=consumer)
        job_request_cancel(consumer=consumer, job_id=job.pk, now=NOW)

        with pytest.raises(Conflict):
            job_request_cancel(consumer=consumer, job_id=job.pk, now=NOW)

        assert LedgerTransfer.objects.filter(job=job, kind=LedgerTransfer.Kind.RELEASE).count() == 1
        assert consumer_account(consumer).balance == Decimal("100")

    def test_answers_not_found_for_another_consumers_job(self):
        owner = ConsumerFactory(balance=Decimal("100"))
        intruder = ConsumerFactory(balance=Decimal("100"))
        job = job_submit(consumer=owner)

        with pytest.raises(NotFound):
            job_request_cancel(consumer=intruder, job_id=job.pk, now=NOW)

        job.refresh_from_db()
        assert job.status == Status.QUEUED
        assert consumer_account(owner).balance == Decimal("90")


class TestJobTransition:
    def test_lets_exactly_one_of_two_changes_from_the_same_state_win(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = job_submit(consumer=consumer)
        stale_copy = JobRequest.objects.get(pk=job.pk)

        first = job_request_transition(job=job, from_statuses=(Status.QUEUED,), to=Status.MATCHED, now=NOW)
        second = job_request_transition(
            job=stale_copy, from_statuses=(Status.QUEUED,), to=Status.EXPIRED, now=NOW
        )

        assert (first, second) == (True, False)
        job.refresh_from_db()
        assert job.status == Status.MATCHED

    def test_refuses_a_change_from_a_state_the_job_is_not_in(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = job_submit(consumer=consumer)

        changed = job_request_transition(
            job=job, from_statuses=(Status.RUNNING,), to=Status.COMPLETED, now=NOW
        )

        assert changed is False
        job.refresh_from_db()
        assert job.status == Status.QUEUED

    def test_refuses_a_cancel_that_loses_the_race_to_dispatch(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = job_submit(consumer=consumer)
        job_request_transition(job=job, from_statuses=(Status.QUEUED,), to=Status.MATCHED, now=NOW)
        job_request_transition(job=job, from_statuses=(Status.MATCHED,), to=Status.DISPATCHED, now=NOW)

        with pytest.raises(Conflict):
            job_request_cancel(consumer=consumer, job_id=job.pk, now=NOW)

        assert not LedgerTransfer.objects.filter(job=job, kind=LedgerTransfer.Kind.RELEASE).exists()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    def test_concurrent_submissions_with_one_key_make_one_job_and_one_hold(self, require_postgres):
        consumer = ConsumerFactory(balance=Decimal("1000"))
        spec = job_spec(budget=Decimal("50"))

        results = run_together(
            8, lambda i: job_request_submit(consumer=consumer, spec=spec, now=NOW, idempotency_key="same")
        )

        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors == []
        assert len({job.pk for job, _ in results}) == 1
        assert sum(created for _, created in results) == 1
        job = results[0][0]
        assert JobRequest.objects.filter(consumer=consumer).count() == 1
        assert LedgerTransfer.objects.filter(job=job, kind=LedgerTransfer.Kind.HOLD).count() == 1
        assert consumer_account(consumer).balance == Decimal("950")
        assert ledger_is_balanced()

    def test_concurrent_transitions_from_one_state_have_one_winner(self, require_postgres):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = job_submit(consumer=consumer)
        targets = [Status.MATCHED, Status.EXPIRED, Status.CANCELLED, Status.FAILED] * 2

        results = run_together(
            len(targets),
            lambda i: job_request_transition(job=job, from_statuses=(Status.QUEUED,), to=targets[i], now=NOW),
        )

        assert sorted(results) == [False] * (len(targets) - 1) + [True]
        job.refresh_from_db()
        assert job.status == targets[results.index(True)]

    def test_concurrent_submissions_never_overdraw_the_balance(self, require_postgres):
        consumer = ConsumerFactory(balance=Decimal("100"))

        results = run_together(
            6, lambda i: job_request_submit(consumer=consumer, spec=job_spec(budget=Decimal("30")), now=NOW)
        )

        made = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(made) == 3
        assert all(isinstance(r, InsufficientFunds) for r in refused)
        assert JobRequest.objects.filter(consumer=consumer).count() == 3
        assert consumer_account(consumer).balance == Decimal("10")
        assert ledger_is_balanced()
