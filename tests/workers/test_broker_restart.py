"""A Redis restart under a real worker (issue 9): the worker, holding an unacknowledged task, rides out
the broker going away and coming back, and runs tasks afterwards. The Redis is the test's own (killed
with SIGKILL and started again on the same port); the worker is `celery -A config worker` (prefork,
gossip and mingle on, as deployed) on PostgreSQL. Skipped without PostgreSQL / redis-server."""

import pytest
from django.db import connection
from django.utils import timezone

from auctions.services.rounds import round_open
from tests.conftest import service_unavailable
from tests.live import wait_for
from tests.redis_server import RedisServer
from tests.workers.conftest import VENV_BIN, CeleryProcesses, result_of
from tests.workers.test_real_workers import (
    backends_waiting_to_write_leases,
    lease_writes_held,
    queued_jobs,
    two_device_resource,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


class OwnRedisCelery(CeleryProcesses):
    """CeleryProcesses on a Redis of the test's own, database 0."""

    def __init__(self, tmp_path, redis_url: str):
        self._own_url = redis_url
        super().__init__(tmp_path)

    @property
    def redis_url(self):
        return self._own_url

    @redis_url.setter
    def redis_url(self, _value):  # CeleryProcesses sets the shared one; this run keeps its own
        pass

    def start_deployed_worker(self, name: str):
        """The worker as `make worker` runs it: prefork (two processes, so while one runs a task the
        consumer still waits on the broker for the next), gossip, mingle and heartbeats on."""
        argv = [
            str(VENV_BIN / "celery"),
            "-A",
            "config",
            "worker",
            "--concurrency=2",
            f"--hostname={name}-{self.queue}@%h",
            f"--queues={self.queue}",
            "--loglevel=INFO",
        ]
        process = self._spawn(name, argv, self.env())
        wait_for(lambda: " ready." in self.log(name) or process.poll() is not None, timeout_s=60)
        assert process.poll() is None, self.log(name)[-3000:]
        return process


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.kill()


@pytest.fixture
def own_celery(transactional_db, tmp_path, redis_server):
    if connection.vendor != "postgresql":
        service_unavailable("needs PostgreSQL (DATABASE_URL=postgres://…) for worker processes")
    processes = OwnRedisCelery(tmp_path, redis_server.url(0))
    try:
        yield processes
    finally:
        for name in list(processes.processes):
            processes.kill(name)
        processes.connection.release()
        processes.backend.client.close()
        processes.producer.close()


class TestARedisRestart:
    def test_the_worker_rides_it_out_with_a_task_unacknowledged_and_runs_tasks_afterwards(
        self, own_celery, redis_server
    ):
        for _ in range(2):
            two_device_resource()
        queued_jobs(2)
        round_obj = round_open(now=timezone.now())
        worker = own_celery.start_deployed_worker("worker")

        with lease_writes_held():  # the round's task runs, unacknowledged (acks_late), until released
            pending = own_celery.send("auctions.clear_round", round_id=round_obj.pk)
            wait_for(backends_waiting_to_write_leases, what="the worker inside the round's transaction")
            redis_server.kill()
            wait_for(
                lambda: "Connection to broker lost" in own_celery.log("worker") or worker.poll() is not None,
                what=lambda: "the worker to notice\n" + own_celery.log("worker")[-3000:],
            )
            redis_server.start()
        wait_for(
            lambda: own_celery.log("worker").count("Connected to redis") >= 2 or worker.poll() is not None,
            timeout_s=60,
            what=lambda: "the worker to reconnect\n" + own_celery.log("worker")[-3000:],
        )
        survived = worker.poll() is None and "Unrecoverable error" not in own_celery.log("worker")
        after = own_celery.send("auctions.clear_round", round_id=round_obj.pk) if survived else None
        result = result_of(after, timeout_s=60) if survived else None

        assert survived, own_celery.log("worker")[-4000:]
        assert result["round_id"] == round_obj.pk and result["status"] == "CLEARED", result
        del pending  # its result may be lost with the broker; the round cleared once, by whichever ran
