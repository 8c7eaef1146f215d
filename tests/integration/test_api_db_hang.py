"""A database that hangs instead of refusing (stopped with SIGSTOP: connections open,
nothing answers): API calls are answered 503 within the deadline rather than waiting with
it, and the API recovers once the server answers again. Real MariaDB of its own."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest

from tests.integration.webhook_harness import running_api
from tests.support import wait_until
from triggerd.api import middleware
from triggerd.config import DatabaseUrl
from triggerd.devstack import MariaDBServer
from triggerd.store.db import Database
from triggerd.store.migrations import migrate

DEADLINE = 1.0


async def test_a_hung_database_gets_503_within_the_deadline_then_recovers(
    settings_for: Any, own_database_server: MariaDBServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(middleware, "API_DEADLINE", DEADLINE)
    server = own_database_server
    url = await asyncio.to_thread(server.create_database, "hang")
    db = Database(DatabaseUrl.parse(url), pool_size=2)
    await db.connect()
    await migrate(db)
    await db.close()
    body = {"name": "t", "type": "webhook", "config": {}}
    async with running_api(settings_for(database_url=url)) as api:
        status, created = await api.post("/api/v1/triggers", body)
        assert status == 201, created
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            for method, path, payload in [
                ("GET", "/api/v1/triggers", None),
                ("GET", f"/api/v1/triggers/{created['id']}", None),
                ("POST", "/api/v1/triggers", body),
                ("GET", "/api/v1/events", None),
            ]:  # fmt: skip
                started = time.monotonic()
                status, answer = await api.request(method, path, json=payload)
                took = time.monotonic() - started
                assert status == 503, (method, path, answer)
                assert answer["error"]["code"] == "unavailable"
                assert took < DEADLINE + 2, (method, path, took)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)

        async def answered() -> bool:
            status, _ = await api.get("/api/v1/triggers")
            return status == 200

        await wait_until(answered, timeout=20, interval=0.2, what="the API answering again")
        status, listed = await api.get("/api/v1/triggers")
        assert status == 200
        # The create answered 503 may have been made after all (its transaction was sent
        # before the server stopped, as the message says): once at most, and whole.
        ids = [t["id"] for t in listed["triggers"]]
        assert created["id"] in ids and len(ids) <= 2, listed
        for trigger_id in ids:
            status, one = await api.get(f"/api/v1/triggers/{trigger_id}")
            assert status == 200 and one["name"] == "t", one
