"""Structured logs: one JSON object per line, carrying the request id of the HTTP request or the id
of the Celery task that emitted it, so one request or one task can be followed across lines.

The request id is taken from the `X-Request-ID` header when a proxy set one (a short printable token),
or made here; it is echoed back on the answer. It lives in a context variable, so threads (gthread)
and asyncio tasks each see their own. Celery's current task is asked at the moment of the record.
"""

import contextvars
import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("cpx_request_id", default=None)

# A proxy's id is echoed into logs and headers: only a short token of safe characters is trusted.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# LogRecord attributes that are not extra fields given by the caller.
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

access_logger = logging.getLogger("cpx.request")


def _current_task_id() -> str | None:
    try:
        from celery import current_task
    except ImportError:  # the agent installed alone logs without Celery
        return None
    task = current_task
    request = getattr(task, "request", None) if task else None
    return getattr(request, "id", None)


class ContextFilter(logging.Filter):
    """Adds `request_id` and `task_id` to every record (None outside a request or a task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.task_id = _current_task_id()
        return True


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "request_id", "task_id", ...extra, "exc"}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "task_id": getattr(record, "task_id", None),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in document:
                document[key] = value
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, separators=(",", ":"))


class RequestIdMiddleware:
    """Sets the request id for the request's log lines, answers it in `X-Request-ID`, and (with
    CPX_ACCESS_LOG) logs one line per request with its status and duration."""

    def __init__(self, get_response):
        from django.conf import settings

        self.get_response = get_response
        self.access_log = getattr(settings, "CPX_ACCESS_LOG", False)

    def __call__(self, request):
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        # Not reset on the way out: Django logs a 5xx (django.request) after the middleware returns,
        # and that line must carry the id too. The next request on this thread sets its own.
        request_id_var.set(request_id)
        started = time.perf_counter()
        response = self.get_response(request)
        response.headers["X-Request-ID"] = request_id
        if self.access_log:
            access_logger.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
        return response
