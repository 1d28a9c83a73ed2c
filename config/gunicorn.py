"""gunicorn settings of the production web process (`gunicorn -c config/gunicorn.py config.wsgi`).

gthread workers: each request holds a thread, agents' long-polls included, so threads × workers
bounds the agents waiting at once. Every value can be overridden from the environment.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))  # per 2 cores (bench/api_submit.py --sweep)
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# Longer than the longest agent long-poll (CPX_AGENT_LONG_POLL_S, 20 s) plus a slow answer.
timeout = int(os.environ.get("GUNICORN_TIMEOUT_S", "60"))
graceful_timeout = 30
accesslog = None  # the app logs one JSON line per request (ops.logs.RequestIdMiddleware)

# gunicorn's own lines (start, worker boot and exit) as JSON too, like the app's.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "ops.logs.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "loggers": {"gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}


def child_exit(server, worker):
    """A dead worker's request-latency samples stay counted, its live gauges are dropped."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
