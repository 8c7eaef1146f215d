"""Test data straight into a test database, and the scheduler role run in-process.

Triggers are inserted with SQL (normalized configs, as the API stores them) together with
their first occurrence, so scheduler tests do not depend on the HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from triggerd.bus.producer import Bus
from triggerd.config import Settings
from triggerd.domain.occurrences import due_at
from triggerd.domain.timeutil import from_db, to_iso, utcnow
from triggerd.domain.timing import next_occurrence
from triggerd.metrics import Metrics
from triggerd.scheduler.loop import SchedulerRole
from triggerd.services import Services
from triggerd.store.db import Database
from triggerd.store.schedule_rows import insert_occurrence
from triggerd.store.triggers import endpoint_hash

ENDPOINT = "http://127.0.0.1:9/hook"


def cron_config(cron: str, timezone: str = "UTC", **extra: Any) -> dict[str, Any]:
    return {"cron": cron, "timezone": timezone, "endpoint": ENDPOINT, **extra}


def interval_config(seconds: float, first_run_at: datetime, **extra: Any) -> dict[str, Any]:
    return {"interval_seconds": seconds, "first_run_at": to_iso(first_run_at),
            "endpoint": ENDPOINT, **extra}  # fmt: skip


def one_time_config(run_at: datetime, **extra: Any) -> dict[str, Any]:
    return {"run_at": to_iso(run_at), "timezone": "UTC", "endpoint": ENDPOINT, **extra}


async def insert_trigger(
    db: Database, type: str, config: dict[str, Any], *, status: str = "active",
    name: str | None = None, first: datetime | None = None, schedule: bool = True,
) -> str:  # fmt: skip
    """A trigger row and (for an active scheduled one) its first pending occurrence: `first`,
    or the next occurrence after now."""
    trigger_id = str(uuid.uuid4())
    now = utcnow()
    async with db.transaction() as cur:
        await cur.execute(
            "INSERT INTO triggers (id, name, type, status, config, endpoint_hash, version,"
            " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, 1, %s, %s)",
            (trigger_id, name or f"{type}-{trigger_id[-8:]}", type, status,
             orjson.dumps(config).decode(), endpoint_hash(config), now.replace(tzinfo=None),
             now.replace(tzinfo=None)),
        )  # fmt: skip
        if schedule and status == "active":
            scheduled_for = first or next_occurrence(type, config, now)
            if scheduled_for is not None:
                due = due_at(trigger_id, config, scheduled_for)
                await insert_occurrence(cur, trigger_id, due, now)
    return trigger_id


async def schedule_rows(db: Database, trigger_id: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE trigger_id = %s", [trigger_id]) if trigger_id else ("", [])
    rows = await db.fetchall(f"SELECT * FROM trigger_schedules {where} ORDER BY fire_at", params)
    for row in rows:
        for key in ("scheduled_for", "fire_at", "lease_until", "retry_at", "last_attempt_at",
                    "created_at"):
            row[key] = from_db(row[key])
    return rows


async def event_rows(db: Database, trigger_id: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE trigger_id = %s", [trigger_id]) if trigger_id else ("", [])
    rows = await db.fetchall(
        f"SELECT id, trigger_id, source, scheduled_for, fired_at, note, published_at"
        f" FROM event_logs {where} ORDER BY scheduled_for", params,
    )  # fmt: skip
    for row in rows:
        for key in ("scheduled_for", "fired_at", "published_at"):
            row[key] = from_db(row[key])
    return rows


def seconds_grid(rows: list[dict[str, Any]], key: str = "scheduled_for") -> list[int]:
    """Whole-second offsets of a trigger's occurrences from its first one."""
    times: list[datetime] = [row[key] for row in rows]
    return [round((t - times[0]).total_seconds()) for t in times]


def ms(value: str | datetime) -> int:
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return int(when.astimezone(UTC).timestamp() * 1000)


class InProcessScheduler:
    """The scheduler role and its Kafka producer on the test's event loop."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.services = Services(settings=settings, db=db, bus=Bus(settings), metrics=Metrics())
        self.role = SchedulerRole(self.services)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, timeout: float = 15.0) -> InProcessScheduler:
        ready = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self.services.bus.run(), name="test-bus"),
            asyncio.create_task(self.role.run(ready.set), name="test-scheduler"),
        ]
        await self.services.bus.wait_connected(timeout)
        async with asyncio.timeout(timeout):
            await ready.wait()
        return self

    async def stop(self) -> None:
        for task in reversed(self._tasks):  # the role first, then the producer
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def metric(self, name: str, **labels: str) -> float:
        value = self.services.metrics.registry.get_sample_value(name, labels or None)
        return float(value or 0.0)


def soon(seconds: float) -> datetime:
    """A due time `seconds` from now, on the millisecond grid."""
    return utcnow() + timedelta(seconds=seconds)
