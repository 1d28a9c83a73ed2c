"""The one base of every anticipated error in CPX.

Each subclass, defined next to the service that raises it, has a stable snake_case `code` and an
HTTP `status`; the API renders it as {"code", "message", "extra"} (config.exception_handler).
"""


class DomainError(Exception):
    code = "domain_error"
    status = 400

    def __init__(self, message: str, **extra):
        super().__init__(message)
        self.message = message
        self.extra = extra


class NotFound(DomainError):
    """Missing — or belonging to someone else: both answer the same, so ids leak nothing."""

    code = "not_found"
    status = 404


class InvalidInput(DomainError):
    code = "invalid"
    status = 400


class Conflict(DomainError):
    """The object is not in a state that allows this (a compare-and-set lost, or came too late)."""

    code = "conflict"
    status = 409
