"""Through the whole daemon (roles api,worker as a subprocess): a webhook is delivered to
its endpoint, and a replay delivers it again with the attempts continuing."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.integration.webhook_harness import make_trigger
from tests.sink import Sink
from tests.support import wait_until
from triggerd.store.db import Database

pytestmark = pytest.mark.e2e


async def test_webhook_delivered_then_replayed(start_daemon: Any, db: Database) -> None:
    async with Sink() as sink:
        trigger_id = await make_trigger(
            db, config={"endpoint": sink.url("/hook"), "schema": {"type": "object"}}
        )
        daemon = start_daemon(roles="api,worker")
        await daemon.wait_healthy()
        async with aiohttp.ClientSession() as http:
            url = f"{daemon.url}/api/v1/webhook/{trigger_id}"
            async with http.post(url, json={"order": 42}) as resp:
                assert resp.status == 202, await resp.text()
                event_id = (await resp.json())["event_id"]
            first = await sink.wait_for(1, path="/hook")
            assert first[0].json() == {"order": 42}
            assert first[0].headers["X-Event-Id"] == event_id

            async def event(status: str, attempts: int) -> dict[str, Any] | None:
                async with http.get(f"{daemon.url}/api/v1/events/{event_id}") as resp:
                    body: dict[str, Any] = await resp.json()
                ok = body["execution_status"] == status and body["attempts"] == attempts
                return body if ok else None

            async def replay(attempt: int) -> None:
                async with http.post(f"{daemon.url}/api/v1/events/{event_id}/replay") as resp:
                    assert resp.status == 202, await resp.text()
                    assert (await resp.json())["attempt"] == attempt

            await wait_until(lambda: event("success", 1), timeout=15, what="first delivery")
            # Nothing owed, and when its job reached Kafka is on record (by the worker's
            # outcome or the publisher's clear, whichever came first).
            row = await db.fetchone("SELECT fired_at, publish_at, published_at, delivered_at"
                                    " FROM event_logs WHERE id = %s", (event_id,))  # fmt: skip
            assert row is not None and row["publish_at"] is None
            assert row["fired_at"] <= row["published_at"] <= row["delivered_at"], row
            await replay(2)
            again = await sink.wait_for(2, path="/hook")
            assert again[1].headers["X-Event-Id"] == event_id
            assert again[1].json() == {"order": 42}
            body = await wait_until(lambda: event("success", 2), timeout=15, what="replay")
            assert body is not None
            assert [a["attempt"] for a in body["delivery_attempts"]] == [1, 2]
            assert all(a["response_status"] == 200 for a in body["delivery_attempts"])
            # A replay after the endpoint was fixed goes where the trigger points now.
            config = {"endpoint": sink.url("/moved"), "schema": {"type": "object"}}
            async with http.patch(f"{daemon.url}/api/v1/triggers/{trigger_id}",
                                  json={"config": config}) as resp:  # fmt: skip
                assert resp.status == 200, await resp.text()
            await replay(3)
            moved = await sink.wait_for(1, path="/moved")
            assert moved[0].headers["X-Event-Id"] == event_id
            assert moved[0].json() == {"order": 42}
            await wait_until(lambda: event("success", 3), timeout=15, what="replay to the new URL")
