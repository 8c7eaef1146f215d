"""The API's error rules on the trigger routes: one envelope for every error, with
X-Request-ID; 404 / 405 / 413 / 415 / malformed JSON; never a 500 for bad input."""

from __future__ import annotations

import asyncio
import gzip
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import orjson
import pymysql
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.integration.api_daemon import URL, ApiDaemon, api_daemon
from tests.support import ALLOW_LOOPBACK
from triggerd.api import triggers
from triggerd.api.app import build_app
from triggerd.bus.producer import Bus
from triggerd.config import Settings
from triggerd.domain.destinations import parse_networks
from triggerd.metrics import Metrics
from triggerd.services import Services
from triggerd.store.db import Database
from triggerd.store.triggers import TriggerStore

BASE = "/api/v1/triggers"
VALID = {"name": "t", "type": "cron_scheduled", "config": {"endpoint": URL, "cron": "0 * * * *"}}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
async def api(db_server: Any, kafka_bootstrap: str,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiDaemon]:  # fmt: skip
    async with api_daemon(db_server, kafka_bootstrap, tmp_path_factory.mktemp("errors")) as running:
        yield running


@pytest.fixture(scope="module")
async def trigger_path(api: ApiDaemon) -> str:
    reply = await api.client.post(BASE, VALID)
    assert reply.status == 201
    return f"{BASE}/{reply.body['id']}"


