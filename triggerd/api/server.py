"""The HTTP server's own error answers in the API's envelope.

aiohttp answers some requests before any middleware sees them: a request line or header
too long or malformed, a bad `Content-Length`, broken chunked framing, a
`Content-Encoding` it cannot decode, an unknown method. It writes those as plain text
without an `X-Request-ID`, while SPEC §3 promises the error envelope and the header on
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
from triggerd.api.middleware import error_body
from triggerd.logs import request_id_var

log = logging.getLogger(__name__)

_REQUEST_LINE = re.compile(rb"/|[A-Z]+ ")
_CODES = {400: "bad_request", 413: "payload_too_large", 414: "uri_too_long",
          415: "unsupported_media_type", 431: "headers_too_large", 501: "not_implemented",
          504: "timeout"}  # fmt: skip


def _classify(status: int, exc: BaseException | None) -> int:
    """A sharper status than aiohttp's blanket 400 where the cause is clear."""
    if isinstance(exc, http_exceptions.ContentEncodingError):
        return 415  # an encoding we cannot decode (br, zstd…), not a malformed request
    if isinstance(exc, http_exceptions.LineTooLong):
        # The exception carries the start of what was too long: a URL (or the request
        # line, by parser) is a 414, anything else a header.
        line = exc.args[0] if exc.args else b""
        line = line.encode("latin-1", "replace") if isinstance(line, str) else bytes(line)
        return 414 if _REQUEST_LINE.match(line) else 431
    return status


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
        status = _classify(status, exc)
        if status >= 500:
            log.error("error handling a request", exc_info=exc)
            text = "internal error; see the server log"
        else:
            log.info("malformed request from %s: %s", request.remote, message or exc)
            text = message or str(exc) or "malformed request"
        request_id = os.urandom(16).hex()
        token = request_id_var.set(request_id)
        try:
            body = error_body(status, _CODES.get(status, f"http_{status}"), text)
        finally:
            request_id_var.reset(token)
        response = json_response(body, status=status)
        response.headers["X-Request-ID"] = request_id
        response.force_close()
        return response


class EnvelopeServer(web_server.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """aiohttp's AppRunner with EnvelopeServer as its protocol factory."""

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        # Same object, same state; only the protocol it makes per connection differs.
        server.__class__ = EnvelopeServer
        return server


__all__ = ["AppRunner", "EnvelopeRequestHandler"]
