"""Races on the job and lease lifecycle, on PostgreSQL with one connection per thread: a cancel
against a round that is clearing, and the agent's calls against its heartbeat (issue 9, defects 2
and 6). Each race is forced, not hoped for: the first transaction holds its locks until the database
says the second one is waiting on it."""

import threading
import time
from decimal import Decimal

import pytest
from django.db import OperationalError, connection, transaction

from auctions.api import agent as agent_api
from auctions.models import Lease
from auctions.services import leases as lease_services
from auctions.services import rounds as round_services
from auctions.services.jobs import job_request_cancel
from auctions.services.leases import (
    lease_accept,
    lease_complete,
    lease_poll,
    lease_report_progress,
    provider_heartbeat,
)
from auctions.services.rounds import round_clear, round_open
from market.models import JobRequest, LedgerAccount, Provider
from market.selectors import ledger_is_balanced
from tests.conftest import NOW, assert_error, bearer_client, later
from tests.factories import ProviderFactory
from tests.integration.test_leases import funded_job, make_lease, running_lease
from tests.integration.test_rounds import bid, funded_consumer, online_resource

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

J = JobRequest.Status
S = Lease.Status
WAIT_FOR_WAITER_S = 10


def wait_until_someone_waits_on_me(timeout: float = WAIT_FOR_WAITER_S) -> bool:
    """Block (inside the caller's open transaction) until another backend waits on one of its locks.

    pg_locks is live (unlike pg_stat_activity, which is a per-transaction snapshot), and
    pg_blocking_pids names exactly the backends a waiter is queued behind."""
    give_up_at = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < give_up_at:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted "
                "AND pg_backend_pid() = ANY(pg_blocking_pids(pid))"
            )
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.02)
    return False


def in_thread(work, results: dict, name: str) -> threading.Thread:
    def target():
        try:
            results[name] = work()
        except Exception as error:  # noqa: BLE001 - reported to the test, not swallowed
            results[name] = error
        finally:
            connection.close()

    thread = threading.Thread(target=target, name=name)
    thread.start()
    return thread


class TestCancelDuringClearing:
    def test_a_cancel_that_lands_while_the_round_holds_the_job_leaves_no_live_lease(
        self, require_postgres, monkeypatch
    ):
        # Bids 1.00, 0.90, 0.40 against asks 0.10 x 2 and 0.50: the 1.00 and 0.90 jobs trade.
        online_resource(ask_per_device_hour=Decimal("0.10"), device_count=2)
        online_resource(ask_per_device_hour=Decimal("0.50"))
        consumer = funded_consumer()
        bid(consumer, "1.00")
        job = bid(consumer, "0.90")
        bid(consumer, "0.40")
        round_id = round_open(now=NOW).pk
        real_clear = round_services.clear
        clearing = threading.Event()
        waited = []

        def clear_while_a_cancel_waits(doc, *, input_sha256=None):
            # The round holds its FOR UPDATE on the queued jobs here: let the cancel run into it.
            clearing.set()
            waited.append(wait_until_someone_waits_on_me())
            return real_clear(doc, input_sha256=input_sha256)

        monkeypatch.setattr(round_services, "clear", clear_while_a_cancel_waits)
        results: dict = {}

        round_thread = in_thread(lambda: round_clear(round_id=round_id, now=NOW), results, "round")
        assert clearing.wait(timeout=30)
        cancel_thread = in_thread(
            lambda: job_request_cancel(consumer=consumer, job_id=job.pk, now=NOW), results, "cancel"
        )
        round_thread.join(timeout=60)
        cancel_thread.join(timeout=60)

        assert waited == [True], "the cancel never waited on the round's locks: no race was forced"
        assert not isinstance(results["round"], Exception), results["round"]
        job.refresh_from_db()
        lease = Lease.objects.get(job=job)
        # Either order is correct; a live lease on a closed job never is.
        assert job.status == J.CANCELLED, results["cancel"]
        assert lease.status == S.FAILED
        assert lease.close_reason == Lease.CloseReason.OWNER
        assert LedgerAccount.objects.get(kind=LedgerAccount.Kind.ESCROW, job=job).balance == 0
        assert ledger_is_balanced()


