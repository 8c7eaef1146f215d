"""In-process API for the ingestion/events tests: the real app (build_app) served as the
daemon serves it (the webhook fast lane in front of aiohttp, on a local port), a real
pool and a real Kafka producer, with trigger rows written straight to the table so these
tests do not depend on the trigger CRUD API."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from triggerd.api import endpoints, events, testruns, triggers, webhook
from triggerd.api.app import build_app
from triggerd.api.server import AppRunner, make_site
from triggerd.bus.producer import Bus
from triggerd.config import Settings
from triggerd.devstack import free_port
from triggerd.domain.timeutil import to_db, utcnow
from triggerd.ingest.pipeline import IngestPipeline
from triggerd.metrics import Metrics
from triggerd.services import Services
from triggerd.store.db import Database, Row
from triggerd.store.triggers import endpoint_hash


class Api:
    def __init__(self, http: aiohttp.ClientSession, app: web.Application, site: web.BaseSite,
                 services: Services) -> None:  # fmt: skip
        self.http = http
        self.app = app
        self.site = site
        self.services = services
        self.db = services.db
        self.url = site.name

    async def request(self, method: str, path: str, *, json: Any = None, data: Any = None,
                      headers: dict[str, str] | None = None,
                      params: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
        if json is not None:
            data = orjson.dumps(json)
            headers = {"Content-Type": "application/json", **(headers or {})}
        async with self.http.request(method, self.url + path, data=data, headers=headers,
                                     params=params) as resp:  # fmt: skip
            raw = await resp.read()
            body = orjson.loads(raw) if raw and resp.content_type == "application/json" else raw
            return resp.status, body

    async def post(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, json=json, **kw)

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        return await self.request("GET", path, params=params)

    async def event_row(self, event_id: str) -> Row | None:
        return await self.db.fetchone("SELECT * FROM event_logs WHERE id = %s", (event_id,))

    async def count_events(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) AS n FROM event_logs")
        return int(row["n"]) if row else 0


def build_api_app(services: Services, ingest: IngestPipeline) -> web.Application:
    """The process's app with the /api/v1 routes as routes.setup mounts them, minus the
    OpenAPI docs (tested by their owner; kept out of these tests' way)."""
    app = build_app(services, with_api=False, ingest=ingest)
    for module in (triggers, testruns, webhook, events, endpoints):
        module.add_routes(app, services)
    return app


@contextlib.asynccontextmanager
async def running_api(settings: Settings, *, connect_bus: bool = True,
                      ingest_db: Database | None = None) -> AsyncIterator[Api]:  # fmt: skip
    """`ingest_db`: the pool the ingest pipeline writes through (the API's own by default)."""
    db = Database(settings.database, pool_size=8)
    await db.connect()
    bus = Bus(settings)
    bus_task = asyncio.create_task(bus.run(), name="test-bus") if connect_bus else None
    if connect_bus:
        assert await bus.wait_connected(15), bus.last_error
    services = Services(settings=settings, db=db, bus=bus, metrics=Metrics())
    ingest = IngestPipeline(ingest_db or db, bus, services.metrics)  # the daemon's `ingest`
    ingest_task = asyncio.create_task(ingest.run(), name="test-ingest")
    app = build_api_app(services, ingest)
    runner = AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = make_site(runner, "127.0.0.1", free_port(), fast_lane=settings.webhook_fast_lane,
                     shutdown_timeout=2)  # fmt: skip
    await site.start()
    http = aiohttp.ClientSession()
    try:
        yield Api(http, app, site, services)
    finally:
        await http.close()
        await runner.cleanup()
        ingest_task.cancel()
        await asyncio.gather(ingest_task, return_exceptions=True)
        if bus_task is not None:
            bus_task.cancel()
            await asyncio.gather(bus_task, return_exceptions=True)
        await db.close()


async def make_trigger(db: Database, *, type: str = "webhook", status: str = "active",
                       config: dict[str, Any] | None = None, name: str = "hook",
                       version: int = 1) -> str:  # fmt: skip
    trigger_id = str(uuid.uuid4())
    now = to_db(utcnow())
    await db.execute(
        "INSERT INTO triggers (id, name, type, status, config, endpoint_hash, version,"
        " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (trigger_id, name, type, status, orjson.dumps(config or {}).decode(),
         endpoint_hash(config or {}), version, now, now),
    )
    return trigger_id


async def insert_event(db: Database, *, trigger_id: str | None, fired_at: datetime,
                       source: str = "webhook", execution_status: str = "pending",
                       retention_status: str = "active", is_test_run: bool = False,
                       scheduled_for: datetime | None = None, attempts: int = 0,
                       payload: Any = None) -> str:  # fmt: skip
    event_id = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO event_logs (id, trigger_id, trigger_name, trigger_type, source,"
        " is_test_run, payload, scheduled_for, fired_at, execution_status, attempts,"
        " retention_status, created_at) VALUES"
        " (%s, %s, 'seeded', 'webhook', %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (event_id, trigger_id, source, int(is_test_run),
         orjson.dumps(payload if payload is not None else {"n": 1}).decode(),
         to_db(scheduled_for), to_db(fired_at), execution_status, attempts, retention_status,
         to_db(fired_at)),
    )  # fmt: skip
    return event_id
