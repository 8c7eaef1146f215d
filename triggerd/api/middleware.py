"""The middlewares every response passes through: request IDs, the one error envelope
(SPEC §3), request timing, and API-key access control."""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from triggerd.api.http import json_response
from triggerd.bus.producer import BusUnavailable
from triggerd.errors import ApiError
from triggerd.logs import request_id_var
from triggerd.metrics import Metrics
from triggerd.store.db import is_transient

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "too_many_requests",
    431: "headers_too_large",
    503: "unavailable",
}


def error_body(status: int, code: str, message: str, details: object = None) -> dict[str, object]:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": details,
            "request_id": request_id_var.get(),
        }
    }


def error_response(status: int, code: str, message: str, details: object = None) -> web.Response:
    return json_response(error_body(status, code, message, details), status=status)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-ID", "")
    request_id = given if _REQUEST_ID_OK.match(given) else uuid.uuid4().hex
    token = request_id_var.set(request_id)
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            # Handlers and aiohttp itself raise these; they carry our header too.
            exc.headers["X-Request-ID"] = request_id
            raise
        response.headers["X-Request-ID"] = request_id
        return response
    finally:
        request_id_var.reset(token)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        response = error_response(
            exc.status, _HTTP_CODES.get(exc.status, f"http_{exc.status}"), _message(exc)
        )
        response.headers.update(headers)
        return response
    except Exception as exc:
        if is_transient(exc) or isinstance(exc, BusUnavailable):
            # The database (or Kafka, where a route needs it) is down: the client may
            # retry; /health says what is down. Logged without a traceback: not a bug.
            log.warning("%s %s: dependency unavailable: %s", request.method, request.path, exc)
            response = error_response(503, "unavailable", "a dependency is unavailable; retry")
            response.headers["Retry-After"] = "1"
            return response
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; see the server log")


def _message(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "no such route"
    if exc.status == 405:
        return f"method not allowed; allowed: {exc.headers.get('Allow', '')}"
    if exc.status == 413:
        return "request body too large"
    return exc.reason


def metrics_middleware(metrics: Metrics) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            route = "unmatched"
            info = request.match_info
            if info.http_exception is None and info.route.resource is not None:
                route = info.route.resource.canonical
            metrics.http_duration.labels(route, request.method).observe(
                time.perf_counter() - started
            )

    return middleware


def auth_middleware(keys: tuple[str, ...]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Require an API key on /api/v1 except webhook ingestion. Keys are compared in
    constant time and never logged."""
    encoded = [k.encode() for k in keys]

    def allowed(candidate: str) -> bool:
        given = candidate.encode()
        # Compare against every key so the time taken does not reveal which matched.
        return any([hmac.compare_digest(given, key) for key in encoded])

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not encoded or not path.startswith("/api/v1") or path.startswith("/api/v1/webhook/"):
            return await handler(request)
        auth = request.headers.get("Authorization", "")
        candidates = [auth[7:].strip() if auth[:7].lower() == "bearer " else "",
                      request.headers.get("X-API-Key", "")]  # fmt: skip
        # Either header may carry the key; a request passes when one of them is valid.
        if not any([allowed(c) for c in candidates if c]):
            raise ApiError(
                "missing or invalid API key (Authorization: Bearer <key> or X-API-Key)",
                status=401,
                code="unauthorized",
            )
        return await handler(request)

    return middleware
