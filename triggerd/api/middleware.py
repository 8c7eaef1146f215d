"""The middleware every response passes through: request IDs, the one error envelope,
request timing, and API-key access control."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from triggerd.api.http import json_response
from triggerd.api.keys import KeyCheck, KeyRequired, requires_key
from triggerd.bus.producer import BusUnavailable
from triggerd.domain.access import ApiKey
from triggerd.domain.errors import ApiError
from triggerd.logs import request_id_var
from triggerd.metrics import Metrics
from triggerd.store.db import is_transient

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Echoed as given when it is printable ASCII (no control characters to forge log lines
# with) of sane length; anything else is replaced by a new id.
REQUEST_ID_OK = re.compile(r"^[\x20-\x7e]{1,200}$")
# An API call the database has not answered by then (a server that hangs rather than
# refuses: stopped, or its disk stuck) is answered 503 instead of waiting with it. Far
# above what any route takes; webhook ingestion has its own bound (its queue).
API_DEADLINE = 15.0
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


def _message(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "no such route"
    if exc.status == 405:
        return f"method not allowed; allowed: {exc.headers.get('Allow', '')}"
    if exc.status == 413:
        return "request body too large"
    return exc.reason


def api_middleware(
    metrics: Metrics, keys: Sequence[ApiKey]
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Every request, in this order: a request ID (the client's `X-Request-ID` when it is
    sane, else a new one) in the log context and on the response; the API key and its
    scope on `/api/v1` except webhook ingestion (api.keys); the error envelope for
    whatever the handler raised; the request's duration by route and method.

    One middleware, not four: each aiohttp middleware layer costs a coroutine and a
    partial per request, which is measurable at thousands of webhooks a second."""
    key_check = KeyCheck(keys, metrics)
    guarded = bool(keys)
    durations: dict[tuple[str, str], Callable[[float], None]] = {}

    def observe(request: web.Request, seconds: float) -> None:
        route = "unmatched"
        info = request.match_info
        if info.http_exception is None and info.route.resource is not None:
            route = info.route.resource.canonical
        key = (route, request.method)
        child = durations.get(key)
        if child is None:
            # Routes and methods are a small fixed set; unmatched paths share one label.
            child = durations[key] = metrics.http_duration.labels(*key).observe
        child(seconds)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        given = request.headers.get("X-Request-ID")
        request_id = given if given and REQUEST_ID_OK.match(given) else os.urandom(16).hex()
        token = request_id_var.set(request_id)
        try:
            try:
                api = requires_key(request.path)
                if guarded and api:
                    key_check.check(request)
                _check_encoding(request)
                if api:
                    response = await _within_deadline(handler, request)
                else:
                    response = await handler(request)
            except ApiError as exc:
                response = error_response(exc.status, exc.code, exc.message, exc.details)
                if exc.close_connection:
                    response.force_close()
                if isinstance(exc, KeyRequired):
                    response.headers["WWW-Authenticate"] = 'Bearer realm="triggerd"'
            except web.HTTPException as exc:
                if exc.status < 400:  # a redirect: aiohttp sends it as it is
                    exc.headers["X-Request-ID"] = request_id
                    raise
                response = _http_error(exc)
            except Exception as exc:
                response = _unexpected(request, exc)
            if response.status >= 400:
                _drop_unread_body(request, response)
            response.headers["X-Request-ID"] = request_id
            return response
        finally:
            observe(request, time.perf_counter() - started)
            request_id_var.reset(token)

    return middleware


class DeadlineExceeded(ApiError):
    """503: the call did not finish within API_DEADLINE (its transaction was abandoned:
    a change it made is rolled back, unless the server had taken its COMMIT already)."""

    status = 503
    code = "unavailable"


async def _within_deadline(handler: Handler, request: web.Request) -> web.StreamResponse:
    try:
        async with asyncio.timeout(API_DEADLINE) as deadline:
            return await handler(request)
    except TimeoutError:
        if not deadline.expired():
            raise  # the handler's own
        log.warning("%s %s: no answer within %gs (is the database hung?)", request.method,
                    request.path, API_DEADLINE)  # fmt: skip
        raise DeadlineExceeded(
            f"no answer from the database within {API_DEADLINE:g}s; retry shortly (a change"
            " may or may not have been made: read it back before sending it again)"
        ) from None


# What aiohttp decodes (br and zstd only with optional packages we do not install; the
# parser refuses those itself). Any other Content-Encoding it would pass through as is.
_DECODED = frozenset({"", "identity", "gzip", "deflate"})


def _check_encoding(request: web.Request) -> None:
    encoding = request.headers.get("Content-Encoding")
    if encoding is not None and encoding.strip().lower() not in _DECODED:
        raise ApiError(f"unsupported Content-Encoding {encoding[:40]!r} (use gzip or deflate)",
                       status=415, code="unsupported_media_type")  # fmt: skip


def _drop_unread_body(request: web.Request, response: web.StreamResponse) -> None:
    """An error answered before the body was read: aiohttp reads the rest afterwards
    to reuse the connection, and a compressed body that does not decode then fails
    there, logged as an unhandled error. Such a body is dropped with the connection."""
    if request.headers.get("Content-Encoding") and not request.content.is_eof():
        request.content.feed_eof()
        response.force_close()


def _http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's own 4xx/5xx (no route, wrong method, body too large…) in the envelope."""
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    response = error_response(
        exc.status, _HTTP_CODES.get(exc.status, f"http_{exc.status}"), _message(exc)
    )
    response.headers.update(headers)
    return response


def _unexpected(request: web.Request, exc: Exception) -> web.Response:
    if is_transient(exc) or isinstance(exc, BusUnavailable):
        # The database (or Kafka, where a route needs it) is down: the client may
        # retry; /health says what is down. Logged without a traceback: not a bug.
        log.warning("%s %s: dependency unavailable: %s", request.method, request.path, exc)
        response = error_response(503, "unavailable", "a dependency is unavailable; retry")
        response.headers["Retry-After"] = "1"
        return response
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal_error", "internal error; see the server log")


__all__ = ["api_middleware", "error_body", "error_response", "requires_key"]
