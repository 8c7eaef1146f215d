"""The webhook fast lane: plain `POST /api/v1/webhook/{id}` requests answered by a small
HTTP/1.1 protocol of our own, in front of aiohttp on the same port.

Why: aiohttp's machinery per request (its parser's objects, the Request, the router,
the middleware chain, the Response and its headers) costs several times what a
webhook's own work costs; on the route that takes the traffic that was most of the API
process's CPU (docs/performance.md, "The webhook fast lane").

Every connection starts here. The lane takes a request only when it is plain and on its
way to a 202:
- exactly `POST /api/v1/webhook/<id>[?query] HTTP/1.1`, an id without `%`;
- header lines of printable ASCII, none repeated; a Content-Length within
  TRIGGERD_MAX_BODY; no Transfer-Encoding, Content-Encoding, Expect or Upgrade;
  `Connection` absent, `keep-alive` or `close`;
- an active trigger in the cache (a miss is loaded here, once), and a body that passes
  every check of WebhookHandler.admit; the pipeline took it.
Anything else, and the connection is handed to aiohttp together with every byte the
client sent from the start of that request: aiohttp answers it as it answers any request
(the same checks, the same error envelope) and keeps the connection. The lane itself
answers only 202, and a 503 when a commit fails after the pipeline took the request.

As aiohttp does: one request at a time per connection (a pipelined one waits in the
buffer), the same response headers (Content-Type, X-Request-ID, Content-Length, Date,
Server, and Connection: close when closing), an idle connection closed after aiohttp's
keep-alive timeout, and a shutdown that answers every request already taken.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.helpers import parse_content_type
from aiohttp.http import SERVER_SOFTWARE

from triggerd.api.middleware import REQUEST_ID_OK, error_body
from triggerd.api.webhook import MISSING, ROUTE, Target, WebhookHandler, accepted_body, unavailable
from triggerd.domain.errors import ApiError
from triggerd.domain.tracecontext import continue_or_start
from triggerd.ingest.pipeline import IngestUnavailable, Overloaded
from triggerd.logs import request_id_var
from triggerd.tracing import NO_SPAN, Span

log = logging.getLogger(__name__)

# aiohttp's own default keep-alive timeout (web_protocol.RequestHandler).
IDLE_TIMEOUT = 3630.0
SWEEP_EVERY = 30.0
# A head longer than this goes to aiohttp, which has its own limits and answers.
MAX_HEAD = 8192

_PREFIX = b"POST /api/v1/webhook/"
_REQUEST_LINE = re.compile(
    rb"POST /api/v1/webhook/([^\x00-\x20\x7f-\xff/?#%{}]+)(?:\?[\x21\x22\x24-\x7e]*)? HTTP/1\.1\r\n"
)
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# Linear on any input: a value runs to the first CR, a name to the first colon.
_FIELDS = re.compile(rb"(?:" + _TOKEN + rb":[\t\x20-\x7e]*\r\n)*\r\n")
_FIELD = re.compile(rb"(" + _TOKEN + rb"):([\t\x20-\x7e]*)\r\n")
_OWS = b" \t"
# Framing the lane leaves to aiohttp.
_NOT_PLAIN = frozenset({b"transfer-encoding", b"content-encoding", b"expect", b"upgrade"})
_REASONS = {202: b"Accepted", 500: b"Internal Server Error", 503: b"Service Unavailable"}
_HEAD = (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nX-Request-ID: %s\r\n"
         b"Content-Length: %d\r\nDate: %s\r\nServer: " + SERVER_SOFTWARE.encode()
         + b"\r\n%s\r\n")  # fmt: skip


class Lane:
    """The protocol factory of a listening socket: one LaneConnection per connection.
    `fallback` makes aiohttp's protocol for a connection handed over."""

    def __init__(self, webhooks: WebhookHandler, fallback: Callable[[], asyncio.Protocol], *,
                 idle_timeout: float = IDLE_TIMEOUT,
                 sweep_every: float = SWEEP_EVERY) -> None:  # fmt: skip
        self.webhooks = webhooks
        self.fallback = fallback
        self.idle_timeout = idle_timeout
        self.sweep_every = sweep_every
        # Requests the lane took, connections it handed to aiohttp.
        self.taken = 0
        self.handed_over = 0
        self.observe = webhooks.metrics.http_duration.labels(ROUTE, "POST").observe
        self.connections: set[LaneConnection] = set()
        self.closing = False
        self._drained = asyncio.Event()
        self._sweeper: asyncio.TimerHandle | None = None
        self._date = b""
        self._date_until = 0.0

    def __call__(self) -> LaneConnection:
        return LaneConnection(self)

    def date(self) -> bytes:
        """The Date header's value, formatted once a second."""
        now = time.time()
        if now >= self._date_until:
            self._date = formatdate(now, usegmt=True).encode()
            self._date_until = float(int(now) + 1)
        return self._date

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().call_later(self.sweep_every, self._tick)

    def _tick(self) -> None:
        self.sweep()
        self.start()

    def sweep(self) -> None:
        """Close the connections idle for `idle_timeout` (nothing in flight)."""
        idle_since = time.monotonic() - self.idle_timeout
        for connection in list(self.connections):
            connection.close_if_idle(idle_since)

    def gone(self, connection: LaneConnection) -> None:
        self.connections.discard(connection)
        if self.closing and not self.connections:
            self._drained.set()

    async def shutdown(self, timeout: float) -> None:  # noqa: ASYNC109
        """Stop taking requests: close idle connections now, the others once they have
        answered what they took; after `timeout`, close what is left."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self.connections):
            connection.close_if_idle(float("inf"))
        if self.connections:
            try:
                async with asyncio.timeout(timeout):
                    await self._drained.wait()
            except TimeoutError:
                for connection in list(self.connections):
                    connection.abort()


class LaneConnection(asyncio.Protocol):
    """One client connection while the lane has it."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.transport: asyncio.Transport | None = None
        # What the client sent that no answer consumed yet: the bytes of one read, or a
        # bytearray once reads pile up (a large body: appending stays linear).
        self.buffer: bytes | bytearray = b""
        self.need = 0  # the length the buffer must reach for the request in it to be whole
        self.busy = False  # a request is being loaded or committed
        self.closing = False  # close once the request in flight is answered
        self.eof = False  # the client sent EOF
        self.paused = False  # reading paused: too much buffered
        self.writable = True
        self.last_active = time.monotonic()
        # The request in flight.
        self.request_id = ""
        self.span: Span = NO_SPAN
        self.started = 0.0
        self.pending: asyncio.Future[Any] | None = None  # held: a task is weakly referenced

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is an asyncio.Transport by interface, not by class.
        self.transport = cast(asyncio.Transport, transport)
        self.lane.connections.add(self)
        if self.lane.closing:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        # A request in flight is still committed (as with aiohttp); its answer is dropped.
        self.transport = None
        self.lane.gone(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if not self.buffer:
            self.buffer = data
        elif isinstance(self.buffer, bytearray):
            self.buffer += data
        else:
            self.buffer = bytearray(self.buffer) + data
        if self.busy:
            if len(self.buffer) > MAX_HEAD + self.lane.webhooks.max_body and self.transport:
                self.transport.pause_reading()
                self.paused = True
            return
        if len(self.buffer) >= self.need:
            self.next()

    def eof_received(self) -> bool:
        # Keep the connection to answer a request in flight; then it closes.
        self.eof = self.closing = True
        return self.busy

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        if not self.busy:
            self.next()

    # -- the lane -------------------------------------------------------------------------

    def close_if_idle(self, idle_since: float) -> None:
        if not self.busy and self.last_active <= idle_since and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def next(self) -> None:
        """Take the next request in the buffer, if it is whole."""
        transport = self.transport
        if transport is None or not self.writable:
            return
        if self.paused:
            self.paused = False
            transport.resume_reading()
        buf = self.buffer
        if not buf:
            if self.closing:
                transport.close()
            return
        if not buf.startswith(_PREFIX[: len(buf)]):
            return self.hand_over()
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD or b"\n\n" in buf or self.eof:
                self.hand_over()
            return
        line = _REQUEST_LINE.match(buf)
        if line is None or _FIELDS.fullmatch(buf, line.end(), end + 4) is None:
            return self.hand_over()
        pairs = _FIELD.findall(buf, line.end(), end + 2)
        headers = {name.lower(): value for name, value in pairs}
        if len(headers) != len(pairs) or not _NOT_PLAIN.isdisjoint(headers):
            return self.hand_over()
        length = headers.get(b"content-length", b"").strip(_OWS)
        if not length.isdigit() or len(length) > 10:
            return self.hand_over()
        stop = end + 4 + int(length)
        if stop - end - 4 > self.lane.webhooks.max_body:
            return self.hand_over()
        connection = headers.get(b"connection", b"").strip(_OWS).lower()
        if connection == b"close":
            self.closing = True
        elif connection not in (b"", b"keep-alive"):
            return self.hand_over()
        if len(buf) < stop:  # the rest of the body is on its way, unless it is not
            if self.eof:
                self.hand_over()
            self.need = stop
            return
        self.need = 0
        raw_id = line.group(1).decode()
        target = self.lane.webhooks.targets.cached(raw_id)
        self.busy = True
        self.started = time.perf_counter()
        if target is MISSING:
            self.pending = asyncio.ensure_future(self._load(raw_id, headers, end + 4, stop))
        else:
            self.take(target, headers, end + 4, stop)

    async def _load(self, raw_id: str, headers: dict[bytes, bytes], start: int,
                    stop: int) -> None:  # fmt: skip
        try:
            target = await self.lane.webhooks.targets.get(raw_id)
        except Exception:  # aiohttp's route loads it again and answers the 503
            target = None
        if self.transport is None:
            self.busy = False
            return
        self.take(target, headers, start, stop)

    def take(self, target: Target | None, headers: dict[bytes, bytes], start: int,
             stop: int) -> None:  # fmt: skip
        """Submit the request, or hand the connection over: aiohttp answers whatever
        is not a 202."""
        if target is None or target.trigger.status != "active":
            self.busy = False
            return self.hand_over()
        webhooks = self.lane.webhooks
        get = headers.get
        content_type = get(b"content-type")
        body = bytes(self.buffer[start:stop])
        key = _text(get(b"idempotency-key"))
        try:
            traceparent, caller = continue_or_start(_text(get(b"traceparent")))
            record = webhooks.admit(
                target, body,
                parse_content_type(_text(content_type) or "")[0] if content_type is not None
                else "application/octet-stream",
                _text(get(b"x-signature")), key, traceparent,
            )  # fmt: skip
            pending = webhooks.pipeline.submit(record, key, len(body))
        except Exception:  # ApiError, Overloaded…: nothing was stored
            self.busy = False
            return self.hand_over()
        given = get(b"x-request-id")
        request_id = _text(given)
        if request_id is None or REQUEST_ID_OK.match(request_id) is None:
            request_id = os.urandom(16).hex()
        self.request_id = request_id
        self.span = webhooks.start_span(traceparent, caller)
        self.buffer = self.buffer[stop:] if len(self.buffer) > stop else b""
        self.lane.taken += 1
        future = pending if isinstance(pending, asyncio.Future) else asyncio.ensure_future(pending)
        self.pending = future
        future.add_done_callback(self.answer)

    def answer(self, future: asyncio.Future[Any]) -> None:
        """The submitted request's answer: 202, or the envelope of a failed commit."""
        if not future.cancelled() and future.exception() is None:
            code, body = 202, accepted_body(future.result())
        else:
            code, body = self._failure(None if future.cancelled() else future.exception())
        transport = self.transport
        if transport is not None:
            close = self.closing or self.lane.closing
            transport.write(_HEAD % (code, _REASONS[code], self.request_id.encode(), len(body),
                                     self.lane.date(), b"Connection: close\r\n" if close
                                     else b"") + body)  # fmt: skip
            if close:
                transport.close()
        self.lane.webhooks.finish(code, self.span)
        self.lane.observe(time.perf_counter() - self.started)
        self.span = NO_SPAN
        self.pending = None
        self.busy = False
        self.last_active = time.monotonic()
        if transport is not None and not transport.is_closing():
            self.next()

    def _failure(self, exc: BaseException | None) -> tuple[int, bytes]:
        token = request_id_var.set(self.request_id)
        try:
            if isinstance(exc, Overloaded | IngestUnavailable) or exc is None:
                error: ApiError = unavailable(exc or IngestUnavailable("cancelled"))
            else:
                log.error("error answering a webhook", exc_info=exc)
                error = ApiError("internal error; see the server log", status=500,
                                 code="internal_error")  # fmt: skip
            return error.status, orjson.dumps(error_body(error.status, error.code,
                                                         error.message, error.details))
        finally:
            request_id_var.reset(token)

    def hand_over(self) -> None:
        """Give the connection to aiohttp with everything from the current request on."""
        transport = self.transport
        if transport is None:
            return
        self.lane.gone(self)
        self.lane.handed_over += 1
        self.transport = None
        protocol = self.lane.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.paused:
            transport.resume_reading()
        if self.buffer:
            protocol.data_received(bytes(self.buffer))
        if self.eof:  # aiohttp closes on it as well
            protocol.eof_received()


def _text(value: bytes | None) -> str | None:
    """A header value as aiohttp gives it: without surrounding whitespace (ASCII only
    reaches here)."""
    return None if value is None else value.strip(_OWS).decode()


class LaneSite(web.BaseSite):
    """A TCP site whose connections start in the lane (aiohttp's TCPSite otherwise)."""

    def __init__(self, runner: web.BaseRunner, lane: Lane, host: str, port: int, *,
                 shutdown_timeout: float) -> None:  # fmt: skip
        super().__init__(runner)
        self.lane = lane
        self.host = host
        self.port = port
        self.shutdown_timeout = shutdown_timeout

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        # As aiohttp's TCPSite makes it (its default backlog).
        self._server = await loop.create_server(self.lane, self.host, self.port,
                                                backlog=128, reuse_address=True)  # fmt: skip
        if self._server.sockets:
            self.port = self._server.sockets[0].getsockname()[1]
        self.lane.start()

    async def stop(self) -> None:
        await super().stop()
        await self.lane.shutdown(self.shutdown_timeout)


__all__ = ["Lane", "LaneSite"]
