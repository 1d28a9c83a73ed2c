"""The Celery tasks called directly: stable names and policy, idempotency (a task run twice — a
duplicate delivery — changes nothing more), domain errors recorded and not retried, transient
database errors retried with backoff, and enqueueing after commit."""

from datetime import timedelta
from decimal import Decimal

import pytest
from celery.exceptions import Retry
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from auctions.models import Lease, PriceQuote, Round
from auctions.services.leases import lease_accept, lease_poll
from auctions.services.rounds import RoundBusy, round_open
from config.celery import app
from market.models import JobRequest, LedgerTransfer, Provider
from tests.factories import ConsumerFactory, ProviderFactory, ResourceFactory, job_submit
from workers import tasks

pytestmark = pytest.mark.django_db

NAMES = [
    "auctions.clear_round",
    "auctions.open_and_clear_round",
    "auctions.clear_round_shard",
    "auctions.update_prices",
    "auctions.sweep_leases",
]


def online_resource(**fields):
    """A listed resource whose provider heartbeat just now (the book takes online providers only)."""
    provider = ProviderFactory()
    Provider.objects.filter(pk=provider.pk).update(last_heartbeat_at=timezone.now())
    fields.setdefault("price_floor", Decimal("0"))
    return ResourceFactory(provider=provider, **fields)


def queued_job(*, price: str = "1.00", **fields) -> JobRequest:
    now = timezone.now()
    consumer = ConsumerFactory(balance=Decimal("100"))
    fields.setdefault("deadline", now + timedelta(days=1))
    return job_submit(consumer=consumer, now=now, max_price_per_device_hour=Decimal(price), **fields)


def matchable_job() -> JobRequest:
    # A two-device job goes to the heterogeneous book (greedy + critical payments), which matches a
    # single job to a single resource; a unit double auction needs a second pair to set its price.
    online_resource(ask_per_device_hour=Decimal("0.30"), device_count=2)
    return queued_job(requested_device_count=2)


@pytest.fixture
def no_retry(monkeypatch):
    """Fail the test if a task asks to be retried."""

    def refuse(task):
        def retry(*args, **kwargs):
            raise AssertionError(f"{task.name} retried: {kwargs.get('exc')!r}")

        monkeypatch.setattr(task, "retry", retry)

    return refuse


class TestTaskPolicy:
    def test_every_task_has_its_stable_name_late_acks_retries_for_transient_errors_and_time_limits(self):
        for name in NAMES:
            task = app.tasks[name]

            assert task.acks_late is True, name
            assert set(task.autoretry_for) == {OperationalError, InterfaceError}, name
            assert task.retry_backoff and task.retry_jitter and task.max_retries == 5, name
            assert 0 < task.soft_time_limit < task.time_limit, name

    def test_the_beat_schedule_sends_registered_tasks_and_each_tick_expires_after_one_interval(self):
        for entry in settings.CELERY_BEAT_SCHEDULE.values():
            assert entry["task"] in app.tasks
            assert entry["options"]["expires"] == entry["schedule"] > 0

    def test_tasks_take_keyword_arguments_and_answer_json(self):
        job = matchable_job()
        round_obj = round_open(now=timezone.now())

        result = tasks.clear_round(round_id=round_obj.pk)

        assert result == {
            "round_id": round_obj.pk,
            "status": "CLEARED",
            "jobs_matched": 1,
            "welfare": pytest.approx(Round.objects.get(pk=round_obj.pk).welfare),
        }
        assert Lease.objects.get(round=round_obj).job_id == job.pk
        with pytest.raises(TypeError):
            tasks.clear_round(round_obj.pk)


class TestClearRound:
    def test_a_duplicate_delivery_changes_nothing(self, no_retry):
        job = matchable_job()
        round_obj = round_open(now=timezone.now())
        no_retry(tasks.clear_round)
        first = tasks.clear_round(round_id=round_obj.pk)
        cleared = Round.objects.get(pk=round_obj.pk)

        second = tasks.clear_round(round_id=round_obj.pk)

        assert second == first
        again = Round.objects.get(pk=round_obj.pk)
        assert (again.status, again.result_sha256, again.cleared_at) == (
            "CLEARED",
            cleared.result_sha256,
            cleared.cleared_at,
        )
        assert Lease.objects.filter(job=job).count() == 1
        assert JobRequest.objects.get(pk=job.pk).status == JobRequest.Status.MATCHED

    def test_an_unknown_round_is_recorded_and_not_retried(self, no_retry):
        no_retry(tasks.clear_round)

        result = tasks.clear_round(round_id=987654)

        assert result["error"] == "round_not_found"
        assert result["round_id"] == 987654

    def test_a_round_another_worker_is_clearing_is_recorded_and_not_retried(self, monkeypatch, no_retry):
        round_obj = round_open(now=timezone.now())

        def busy(**kwargs):
            raise RoundBusy("Another worker is clearing this round.", round=kwargs["round_id"])

        monkeypatch.setattr(tasks, "round_clear", busy)
        no_retry(tasks.clear_round)

        result = tasks.clear_round(round_id=round_obj.pk)

        assert result["error"] == "round_busy"
        assert Round.objects.get(pk=round_obj.pk).status == Round.Status.OPEN

    @pytest.mark.parametrize("error", [OperationalError, InterfaceError])
    def test_a_transient_database_error_is_retried_with_backoff(self, monkeypatch, error):
        round_obj = round_open(now=timezone.now())
        asked = []

        def dropped(**kwargs):
            raise error("server closed the connection unexpectedly")

        def retry(**kwargs):
            asked.append(kwargs)
            return Retry("retry", exc=kwargs["exc"], when=kwargs.get("countdown"))

        monkeypatch.setattr(tasks, "round_clear", dropped)
        monkeypatch.setattr(tasks.clear_round, "retry", retry)

        with pytest.raises(Retry):
            tasks.clear_round(round_id=round_obj.pk)

        assert len(asked) == 1
        assert isinstance(asked[0]["exc"], error)
        assert 0 <= asked[0]["countdown"] <= 1  # the first backoff: full jitter up to 2^0 s


