"""The Celery app. Broker and mode come from settings (CELERY_*), so the same code runs the
embedded default (memory broker, in-process worker thread) and Redis with many worker processes."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("cpx")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])
