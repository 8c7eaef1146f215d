"""For the API tests (triggers, errors, access, OpenAPI): one `triggerd run --roles api`
subprocess per test module on its own fresh database, and a small JSON client.

Only the api role runs, so schedule rows stay exactly as the API wrote them (no
scheduler claims or completes them while a test looks)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from tests.support import ALLOW_LOOPBACK, Daemon
from triggerd.config import DatabaseUrl
from triggerd.store.db import Database, Row
from triggerd.store.migrations import migrate

URL = "http://127.0.0.1:9/hook"  # a delivery endpoint nothing listens on


def module_env(database_url: str, kafka_bootstrap: str) -> dict[str, str]:
    topic = f"jobs-{uuid.uuid4().hex[:10]}"
    return {
        "TRIGGERD_DATABASE_URL": database_url,
        "TRIGGERD_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TRIGGERD_KAFKA_TOPIC": topic,
        "TRIGGERD_KAFKA_GROUP": f"g-{topic}",
        "TRIGGERD_KAFKA_PARTITIONS": "1",
        "TRIGGERD_SHUTDOWN_TIMEOUT": "2s",
        "TRIGGERD_LOG_FORMAT": "json",
        "TRIGGERD_DELIVERY_ALLOW_NETWORKS": ALLOW_LOOPBACK,
    }


@dataclass
class Reply:
    status: int
    body: Any
    headers: CIMultiDictProxy[str]
    raw: bytes

    @property
    def error(self) -> dict[str, Any]:
        """The envelope's `error`, after checking the envelope's shape."""
        assert isinstance(self.body, dict) and set(self.body) == {"error"}, self.body
        error = self.body["error"]
        assert set(error) == {"code", "message", "details", "request_id"}, error
        assert error["request_id"] == self.headers["X-Request-ID"]
        return dict(error)

    @property
    def field(self) -> Any:
        return (self.error["details"] or {}).get("field")


class Client:
    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url
        self.headers = headers or {}
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()

    async def request(self, method: str, path: str, *, json: Any = None,
                      data: bytes | str | None = None, headers: dict[str, str] | None = None,
                      params: dict[str, str] | None = None) -> Reply:  # fmt: skip
        assert self._http is not None
        sent = {**self.headers, **(headers or {})}
        if json is not None:
            data = orjson.dumps(json)
            sent.setdefault("Content-Type", "application/json")
        async with self._http.request(method, self.base_url + path, data=data, headers=sent,
                                      params=params) as resp:  # fmt: skip
            raw = await resp.read()
            body: Any = raw
            if raw and resp.content_type == "application/json":
                body = orjson.loads(raw)
            return Reply(resp.status, body, resp.headers, raw)

    async def get(self, path: str, **params: str) -> Reply:
        return await self.request("GET", path, params=params or None)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.request("POST", path, json=json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.request("PATCH", path, json=json, **kw)

    async def put(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.request("PUT", path, json=json, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.request("DELETE", path, **kw)


@dataclass
class ApiDaemon:
    daemon: Daemon
    client: Client
    db: Database

    async def schedules(self, trigger_id: str) -> list[Row]:
        return await self.db.fetchall(
            "SELECT id, fire_at, status, attempt_count, claimed_by, lease_until, created_at,"
            " updated_at FROM trigger_schedules WHERE trigger_id = %(id)s ORDER BY id",
            {"id": trigger_id},
        )

    async def pending(self, trigger_id: str) -> list[Row]:
        return [row for row in await self.schedules(trigger_id) if row["status"] == "pending"]

    async def trigger_row(self, trigger_id: str) -> Row | None:
        return await self.db.fetchone("SELECT * FROM triggers WHERE id = %(id)s",
                                      {"id": trigger_id})  # fmt: skip


@contextlib.asynccontextmanager
async def api_daemon(
    db_server: Any,
    kafka_bootstrap: str,
    log_dir: Path,
    env: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[ApiDaemon]:
    """A migrated database of its own and `triggerd run --roles api` on it."""
    url = db_server.create()
    db = Database(DatabaseUrl.parse(url), pool_size=4)
    await db.connect()
    daemon = Daemon({**module_env(url, kafka_bootstrap), **(env or {})}, log_dir, roles="api")
    try:
        await migrate(db)
        daemon.start()
        await daemon.wait_healthy()
        async with Client(daemon.url, headers) as client:
            yield ApiDaemon(daemon, client, db)
    finally:
        daemon.kill()
        await db.close()
        db_server.drop(url)
