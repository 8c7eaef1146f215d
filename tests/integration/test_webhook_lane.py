"""The webhook fast lane (api/lane.py) over real sockets, MariaDB and the broker: what it
takes it answers as aiohttp would; everything else reaches aiohttp with the connection
and is answered exactly as without the lane; HTTP/1.1 framing (pipelining, pieces,
Connection: close, half-close), a failed commit, idle connections and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiomysql
import orjson
import pytest

from tests.integration.webhook_harness import Api, make_trigger, running_api
from tests.support import wait_until
from triggerd.api.lane import Lane, LaneSite
from triggerd.config import DatabaseUrl
from triggerd.store.db import Database

SCHEMA = {"type": "object", "required": ["order_id"],
          "properties": {"order_id": {"type": "string"}}}  # fmt: skip
PAYLOAD = b'{"order_id": "o-1"}'
SECRET = "s3cret"
# What aiohttp puts on a JSON answer, in its order; the lane's answers match.
HEADERS = ["Content-Type", "X-Request-ID", "Content-Length", "Date", "Server"]


@dataclass
class Answer:
    status: int
    names: list[str]  # header names in the order sent
    headers: dict[str, str]  # by lower-case name
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    names, headers = [], {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            names.append(name)
            headers[name.lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", 0))), 10)
    return Answer(status, names, headers, body)


@contextlib.asynccontextmanager
async def connection(api: Api) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", api.site.port)  # type: ignore[attr-defined]
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def post(trigger_id: str, body: bytes = PAYLOAD, *, extra: bytes = b"",
         content_type: bytes = b"application/json") -> bytes:  # fmt: skip
    return (b"POST /api/v1/webhook/%s HTTP/1.1\r\nHost: test\r\nContent-Type: %s\r\n%s"
            b"Content-Length: %d\r\n\r\n%s"
            % (trigger_id.encode(), content_type, extra, len(body), body))  # fmt: skip


async def exchange(api: Api, data: bytes, answers: int = 1) -> list[Answer]:
    async with connection(api) as (reader, writer):
        writer.write(data)
        return [await read_answer(reader) for _ in range(answers)]


def lane_of(api: Api) -> Lane:
    assert isinstance(api.site, LaneSite), "the harness serves through the lane"
    return api.site.lane


@pytest.fixture
async def api(settings_for: Any) -> AsyncIterator[Api]:
    async with running_api(settings_for(max_body=4096)) as running:
        yield running


@pytest.fixture
async def plain(settings_for: Any) -> AsyncIterator[Api]:
    """The same app without the lane: every request through aiohttp."""
    async with running_api(settings_for(max_body=4096, webhook_fast_lane=False)) as running:
        assert not isinstance(running.site, LaneSite)
        yield running


async def count_events(api: Api, trigger_id: str) -> int:
    row = await api.db.fetchone("SELECT COUNT(*) AS n FROM event_logs WHERE trigger_id = %s",
                                (trigger_id,))  # fmt: skip
    return int(row["n"]) if row else 0


async def test_the_lane_answers_a_plain_webhook_as_aiohttp_does(api: Api, plain: Api) -> None:
    trigger_id = await make_trigger(api.db, config={"schema": SCHEMA})
    lane = lane_of(api)
    [ours] = await exchange(api, post(trigger_id, extra=b"X-Request-ID: req-1\r\n"))
    [theirs] = await exchange(plain, post(trigger_id, extra=b"X-Request-ID: req-1\r\n"))
    assert (lane.taken, lane.handed_over) == (1, 0)
    assert ours.status == theirs.status == 202
    assert ours.names == theirs.names == HEADERS
    for name in ("content-type", "x-request-id", "server"):
        assert ours.headers[name] == theirs.headers[name], name
    assert ours.headers["x-request-id"] == "req-1"
    assert set(ours.json()) == set(theirs.json()) == {"event_id", "status"}
    row = await api.event_row(ours.json()["event_id"])  # committed before the 202
    assert row is not None and row["trigger_id"] == trigger_id
    assert orjson.loads(row["payload"]) == {"order_id": "o-1"}
    metrics = api.services.metrics.registry
    assert metrics.get_sample_value("triggerd_webhook_requests_total", {"code": "202"}) == 1
    assert metrics.get_sample_value("triggerd_http_request_duration_seconds_count",
                                    {"route": "/api/v1/webhook/{trigger_id}",
                                     "method": "POST"}) == 1  # fmt: skip


def _signed(body: bytes) -> bytes:
    return b"sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest().encode()


# (name, request bytes from (active id, inactive id, signed id)); each is handed to
# aiohttp, and answered exactly as it is without the lane.
CASES: list[tuple[str, Callable[[str, str, str], bytes]]] = [
    ("unknown trigger", lambda a, i, s: post(str(uuid.uuid4()))),
    ("id not a uuid", lambda a, i, s: post("not-an-id")),
    ("inactive trigger", lambda a, i, s: post(i)),
    ("not JSON content type", lambda a, i, s: post(a, content_type=b"text/plain")),
    ("malformed JSON", lambda a, i, s: post(a, b'{"order_id": ')),
    ("schema violation", lambda a, i, s: post(a, b'{"order_id": 5}')),
    ("missing signature", lambda a, i, s: post(s)),
    ("wrong signature", lambda a, i, s: post(s, extra=b"X-Signature: sha256=00\r\n")),
    ("empty Idempotency-Key", lambda a, i, s: post(a, extra=b"Idempotency-Key: \r\n")),
    ("body over the limit", lambda a, i, s: post(a, b'{"order_id": "%s"}' % (b"x" * 5000))),
    ("wrong method", lambda a, i, s: post(a).replace(b"POST", b"PUT", 1)),
    ("malformed header line", lambda a, i, s: post(a, extra=b"No colon here\r\n")),
    ("bad Content-Length", lambda a, i, s: post(a).replace(b"Content-Length: ",
                                                            b"Content-Length: x", 1)),
    ("unsupported Content-Encoding", lambda a, i, s: post(a, extra=b"Content-Encoding: br\r\n")),
    # Not refused, only not plain: aiohttp takes them and they are accepted.
    ("gzip body", lambda a, i, s: post(a, gzip.compress(PAYLOAD),
                                       extra=b"Content-Encoding: gzip\r\n")),
    ("chunked body", lambda a, i, s: (
        b"POST /api/v1/webhook/%s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
        % (a.encode(), len(PAYLOAD), PAYLOAD))),
    ("escaped id", lambda a, i, s: post(a.replace("-", "%2D", 1))),
    ("repeated header", lambda a, i, s: post(a, extra=b"X-A: 1\r\nX-A: 2\r\n")),
    ("non-ASCII header", lambda a, i, s: post(a, extra="User-Agent: é\r\n".encode())),
]  # fmt: skip
# Plain requests in other shapes, which the lane takes.
TAKEN: list[tuple[str, Callable[[str, str, str], bytes]]] = [
    ("signed", lambda a, i, s: post(s, extra=b"X-Signature: " + _signed(PAYLOAD) + b"\r\n")),
    ("query string", lambda a, i, s: post(a).replace(b" HTTP/1.1", b"?source=shop HTTP/1.1", 1)),
    ("keep-alive", lambda a, i, s: post(a, extra=b"Connection: keep-alive\r\n")),
    ("header names in any case", lambda a, i, s: post(a).replace(b"Content-Length",
                                                                 b"content-LENGTH")),
    ("charset", lambda a, i, s: post(a, content_type=b"application/json; charset=utf-8")),
    ("+json type", lambda a, i, s: post(a, content_type=b"application/cloudevents+json")),
    ("traceparent", lambda a, i, s: post(a, extra=(
        b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"))),
]  # fmt: skip


@pytest.mark.parametrize("name", [name for name, _ in CASES + TAKEN])
async def test_every_request_is_answered_as_without_the_lane(
    api: Api, plain: Api, name: str
) -> None:
    build = dict(CASES + TAKEN)[name]
    taken = name in dict(TAKEN)
    active = await make_trigger(api.db, config={"schema": SCHEMA})
    inactive = await make_trigger(api.db, config={"schema": SCHEMA}, status="inactive")
    signed = await make_trigger(api.db, config={"schema": SCHEMA, "secret": SECRET})
    request = build(active, inactive, signed)
    lane = lane_of(api)
    before = await count_events(api, active) + await count_events(api, signed)
    ours, theirs = (await exchange(api, request))[0], (await exchange(plain, request))[0]
    assert (lane.taken, lane.handed_over) == ((1, 0) if taken else (0, 1))
    assert ours.status == theirs.status, (ours, theirs)
    assert ours.names == theirs.names
    if ours.status >= 400:
        assert ours.json()["error"]["code"] == theirs.json()["error"]["code"]
        assert ours.json()["error"]["message"] == theirs.json()["error"]["message"]
        assert ours.json()["error"]["details"] == theirs.json()["error"]["details"]
        assert ours.json()["error"]["request_id"] == ours.headers["x-request-id"]
        after = await count_events(api, active) + await count_events(api, signed)
        assert after == before  # nothing stored by a refused request (either server)
    else:
        assert ours.status == 202


async def test_a_connection_handed_over_keeps_serving(api: Api) -> None:
    trigger_id = await make_trigger(api.db, config={"schema": SCHEMA})
    async with connection(api) as (reader, writer):
        writer.write(post(trigger_id))
        assert (await read_answer(reader)).status == 202  # the lane
        writer.write(post(trigger_id, b"[]"))
        assert (await read_answer(reader)).status == 400  # aiohttp, from here on
        writer.write(post(trigger_id))
        assert (await read_answer(reader)).status == 202
    lane = lane_of(api)
    assert (lane.taken, lane.handed_over) == (1, 1)
    assert await count_events(api, trigger_id) == 2


async def test_pipelined_requests_are_answered_in_order(api: Api) -> None:
    trigger_id = await make_trigger(api.db, config={"schema": SCHEMA})
    health = b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n"
    answers = await exchange(api, post(trigger_id) * 3 + health + post(trigger_id), answers=5)
    assert [a.status for a in answers] == [202, 202, 202, 200, 202]
    ids = [a.json()["event_id"] for a in answers if a.status == 202]
    assert len(set(ids)) == 4
    for event_id in ids:
        assert await api.event_row(event_id) is not None
    assert lane_of(api).taken == 3  # then the health check went to aiohttp, with the rest


async def test_a_request_arriving_in_pieces(api: Api) -> None:
    trigger_id = await make_trigger(api.db, config={"schema": SCHEMA})
    request = post(trigger_id)
    head_end = request.index(b"\r\n\r\n")
    async with connection(api) as (reader, writer):
        for piece in (request[:7], request[7:40], request[40:head_end + 2],
                      request[head_end + 2:head_end + 9], request[head_end + 9:]):  # fmt: skip
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)  # separate segments (not a wait for a condition)
        answer = await read_answer(reader)
    assert answer.status == 202
    assert lane_of(api).taken == 1


async def test_a_large_body_in_many_reads(api: Api) -> None:
    trigger_id = await make_trigger(api.db, config={"schema": SCHEMA})
    body = orjson.dumps({"order_id": "o-1", "note": "x" * 3900})  # under the 4096 limit
    request = post(trigger_id, body)
    async with connection(api) as (reader, writer):
        for at in range(0, len(request), 97):
            writer.write(request[at:at + 97])
            await writer.drain()
            await asyncio.sleep(0.005)  # separate segments (not a wait for a condition)
        answer = await read_answer(reader)
    assert answer.status == 202
    assert lane_of(api).taken == 1
    row = await api.event_row(answer.json()["event_id"])
    assert row is not None and orjson.loads(row["payload"]) == orjson.loads(body)


async def test_connection_close_and_half_close(api: Api) -> None:
    trigger_id = await make_trigger(api.db, config={"schema": SCHEMA})
    async with connection(api) as (reader, writer):
        writer.write(post(trigger_id, extra=b"Connection: close\r\n"))
        answer = await read_answer(reader)
        assert answer.status == 202 and answer.headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed after it
    async with connection(api) as (reader, writer):
        writer.write(post(trigger_id))
        writer.write_eof()  # the client is done sending; the answer still comes
        answer = await read_answer(reader)
        assert answer.status == 202
        assert await asyncio.wait_for(reader.read(), 10) == b""
    assert lane_of(api).taken == 2
    assert await count_events(api, trigger_id) == 2


async def test_idempotency_key_through_the_lane(api: Api) -> None:
    trigger_id = await make_trigger(api.db, config={"schema": SCHEMA})
    request = post(trigger_id, extra=b"Idempotency-Key: order-1\r\n")
    first, second = await exchange(api, request + request, answers=2)
    assert first.status == second.status == 202
    assert first.json()["event_id"] == second.json()["event_id"]
    assert await count_events(api, trigger_id) == 1
    assert lane_of(api).taken == 2


async def test_a_failed_commit_is_a_503_in_the_envelope(settings_for: Any,
                                                        database_url: str) -> None:  # fmt: skip
    # The pipeline writes through a pool whose server is gone; the trigger loads fine.
    broken = Database(DatabaseUrl.parse(database_url), pool_size=1)
    await broken.connect()
    await broken.close()
    async with running_api(settings_for(), ingest_db=broken) as api:
        trigger_id = await make_trigger(api.db, config={"schema": SCHEMA})
        [answer] = await exchange(api, post(trigger_id, extra=b"X-Request-ID: r-503\r\n"))
        assert answer.status == 503, answer
        assert answer.names == HEADERS
        error = answer.json()["error"]
        assert error["code"] == "unavailable" and error["request_id"] == "r-503"
        assert lane_of(api).taken == 1
        assert await count_events(api, trigger_id) == 0


async def test_idle_connections_are_closed(api: Api) -> None:
    trigger_id = await make_trigger(api.db, config={"schema": SCHEMA})
    lane = lane_of(api)
    async with connection(api) as (reader, writer):
        writer.write(post(trigger_id))
        assert (await read_answer(reader)).status == 202
        lane.sweep()  # not idle long enough (the default keep-alive timeout)
        assert len(lane.connections) == 1
        lane.idle_timeout = 0.0
        lane.sweep()
        assert await asyncio.wait_for(reader.read(), 10) == b""
    assert not lane.connections


async def test_shutdown_answers_what_the_lane_took(api: Api, database_url: str) -> None:
    trigger_id = await make_trigger(api.db, config={"schema": SCHEMA})
    lane = lane_of(api)
    url = DatabaseUrl.parse(database_url)
    locker = await aiomysql.connect(host=url.host, port=url.port, user=url.user,
                                    password=url.password or "", db=url.database)  # fmt: skip
    async with connection(api) as (reader, writer), connection(api) as (idle, _):
        writer.write(post(trigger_id))  # warms the trigger cache
        assert (await read_answer(reader)).status == 202
        async with locker.cursor() as cur:
            await cur.execute("LOCK TABLES event_logs WRITE")  # the next commit waits
        writer.write(post(trigger_id))
        await wait_until(lambda: _busy(lane), what="the request taken and waiting")
        stopping = asyncio.create_task(api.site.stop())
        await wait_until(lambda: _closing(lane), what="the lane stopping")
        async with locker.cursor() as cur:
            await cur.execute("UNLOCK TABLES")
        answer = await read_answer(reader)
        await stopping
        assert answer.status == 202 and answer.headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert await asyncio.wait_for(idle.read(), 10) == b""  # closed at once
        assert await api.event_row(answer.json()["event_id"]) is not None
    locker.close()
    assert not lane.connections


async def _busy(lane: Lane) -> bool:
    return any(connection.busy for connection in lane.connections)


async def _closing(lane: Lane) -> bool:
    return lane.closing


async def test_many_connections_mixing_plain_and_refused_requests(api: Api) -> None:
    # Every request answered in order on its connection; exactly the 202s are stored.
    trigger_id = await make_trigger(api.db, config={"schema": SCHEMA})
    bad = post(trigger_id, b'{"order_id": 1}')

    async def client(n: int) -> list[int]:
        requests = [bad if (n + i) % 4 == 0 else post(trigger_id) for i in range(12)]
        async with connection(api) as (reader, writer):
            statuses = []
            for request in requests:  # half sent back to back, half one at a time
                writer.write(request)
                if n % 2:
                    statuses.append((await read_answer(reader)).status)
            if not n % 2:
                statuses = [(await read_answer(reader)).status for _ in requests]
        expected = [400 if (n + i) % 4 == 0 else 202 for i in range(12)]
        assert statuses == expected, (n, statuses)
        return statuses

    results = await asyncio.gather(*(client(n) for n in range(40)))
    accepted = sum(status == 202 for statuses in results for status in statuses)
    assert await count_events(api, trigger_id) == accepted
    lane = lane_of(api)
    # The lane took each connection's plain requests up to its first refusal.
    assert lane.taken == sum((4 - n % 4) % 4 for n in range(40))
