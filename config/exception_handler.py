"""Renders every anticipated error as {"code", "message", "extra"} with the right status."""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import OperationalError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response

from config.errors import DomainError

logger = logging.getLogger(__name__)

_DRF_CODES = {
    exceptions.ParseError: "malformed_request",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
}


# PostgreSQL's deadlock_detected, serialization_failure and lock_not_available: the transaction was
# rolled back whole because of other transactions, not because of the request; the same request
# can succeed a moment later. (The lifecycle takes rows in one lock order, so these should not
# happen; if one does, the caller is told to retry, never answered 500.)
TRANSIENT_PGCODES = frozenset({"40P01", "40001", "55P03"})
RETRY_AFTER_S = 1


def is_transient_database_error(exc) -> bool:
    """A database error that a retry of the same request can clear: lock contention, not a bug."""
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    # psycopg 3 names the SQLSTATE `sqlstate`; psycopg2 named it `pgcode`.
    if (getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)) in TRANSIENT_PGCODES:
        return True
    return "database is locked" in str(exc)  # SQLite's busy writer lock


def error_response(code: str, message: str, http_status: int, extra: dict | None = None, headers=None):
    return Response(
        {"code": code, "message": message, "extra": extra or {}}, status=http_status, headers=headers
    )


def render_error(exc, context):
    if isinstance(exc, DomainError):
        return error_response(exc.code, exc.message, exc.status, exc.extra)
    if is_transient_database_error(exc):
        logger.warning("database contention in %s: %s", context.get("view").__class__.__name__, exc)
        return error_response(
            "database_contention",
            "The database was busy with a conflicting change; nothing was done. Retry the request.",
            status.HTTP_503_SERVICE_UNAVAILABLE,
            {"retry_after_s": RETRY_AFTER_S},
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.ValidationError):
        return error_response(
            "invalid", "The request has invalid fields.", status.HTTP_400_BAD_REQUEST, {"fields": exc.detail}
        )
    if isinstance(exc, exceptions.APIException):
        code = _DRF_CODES.get(type(exc)) or next(
            (c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error"
        )
        headers = {}
        extra = {}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            headers["Retry-After"] = str(max(1, int(exc.wait + 0.999)))
            extra["retry_after_s"] = int(headers["Retry-After"])
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        return error_response(code, str(exc.detail), exc.status_code, extra, headers)
    logger.error("unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
    return None


# --- Answers outside DRF's views (issue 13): a path under /api/ that matches no route, or a crash,
# answers JSON with the one error body; the pages keep their HTML.
API_PREFIX = "/api/"


def not_found(request, exception=None):
    """handler404: JSON under /api/ (`GET /api/v1/jobs/abc`, `/api/v1/nope`), the HTML page elsewhere."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse(
            {"code": "not_found", "message": "No such API path.", "extra": {"path": request.path}}, status=404
        )
    return defaults.page_not_found(request, exception)


def server_error(request):
    """handler500: JSON under /api/ (the error itself is logged by Django with the request id)."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse(
            {"code": "server_error", "message": "The server failed to answer; it is logged.", "extra": {}},
            status=500,
        )
    return defaults.server_error(request)
