"""One error hierarchy: everything the daemon raises on purpose derives from TriggerdError.

API errors carry their HTTP status and snake_case code; one middleware turns them
into the API's error envelope (docs/api.md).
"""

from __future__ import annotations

from typing import Any


class TriggerdError(Exception):
    """Base class of every deliberate triggerd error."""


class ConfigError(TriggerdError):
    """A bad or unknown setting; the message is one line naming the key."""


class SchemaVersionError(TriggerdError):
    """The database schema is not at the version this build expects."""


class ApiError(TriggerdError):
    status: int = 400
    code: str = "bad_request"
    close_connection: bool = False  # after the answer (the request's framing is broken)

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details


class ValidationError(ApiError):
    """Bad input; `field` names the offending field (dotted path, e.g. `config.cron`)."""

    status = 400
    code = "validation_error"

    def __init__(self, field: str, message: str, *, details: Any = None) -> None:
        merged = {"field": field}
        if isinstance(details, dict):
            merged.update(details)
        super().__init__(f"{field}: {message}", details=merged)
        self.field = field


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class ClientGone(ApiError):
    """The client hung up while sending its request: not a fault of ours, nor a
    dependency outage. The answer goes nowhere; it only keeps the logs honest."""

    status = 400
    code = "client_gone"
