"""The delivery fast lane (worker/lane.py) over real sockets: the request bytes it writes
are aiohttp's, byte for byte; every answer is recorded as through aiohttp (status,
stored error, Retry-After); what it does not take goes through aiohttp untouched and
fails or succeeds as before; connections are kept, replaced and limited as aiohttp's."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ipaddress
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from tests.support import wait_until
from triggerd.domain.destinations import DestinationPolicy
from triggerd.worker import delivery
from triggerd.worker.delivery import AttemptResult, Target
from triggerd.worker.lane import DeliveryLane
from triggerd.worker.role import new_http_session, new_lane

EVENT = "0190a0b0-0000-7000-8000-00000000000a"
TRIGGER = "0190a0b0-0000-7000-8000-00000000000b"
BODY = b'{"order_id": "o-1", "amount": 12.5}'
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
LOCAL = DestinationPolicy([ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")])

Respond = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    """A scripted HTTP/1.1 server: records each request's raw bytes and connection."""

    respond: Respond
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    port: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                await self.respond(request, writer)
                if writer.is_closing():
                    return
        finally:
            self.open_now -= 1
            writer.close()


@contextlib.asynccontextmanager
async def serving(respond: Respond, host: str = "127.0.0.1") -> AsyncIterator[Server]:
    server = Server(respond)
    listener = await asyncio.start_server(server.handle, host, 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        for task in server.tasks:
            task.cancel()
        await asyncio.gather(*server.tasks, return_exceptions=True)


def answering(raw: bytes, *, close: bool = False) -> Respond:
    async def respond(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()
        if close:
            writer.close()

    return respond


OK_RAW = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
OK = answering(OK_RAW)


Clients = tuple[aiohttp.ClientSession, DeliveryLane]


@contextlib.asynccontextmanager
async def clients(
    policy: DestinationPolicy = LOCAL, limit_per_host: int | None = None
) -> AsyncIterator[Clients]:
    lane = new_lane(16, policy)
    if limit_per_host is not None:
        lane.limit_per_host = limit_per_host
    try:
        async with new_http_session(16, policy) as http:
            yield http, lane
    finally:
        await lane.close()


async def attempt(http: aiohttp.ClientSession, lane: DeliveryLane | None, target: Target,
                  body: bytes = BODY) -> AttemptResult:  # fmt: skip
    headers = delivery.build_headers(target, EVENT, TRIGGER, body, timestamp=1_700_000_000,
                                     traceparent=TRACE)  # fmt: skip
    return await delivery.send(http, target, headers, body, lane)


def same(a: AttemptResult, b: AttemptResult) -> tuple[object, ...]:
    """What a delivery records of a result, but the latency."""
    assert (a.status, a.error, a.retry_after, a.permanent) == (
        b.status, b.error, b.retry_after, b.permanent)  # fmt: skip
    return (a.status, a.error)


# --- the request: aiohttp's bytes ------------------------------------------------------


REQUESTS = [
    ("POST", "/hook", ()),
    ("PUT", "/a%20b/c?x=1&y=%2F#fragment", ()),
    ("GET", "", ()),
    ("PATCH", "/p?", (("X-Custom", "v"), ("user-agent", "theirs"), ("Accept", "text/plain"))),
    ("DELETE", "/d/ü/%C3%BC?q=ä", (("Accept-Encoding", "identity"), ("X-Empty", ""))),
    ("POST", "/signed", (("Authorization", "Bearer t0k3n"), ("X-Tab", "a\tb"))),
]


@pytest.mark.parametrize(("method", "path", "extra"), REQUESTS)
async def test_the_request_bytes_are_aiohttps(
    method: str, path: str, extra: tuple[tuple[str, str], ...]
) -> None:
    async with serving(OK) as server, clients() as (http, lane):
        target = Target(endpoint=f"http://127.0.0.1:{server.port}{path}", method=method,
                        headers=extra, signing_secret="s3cret")  # fmt: skip
        for body in (BODY, b""):
            assert (await attempt(http, None, target, body)).status == 200
            assert (await attempt(http, lane, target, body)).status == 200
    assert lane.taken == 2 and lane.passed == 0
    through_aiohttp, through_lane = server.requests[0::2], server.requests[1::2]
    assert through_lane == through_aiohttp
    assert b"webhook-signature: v1," in through_lane[0]


async def test_a_host_name_and_ipv6_literal_are_taken() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    async with serving(OK, host="::1") as server, clients() as (http, lane):
        for endpoint in (f"http://[::1]:{server.port}/six",):
            target = Target(endpoint=endpoint)
            assert (await attempt(http, None, target)).status == 200
            assert (await attempt(http, lane, target)).status == 200
    assert lane.taken == 1
    assert server.requests[1] == server.requests[0]
    async with serving(OK) as server, clients() as (http, lane):
        target = Target(endpoint=f"http://localhost:{server.port}/name")
        assert (await attempt(http, None, target)).status == 200
        assert (await attempt(http, lane, target)).status == 200
    assert lane.taken == 1 and server.requests[1] == server.requests[0]


# --- the answer: recorded as through aiohttp -------------------------------------------


def gzipped(text: bytes) -> bytes:
    return gzip.compress(text)


LONG = b"x" * 300 + b" tail that no error shows"
ANSWERS = {
    "200 no body": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "201 with body": b"HTTP/1.1 201 Created\r\nContent-Length: 11\r\n\r\n{\"id\": 417}",
    "202 chunked": b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",  # noqa: E501
    "204": b"HTTP/1.1 204 No Content\r\n\r\n",
    "200 HTTP/1.0 until close": b"HTTP/1.0 200 OK\r\n\r\nbody until close",
    "100 then 200": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "200 no reason": b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    "500 text": b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 12\r\n\r\ndb is down\r\n",
    "503 Retry-After": b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",  # noqa: E501
    "429 Retry-After date": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\nContent-Length: 4\r\n\r\nslow",  # noqa: E501
    "404 chunked": b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nno s\r\n7;ext=1\r\nuch hoo\r\n1\r\nk\r\n0\r\n\r\n",  # noqa: E501
    "500 gzip": b"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
    % (len(gzipped(b"compressed failure")), gzipped(b"compressed failure")),
    "502 deflate": b"HTTP/1.1 502 Bad Gateway\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s"  # noqa: E501
    % (len(zlib.compress(b"deflated failure")), zlib.compress(b"deflated failure")),
    "301 redirect": b"HTTP/1.1 301 Moved Permanently\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",  # noqa: E501
    "400 long body": b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s"
    % (len(LONG), LONG),
    "418 unprintable": b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 10\r\n\r\nt\x00e\x1ba\n\tpot",
    "500 cut short": b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 100\r\n\r\npartial",
    "500 until close": b"HTTP/1.1 500 Internal Server Error\r\n\r\nuntil the end",
    "500 Connection close": b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",  # noqa: E501
    "408": b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("name", list(ANSWERS))
async def test_each_answer_is_recorded_as_through_aiohttp(name: str) -> None:
    raw = ANSWERS[name]
    closes = b"HTTP/1.0" in raw or b"cut short" in name.encode() or b"until close" in name.encode()
    async with serving(answering(raw, close=closes)) as server, clients() as (http, lane):
        target = Target(endpoint=f"http://127.0.0.1:{server.port}/hook", timeout=5)
        before = await attempt(http, None, target)
        after = await attempt(http, lane, target)
    assert lane.taken == 1
    status, _ = same(before, after)
    assert status == int(raw.rsplit(b"HTTP/1.", 1)[1][2:5])


ODD_BUT_READABLE = {
    "bare line feeds": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "500 with bare line feeds": b"HTTP/1.1 500 Oops\nContent-Length: 4\n\nfail",
    "space before a colon": b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
    "status line with a trailing space": b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.0 keep-alive": b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",  # noqa: E501
    "a folded header": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "lower-case protocol": b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "two-digit status": b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("name", list(ODD_BUT_READABLE))
async def test_odd_answers_read_as_aiohttp_reads_them(name: str) -> None:
    async with serving(answering(ODD_BUT_READABLE[name], close=True)) as server, \
            clients() as (http, lane):  # fmt: skip
        target = Target(endpoint=f"http://127.0.0.1:{server.port}/odd", timeout=5)
        before = await attempt(http, None, target)
        after = await attempt(http, lane, target)
    assert before.status == after.status
    if after.status is None:  # an unreadable status line: a retryable failure either way
        assert after.error is not None and after.error.startswith("InvalidResponse")
        assert after.verdict == delivery.RETRY
    else:
        assert after.error == before.error


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nthis is not a header\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
])  # fmt: skip
async def test_a_2xx_with_an_unreadable_header_is_a_success(raw: bytes) -> None:
    """aiohttp refuses these answers (and the attempt would be retried, so delivered
    twice); the target had the request and said 2xx, so the lane records a success, and
    does not reuse the connection."""
    async with serving(answering(raw)) as server, clients() as (http, lane):
        target = Target(endpoint=f"http://127.0.0.1:{server.port}/odd")
        assert (await attempt(http, None, target)).status is None
        for _ in range(2):
            result = await attempt(http, lane, target)
            assert result.status == 200 and result.error is None
    assert lane.idle_connections() == [] and server.connections == 3


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 4000000\r\n\r\n" + b"x" * 4_000_000,
    b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"1\r\ny\r\n" * 500_000 + b"0\r\n\r\n",
    b"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
    % (len(gzipped(b"z" * 3_000_000)), gzipped(b"z" * 3_000_000)),
])  # fmt: skip
async def test_a_large_answer_is_recorded_without_being_read_whole(raw: bytes) -> None:
    async with serving(answering(raw)) as server, clients() as (http, lane):
        target = Target(endpoint=f"http://127.0.0.1:{server.port}/big", timeout=10)
        before = await attempt(http, None, target)
        after = await attempt(http, lane, target)
    same(before, after)
    # reading stopped after what the record needs: that connection is not reused
    assert lane.idle_connections() == []


