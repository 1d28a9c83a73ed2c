"""The Celery app. Broker and mode come from settings (CELERY_*), so the same code runs the
embedded default (memory broker, in-process worker thread) and Redis with many worker processes."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("cpx")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])


@signals.worker_init.connect
def refuse_invalid_market_settings(**_) -> None:
    """A worker with clearing or pricing settings the market cannot run exits here, with the checks'
    messages, instead of failing every round (Django runs the same checks for manage.py)."""
    from auctions.checks import refuse_to_start

    refuse_to_start()
