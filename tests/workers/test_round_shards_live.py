"""One round's books cleared on two real worker processes (CPX_ROUND_SHARDS=2, Redis + PostgreSQL).

The book holds two heterogeneous parts (150 jobs each), so the round has two shards and one goes to
the other worker. To kill a worker mid-shard, the test starts it on `held_shard_app` (the CPX app
with a fault injected: it holds each shard it takes) and kills it once it has said it holds one."""

import signal
from datetime import timedelta
from decimal import Decimal

import pytest
import redis
from django.utils import timezone

from auctions.models import Lease, Round
from auctions.services.rounds import round_open, round_replay
from market.models import JobRequest, Provider
from tests.factories import ConsumerFactory, ResourceFactory
from tests.workers.conftest import dump, result_of, wait_for
from tests.workers.held_shard_app import HELD_KEY

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

JOBS_PER_PART = 150


def two_part_book() -> list[int]:
    """Resources of 4 and of 2 devices, and 4-device and 2-device jobs: two heterogeneous parts (the
    4-device jobs fit fewer resources), each a book of its own. Jobs are written QUEUED in bulk (a
    round reads no ledger); returns their ids."""
    now = timezone.now()
    for i in range(40):
        for devices in (4, 2):
            resource = ResourceFactory(
                ask_per_device_hour=Decimal(f"0.{10 + i}"), price_floor=Decimal("0"), device_count=devices
            )
            Provider.objects.filter(pk=resource.provider_id).update(
                last_heartbeat_at=now + timedelta(hours=1)
            )
    consumer = ConsumerFactory(balance=Decimal("100"))
    rows = [
        JobRequest(
            consumer=consumer,
            kind="INFERENCE",
            model_name="llama-3.1-8b",
            params_billion=Decimal("8"),
            quant_bits=4,
            context_length=4096,
            workload_tokens=100_000 + 1_000 * i,
            device_class="GPU",
            max_price_per_device_hour=Decimal(f"{0.5 + (i % 97) / 50:.4f}"),
            budget=Decimal("50"),
            deadline=now + timedelta(days=1),
            region="eu-west",
            memory_per_device_gib=Decimal("9"),
            device_count=devices,
            status=JobRequest.Status.QUEUED,
            created_at=now - timedelta(seconds=2 * JOBS_PER_PART - i),
            updated_at=now,
        )
        for i in range(2 * JOBS_PER_PART)
        for devices in [4 if i % 2 else 2]
    ]
    return [job.pk for job in JobRequest.objects.bulk_create(rows)]


def shard_held(real_celery) -> bool:
    """Whether the worker on `held_shard_app` has started a shard and holds it."""
    client = redis.Redis.from_url(real_celery.redis_url)
    try:
        return bool(client.exists(HELD_KEY.format(queue=real_celery.queue)))
    finally:
        client.close()


def forget_shards(real_celery, round_id: int) -> None:
    client = redis.Redis.from_url(real_celery.redis_url)
    try:
        for key in client.scan_iter(f"celery-task-meta-round-{round_id}-*"):
            client.delete(key)
    finally:
        client.close()


SHARDED = {"CPX_ROUND_SHARDS": 2, "CPX_BROKER_VISIBILITY_TIMEOUT_S": 2}


class TestRoundShardsOnWorkers:
    def test_two_workers_clear_one_round_in_shards_and_the_result_replays_bit_for_bit(self, real_celery):
        jobs = two_part_book()
        round_obj = round_open(now=timezone.now())
        real_celery.start_worker("a", **SHARDED)
        real_celery.start_worker("b", **SHARDED)

        result = result_of(real_celery.send("auctions.clear_round", round_id=round_obj.pk), timeout_s=120)

        round_obj.refresh_from_db()
        assert result["status"] == "CLEARED", dump(result)
        assert sum(book["kind"] == "heterogeneous" for book in round_obj.mechanism["books"]) >= 2
        # The replay clears the stored snapshot book by book in this process: one shard.
        report = round_replay(round_id=round_obj.pk)
        assert report["match"] is True, dump(report)
        logs = real_celery.log("a") + real_celery.log("b")
        assert "auctions.clear_round_shard" in logs
        assert Lease.objects.filter(round=round_obj).count() == round_obj.jobs_matched > 0
        assert JobRequest.objects.filter(pk__in=jobs, status="MATCHED").count() == round_obj.jobs_matched
        forget_shards(real_celery, round_obj.pk)

    def test_a_worker_killed_mid_shard_leaves_the_round_whole_and_the_next_run_clears_it(self, real_celery):
        jobs = two_part_book()
        round_obj = round_open(now=timezone.now())
        coordinator_queue = f"{real_celery.queue}-rounds"
        real_celery.start_worker(
            "coordinator", queue=coordinator_queue, CPX_ROUND_SHARD_TIMEOUT_S=5, **SHARDED
        )
        real_celery.start_worker("doomed", app="tests.workers.held_shard_app", **SHARDED)

        first = real_celery.send("auctions.clear_round", queue=coordinator_queue, round_id=round_obj.pk)
        wait_for(lambda: shard_held(real_celery), what="the doomed worker to start a shard")
        real_celery.kill("doomed", signal.SIGKILL)
        refused = result_of(first, timeout_s=120)

        round_obj.refresh_from_db()
        assert refused["error"] == "round_shard_failed", dump(refused)
        assert (round_obj.status, round_obj.active_slot, round_obj.snapshot) == ("OPEN", 1, "")
        assert not Lease.objects.filter(round=round_obj).exists()
        assert set(JobRequest.objects.filter(pk__in=jobs).values_list("status", flat=True)) == {"QUEUED"}

        real_celery.start_worker("heir", **SHARDED)
        again = result_of(
            real_celery.send("auctions.clear_round", queue=coordinator_queue, round_id=round_obj.pk),
            timeout_s=120,
        )
        duplicate = result_of(
            real_celery.send("auctions.clear_round", queue=coordinator_queue, round_id=round_obj.pk)
        )

        round_obj.refresh_from_db()
        assert again["status"] == "CLEARED", dump(again)
        assert duplicate == again
        assert round_replay(round_id=round_obj.pk)["match"] is True
        assert Lease.objects.filter(round=round_obj).count() == round_obj.jobs_matched > 0
        assert Round.objects.filter(active_slot=1).count() == 0
        forget_shards(real_celery, round_obj.pk)
