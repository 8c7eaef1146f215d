"""A lean HTTP/1.1 load generator and sink for the end-to-end phase of bench/ingest.py.

On this 2-core machine the harness shares the CPUs with what it measures. The aiohttp
client and aiohttp sink used before took 36% and 18% of a core at 1,000 webhooks/s
(/proc/PID/stat over the run), which with triggerd's own ~140% left the machine at
~195% of 200%: the figures were queueing behind the harness, not triggerd. These two
speak just enough HTTP/1.1 over asyncio protocols (keep-alive connections,
Content-Length bodies, no chunking) to cost a fraction of that. Bench tools only: they
trust their peer.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import orjson

_HEAD_END = b"\r\n\r\n"


def _header(head: bytes, name: bytes) -> bytes | None:
    """The value of header `name` (lower case) in a raw header block, or None."""
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _messages(buffer: bytearray) -> list[tuple[bytes, bytes]]:
    """Complete (header block, body) messages at the front of `buffer`, removed from it."""
    done: list[tuple[bytes, bytes]] = []
    while True:
        end = buffer.find(_HEAD_END)
        if end < 0:
            return done
        head = bytes(buffer[:end])
        length = int(_header(head, b"content-length") or 0)
        start = end + len(_HEAD_END)
        if len(buffer) < start + length:
            return done
        done.append((head, bytes(buffer[start : start + length])))
        del buffer[: start + length]


class _Client(asyncio.Protocol):
    """One keep-alive connection: one request at a time."""

    def __init__(self, on_idle: Callable[[_Client], None], on_answer: Callable[
            [float, int, bytes], None]) -> None:  # fmt: skip
        self.on_idle = on_idle
        self.on_answer = on_answer
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.sent = time.time()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        for head, body in _messages(self.buffer):
            self.on_answer(self.sent, int(head.split(b" ", 2)[1]), body)
            self.on_idle(self)


Sent = dict[str, tuple[float, float]]  # event id: (request sent, 202 received)


async def open_loop(host: str, port: int, path: str, body: bytes, rate: int, seconds: float,
                    max_connections: int = 256) -> tuple[Sent, int]:  # fmt: skip
    """POST `body` to `path` `rate` times a second on a fixed schedule for `seconds`.
    Returns (what was accepted, how many requests were not answered 202)."""
    loop = asyncio.get_running_loop()
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body  # fmt: skip
    results: Sent = {}
    failures = 0
    total = int(rate * seconds)
    answered = 0
    idle: list[_Client] = []
    waiting = 0  # due requests not yet sent: every connection was busy
    everything = loop.create_future()
    connecting: set[asyncio.Task[None]] = set()

    def on_answer(sent: float, status: int, answer: bytes) -> None:
        nonlocal failures, answered
        answered += 1
        if status == 202:
            results[orjson.loads(answer)["event_id"]] = (sent, time.time())
        else:
            failures += 1
        if answered == total and not everything.done():
            everything.set_result(None)

    def on_idle(conn: _Client) -> None:
        nonlocal waiting
        if waiting:
            waiting -= 1
            conn.send(request)
        else:
            idle.append(conn)

    async def connect() -> None:
        _transport, conn = await loop.create_connection(
            lambda: _Client(on_idle, on_answer), host, port
        )
        on_idle(conn)

    await asyncio.gather(*[connect() for _ in range(16)])
    opened = 16
    start = time.monotonic()
    for n in range(total):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if idle:
            idle.pop().send(request)
            continue
        waiting += 1
        if opened < max_connections:
            opened += 1
            task = loop.create_task(connect())
            connecting.add(task)
            task.add_done_callback(connecting.discard)
    await asyncio.wait_for(everything, timeout=120)
    return results, failures


async def closed_loop(
    host: str, ports: list[int], path: str, body: Callable[[int], bytes], total: int,
    connections: int,
) -> tuple[list[float], dict[int, int]]:  # fmt: skip
    """POST `body(k)` for k in range(total) over `connections` keep-alive connections
    (shared out among `ports`), each sending its next request as soon as the last was
    answered. Returns the latencies (ms) and a count of the answers by status."""
    loop = asyncio.get_running_loop()
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sent = 0
    everything = loop.create_future()

    def on_answer(began: float, status: int, _answer: bytes) -> None:
        latencies.append((time.time() - began) * 1000)
        statuses[status] = statuses.get(status, 0) + 1
        if len(latencies) == total and not everything.done():
            everything.set_result(None)

    def on_idle(conn: _Client) -> None:
        nonlocal sent
        if sent < total:
            payload = body(sent)
            sent += 1
            conn.send(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload)

    opened = [await loop.create_connection(lambda: _Client(on_idle, on_answer), host,
                                           ports[n % len(ports)])
              for n in range(min(connections, total))]  # fmt: skip
    for _transport, conn in opened:
        on_idle(conn)
    try:
        await asyncio.wait_for(everything, timeout=600)
    finally:
        for transport, _conn in opened:
            transport.close()
    return latencies, statuses


class _Sink(asyncio.Protocol):
    def __init__(self, arrivals: dict[str, float]) -> None:
        self.arrivals = arrivals
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        assert self.transport is not None
        for head, _body in _messages(self.buffer):
            event_id = _header(head, b"x-event-id")
            if event_id is not None:
                self.arrivals.setdefault(event_id.decode(), now)
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 2\r\n\r\n{}")  # fmt: skip


async def sink(port: int, out: Path) -> None:
    """Answer 200 to every request on `port`, recording when each X-Event-Id first
    arrived (time.time()); on SIGTERM write {event_id: arrival} to `out` and return."""
    loop = asyncio.get_running_loop()
    arrivals: dict[str, float] = {}
    server = await loop.create_server(lambda: _Sink(arrivals), "127.0.0.1", port)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    await stop
    server.close()
    out.write_text(orjson.dumps(arrivals).decode())

