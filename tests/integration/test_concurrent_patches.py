"""A valid change never answers 503 because of its neighbours: a thousand PATCHes at once,
each deactivating its own trigger, spread over two API processes while a scheduler
process claims, fires and advances the same schedule rows, all answer 200 and leave no
pending occurrence behind."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.api_daemon import URL, ApiDaemon, api_daemon
from tests.support import Daemon

BASE = "/api/v1/triggers"
TRIGGERS = 1020


@pytest.fixture
async def api(db_server: Any, kafka_bootstrap: str, tmp_path: Path
              ) -> AsyncIterator[tuple[ApiDaemon, list[Daemon]]]:  # fmt: skip
    async with api_daemon(db_server, kafka_bootstrap, tmp_path,
                          env={"TRIGGERD_DB_POOL_SIZE": "50"}) as running:  # fmt: skip
        env = {k: v for k, v in running.daemon.env.items()
               if k.startswith("TRIGGERD_") and k not in ("TRIGGERD_HTTP_PORT",
                                                          "TRIGGERD_PUBLIC_URL")}  # fmt: skip
        # A second API process and a scheduler of their own, as in a split deployment.
        others = [Daemon(env, tmp_path, roles="api").start(),
                  Daemon(env, tmp_path, roles="scheduler").start()]  # fmt: skip
        try:
            for daemon in others:
                await daemon.wait_healthy()
            yield running, [running.daemon, *others]
        finally:
            for daemon in others:
                daemon.kill()


async def send(http: aiohttp.ClientSession, method: str, url: str, body: Any
               ) -> tuple[int, Any]:  # fmt: skip
    async with http.request(method, url, json=body) as resp:
        return resp.status, await resp.json()


async def test_a_thousand_concurrent_deactivations_all_answer_200(
    api: tuple[ApiDaemon, list[Daemon]],
) -> None:
    running, daemons = api
    apis = [d.url for d in daemons[:2]]
    kinds = [
        {"type": "cron_scheduled", "config": {"endpoint": URL, "cron": "* * * * * *"}},
        {"type": "interval_scheduled", "config": {"endpoint": URL, "interval_seconds": 1}},
        {"type": "cron_scheduled", "config": {"endpoint": URL, "cron": "*/5 * * * * *"}},
    ]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        created: list[tuple[int, Any]] = []
        for start in range(0, TRIGGERS, 200):
            created += await asyncio.gather(*(
                send(http, "POST", f"{apis[i % 2]}{BASE}", {"name": f"t{i}", **kinds[i % 3]})
                for i in range(start, min(TRIGGERS, start + 200))
            ))  # fmt: skip
        assert Counter(status for status, _ in created) == {201: TRIGGERS}
        ids = [body["id"] for _, body in created]
        await asyncio.sleep(1.5)  # the scheduler claims and fires their occurrences
        # Each trigger with a history of completed occurrences, as after some hours of
        # running: cancelling scans it, which is what made neighbours deadlock.
        digits = " UNION ALL ".join(f"SELECT {d} AS d" for d in range(10))
        await running.db.execute(
            "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status,"
            " created_at, updated_at) SELECT t.id, at.t, at.t, 'completed', NOW(3), NOW(3)"
            " FROM triggers t JOIN (SELECT '2020-01-01' + INTERVAL (a.d * 10 + b.d) MINUTE"
            f" AS t FROM ({digits}) a JOIN ({digits}) b) at"
        )

        replies = await asyncio.gather(*(
            send(http, "PATCH", f"{apis[i % 2]}{BASE}/{tid}", {"status": "inactive"})
            for i, tid in enumerate(ids)
        ))  # fmt: skip
    statuses = Counter(status for status, _ in replies)
    assert statuses == {200: TRIGGERS}, [body for status, body in replies if status != 200][:3]
    assert all(body["status"] == "inactive" and body["next_scheduled_run"] is None
               for _, body in replies)  # fmt: skip
    left = await running.db.fetchone(
        "SELECT COUNT(*) AS n FROM trigger_schedules WHERE status IN ('pending', 'processing')"
    )
    assert left is not None and left["n"] == 0
