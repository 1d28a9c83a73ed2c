"""The OpenAPI schema documents every status an operation can answer, each with the one error body.

drf-spectacular documents the success answers; `CpxAutoSchema` adds the anticipated errors that
`config.exception_handler.render_error` produces, derived from what the view is made of, so a new
view is documented right without a decorator:

- 400 `invalid` when the operation takes a body or query parameters (validation, filters, paging),
  and on every write (a service's InvalidInput);
- 401 and 403 when it needs authentication (no or a bad key; a key of another role);
- 404 when its path names an object (missing, or someone else's: both answer the same), or when
  its role needs a profile first (a permission class with `missing_profile_is_404`);
- 409 on every write (a compare-and-set lost, an idempotency key reused with another body, a state
  that does not allow the change);
- 415 when it reads a body (anything but application/json);
- 429 when it is rate limited, with Retry-After.

A view that answers another status declares it: `@extend_schema(responses={200: X, 404: ErrorSerializer})`;
entries it declares itself are kept.
"""

from drf_spectacular.openapi import AutoSchema
from rest_framework import permissions, serializers

WRITES = {"POST", "PUT", "PATCH", "DELETE"}

DESCRIPTIONS = {
    "400": "Invalid input: `code` is `invalid` (with `extra.fields`) or a domain code.",
    "401": "No API key, or an unknown or revoked one.",
    "403": "The key's role (or the session's user) may not do this.",
    "404": "No such object, or it belongs to someone else.",
    "409": "The object's state does not allow this now (a race lost, a transition refused, a reused key).",
    "415": "The body is not application/json.",
    "429": "Rate limit reached: retry after `Retry-After` seconds.",
}


class ErrorSerializer(serializers.Serializer):
    """Every anticipated error: a stable snake_case code, a message for people, and details."""

    code = serializers.CharField(help_text="stable, snake_case (e.g. invalid, not_found, rate_limited)")
    message = serializers.CharField()
    extra = serializers.DictField(help_text="details: fields for invalid, retry_after_s for rate_limited, …")


class CpxAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation.setdefault("responses", {})
        for code in self._error_statuses(operation):
            if code not in responses:
                responses[code] = self._error_response(code)
        return operation

    def _get_response_for_code(self, serializer, status_code, media_types=None, direction="response"):
        response = super()._get_response_for_code(serializer, status_code, media_types, direction)
        if serializer is ErrorSerializer and status_code in DESCRIPTIONS:
            response["description"] = DESCRIPTIONS[status_code]
        return response

    def _error_statuses(self, operation) -> list[str]:
        parameters = operation.get("parameters", [])
        codes = []
        takes_query = any(p["in"] == "query" for p in parameters)
        if self.method in WRITES or operation.get("requestBody") or takes_query:
            codes.append("400")
        if self._needs_authentication():
            codes += ["401", "403"]
        if any(p["in"] == "path" for p in parameters) or self._missing_profile_is_404():
            codes.append("404")
        if self.method in WRITES:
            codes.append("409")
        if operation.get("requestBody"):
            codes.append("415")
        if self.view.get_throttles():
            codes.append("429")
        return codes

    def _missing_profile_is_404(self) -> bool:
        return any(getattr(p, "missing_profile_is_404", False) for p in self.view.get_permissions())

    def _needs_authentication(self) -> bool:
        return not all(isinstance(p, permissions.AllowAny) for p in self.view.get_permissions())

    def _error_response(self, code: str) -> dict:
        response = self._get_response_for_code(ErrorSerializer, code)
        if code == "429":
            response["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}
            }
        return response