async def test_an_answer_that_never_comes_times_out_as_before() -> None:
    async def silent(_request: bytes, _writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async with serving(silent) as server, clients() as (http, lane):
        target = Target(endpoint=f"http://127.0.0.1:{server.port}/slow", timeout=0.3)
        before = await attempt(http, None, target)
        after = await attempt(http, lane, target)
    same(before, after)
    assert after.error == "timeout after 0.3s" and 0.3 <= after.latency < 2


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_connection_that_ends_unanswered_fails_as_before(how: str) -> None:
    async def hang_up(_request: bytes, writer: asyncio.StreamWriter) -> None:
        if how == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()

    async with serving(hang_up) as server, clients() as (http, lane):
        target = Target(endpoint=f"http://127.0.0.1:{server.port}/gone")
        before = await attempt(http, None, target)
        after = await attempt(http, lane, target)
    same(before, after)
    assert after.status is None and after.verdict == delivery.RETRY


async def test_a_malformed_answer_is_a_retryable_failure() -> None:
    async with serving(answering(b"SPDY/9 hello\r\n\r\n", close=True)) as server, \
            clients() as (http, lane):  # fmt: skip
        target = Target(endpoint=f"http://127.0.0.1:{server.port}/odd")
        before = await attempt(http, None, target)
        after = await attempt(http, lane, target)
    assert before.status is None and after.status is None
    assert after.verdict == delivery.RETRY and not after.permanent
    assert after.error is not None and "invalid status line" in after.error


# --- what the lane leaves to aiohttp ---------------------------------------------------


async def test_what_the_lane_does_not_take_goes_through_aiohttp_unchanged() -> None:
    async with serving(OK) as server, clients() as (http, lane):
        base = f"127.0.0.1:{server.port}"
        cases = [
            Target(endpoint=f"http://user:pw@{base}/credentials"),
            Target(endpoint=f"http://{base}/host", headers=(("Host", "example.com"),)),
            Target(endpoint=f"http://{base}/bad", headers=(("X-Bad", "a\r\nX-Injected: 1"),)),
            Target(endpoint=f"http://{base}/utf8", headers=(("X-Name", "Zoë"),)),
            Target(endpoint=f"http://{base}/te", headers=(("Transfer-Encoding", "chunked"),)),
            Target(endpoint=f"http://127.1:{server.port}/legacy-form"),
        ]
        for target in cases:
            count = len(server.requests)
            before = await attempt(http, None, target)
            after = await attempt(http, lane, target)
            same(before, after)
            assert server.requests[count + 1 :] == server.requests[count : count + 1]
    assert lane.taken == 0 and lane.passed == len(cases)
    assert b"Authorization: Basic dXNlcjpwdw==" in server.requests[0]


async def test_refused_destinations_read_as_before() -> None:
    async with serving(OK) as server, clients(DestinationPolicy()) as (http, lane):
        for host in ("127.0.0.1", "localhost"):
            target = Target(endpoint=f"http://{host}:{server.port}/internal")
            before = await attempt(http, None, target)
            after = await attempt(http, lane, target)
            same(before, after)
            assert after.permanent and after.error is not None
            assert after.error.startswith("destination not allowed")
    assert server.requests == [] and lane.taken == 0


async def test_a_refused_connect_reads_as_before() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens once it is closed
    async with clients() as (http, lane):
        target = Target(endpoint=f"http://127.0.0.1:{port}/closed")
        before = await attempt(http, None, target)
        after = await attempt(http, lane, target)
    same(before, after)
    assert after.status is None and "Connect call failed" in (after.error or "")
    assert lane.passed == 1


async def test_https_goes_through_aiohttp() -> None:
    async with serving(OK) as server, clients() as (http, lane):
        target = Target(endpoint=f"https://127.0.0.1:{server.port}/tls", timeout=2)
        result = await attempt(http, lane, target)
    assert result.status is None and lane.taken == 0 and lane.passed == 1


# --- connections ------------------------------------------------------------------------


async def test_a_kept_alive_connection_carries_the_next_attempts() -> None:
    async with serving(OK) as server, clients() as (http, lane):
        target = Target(endpoint=f"http://127.0.0.1:{server.port}/hook")
        for _ in range(5):
            assert (await attempt(http, lane, target)).status == 200
    assert server.connections == 1 and len(server.requests) == 5


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345",  # the rest of the body is late
])  # fmt: skip
async def test_a_connection_not_known_clean_is_not_reused(raw: bytes) -> None:
    async with serving(answering(raw)) as server, clients() as (http, lane):
        target = Target(endpoint=f"http://127.0.0.1:{server.port}/hook")
        for _ in range(3):
            await attempt(http, lane, target)
    assert server.connections == 3


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    # keep-alive by its headers, then the server drops it (as servers do with idle ones)
    async with serving(answering(OK_RAW, close=True)) as server, clients() as (http, lane):
        target = Target(endpoint=f"http://127.0.0.1:{server.port}/hook")
        for _ in range(3):
            assert (await attempt(http, lane, target)).status == 200
            idle = lane.idle_connections()

            async def dropped(idle: list[Any] = idle) -> bool:
                return all(c.closed for c in idle)

            await wait_until(dropped, timeout=5, what="the server's close seen")
    assert server.connections == 3