@pytest.mark.parametrize(
    "path", ["/api/v1/nothing", "/nothing", "/api/v1/triggers/x/y/z", "/api/v1", "/api/v1/"]
)
async def test_unknown_route_is_404_in_the_envelope(api: ApiDaemon, path: str) -> None:
    reply = await api.client.get(path)
    assert reply.status == 404
    assert reply.error["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", f"{BASE}/3f1a9c62-7e0b-4d25-9b8e-5c4f2a1d6e70", {"GET", "PUT", "PATCH", "DELETE"}),
        ("DELETE", BASE, {"GET", "POST"}),
        ("PUT", BASE, {"GET", "POST"}),
    ],
)
async def test_wrong_method_is_405_with_allow(
    api: ApiDaemon, method: str, path: str, allowed: set[str]
) -> None:
    reply = await api.client.request(method, path, json={})
    assert reply.status == 405
    assert reply.error["code"] == "method_not_allowed"
    assert allowed <= {m.strip() for m in reply.headers["Allow"].split(",")}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_body_over_the_limit_is_413(api: ApiDaemon, trigger_path: str, method: str) -> None:
    path = BASE if method == "POST" else trigger_path
    big = b'{"name": "' + b"x" * MIB + b'"}'
    reply = await api.client.request(method, path, data=big,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    assert reply.status == 413
    assert reply.error["code"] == "payload_too_large"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_wrong_content_type_is_415(
    api: ApiDaemon, trigger_path: str, method: str, content_type: str | None
) -> None:
    path = BASE if method == "POST" else trigger_path
    headers = {"Content-Type": content_type} if content_type else {}
    reply = await api.client.request(method, path, data=b'{"name": "t"}', headers=headers)
    assert reply.status == 415
    assert reply.error["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    "raw",
    [b"{", b"", b"   ", b'{"name": }', b"\xff\xfe{}", b"NaN", b'{"a": 1} trailing',
     b"[" * 2000 + b"]" * 2000, b'{"name": "t", "name": "u"'],
)
@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_malformed_json_is_400(
    api: ApiDaemon, trigger_path: str, method: str, raw: bytes
) -> None:
    path = BASE if method == "POST" else trigger_path
    reply = await api.client.request(method, path, data=raw,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    assert reply.status == 400, reply.body
    assert reply.error["code"] == "malformed_json"


def nested(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth


ODD = [
    b"null", b"1", b'"x"', b"true", b"[]", b'{"": 1}',
    b'{"name": "t", "type": "webhook", "config": {"timeout_seconds": 1e999}}',
    b'{"name": "t", "type": "webhook", "config": {"payload": ' + nested(150) + b"}}",
    b'{"name": "t", "type": "webhook", "config": {"schema": ' + nested(150) + b"}}",
    b'{"name": "t", "type": "interval_scheduled", "config": {"endpoint": "http://h/",'
    b' "interval_seconds": 1e300}}',
    b'{"name": "t", "type": "time_scheduled", "config": {"endpoint": "http://h/",'
    b' "run_at": "9999-12-31T23:59:59", "timezone": "America/New_York"}}',
    b'{"name": "t", "type": "time_scheduled", "config": {"endpoint": "http://h/",'
    b' "run_in": "99999999999d"}}',
]  # fmt: skip


@pytest.mark.parametrize("raw", ODD, ids=range(len(ODD)))
async def test_odd_json_is_a_400_not_a_500(api: ApiDaemon, raw: bytes) -> None:
    reply = await api.client.request("POST", BASE, data=raw,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    assert reply.status == 400, reply.body
    assert reply.error["code"] in ("validation_error", "malformed_json")


async def test_request_id_is_echoed_or_generated(api: ApiDaemon, trigger_path: str) -> None:
    for method, path in (("GET", trigger_path), ("GET", "/nowhere"), ("POST", BASE)):
        given = f"req-{uuid.uuid4().hex}"
        reply = await api.client.request(method, path, headers={"X-Request-ID": given})
        assert reply.headers["X-Request-ID"] == given
        if reply.status >= 400:
            assert reply.error["request_id"] == given
    generated = await api.client.get("/nowhere")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-ID"])
    for odd in ("has spaces", "semi;colon", "{json: 'like'}"):  # printable: echoed as given
        reply = await api.client.request("GET", "/nowhere", headers={"X-Request-ID": odd})
        assert reply.headers["X-Request-ID"] == odd
        assert reply.error["request_id"] == odd
    for bad in ("x" * 201, "tab\there"):  # too long, or a control character: replaced
        reply = await api.client.request("GET", "/nowhere", headers={"X-Request-ID": bad})
        assert reply.headers["X-Request-ID"] != bad
        assert reply.error["request_id"] == reply.headers["X-Request-ID"]


async def raw_exchange(api: ApiDaemon, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes no well-behaved client would and read the whole answer (the server
    closes the connection after a malformed request)."""
    host, port = api.daemon.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


MALFORMED = {
    "bad content-length": (b"POST /api/v1/triggers HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: abc\r\n\r\n{}", 400),
    "two content-lengths": (b"POST /api/v1/triggers HTTP/1.1\r\nHost: x\r\nContent-Length: 2"
                            b"\r\nContent-Length: 3\r\n\r\n{}", 400),
    "header line too long": (b"GET /api/v1/triggers HTTP/1.1\r\nHost: x\r\nX-Big: "
                             + b"y" * 9000 + b"\r\n\r\n", 431),
    "request line too long": (b"GET /api/v1/triggers?" + b"a" * 9000
                              + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "bad chunk size": (b"POST /api/v1/triggers HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       b"application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n"
                       b"0\r\n\r\n", 400),
    "undecodable encoding": (b"POST /api/v1/triggers HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             b"application/json\r\nContent-Encoding: zstd\r\n"
                             b"Content-Length: 2\r\n\r\n{}", 415),
    "no HTTP at all": (b"HELLO THERE\r\n\r\n", 400),
    # methods the parser does not know: no route allows them
    "unknown method": (b"BREW /api/v1/triggers HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "lower-case method": (b"get /api/v1/triggers HTTP/1.1\r\nHost: x\r\n\r\n", 405),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_requests_the_http_parser_rejects_get_the_envelope(
    api: ApiDaemon, case: str
) -> None:
    """aiohttp answers these before any middleware runs; they still get the envelope
    and an X-Request-ID, with a status saying what was wrong."""
    request, expected = MALFORMED[case]
    status, headers, body = await raw_exchange(api, request)
    assert status == expected, body
    assert headers["content-type"].startswith("application/json")
    error = orjson.loads(body)["error"]
    assert error["code"] and error["message"]
    assert error["request_id"] == headers["x-request-id"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_body_that_is_not_what_its_encoding_says_is_a_400(
    api: ApiDaemon, trigger_path: str, method: str, encoding: str
) -> None:
    path = BASE if method == "POST" else trigger_path
    reply = await api.client.request(method, path, data=b'{"name": "t"}', headers={
        "Content-Type": "application/json", "Content-Encoding": encoding})  # fmt: skip
    assert reply.status == 400, reply.body
    assert reply.error["code"] == "malformed_body"


async def test_a_gzip_body_is_read(api: ApiDaemon) -> None:
    reply = await api.client.request("POST", BASE, data=gzip.compress(orjson.dumps(VALID)),
                                     headers={"Content-Type": "application/json",
                                              "Content-Encoding": "gzip"})  # fmt: skip
    assert reply.status == 201, reply.body


@pytest.mark.parametrize("name", ["page", "limit"])
@pytest.mark.parametrize("value", ["9" * 4301, "0" * 4000 + "5" * 400, "99999999999999999999"])
@pytest.mark.parametrize("path", [BASE, "/api/v1/events"])
async def test_huge_integers_in_the_query_are_a_400_naming_the_parameter(
    api: ApiDaemon, path: str, name: str, value: str
) -> None:
    reply = await api.client.get(path, **{name: value})
    assert reply.status == 400, reply.body
    assert reply.error["details"]["field"] == name


@pytest.mark.parametrize("spelling", [
    lambda u: u.hex, lambda u: "urn:uuid:" + str(u), lambda u: "{" + str(u) + "}",
    lambda u: str(u) + " ", lambda u: str(u)[:-1],
])  # fmt: skip
async def test_ids_are_the_hyphenated_uuid_form_only(
    api: ApiDaemon, trigger_path: str, spelling: Any
) -> None:
    trigger_id = uuid.UUID(trigger_path.rsplit("/", 1)[1])
    assert (await api.client.get(f"{BASE}/{str(trigger_id).upper()}")).status == 200
    reply = await api.client.get(f"{BASE}/{quote(spelling(trigger_id))}")
    assert reply.status == 404
    assert reply.error["code"] == "not_found"


async def test_open_api_is_announced_in_the_start_up_log(api: ApiDaemon) -> None:
    assert "TRIGGERD_API_KEYS is not set" in api.daemon.logs()


async def test_no_error_was_logged(api: ApiDaemon) -> None:
    """None of the bad requests above reached the unhandled-error path."""
    assert "unhandled error" not in api.daemon.logs()
    assert '"level":"error"' not in api.daemon.logs()


async def test_an_unreachable_database_is_a_503_not_a_500(monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: the store raising a connection error (as aiomysql does while the
    server is down) comes back as a retryable 503 in the envelope."""

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise pymysql.err.OperationalError(2003, "Can't connect to MySQL server")

    for name in ("create", "get", "list", "update", "delete"):
        monkeypatch.setattr(TriggerStore, name, down)
    # VALID delivers to loopback: allowed here, as by the daemon this module runs.
    settings = Settings(database_url="mysql://u@127.0.0.1/db",
                        delivery_allow_networks=parse_networks(ALLOW_LOOPBACK.split(",")))
    services = Services(settings=settings, db=Database(settings.database), bus=Bus(settings),
                        metrics=Metrics())  # fmt: skip
    app = build_app(services, with_api=False)
    triggers.add_routes(app, services)
    async with TestClient(TestServer(app)) as client:
        item = f"{BASE}/{uuid.uuid4()}"
        calls = [("GET", BASE, None), ("POST", BASE, VALID), ("GET", item, None),
                 ("PATCH", item, {"name": "x"}), ("DELETE", item, None)]  # fmt: skip
        for method, path, body in calls:
            async with client.request(method, path, json=body) as resp:
                assert resp.status == 503, (method, path)
                error = (await resp.json())["error"]
                assert error["code"] == "unavailable"
                assert error["request_id"] == resp.headers["X-Request-ID"]


async def test_an_encoding_we_cannot_decode_is_415(api: ApiDaemon) -> None:
    reply = await api.client.request("POST", BASE, data=orjson.dumps(VALID), headers={
        "Content-Type": "application/json", "Content-Encoding": "zzz"})  # fmt: skip
    assert reply.status == 415 and reply.error["code"] == "unsupported_media_type"


async def test_a_malformed_header_is_not_echoed_nor_logged(api: ApiDaemon) -> None:
    """aiohttp's own message quotes the offending line: with a stray control character
    in `Authorization`, that is the API key."""
    secret = "SUPERSECRETKEY" + uuid.uuid4().hex
    for line in (f"Authorization: Bearer {secret}\x01", f"X-API-Key {secret}"):
        request = f"GET /api/v1/triggers HTTP/1.1\r\nHost: x\r\n{line}\r\n\r\n".encode()
        status, headers, body = await raw_exchange(api, request)
        assert status == 400, body
        assert secret.encode() not in body
        assert orjson.loads(body)["error"]["request_id"] == headers["x-request-id"]
    assert secret not in api.daemon.logs()


async def test_an_unread_body_that_does_not_decode_logs_no_error(api: ApiDaemon) -> None:
    """Answered (404) before its body was read: the body is dropped with the
    connection instead of failing to decode afterwards."""
    before = api.daemon.logs().count('"level":"error"')
    for path in (f"/api/v1/webhook/{uuid.uuid4()}", "/api/v1/nope", f"{BASE}/{uuid.uuid4()}/test"):
        reply = await api.client.request("POST", path, data=b"{}", headers={
            "Content-Type": "application/json", "Content-Encoding": "gzip"})  # fmt: skip
        assert reply.status == 404, reply.body
    await asyncio.sleep(0.2)  # let the server finish with the connections
    assert api.daemon.logs().count('"level":"error"') == before, api.daemon.logs()[-3000:]
