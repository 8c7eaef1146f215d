"""The delivery fast lane: plain `http://` deliveries sent on keep-alive connections of
our own, instead of through aiohttp's client.

Why: per request, aiohttp's client (its request and response objects, the connector's
bookkeeping, the timers, the payload writer) costs several times the exchange itself;
in the worker it was the largest part of a delivery's CPU (docs/performance.md, "The
delivery fast lane").

The lane takes an attempt only when it is plain, and decides that before anything is
sent:
- an `http://` URL without credentials, whose host is an IP address or a DNS name;
- header names that are HTTP tokens and values of printable ASCII, none of the framing
  headers (Host, Content-Length, Transfer-Encoding, Connection, Expect, Upgrade, TE);
- an address the destination policy allows: an IP literal is checked here, a name is
  resolved by the same GuardedResolver the aiohttp session uses (and cached as long);
- a connection: an idle one of the host's pool, or a new one that connected.
Anything else, and `exchange` answers None with nothing sent: the attempt goes through
aiohttp, which refuses, reports or delivers it exactly as before. So a destination
refusal, an invalid header, a refused or failed connect all read as they always did.

Once the request is written, the lane reads the answer itself, as aiohttp does: the
status line and headers (1xx answers skipped), and for a status other than 2xx the start
of the body for the stored error (chunked and gzip/deflate bodies decoded). Leniently:
the target has the request by then, so a header line that cannot be read is skipped
(aiohttp would refuse the answer and the retry would deliver it twice). The request
bytes are aiohttp's: the same request line (yarl's path), the same headers in the same
order (Host first, then the attempt's, then Accept and Accept-Encoding unless given,
then Content-Length). A connection goes back to its pool only after a 2xx whose whole
body (by Content-Length) had arrived with it, and whose server keeps it alive; every
other connection is closed. A pool keeps at most as many connections per host as the
aiohttp connector, and closes those idle longer than its keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver

from triggerd.domain.destinations import DestinationPolicy

# Longer status line and headers than this are not an answer we read.
MAX_HEAD = 65536
# What a stored error shows of a body (delivery.py clips it further); a compressed body
# is read up to this much to find them.
SNIPPET_BYTES = 256
_COMPRESSED_READ = 65536
_MOST_BUFFERED = MAX_HEAD + _COMPRESSED_READ
SWEEP_EVERY = 10.0

_TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"  # what an HTTP token is made of
_TOKEN = re.compile(rf"{_TCHAR}+".encode())
_BLOCK = re.compile(rf"(?:{_TCHAR}+: [\t\x20-\x7e]*\r\n)*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?:[ \t]([^\r\n]*))?")
# Headers that shape the exchange itself: an attempt that sets one goes through aiohttp.
_FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection", "expect",
                      "upgrade", "te", "proxy-connection", "keep-alive"})  # fmt: skip
# aiohttp's automatic headers (Accept, Accept-Encoding), added unless the attempt has them.
_AUTO: tuple[tuple[str, str], ...] = tuple(aiohttp.ClientRequest.DEFAULT_HEADERS.items())


class InvalidResponse(aiohttp.ClientError):
    """The target answered something that is not an HTTP/1.1 response we can read."""


@dataclass(frozen=True)
class Answer:
    """What the target answered: all a delivery attempt records of it."""

    status: int
    reason: str
    snippet: bytes  # the start of the body (decoded), for a status other than 2xx
    retry_after: str | None


@dataclass(frozen=True)
class _Route:
    """One (method, endpoint): what goes on the wire before the headers, and where."""

    head: bytes  # request line and Host header
    host: str
    port: int
    address: str | None  # the host when it is an IP literal


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.error: BaseException | None = None
        self.idle_since = 0.0
        self.paused = False
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _MOST_BUFFERED and self.transport is not None and not self.paused:
            # more than an answer's head and what a snippet reads: the rest waits in the
            # kernel until a reader asks for more (a connection with unread bytes is
            # not reused)
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def usable(self) -> bool:
        """Idle, open, and nothing unasked-for arrived on it."""
        return not self.closed and not self.buffer and self.transport is not None \
            and not self.transport.is_closing()  # fmt: skip

    async def more(self) -> None:
        """Wait for more bytes; raise as aiohttp does when the connection ended first."""
        if self.closed:
            if isinstance(self.error, OSError):
                raise aiohttp.ClientOSError(*self.error.args)
            raise aiohttp.ServerDisconnectedError()
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


@dataclass
class _Pool:
    """The connections of one host and port."""

    slots: asyncio.Semaphore
    idle: list[_Connection] = field(default_factory=list)
    busy: int = 0  # attempts holding or waiting for a slot


class DeliveryLane:
    def __init__(
        self, policy: DestinationPolicy, resolver: AbstractResolver, *, limit_per_host: int,
        dns_ttl: float = 60.0, keepalive_timeout: float = 30.0,
    ) -> None:  # fmt: skip
        self.policy = policy
        self.resolver = resolver
        self.limit_per_host = limit_per_host
        self.dns_ttl = dns_ttl
        self.keepalive_timeout = keepalive_timeout
        self._routes: dict[tuple[str, str], _Route | None] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._pools: dict[tuple[str, int], _Pool] = {}
        self._swept = time.monotonic()
        self.taken = 0  # attempts the lane sent
        self.passed = 0  # attempts it left to aiohttp

    async def exchange(
        self, method: str, endpoint: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> Answer | None:
        """Send one attempt and read its answer; None when the lane does not take it
        (then nothing was sent). Raises aiohttp's ClientError for what happens after
        sending; the caller's timeout bounds it all."""
        route = self._route(method, endpoint)
        request = None if route is None else _request(route, headers, body)
        if route is None or request is None:
            self.passed += 1
            return None
        addresses = await self._addresses(route)
        if not addresses:
            self.passed += 1
            return None
        pool = self._pool(route)
        pool.busy += 1
        try:
            return await self._send(pool, addresses, route.port, request, method)
        finally:
            pool.busy -= 1

    async def _send(self, pool: _Pool, addresses: list[str], port: int, request: bytes,
                    method: str) -> Answer | None:  # fmt: skip
        async with pool.slots:
            connection = await self._connect(pool, addresses, port)
            if connection is None:
                self.passed += 1
                return None
            self.taken += 1
            keep = False
            try:
                assert connection.transport is not None
                connection.transport.write(request)
                answer, keep = await _read_answer(connection, method)
                return answer
            finally:
                if keep:
                    connection.idle_since = time.monotonic()
                    pool.idle.append(connection)
                else:
                    connection.close()

    def idle_connections(self) -> list[_Connection]:
        return [connection for pool in self._pools.values() for connection in pool.idle]

    async def close(self) -> None:
        """Close the idle connections (one in use closes when its attempt ends)."""
        for pool in self._pools.values():
            for connection in pool.idle:
                connection.close()
            pool.idle.clear()
        await self.resolver.close()

    def _route(self, method: str, endpoint: str) -> _Route | None:
        key = (method, endpoint)
        try:
            return self._routes[key]
        except KeyError:
            pass
        if len(self._routes) >= 4096:
            self._routes.clear()
        route = _parse_route(method, endpoint)
        # an IP literal the policy refuses: aiohttp's socket factory says so
        address = None if route is None else route.address
        if address is not None and self.policy.refusal(ipaddress.ip_address(address)):
            route = None
        self._routes[key] = route
        return route

    async def _addresses(self, route: _Route) -> list[str]:
        """Where the host may be reached: [] sends the attempt to aiohttp, which refuses
        or reports it as before."""
        if route.address is not None:
            return [route.address]
        key = (route.host, route.port)
        now = time.monotonic()
        cached = self._dns.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            results = await self.resolver.resolve(route.host, route.port, socket.AF_UNSPEC)
        except (OSError, aiohttp.ClientError):  # refused or unresolvable: aiohttp says why
            return []
        addresses = [str(result["host"]) for result in results]
        if len(self._dns) >= 4096:
            self._dns.clear()
        self._dns[key] = (now + self.dns_ttl, addresses)
        return addresses

    def _pool(self, route: _Route) -> _Pool:
        key = (route.host, route.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(asyncio.Semaphore(self.limit_per_host))
        return pool

    async def _connect(self, pool: _Pool, addresses: list[str], port: int) -> _Connection | None:
        now = time.monotonic()
        if now - self._swept > SWEEP_EVERY:
            self._sweep(now)
        while pool.idle:
            connection = pool.idle.pop()
            if self._fresh(connection, now):
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        for address in addresses:
            try:
                _, connection = await loop.create_connection(_Connection, address, port)
            except OSError:
                continue
            return connection
        return None

    def _fresh(self, connection: _Connection, now: float) -> bool:
        return connection.usable and now - connection.idle_since < self.keepalive_timeout

    def _sweep(self, now: float) -> None:
        self._swept = now
        for key, pool in list(self._pools.items()):
            keep = []
            for connection in pool.idle:
                if self._fresh(connection, now):
                    keep.append(connection)
                else:
                    connection.close()
            pool.idle[:] = keep
            if not keep and not pool.busy:
                del self._pools[key]  # a host not delivered to for a while


def _parse_route(method: str, endpoint: str) -> _Route | None:
    try:
        url = yarl.URL(endpoint)
    except (ValueError, TypeError):
        return None
    host = url.raw_host
    if url.scheme != "http" or not host or url.user is not None or url.password is not None:
        return None
    if not method.isascii() or _TOKEN.fullmatch(method.encode()) is None:
        return None
    try:
        address: str | None = str(ipaddress.ip_address(host))
    except ValueError:
        address = None
        # a name (not a legacy numeric form such as 127.1, which resolvers read as IPv4)
        if _NAME.fullmatch(host) is None or host.rstrip(".").split(".")[-1].isdigit():
            return None
    if address is not None and "%" in address:
        return None
    port = url.port
    hostport = url.host_port_subcomponent
    path = url.raw_path_qs
    if port is None or hostport is None or not (path.isascii() and hostport.isascii()):
        return None
    if any(ch in path for ch in " \r\n\t"):
        return None
    head = f"{method} {path} HTTP/1.1\r\nHost: {hostport}\r\n".encode()
    return _Route(head=head, host=address or host, port=port, address=address)


def _request(route: _Route, headers: Iterable[tuple[str, str]], body: bytes) -> bytes | None:
    """The request bytes as aiohttp writes them, or None when a header is not plain."""
    lines = []
    given = set()
    for name, value in headers:
        lowered = name.lower()
        if lowered in _FRAMING or ":" in name or "\r" in value or "\n" in value:
            return None
        given.add(lowered)
        lines.append(f"{name}: {value}\r\n")
    for name, value in _AUTO:
        if name.lower() not in given:
            lines.append(f"{name}: {value}\r\n")
    block = "".join(lines)
    # one look at the whole block: names are tokens, values printable ASCII (no value
    # holds a line break and no name a colon, checked above: each line is one header)
    if not block.isascii() or _BLOCK.fullmatch(block) is None:
        return None
    return b"".join((route.head, block.encode(), b"Content-Length: ", str(len(body)).encode(),
                     b"\r\n\r\n", body))  # fmt: skip


async def _read_answer(connection: _Connection, method: str) -> tuple[Answer, bool]:
    """The answer, and whether the connection may carry another request."""
    while True:
        version, status, reason, headers = await _read_head(connection)
        if not 100 <= status < 200 or status == 101:
            break
    framing = _Framing.of(headers, status, method)
    keep = _keeps_alive(version, headers)
    retry_after = headers.get("retry-after")
    if 200 <= status < 300:
        # A 2xx is recorded without its body (as before); the connection is reused only
        # when that body is already here in full.
        complete = framing.length is not None and len(connection.buffer) == framing.length
        if complete:
            connection.buffer.clear()
        return Answer(status, reason, b"", retry_after), keep and complete
    snippet = await _read_snippet(connection, framing, headers.get("content-encoding"))
    return Answer(status, reason, snippet, retry_after), False


async def _read_head(connection: _Connection) -> tuple[int, int, str, dict[str, str]]:
    """The status line and headers. Read leniently, as aiohttp reads answers: the target
    already has the request, so an answer with a readable status line is recorded by its
    status (a header line we cannot read is skipped, and the connection is not reused)."""
    buffer = connection.buffer
    while True:
        end, skip = buffer.find(b"\r\n\r\n"), 4
        if end < 0:
            end, skip = buffer.find(b"\n\n"), 2  # bare line feeds, which aiohttp accepts
        if end >= 0:
            break
        if len(buffer) > MAX_HEAD:
            raise InvalidResponse("the response head is too long")
        await connection.more()
    head = bytes(buffer[:end])
    del buffer[: end + skip]
    lines = [line.rstrip(b"\r") for line in head.split(b"\n")]
    match = _STATUS.fullmatch(lines[0].rstrip(b" \t"))
    if match is None:
        raise InvalidResponse(f"invalid status line {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            headers["connection"] = "close"  # unreadable: not reused
            continue
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        if key in headers:
            if key == "content-length":
                if headers[key] != text:  # no framing to trust: read it as until close
                    del headers[key]
                    headers["connection"] = "close"
                continue
            text = f"{headers[key]}, {text}"
        headers[key] = text
    reason = (match.group(3) or b"").decode("utf-8", "surrogateescape")  # as aiohttp
    return int(match.group(1)), int(match.group(2)), reason, headers


def _keeps_alive(version: int, headers: dict[str, str]) -> bool:
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    if "close" in tokens:
        return False
    return version == 1 or "keep-alive" in tokens


@dataclass(frozen=True)
class _Framing:
    chunked: bool
    length: int | None  # None: until the connection closes (unless chunked)

    @classmethod
    def of(cls, headers: dict[str, str], status: int, method: str) -> _Framing:
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return cls(False, 0)
        encoding = headers.get("transfer-encoding")
        if encoding is not None:
            if encoding.strip().lower().endswith("chunked"):
                return cls(True, None)
            return cls(False, None)
        length = headers.get("content-length")
        if length is None:
            return cls(False, None)
        if not length.isdigit():
            raise InvalidResponse(f"invalid Content-Length {length[:30]!r}")
        return cls(False, int(length))


async def _read_snippet(connection: _Connection, framing: _Framing, encoding: str | None) -> bytes:
    """The start of the body, decoded, as much as a stored error shows (or a compressed
    body's first 64 KiB holds). A body that ends with the connection is read as far as
    it came."""
    coding = (encoding or "").strip().lower()
    compressed = coding in ("gzip", "x-gzip", "deflate")
    want = _COMPRESSED_READ if compressed else SNIPPET_BYTES
    try:
        raw = await (_read_chunked(connection, want) if framing.chunked
                     else _read_plain(connection, framing.length, want))  # fmt: skip
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
        raw = bytes(connection.buffer[:want])
    if not compressed:
        return raw[:SNIPPET_BYTES]
    try:
        # gzip: a gzip or zlib header; deflate: zlib-wrapped or raw, as aiohttp accepts
        wbits = 47 if coding != "deflate" else (15 if raw[:1] == b"\x78" else -15)
        return zlib.decompressobj(wbits).decompress(raw, SNIPPET_BYTES)
    except zlib.error:
        return raw[:SNIPPET_BYTES]


async def _read_plain(connection: _Connection, length: int | None, want: int) -> bytes:
    buffer = connection.buffer
    target = want if length is None else min(length, want)
    while len(buffer) < target:
        await connection.more()
    return bytes(buffer[:target])


async def _read_chunked(connection: _Connection, want: int) -> bytes:
    buffer = connection.buffer
    out = bytearray()
    position = 0
    while len(out) < want:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            await connection.more()
            continue
        size_text = bytes(buffer[position:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise InvalidResponse(f"invalid chunk size {size_text[:20]!r}") from None
        if size == 0:
            break
        start = line_end + 2
        while len(buffer) < start + size + 2 and len(buffer) - start < want - len(out):
            await connection.more()
        out += buffer[start : start + size]
        position = start + size + 2
    return bytes(out[:want])