class TestOpenAndClearRound:
    def test_a_second_run_opens_a_new_round_and_matches_nothing_twice(self, no_retry):
        job = matchable_job()
        no_retry(tasks.open_and_clear_round)

        first = tasks.open_and_clear_round()
        second = tasks.open_and_clear_round()

        assert (first["status"], first["jobs_matched"]) == ("CLEARED", 1)
        assert (second["status"], second["jobs_matched"]) == ("CLEARED", 0)
        assert second["round_id"] != first["round_id"]
        assert Lease.objects.filter(job=job).count() == 1

    def test_clears_the_round_a_dead_worker_left_open(self):
        job = matchable_job()
        left_open = round_open(now=timezone.now() - timedelta(minutes=5))

        result = tasks.open_and_clear_round()

        assert (result["round_id"], result["status"]) == (left_open.pk, "CLEARED")
        assert Lease.objects.get(job=job).round_id == left_open.pk


class TestSweepLeases:
    def test_a_silent_lease_fails_over_once_however_often_the_sweep_runs(self, no_retry):
        job = matchable_job()
        tasks.open_and_clear_round()
        lease = Lease.objects.get(job=job)
        long_ago = timezone.now() - timedelta(seconds=settings.CPX_HEARTBEAT_TIMEOUT_S + 60)
        lease_poll(provider=lease.provider, now=long_ago)
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=long_ago)
        no_retry(tasks.sweep_leases)

        first = tasks.sweep_leases()
        second = tasks.sweep_leases()

        assert (first["unstable"], first["requeued"]) == (1, 1)
        assert (second["unstable"], second["requeued"]) == (0, 0)
        lease.refresh_from_db()
        assert (lease.status, lease.close_reason) == ("REASSIGNED", "UNSTABLE")
        assert JobRequest.objects.get(pk=job.pk).status == JobRequest.Status.QUEUED
        assert LedgerTransfer.objects.filter(reference=f"lease:{lease.pk}:penalty").count() <= 1


class TestUpdatePrices:
    def test_stores_a_quote_per_class_and_a_second_run_sets_the_same_asks(self):
        resource = online_resource(ask_per_device_hour=Decimal("0.30"), device_count=2, auto_pricing=True)
        queued_job(price="0.90")
        queued_job(price="0.60")

        first = tasks.update_prices()
        ask = type(resource).objects.get(pk=resource.pk).ask_per_device_hour
        second = tasks.update_prices()

        assert first["quotes"] >= 1 and first["classes"] == second["classes"]
        assert PriceQuote.objects.filter(resource_class__in=first["classes"]).count() == 2 * first["quotes"]
        assert type(resource).objects.get(pk=resource.pk).ask_per_device_hour == ask


class TestEnqueueOnCommit:
    def test_a_task_enqueued_inside_a_transaction_is_sent_only_once_it_commits(
        self, monkeypatch, django_capture_on_commit_callbacks
    ):
        sent = []
        monkeypatch.setattr(
            tasks.clear_round, "apply_async", lambda args=None, kwargs=None, **_: sent.append(kwargs)
        )

        with django_capture_on_commit_callbacks(execute=True):
            with transaction.atomic():
                tasks.clear_round.delay_on_commit(round_id=7)
                assert sent == []

        assert sent == [{"round_id": 7}]

    def test_a_task_enqueued_in_a_transaction_that_rolls_back_is_never_sent(
        self, monkeypatch, django_capture_on_commit_callbacks
    ):
        sent = []
        monkeypatch.setattr(
            tasks.clear_round, "apply_async", lambda args=None, kwargs=None, **_: sent.append(kwargs)
        )

        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            with pytest.raises(RuntimeError), transaction.atomic():
                tasks.clear_round.delay_on_commit(round_id=7)
                raise RuntimeError("the request failed")

        assert (sent, callbacks) == ([], [])
