"""Real Celery worker processes on Redis + PostgreSQL (`celery -A config worker --pool=solo`, and
`celery -A config beat`), real agent processes (`python -m workers.agent --backend simulate`), the
web app on a live server. Skipped without PostgreSQL + Redis; a failure under CPX_REQUIRE_SERVICES=1.

How a worker is caught mid-round: the round's transaction writes its leases last, so the test holds
`LOCK TABLE auctions_lease IN EXCLUSIVE MODE` in a connection of its own — reads pass (the snapshot
runs), the INSERT of the leases waits — and watches pg_stat_activity until the worker's INSERT is
waiting inside the round's transaction. There it can let two workers race, or SIGKILL one.
"""

import contextlib
import signal
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from django.db import connection
from django.utils import timezone

from auctions.models import Lease, Round
from auctions.services.rounds import round_open
from market.models import JobRequest, LedgerAccount, LedgerTransfer, Provider
from market.selectors import ledger_is_balanced
from tests.factories import ConsumerFactory, ResourceFactory, job_body, job_submit
from tests.workers.conftest import consumer_key, dump, provider_key, result_of, wait_for

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

FAST = {"CPX_ROUND_INTERVAL_S": 1, "CPX_SWEEP_INTERVAL_S": 1, "CPX_PRICING_INTERVAL_S": 60}


def two_device_resource(ask: str = "0.30", *, online: bool = True):
    resource = ResourceFactory(ask_per_device_hour=Decimal(ask), price_floor=Decimal("0"), device_count=2)
    if online:
        Provider.objects.filter(pk=resource.provider_id).update(last_heartbeat_at=timezone.now())
    return resource


def queued_jobs(count: int) -> list[JobRequest]:
    # Two-device jobs clear in the heterogeneous book, so each matches on its own.
    now = timezone.now()
    consumer = ConsumerFactory(balance=Decimal("100"))
    return [
        job_submit(consumer=consumer, now=now, deadline=now + timedelta(days=1), requested_device_count=2)
        for _ in range(count)
    ]


def submit_over_api(server, key: str) -> int:
    response = requests.post(
        f"{server.url}/api/v1/jobs",
        json=job_body(requested_device_count=2, latency_sla_ms=None),
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


@contextlib.contextmanager
def lease_writes_held():
    """Hold an EXCLUSIVE lock on the lease table in a connection of our own until the block ends."""
    # A connection of its own, outside Django's pool (whose connections are in autocommit mode):
    # psycopg's default opens a transaction on the first statement, which the lock needs.
    raw = connection.Database.connect(**connection.get_connection_params())
    try:
        with raw.cursor() as cursor:
            cursor.execute('LOCK TABLE "auctions_lease" IN EXCLUSIVE MODE')
        yield
    finally:
        raw.rollback()
        raw.close()


def backends_waiting_to_write_leases() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND query LIKE 'INSERT INTO \"auctions_lease\"%%'"
        )
        return [row[0] for row in cursor.fetchall()]


def backend_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone() is not None


def consumer_balance(job: JobRequest) -> Decimal:
    return LedgerAccount.objects.get(kind="CONSUMER", user_id=job.consumer_id).balance


def charged(lease: Lease) -> Decimal:
    refs = [f"lease:{lease.pk}:payment", f"lease:{lease.pk}:fee"]
    return sum(LedgerTransfer.objects.filter(reference__in=refs).values_list("amount", flat=True), Decimal(0))