async def test_idle_connections_expire_after_the_keepalive_timeout() -> None:
    async with serving(OK) as server, clients() as (http, lane):
        lane.keepalive_timeout = 0.2
        target = Target(endpoint=f"http://127.0.0.1:{server.port}/hook")
        await attempt(http, lane, target)
        await attempt(http, lane, target)
        await asyncio.sleep(0.3)
        await attempt(http, lane, target)
    assert server.connections == 2


async def test_one_host_gets_at_most_its_share_of_connections() -> None:
    async def slow(_request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async with serving(slow) as server, clients(limit_per_host=2) as (http, lane):
        target = Target(endpoint=f"http://127.0.0.1:{server.port}/hook")
        results = await asyncio.gather(*(attempt(http, lane, target) for _ in range(8)))
    assert [r.status for r in results] == [200] * 8
    assert server.most_open == 2


async def test_a_cancelled_attempt_closes_its_connection() -> None:
    arrived = asyncio.Event()

    async def stall(_request: bytes, _writer: asyncio.StreamWriter) -> None:
        arrived.set()
        await asyncio.sleep(30)

    async with serving(stall) as server, clients() as (http, lane):
        target = Target(endpoint=f"http://127.0.0.1:{server.port}/hook")
        task = asyncio.create_task(attempt(http, lane, target))
        await asyncio.wait_for(arrived.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert lane.idle_connections() == []
