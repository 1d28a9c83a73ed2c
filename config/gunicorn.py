"""gunicorn settings of the production web process (`gunicorn -c config/gunicorn.py config.asgi`).

uvicorn workers running config/asgi.py: the agents' offer channel (`GET /api/v1/agent/offers`) is
async, so a waiting agent holds a socket, not a thread, and one worker holds thousands; every other
request runs on GUNICORN_THREADS threads per worker as under gthread (config/asgi.py says why).
`GUNICORN_WORKER_CLASS=gthread` with `config.wsgi` is the sync-only server of before (no offer
channel: agents fall back to the sync long-poll). Every value can be overridden from the environment.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "uvicorn.workers.UvicornWorker")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))  # per 2 cores (bench/api_submit.py --sweep)
threads = int(os.environ.get("GUNICORN_THREADS", "4"))  # config.asgi reads it too
# Room for a fleet's connections arriving at once (the kernel caps it at net.core.somaxconn).
backlog = int(os.environ.get("GUNICORN_BACKLOG", "4096"))
# gthread: longer than the longest sync long-poll (CPX_AGENT_LONG_POLL_S, 20 s) plus a slow answer;
# uvicorn workers: how long a worker may miss its heartbeat to the arbiter.
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