class TestRealWorkers:
    def test_a_submitted_job_is_cleared_dispatched_completed_and_paid(self, real_celery, market_server):
        resource = two_device_resource(online=False)
        consumer = ConsumerFactory(balance=Decimal("100"))
        key = consumer_key(consumer)
        real_celery.start_worker("worker", **FAST)
        real_celery.start_beat(**FAST)
        real_celery.start_agent(
            "agent", api=market_server.url, key=provider_key(resource.provider), speedup=3600
        )

        job_id = submit_over_api(market_server, key)

        wait_for(
            lambda: JobRequest.objects.get(pk=job_id).status == "COMPLETED",
            timeout_s=60,
            what=lambda: (
                "the job to complete\n" + real_celery.log("worker")[-2000:] + real_celery.log("agent")[-2000:]
            ),
        )
        job = JobRequest.objects.get(pk=job_id)
        lease = Lease.objects.get(job=job)
        assert (lease.status, lease.simulated, lease.resource_id) == ("COMPLETED", True, resource.pk)
        assert Round.objects.get(pk=lease.round_id).status == Round.Status.CLEARED
        assert "Task auctions.open_and_clear_round[" in real_celery.log("worker")
        payment = LedgerTransfer.objects.get(reference=f"lease:{lease.pk}:payment")
        assert payment.credit.user_id == resource.provider.user_id
        assert consumer_balance(job) == Decimal("100") - charged(lease)
        assert LedgerAccount.objects.get(kind="ESCROW", job=job).balance == 0
        assert ledger_is_balanced()

    def test_two_workers_racing_to_clear_the_same_round_produce_one_result(self, real_celery):
        for _ in range(2):
            two_device_resource()
        jobs = queued_jobs(2)
        round_obj = round_open(now=timezone.now())
        real_celery.start_worker("a", queue=f"{real_celery.queue}-a")
        real_celery.start_worker("b", queue=f"{real_celery.queue}-b")

        with lease_writes_held():
            first = real_celery.send(
                "auctions.clear_round", queue=f"{real_celery.queue}-a", round_id=round_obj.pk
            )
            second = real_celery.send(
                "auctions.clear_round", queue=f"{real_celery.queue}-b", round_id=round_obj.pk
            )
            wait_for(backends_waiting_to_write_leases, what="a worker inside the round's transaction")
            wait_for(lambda: first.ready() or second.ready(), what="the other worker's answer")
        results = sorted([result_of(first), result_of(second)], key=lambda r: "error" in r)

        assert results[0] == {
            "round_id": round_obj.pk,
            "status": "CLEARED",
            "jobs_matched": 2,
            "welfare": pytest.approx(Round.objects.get(pk=round_obj.pk).welfare),
        }, dump(results)
        assert results[1]["error"] == "round_busy", dump(results)
        assert sorted(Lease.objects.filter(round=round_obj).values_list("job_id", flat=True)) == sorted(
            job.pk for job in jobs
        )
        again = [
            result_of(
                real_celery.send(
                    "auctions.clear_round", queue=f"{real_celery.queue}-{name}", round_id=round_obj.pk
                )
            )
            for name in "ab"
        ]
        assert again == [results[0], results[0]]
        assert Lease.objects.filter(job__in=jobs).count() == 2

    def test_a_worker_killed_mid_round_leaves_no_partial_round_and_the_redelivered_task_completes_it(
        self, real_celery
    ):
        for _ in range(2):
            two_device_resource()
        jobs = queued_jobs(2)
        round_obj = round_open(now=timezone.now())
        redeliver_after = {"CPX_BROKER_VISIBILITY_TIMEOUT_S": 2}
        real_celery.start_worker("doomed", **redeliver_after)
        task_id = str(uuid.uuid4())

        with lease_writes_held():
            real_celery.send("auctions.clear_round", task_id=task_id, round_id=round_obj.pk)
            [pid] = wait_for(
                backends_waiting_to_write_leases, what="the worker inside the round's transaction"
            )
            real_celery.kill("doomed", signal.SIGKILL)
        # A backend waiting on a lock notices its client is gone only when it next talks to it: once
        # the lock is released the INSERT runs, the reply fails, the transaction is rolled back.
        wait_for(lambda: not backend_alive(pid), what="PostgreSQL to drop the dead worker's transaction")

        round_obj.refresh_from_db()
        assert (round_obj.status, round_obj.active_slot, round_obj.snapshot) == ("OPEN", 1, "")
        assert not Lease.objects.filter(round=round_obj).exists()
        assert set(
            JobRequest.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True)
        ) == {"QUEUED"}

        real_celery.start_worker("heir", **redeliver_after)
        result = result_of(real_celery.result(task_id), timeout_s=60)

        assert (result["round_id"], result["status"], result["jobs_matched"]) == (round_obj.pk, "CLEARED", 2)
        assert Lease.objects.filter(round=round_obj).count() == 2
        assert f"Task auctions.clear_round[{task_id}] received" in real_celery.log("heir")

    def test_killing_an_agent_mid_job_fails_it_over_to_another_provider_and_charges_once(
        self, real_celery, market_server
    ):
        first = two_device_resource("0.30", online=False)
        backup = two_device_resource("0.40", online=False)
        consumer = ConsumerFactory(balance=Decimal("100"))
        key = consumer_key(consumer)
        env = {**FAST, "CPX_HEARTBEAT_TIMEOUT_S": 3}
        real_celery.start_worker("worker", **env)
        real_celery.start_beat(**env)
        # Slow enough to be killed mid-job: about a minute at 10×.
        real_celery.start_agent(
            "first-agent", api=market_server.url, key=provider_key(first.provider), speedup=10
        )

        job_id = submit_over_api(market_server, key)
        running = wait_for(
            lambda: Lease.objects.filter(
                job_id=job_id, resource=first, status="RUNNING", progress__gt=0
            ).first(),
            timeout_s=60,
            what=lambda: f"the first agent to run the job\n{real_celery.log('first-agent')[-2000:]}",
        )
        real_celery.kill("first-agent", signal.SIGKILL)
        real_celery.start_agent(
            "backup-agent", api=market_server.url, key=provider_key(backup.provider), speedup=36000
        )

        wait_for(
            lambda: JobRequest.objects.get(pk=job_id).status == "COMPLETED",
            timeout_s=90,
            what=lambda: f"the job to complete on the backup\n{real_celery.log('worker')[-3000:]}",
        )
        running.refresh_from_db()
        assert (running.status, running.close_reason) == ("REASSIGNED", "UNSTABLE")
        finished = Lease.objects.get(job_id=job_id, status="COMPLETED")
        assert finished.resource_id == backup.pk
        job = JobRequest.objects.get(pk=job_id)
        payments = LedgerTransfer.objects.filter(job=job, kind=LedgerTransfer.Kind.PAYMENT)
        assert [p.reference for p in payments] == [f"lease:{finished.pk}:payment"]
        assert consumer_balance(job) == Decimal("100") - charged(finished)
        assert charged(running) == 0
        assert LedgerAccount.objects.get(kind="ESCROW", job=job).balance == 0
        assert ledger_is_balanced()

    def test_a_duplicate_task_delivery_is_harmless(self, real_celery):
        two_device_resource()
        [job] = queued_jobs(1)
        round_obj = round_open(now=timezone.now())
        real_celery.start_worker("worker")
        clear_id, open_id, sweep_id = (str(uuid.uuid4()) for _ in range(3))

        for _ in range(2):  # every message twice, as a broker redelivering after a lost ack would
            real_celery.send("auctions.clear_round", task_id=clear_id, round_id=round_obj.pk)
            real_celery.send("auctions.open_and_clear_round", task_id=open_id)
            real_celery.send("auctions.sweep_leases", task_id=sweep_id)
        marker = real_celery.send("auctions.sweep_leases")  # one worker, FIFO: the copies ran before it
        result_of(marker)

        assert result_of(real_celery.result(clear_id))["status"] == "CLEARED"
        assert Lease.objects.filter(job=job).count() == 1
        assert Lease.objects.get(job=job).round_id == round_obj.pk
        assert JobRequest.objects.get(pk=job.pk).status == JobRequest.Status.MATCHED
        # The open-and-clear copies each opened and cleared a round of their own: nothing left to match.
        later = Round.objects.filter(pk__gt=round_obj.pk)
        assert [(r.status, r.jobs_matched) for r in later] == [("CLEARED", 0), ("CLEARED", 0)]
        assert not Round.objects.filter(active_slot=1).exists()
        assert ledger_is_balanced()
