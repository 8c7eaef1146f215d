"""A local HTTP target for delivery tests: records every request and answers as told.

    async with Sink() as sink:
        sink.program("/flaky", 503, 503, 200)            # a status sequence; the last repeats
        sink.program("/slow", Reply(200, delay=5))       # answer after 5 s
        sink.program("/busy", Reply(429, headers={"Retry-After": "1"}), 200)
        gate = sink.hold("/stuck")                       # no answer until gate.set()
        ... deliver to sink.url("/flaky") ...
        hits = await sink.wait_for(3, path="/flaky")     # the Received requests, in order
        hits[0].method, hits[0].headers["Idempotency-Key"], hits[0].json()

A request is recorded the moment it arrives, before any delay or hold, so a test can
react to "the target saw it" (e.g. kill the worker mid-delivery). Paths that were never
programmed answer 200 with an empty JSON object. Listens on 127.0.0.1, a free port.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy

from tests.support import wait_until


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None  # bytes/str sent as is; anything else as JSON; None: "{}"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering
    gate: asyncio.Event | None = None  # answer only once this is set

    def encoded(self) -> bytes:
        if self.body is None:
            return b"{}"
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return orjson.dumps(self.body)


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    body: bytes
    at: float  # time.monotonic() on arrival

    def json(self) -> Any:
        return orjson.loads(self.body)


class Sink:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.received: list[Received] = []
        self._programs: dict[str, deque[Reply]] = defaultdict(deque)
        self._gates: list[asyncio.Event] = []
        self._runner: web.AppRunner | None = None

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> Sink:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        for gate in self._gates:
            gate.set()  # let held requests answer so the server can stop
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Sink:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.close()

    # -- programming -----------------------------------------------------------------
    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path if path.startswith('/') else '/' + path}"

    def program(self, path: str, *replies: Reply | int) -> None:
        """Answer the next requests to `path` with `replies` in order (an int is a bare
        status); the last reply repeats for every later request."""
        queue = self._programs[path]
        queue.clear()
        queue.extend(Reply(r) if isinstance(r, int) else r for r in replies)

    def hold(self, path: str, status: int = 200) -> asyncio.Event:
        """Requests to `path` get no answer until the returned event is set."""
        gate = asyncio.Event()
        self._gates.append(gate)
        self.program(path, Reply(status, gate=gate))
        return gate

    # -- inspection ------------------------------------------------------------------
    def requests(self, path: str | None = None) -> list[Received]:
        return [r for r in self.received if path is None or r.path == path]

    async def wait_for(self, count: int, path: str | None = None,
                       timeout: float = 20.0) -> list[Received]:  # fmt: skip
        """Wait until at least `count` requests (to `path`) arrived; returns them all."""

        async def enough() -> list[Received] | None:
            found = self.requests(path)
            return found if len(found) >= count else None

        await wait_until(enough, timeout=timeout, what=f"{count} request(s) to {path or 'sink'}")
        return self.requests(path)

    # -- serving -----------------------------------------------------------------------
    def _next_reply(self, path: str) -> Reply:
        queue = self._programs.get(path)
        if not queue:
            return Reply()
        return queue.popleft() if len(queue) > 1 else queue[0]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(
            Received(request.method, request.path, request.query_string,
                     request.headers, body, time.monotonic())
        )  # fmt: skip
        reply = self._next_reply(request.path)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.gate is not None:
            await reply.gate.wait()
        return web.Response(
            status=reply.status,
            body=reply.encoded(),
            headers={"Content-Type": "application/json", **reply.headers},
        )
