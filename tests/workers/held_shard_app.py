"""The CPX Celery app with one fault injected, for the kill-mid-shard test: a worker started on this
app, once it has started a round shard (its STARTED state stored), announces it (a Redis key) and
holds it, so the test kills the worker while the shard is surely in its hands. A test-sized shard
clears faster than a test can poll for its STARTED state on a loaded machine; the hold makes
"mid-shard" a fact rather than a race."""

import os
import time

import redis
from celery.signals import worker_init

from config.celery import app  # noqa: F401 — the app `celery -A tests.workers.held_shard_app` runs

HELD_KEY = "{queue}-held-shard"  # under the run's queue name: purged with it


@worker_init.connect
def hold_every_shard(**_):
    import django

    django.setup()
    import workers.tasks

    def held(*, books):
        client = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
        try:
            client.set(HELD_KEY.format(queue=os.environ["CELERY_TASK_DEFAULT_QUEUE"]), "held", ex=300)
        finally:
            client.close()
        time.sleep(120)
        raise AssertionError("the test kills this worker before the hold ends")

    workers.tasks.books_clear_shard = held
