"""The HTTP server's own error answers in the API's envelope.

aiohttp answers some requests before any middleware sees them: a request line or header
too long or malformed, a bad `Content-Length`, broken chunked framing, a
`Content-Encoding` it cannot decode, an unknown method. It writes those as plain text
without an `X-Request-ID`, while the API promises the error envelope and the header on
every response. `AppRunner` here swaps in a request handler whose `handle_error` writes
them the same way the middleware does, and logs a client's malformed request as one
line instead of an error with a traceback.
"""

from __future__ import annotations

import logging
import os
import re

from aiohttp import http_exceptions, web, web_protocol, web_request, web_server

from triggerd.api.http import json_response
from triggerd.api.lane import Lane, LaneSite
from triggerd.api.middleware import error_body
from triggerd.api.webhook import WEBHOOK
from triggerd.logs import request_id_var

log = logging.getLogger(__name__)

_REQUEST_LINE = re.compile(rb"/|[A-Z]+ ")
# The request line as the parser's message quotes it: `b'BREW /x HTTP/1.1'`.
_WELL_FORMED = re.compile(r"b'[!#$%&*+.^_`|~0-9A-Za-z-]+ \S+ HTTP/\d\.\d'")
_CODES = {400: "bad_request", 413: "payload_too_large", 414: "uri_too_long",
          415: "unsupported_media_type", 431: "headers_too_large", 501: "not_implemented",
          504: "timeout"}  # fmt: skip


def _classify(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    """(status, code, message) sharper than aiohttp's blanket 400 where the cause is
    clear. Never aiohttp's own text: it quotes the offending bytes, and those may be a
    credential (`Authorization: Bearer …` with a stray control character)."""
    if isinstance(exc, http_exceptions.ContentEncodingError):
        if "install" in str(exc) or "Can not decode" in str(exc):  # br, zstd…: no decoder
            return 415, "unsupported_media_type", "unsupported Content-Encoding"
        return 400, "malformed_body", "the body is not in its declared Content-Encoding"
    if isinstance(exc, http_exceptions.LineTooLong):
        # The exception carries the start of what was too long: a URL (or the request
        # line, by parser) is a 414, anything else a header.
        line = exc.args[0] if exc.args else b""
        line = line.encode("latin-1", "replace") if isinstance(line, str) else bytes(line)
        if _REQUEST_LINE.match(line):
            return 414, "uri_too_long", "request line too long"
        return 431, "headers_too_large", "a request header is too long"
    if isinstance(exc, http_exceptions.BadHttpMethod) and _WELL_FORMED.search(str(exc)):
        # A well-formed request line with a method the parser does not know (BREW, `get`):
        # no route allows it.
        return 405, "method_not_allowed", "unknown method: no route allows it"
    for kind, text in _REASONS:
        if isinstance(exc, kind):
            return status, _CODES.get(status, f"http_{status}"), text
    return status, _CODES.get(status, f"http_{status}"), "malformed request"


_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (http_exceptions.BadHttpMethod, "malformed request line"),
    (http_exceptions.BadStatusLine, "malformed request line"),
    (http_exceptions.InvalidHeader, "malformed request header"),
    (http_exceptions.ContentLengthError, "malformed Content-Length or body"),
    (http_exceptions.TransferEncodingError, "malformed chunked body"),
    (http_exceptions.BadHttpMessage, "malformed request"),
)


class EnvelopeRequestHandler(web_protocol.RequestHandler):
    def handle_error(
        self,
        request: web_request.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # a response is under way: nothing to add
            return super().handle_error(request, status, exc, message)
        status, code, text = _classify(status, exc)
        if status >= 500:
            log.error("error handling a request", exc_info=exc)
            code, text = "internal_error", "internal error; see the server log"
        else:  # the exception's text is not logged: it may quote a credential
            log.info("malformed request from %s: %s (%s)", request.remote, text,
                     type(exc).__name__)  # fmt: skip
        request_id = os.urandom(16).hex()
        token = request_id_var.set(request_id)
        try:
            body = error_body(status, code, text)
        finally:
            request_id_var.reset(token)
        response = json_response(body, status=status)
        response.headers["X-Request-ID"] = request_id
        response.force_close()
        return response


class EnvelopeServer(web_server.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


def make_site(runner: web.AppRunner, host: str, port: int, *, fast_lane: bool,
              shutdown_timeout: float) -> web.BaseSite:  # fmt: skip
    """The process's listening site: the webhook fast lane (api/lane.py) in front of
    aiohttp when the app takes webhooks (the api role) and `fast_lane`, else aiohttp's
    own TCPSite."""
    webhooks = runner.app.get(WEBHOOK)
    if webhooks is None or not fast_lane:
        return web.TCPSite(runner, host, port, reuse_address=True)
    assert runner.server is not None, "runner.setup() first"
    return LaneSite(runner, Lane(webhooks, runner.server), host, port,
                    shutdown_timeout=shutdown_timeout)  # fmt: skip


class AppRunner(web.AppRunner):
    """aiohttp's AppRunner with EnvelopeServer as its protocol factory."""

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        # Same object, same state; only the protocol it makes per connection differs.
        server.__class__ = EnvelopeServer
        return server


__all__ = ["AppRunner", "EnvelopeRequestHandler", "make_site"]