def _progress(lease):
    return lease_report_progress(
        provider=lease.provider,
        lease_id=lease.pk,
        progress=0.5,
        tokens_in=10,
        tokens_out=5,
        device_seconds=Decimal("1"),
        now=later(seconds=10),
    )


def _complete(lease):
    return lease_complete(
        provider=lease.provider,
        lease_id=lease.pk,
        tokens_in=10,
        tokens_out=5,
        device_seconds=Decimal("1"),
        now=later(seconds=10),
    )


def _accept(lease):
    return lease_accept(provider=lease.provider, lease_id=lease.pk, now=later(seconds=1))


def _heartbeat_listing(lease):
    return provider_heartbeat(provider=lease.provider, now=later(seconds=5), lease_ids=[lease.pk])


def _poll(lease):
    return lease_poll(provider=lease.provider, now=later(seconds=5))


AGENT_RACES = {
    # agent call holding its rows, the call that runs into them, the lease the race is about
    "progress vs heartbeat": (_progress, _heartbeat_listing, "running"),
    "complete vs heartbeat": (_complete, _heartbeat_listing, "running"),
    "accept vs poll": (_accept, _poll, "dispatched"),
}


class TestAgentCallsAgainstHeartbeats:
    @pytest.mark.parametrize("race", list(AGENT_RACES))
    def test_an_agent_call_and_a_heartbeat_of_the_same_provider_never_deadlock(
        self, require_postgres, monkeypatch, race
    ):
        first, second, kind = AGENT_RACES[race]
        lease = running_lease() if kind == "running" else make_lease(job=funded_job())
        real_heartbeat = lease_services._heartbeat
        holding = threading.Event()
        waited = []

        def heartbeat_once_the_other_waits(provider, now):
            # The first call holds its job and lease rows here and is about to touch the provider
            # row: let the second call of the same provider run into them first.
            if threading.current_thread().name == "first":
                holding.set()
                waited.append(wait_until_someone_waits_on_me())
            real_heartbeat(provider, now)

        monkeypatch.setattr(lease_services, "_heartbeat", heartbeat_once_the_other_waits)
        results: dict = {}

        first_thread = in_thread(lambda: first(lease), results, "first")
        assert holding.wait(timeout=30)
        second_thread = in_thread(lambda: second(lease), results, "second")
        first_thread.join(timeout=60)
        second_thread.join(timeout=60)

        assert waited == [True], "the second call never waited on the first: no race was forced"
        errors = {name: repr(r) for name, r in results.items() if isinstance(r, Exception)}
        assert errors == {}
        assert ledger_is_balanced()


def a_real_deadlock() -> OperationalError:
    """Two connections lock two provider rows in opposite orders; PostgreSQL aborts one of them.
    Returns the error it raised (django's OperationalError over the driver's DeadlockDetected)."""
    rows = [ProviderFactory().pk, ProviderFactory().pk]
    first_holds = threading.Event()
    results: dict = {}

    def lock_in_order(order, name):
        def work():
            with transaction.atomic():
                list(Provider.objects.select_for_update().filter(pk=order[0]))
                if name == "first":
                    first_holds.set()
                    assert wait_until_someone_waits_on_me()  # the other holds order[1], wants ours
                else:
                    assert first_holds.wait(timeout=30)
                list(Provider.objects.select_for_update().filter(pk=order[1]))

        return work

    one = in_thread(lock_in_order(rows, "first"), results, "first")
    assert first_holds.wait(timeout=30)
    two = in_thread(lock_in_order(rows[::-1], "second"), results, "second")
    one.join(timeout=60)
    two.join(timeout=60)
    [error] = [r for r in results.values() if isinstance(r, OperationalError)]
    return error


class TestContentionAnswersRetryLater:
    def test_a_deadlock_reaching_the_api_is_a_503_with_the_error_body_not_a_500(
        self, require_postgres, monkeypatch
    ):
        deadlock = a_real_deadlock()
        lease = make_lease(job=funded_job())

        def deadlocked(**kwargs):
            raise deadlock

        monkeypatch.setattr(agent_api, "lease_accept", deadlocked)

        response = bearer_client(lease.provider.user).post(
            f"/api/v1/agent/leases/{lease.pk}/accept", {}, format="json"
        )

        body = assert_error(response, 503, "database_contention")
        assert response.headers["Retry-After"] == "1"
        assert body["extra"] == {"retry_after_s": 1}
