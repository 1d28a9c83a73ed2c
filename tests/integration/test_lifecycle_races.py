"""Races on the job and lease lifecycle, on PostgreSQL with one connection per thread: a cancel
against a round that is clearing, and the agent's calls against its heartbeat (issue 9, defects 2
and 6). Each race is forced, not hoped for: the first transaction holds its locks until the database
says the second one is waiting on it."""

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection

from auctions.models import Lease
from auctions.services import rounds as round_services
from auctions.services.jobs import job_request_cancel
from auctions.services.rounds import round_clear, round_open
from market.models import JobRequest, LedgerAccount
from market.selectors import ledger_is_balanced
from tests.conftest import NOW
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
