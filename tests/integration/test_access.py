"""Access: API keys on /api/v1 (webhook ingestion exempt), never logged;
secrets and credential headers redacted in every response and never logged. Key
scopes: a `read` key may call GET routes only (403 `forbidden` otherwise)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.api_daemon import URL, ApiDaemon, Client, api_daemon

BASE = "/api/v1/triggers"
# an id no row has; fixed, so that every pytest-xdist worker collects the same tests
UNKNOWN = "3f1a9c62-7e0b-4d25-9b8e-5c4f2a1d6e70"
ENV_KEY = f"env-key-{uuid.uuid4().hex}"
FILE_KEY = f"file-key-{uuid.uuid4().hex}"
WRONG_KEY = f"wrong-key-{uuid.uuid4().hex}"
READ_KEY = f"read-key-{uuid.uuid4().hex}"
WRITE_KEY = f"write-key-{uuid.uuid4().hex}"
SECRETS = {
    "secret": f"hook-secret-{uuid.uuid4().hex}",
    "signing_secret": f"signing-{uuid.uuid4().hex}",
    "Authorization": f"Bearer tok-{uuid.uuid4().hex}",
    "X-Api-Key": f"apikey-{uuid.uuid4().hex}",
    "X-Auth-Token": f"token-{uuid.uuid4().hex}",
    "X-Client-Secret": f"csecret-{uuid.uuid4().hex}",
    "url-password": f"urlpw-{uuid.uuid4().hex}",
}


@pytest.fixture(scope="module")
async def api(db_server: Any, kafka_bootstrap: str,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiDaemon]:  # fmt: skip
    log_dir = tmp_path_factory.mktemp("access")
    keys_file = log_dir / "keys"
    keys_file.write_text(f"# operators\n{FILE_KEY}  # added by ops\n\n"
                         f"dashboard read {READ_KEY}\nci\twrite  {WRITE_KEY}\n",
                         encoding="utf-8")  # fmt: skip
    env = {"TRIGGERD_API_KEYS": f"{ENV_KEY}, other-{uuid.uuid4().hex}",
           "TRIGGERD_API_KEYS_FILE": str(keys_file), "TRIGGERD_LOG_LEVEL": "debug"}  # fmt: skip
    async with api_daemon(db_server, kafka_bootstrap, log_dir, env=env,
                          headers={"Authorization": f"Bearer {ENV_KEY}"}) as running:  # fmt: skip
        yield running


@pytest.fixture
async def anonymous(api: ApiDaemon) -> AsyncIterator[Client]:
    async with Client(api.daemon.url) as client:
        yield client


@pytest.fixture(scope="module")
async def hook(api: ApiDaemon) -> dict[str, Any]:
    headers = {name: value for name, value in SECRETS.items() if name[0].isupper()}
    data = {"name": "guarded", "type": "webhook", "config": {
        "endpoint": URL, "secret": SECRETS["secret"], "signing_secret": SECRETS["signing_secret"],
        "headers": {**headers, "X-Team": "payments"}, "schema": {"type": "object"}}}  # fmt: skip
    reply = await api.client.post(BASE, data)
    assert reply.status == 201, reply.body
    return dict(reply.body)


ROUTES = [("GET", BASE), ("POST", BASE), ("GET", f"{BASE}/{UNKNOWN}"),
          ("PATCH", f"{BASE}/{UNKNOWN}"), ("DELETE", f"{BASE}/{UNKNOWN}"),
          ("POST", f"{BASE}/test"), ("GET", "/api/v1/events")]  # fmt: skip
BAD_CREDENTIALS = [
    {},
    {"Authorization": f"Bearer {WRONG_KEY}"},
    {"X-API-Key": WRONG_KEY},
    {"Authorization": f"Basic {ENV_KEY}"},
    {"Authorization": ENV_KEY},
    {"Authorization": f"Bearer {ENV_KEY[:-1]}"},
    {"X-API-Key": f"{ENV_KEY}x"},
    {"Authorization": "Bearer "},
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("headers", BAD_CREDENTIALS, ids=range(len(BAD_CREDENTIALS)))
async def test_api_v1_needs_a_valid_key(
    anonymous: Client, method: str, path: str, headers: dict[str, str]
) -> None:
    reply = await anonymous.request(method, path, headers=headers, json={"name": "x"})
    assert reply.status == 401
    assert reply.error["code"] == "unauthorized"
    assert ENV_KEY not in reply.raw.decode() and WRONG_KEY not in reply.raw.decode()


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {ENV_KEY}"}, {"authorization": f"bearer {ENV_KEY}"},
     {"X-API-Key": ENV_KEY}, {"Authorization": f"Bearer {FILE_KEY}"}, {"X-API-Key": FILE_KEY}],
)
async def test_either_header_with_any_configured_key_works(
    anonymous: Client, headers: dict[str, str]
) -> None:
    reply = await anonymous.request("GET", BASE, headers=headers)
    assert reply.status == 200, reply.body


# Every /api/v1 route but webhook ingestion, each called so that a key allowed to call
# it changes nothing (unknown ids, invalid bodies).
ALL_ROUTES = [
    ("GET", BASE), ("POST", BASE), ("GET", f"{BASE}/{UNKNOWN}"),
    ("PUT", f"{BASE}/{UNKNOWN}"), ("PATCH", f"{BASE}/{UNKNOWN}"),
    ("DELETE", f"{BASE}/{UNKNOWN}"), ("POST", f"{BASE}/test"),
    ("POST", f"{BASE}/{UNKNOWN}/test"), ("GET", "/api/v1/events"),
    ("GET", "/api/v1/events/stats"), ("GET", f"/api/v1/events/{UNKNOWN}"),
    ("POST", f"/api/v1/events/{UNKNOWN}/replay"), ("GET", "/api/v1/audit"),
    ("GET", f"{BASE}/{UNKNOWN}/upcoming"), ("POST", f"{BASE}/preview"),
    ("GET", f"{BASE}/{UNKNOWN}/occurrences"), ("POST", f"{BASE}/{UNKNOWN}/backfill"),
    ("GET", "/api/v1/access"),
]  # fmt: skip
KEYS = {"read": {"X-API-Key": READ_KEY}, "write": {"Authorization": f"Bearer {WRITE_KEY}"},
        "bare": {"X-API-Key": FILE_KEY}, "env": {"Authorization": f"Bearer {ENV_KEY}"},
        "unknown": {"X-API-Key": WRONG_KEY}, "none": {}}  # fmt: skip


@pytest.mark.parametrize(("method", "path"), ALL_ROUTES, ids=[" ".join(r) for r in ALL_ROUTES])
@pytest.mark.parametrize("key", list(KEYS))
async def test_each_route_with_each_kind_of_key(
    anonymous: Client, method: str, path: str, key: str
) -> None:
    body = {"name": ""} if method in ("POST", "PUT", "PATCH") else None
    reply = await anonymous.request(method, path, headers=KEYS[key], json=body)
    if key in ("unknown", "none"):
        assert reply.status == 401, reply.body
        assert reply.error["code"] == "unauthorized"
    elif key == "read" and method != "GET":
        assert reply.status == 403, reply.body
        assert reply.error["code"] == "forbidden"
        assert reply.error["details"] == {"key": "dashboard", "scope": "read"}
        assert "WWW-Authenticate" not in reply.headers
    else:  # the route itself answers: 200, or 400/404 for the body and ids sent
        assert reply.status in (200, 400, 404), reply.body
        if reply.status != 200:
            assert reply.error["code"] in ("validation_error", "not_found")
    assert READ_KEY not in reply.raw.decode() and WRITE_KEY not in reply.raw.decode()


@pytest.mark.parametrize(("key", "actor", "scope"), [
    ("read", "dashboard", "read"), ("write", "ci", "write"), ("bare", "key-2", "write"),
    ("env", "env-key-1", "write"),
])  # fmt: skip
async def test_the_access_route_names_the_key_and_its_scope(
    anonymous: Client, key: str, actor: str, scope: str
) -> None:
    reply = await anonymous.request("GET", "/api/v1/access", headers=KEYS[key])
    assert reply.status == 200, reply.body
    assert reply.body == {"actor": actor, "scope": scope, "keys_required": True}


async def test_a_read_key_reads_triggers_with_their_secrets_masked(
    anonymous: Client, hook: dict[str, Any]
) -> None:
    headers = KEYS["read"]
    got = await anonymous.request("GET", f"{BASE}/{hook['id']}", headers=headers)
    assert got.status == 200, got.body
    assert_redacted(got.body["config"])
    listed = await anonymous.request("GET", BASE, headers=headers)
    [item] = [t for t in listed.body["triggers"] if t["id"] == hook["id"]]
    assert_redacted(item["config"])
    for reply in (got, listed):
        for value in SECRETS.values():
            assert value not in reply.raw.decode()
    refused = await anonymous.request("DELETE", f"{BASE}/{hook['id']}", headers=headers)
    assert refused.status == 403
    assert (await anonymous.request("GET", f"{BASE}/{hook['id']}", headers=headers)).status == 200


async def test_refused_calls_are_counted(api: ApiDaemon, anonymous: Client) -> None:
    async def counts() -> tuple[float, float]:
        text = (await anonymous.get("/metrics")).raw.decode()
        return (_sample(text, "triggerd_api_requests_forbidden_total"),
                _sample(text, "triggerd_api_requests_unauthorized_total"))  # fmt: skip

    forbidden, unauthorized = await counts()
    await anonymous.request("POST", BASE, headers=KEYS["read"], json={})
    await anonymous.request("POST", BASE, headers=KEYS["read"], json={})
    await anonymous.request("GET", BASE, headers=KEYS["unknown"])
    assert await counts() == (forbidden + 2, unauthorized + 1)


def _sample(text: str, name: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


@pytest.mark.parametrize("path", ["/health", "/metrics", "/api/docs", "/api/docs/swagger.json",
                                  "/api/docs/", "/api/docs/static/swagger-ui.css"])  # fmt: skip
async def test_operations_and_docs_stay_open(anonymous: Client, path: str) -> None:
    assert (await anonymous.get(path)).status == 200


async def test_webhook_ingestion_needs_no_api_key(anonymous: Client, hook: dict[str, Any]) -> None:
    unknown = await anonymous.post(f"/api/v1/webhook/{uuid.uuid4()}", {"a": 1})
    assert unknown.status == 404, unknown.body
    # The trigger's own secret guards it instead (X-Signature; the ingestion tests
    # cover the signature itself): no API key is asked for, the signature is.
    reply = await anonymous.post(f"/api/v1/webhook/{hook['id']}", {"a": 1})
    assert reply.status == 401
    assert "signature" in reply.error["message"].lower()


def assert_redacted(config: dict[str, Any]) -> None:
    assert config["secret"] == "***"
    assert config["signing_secret"] == "***"
    for name in ("Authorization", "X-Api-Key", "X-Auth-Token", "X-Client-Secret"):
        assert config["headers"][name] == "***", name
    assert config["headers"]["X-Team"] == "payments"


async def test_secrets_are_redacted_in_every_response(api: ApiDaemon, hook: dict[str, Any]) -> None:
    assert_redacted(hook["config"])
    got = await api.client.get(f"{BASE}/{hook['id']}")
    assert_redacted(got.body["config"])
    listed = await api.client.get(BASE)
    [item] = [t for t in listed.body["triggers"] if t["id"] == hook["id"]]
    assert_redacted(item["config"])
    for reply in (got, listed):
        for value in SECRETS.values():
            assert value not in reply.raw.decode()
    row = await api.trigger_row(hook["id"])
    assert row is not None
    stored = orjson.loads(row["config"])
    assert stored["secret"] == SECRETS["secret"]
    assert stored["headers"]["Authorization"] == SECRETS["Authorization"]


async def test_sending_the_placeholder_back_keeps_the_secret(
    api: ApiDaemon, hook: dict[str, Any]
) -> None:
    path = f"{BASE}/{hook['id']}"
    current = (await api.client.get(path)).body
    config = {**current["config"], "timeout_seconds": 3}
    reply = await api.client.put(path, {"name": current["name"], "config": config})
    assert reply.status == 200, reply.body
    assert_redacted(reply.body["config"])
    row = await api.trigger_row(hook["id"])
    assert row is not None
    stored = orjson.loads(row["config"])
    assert stored["secret"] == SECRETS["secret"]
    assert stored["signing_secret"] == SECRETS["signing_secret"]
    assert stored["headers"]["X-Auth-Token"] == SECRETS["X-Auth-Token"]
    assert stored["timeout_seconds"] == 3


async def test_a_password_in_the_endpoint_url_is_redacted_and_kept(api: ApiDaemon) -> None:
    password = SECRETS["url-password"]
    endpoint = f"http://ops:{password}@127.0.0.1:9/hook?x=1"
    created = await api.client.post(BASE, {"name": "basic-auth", "type": "webhook",
                                           "config": {"endpoint": endpoint}})  # fmt: skip
    assert created.status == 201, created.body
    assert created.body["config"]["endpoint"] == "http://ops:***@127.0.0.1:9/hook?x=1"
    path = f"{BASE}/{created.body['id']}"
    got = await api.client.get(path)
    assert password not in got.raw.decode()

    async def stored_endpoint() -> str:
        row = await api.trigger_row(created.body["id"])
        assert row is not None
        return str(orjson.loads(row["config"])["endpoint"])

    # The config read back, sent again (a path changed around the placeholder): the
    # password stays.
    config = {**got.body["config"], "endpoint": "http://ops:***@127.0.0.1:9/other"}
    reply = await api.client.put(path, {"name": "basic-auth", "config": config})
    assert reply.status == 200, reply.body
    assert reply.body["config"]["endpoint"] == "http://ops:***@127.0.0.1:9/other"
    assert await stored_endpoint() == f"http://ops:{password}@127.0.0.1:9/other"
    # A new password is taken, and the audit entry shows neither.
    reply = await api.client.patch(path, {"config": {
        "endpoint": "http://ops:fresh-pw@127.0.0.1:9/other"}})  # fmt: skip
    assert reply.status == 200, reply.body
    assert await stored_endpoint() == "http://ops:fresh-pw@127.0.0.1:9/other"
    audit = await api.client.get("/api/v1/audit", trigger_id=created.body["id"])
    assert audit.status == 200, audit.body
    assert audit.body["entries"][0]["changes"]["config.endpoint"] == [
        "http://ops:***@127.0.0.1:9/other", "http://ops:***@127.0.0.1:9/other"]
    assert password not in audit.raw.decode() and "fresh-pw" not in audit.raw.decode()


async def test_keys_and_secrets_never_reach_the_log(
    api: ApiDaemon, anonymous: Client, hook: dict[str, Any]
) -> None:
    """Runs last in the module: every request above (good keys, wrong keys, secrets in
    bodies) has been logged at debug level by now."""
    await anonymous.request("GET", BASE, headers={"Authorization": f"Bearer {WRONG_KEY}"})
    logs = Path(api.daemon.log_path).read_text(errors="replace")
    assert "triggerd listening" in logs  # the log is the daemon's, and it is being written
    # Names and scopes are logged at start-up, keys never.
    assert ("API keys: env-key-1 (write), env-key-2 (write), key-2 (write), dashboard (read),"
            " ci (write)") in logs  # fmt: skip
    for value in (ENV_KEY, FILE_KEY, WRONG_KEY, READ_KEY, WRITE_KEY, *SECRETS.values()):
        assert value not in logs
