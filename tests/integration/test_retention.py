"""Retention: active → archived → deleted with attempts and idempotency keys;
deliveries in flight wait; bounded batches; several passes at once; finished schedule
rows purged; audit entries deleted after TRIGGERD_AUDIT_RETENTION, in bounded batches;
the role rides out a database outage; visible through the events API."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import wait_until
from triggerd.bus.producer import Bus
from triggerd.config import DatabaseUrl, Settings
from triggerd.devstack import MariaDBServer
from triggerd.domain.audit import Action, AuditEntry, Origin
from triggerd.domain.timeutil import from_db, to_db, utcnow
from triggerd.gauges import refresh_forever
from triggerd.metrics import Metrics
from triggerd.retention import BatchSize, RetentionRole, Windows, run_pass
from triggerd.services import Services
from triggerd.store import retention as retention_sql
from triggerd.store.audit import record_many
from triggerd.store.db import Database
from triggerd.store.event_rows import EventRecord, insert_events
from triggerd.store.retention import RetentionStore, Span

HOUR = 3600.0
WINDOWS = Windows(archive_after=2 * HOUR, delete_after=48 * HOUR, batch_size=10)


async def add_event(db: Database, fired_at: datetime, *, status: str = "success",
                    attempts: int = 1, key: str | None = None) -> str:  # fmt: skip
    """An event with `attempts` delivery attempts and optionally an idempotency key."""
    event_id = str(uuid.uuid4())
    trigger_id = str(uuid.uuid4())
    record = EventRecord(
        id=event_id, trigger_id=trigger_id, trigger_name="t", trigger_type="webhook",
        source="webhook", is_test_run=False, payload={"n": 1}, delivery={},
        fired_at=fired_at, execution_status=status,
    )  # fmt: skip
    async with db.transaction() as cur:
        await insert_events(cur, [record])
        for attempt in range(1, attempts + 1):
            await cur.execute(
                "INSERT INTO delivery_attempts (event_id, attempt, started_at, response_status)"
                " VALUES (%s, %s, %s, 200)",
                (event_id, attempt, to_db(fired_at)),
            )
        if key is not None:
            await cur.execute(
                "INSERT INTO idempotency_keys (trigger_id, idempotency_key, event_id, created_at)"
                " VALUES (%s, %s, %s, %s)",
                (trigger_id, key, event_id, to_db(fired_at)),
            )
    return event_id


async def state(db: Database, event_id: str) -> dict[str, Any]:
    """retention_status (None once deleted) and the number of child rows left."""
    row = await db.fetchone("SELECT retention_status FROM event_logs WHERE id = %s", (event_id,))
    attempts = await db.fetchone(
        "SELECT COUNT(*) AS n FROM delivery_attempts WHERE event_id = %s", (event_id,)
    )
    keys = await db.fetchone(
        "SELECT COUNT(*) AS n FROM idempotency_keys WHERE event_id = %s", (event_id,)
    )
    assert attempts is not None and keys is not None
    return {
        "retention": row["retention_status"] if row else None,
        "attempts": attempts["n"],
        "keys": keys["n"],
    }


async def test_archives_then_deletes_with_attempts_and_keys(db: Database) -> None:
    now = utcnow()
    fresh = await add_event(db, now - timedelta(hours=1), key="k-fresh")
    to_archive = await add_event(db, now - timedelta(hours=3), attempts=2, key="k-archive")
    to_delete = await add_event(db, now - timedelta(hours=49), attempts=3, key="k-delete")

    result = await run_pass(RetentionStore(db), WINDOWS, now=now)

    assert result.complete and (result.archived, result.deleted) == (1, 1)
    assert (result.attempts_deleted, result.keys_deleted) == (3, 1)
    assert await state(db, fresh) == {"retention": "active", "attempts": 1, "keys": 1}
    assert await state(db, to_archive) == {"retention": "archived", "attempts": 2, "keys": 1}
    assert await state(db, to_delete) == {"retention": None, "attempts": 0, "keys": 0}

    # Time moves on: the archived one is deleted too, and a second run changes nothing.
    later = now + timedelta(hours=46)
    result = await run_pass(RetentionStore(db), WINDOWS, now=later)
    assert (result.archived, result.deleted) == (1, 1)
    assert await state(db, to_archive) == {"retention": None, "attempts": 0, "keys": 0}
    again = await run_pass(RetentionStore(db), WINDOWS, now=later)
    assert (again.archived, again.deleted) == (0, 0)


async def test_deliveries_in_flight_wait_until_they_end(db: Database) -> None:
    now = utcnow()
    old = now - timedelta(hours=60)
    pending = await add_event(db, old, status="pending", attempts=0)
    retrying = await add_event(db, old, status="retrying", attempts=2, key="k-retrying")
    failed = await add_event(db, old, status="failed", attempts=5)
    published = await add_event(db, old, status="published", attempts=0)

    result = await run_pass(RetentionStore(db), WINDOWS, now=now)
    assert result.deleted == 2
    assert await state(db, failed) == {"retention": None, "attempts": 0, "keys": 0}
    assert (await state(db, published))["retention"] is None
    # Not deleted, not archived, attempts and key kept: the delivery has not ended.
    assert await state(db, pending) == {"retention": "active", "attempts": 0, "keys": 0}
    assert await state(db, retrying) == {"retention": "active", "attempts": 2, "keys": 1}

    await db.execute("UPDATE event_logs SET execution_status = 'success' WHERE id = %s",
                     (retrying,))  # fmt: skip
    result = await run_pass(RetentionStore(db), WINDOWS, now=now)
    assert result.deleted == 1
    assert await state(db, retrying) == {"retention": None, "attempts": 0, "keys": 0}
    assert (await state(db, pending))["retention"] == "active"


class CountingStore(RetentionStore):
    """Records the rows each write statement changed."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.writes: list[tuple[str, int]] = []

    async def archive(self, cutoff: datetime, span: Span) -> int:
        count = await super().archive(cutoff, span)
        self.writes.append(("archive", count))
        return count

    async def delete_events(self, cutoff: datetime, span: Span) -> tuple[int, int, int]:
        counts = await super().delete_events(cutoff, span)
        self.writes += [("delete", counts[0]), ("delete_attempts", counts[1])]
        return counts

    async def delete_audit(self, cutoff: datetime, span: Span) -> int:
        count = await super().delete_audit(cutoff, span)
        self.writes.append(("delete_audit", count))
        return count


async def test_batches_are_bounded_and_one_pass_does_all(db: Database) -> None:
    now = utcnow()
    base = now - timedelta(hours=50)
    for i in range(35):  # due for deletion, one attempt each
        await add_event(db, base + timedelta(seconds=i))
    for i in range(35):  # due for archiving; every 7th still in flight (skipped, not stuck)
        status = "retrying" if i % 7 == 0 else "success"
        await add_event(db, now - timedelta(hours=3, seconds=i), status=status)
    # Identical fired_at values: the (time, id) keyset keeps the batches exact.
    for _ in range(12):
        await add_event(db, base - timedelta(hours=1))

    store = CountingStore(db)
    result = await run_pass(store, WINDOWS, now=now)

    assert result.complete
    assert (result.deleted, result.attempts_deleted, result.archived) == (47, 47, 30)
    assert all(count <= WINDOWS.batch_size for _, count in store.writes), store.writes
    assert [c for name, c in store.writes if name == "delete"] == [10, 10, 10, 10, 7]
    # 35 archive candidates: 10 + 10 + 10 + 5 rows per span, the in-flight ones skipped.
    assert sum(c for name, c in store.writes if name == "archive") == 30
    assert len([name for name, _ in store.writes if name == "archive"]) == 4


async def test_a_batch_deletes_its_ids_over_several_statements(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_sql, "ID_CHUNK", 3)
    now = utcnow()
    old = now - timedelta(hours=50)
    gone = [await add_event(db, old - timedelta(seconds=i), attempts=2, key=f"k{i}")
            for i in range(9)]  # fmt: skip
    kept = await add_event(db, old, status="retrying", key="k-kept")
    trigger = await add_trigger(db)
    for minutes in range(8):  # the newest is kept
        await add_schedule(db, trigger, old - timedelta(minutes=minutes), "completed")
    statements: list[str] = []
    store = RetentionStore(db, on_statement=lambda name, _: statements.append(name))

    result = await run_pass(store, WINDOWS, now=now)

    assert (result.deleted, result.attempts_deleted, result.keys_deleted) == (9, 18, 9)
    assert result.schedules_deleted == 7
    assert statements.count("delete_events") == 3 and statements.count("delete_schedules") == 3
    for event_id in gone:
        assert await state(db, event_id) == {"retention": None, "attempts": 0, "keys": 0}
    assert await state(db, kept) == {"retention": "active", "attempts": 1, "keys": 1}


def test_batch_size_shrinks_when_slow_and_grows_back() -> None:
    size = BatchSize(5000, target=0.25)
    assert size.value == 1000  # starts small
    size.record(1.0)  # four times over the target: a quarter of the rows next time
    assert size.value == 250
    for _ in range(20):
        size.record(0.01)
    assert size.value == 5000  # never above the configured size
    assert BatchSize(10).value == 10


async def test_concurrent_passes_are_safe(db: Database) -> None:
    now = utcnow()
    for i in range(40):
        await add_event(db, now - timedelta(hours=50, seconds=i), key=f"k{i}")
        await add_event(db, now - timedelta(hours=5, seconds=i))
    results = await asyncio.gather(*(run_pass(RetentionStore(db), WINDOWS, now=now)
                                     for _ in range(3)))  # fmt: skip
    assert sum(r.deleted for r in results) == 40
    assert sum(r.keys_deleted for r in results) == 40
    assert sum(r.archived for r in results) == 40
    rows = await db.fetchall("SELECT retention_status, COUNT(*) AS n FROM event_logs"
                             " GROUP BY retention_status")  # fmt: skip
    assert {r["retention_status"]: r["n"] for r in rows} == {"archived": 40}
    left = await db.fetchone("SELECT COUNT(*) AS n FROM delivery_attempts")
    assert left is not None and left["n"] == 40


async def add_audit_entries(db: Database, at: datetime, count: int) -> None:
    async with db.transaction() as cur:
        await record_many(cur, [AuditEntry(Action.TRIGGER_UPDATED, Origin("ops"), at,
                                           str(uuid.uuid4()), changes={"name": ["a", "b"]})
                                for _ in range(count)])  # fmt: skip


async def test_audit_entries_are_deleted_after_their_retention_in_bounded_batches(
    db: Database,
) -> None:
    now = utcnow()
    windows = Windows(archive_after=2 * HOUR, delete_after=48 * HOUR, batch_size=10,
                      audit_after=90 * 24 * HOUR)  # fmt: skip
    for days in (200, 120, 91):
        await add_audit_entries(db, now - timedelta(days=days), 9)
    await add_audit_entries(db, now - timedelta(days=91, seconds=1), 5)  # ties: exact batches
    await add_audit_entries(db, now - timedelta(days=89), 4)  # within the window: kept
    await add_audit_entries(db, now, 3)

    store = CountingStore(db)
    result = await run_pass(store, windows, now=now)

    assert result.complete and result.audit_deleted == 32
    assert [c for name, c in store.writes if name == "delete_audit"] == [10, 10, 10, 2]
    left = await db.fetchall("SELECT at FROM audit_log")
    assert len(left) == 7
    assert all(from_db(r["at"]) > now - timedelta(days=90) for r in left)  # type: ignore[operator]
    assert (await run_pass(store, windows, now=now)).audit_deleted == 0


def services_for(settings: Settings, db: Database) -> Services:
    return Services(settings=settings, db=db, bus=Bus(settings), metrics=Metrics())


async def test_one_role_runs_the_pass_at_a_time(db: Database, settings_for: Any) -> None:
    settings = settings_for(retention_batch_size=10)
    first = RetentionRole(services_for(settings, db))
    second = RetentionRole(services_for(settings, db))
    async with db.acquire() as conn:
        assert await first.store.try_lock(conn, first.lock)
        assert await second.run_once() is None  # held elsewhere: skipped
        await first.store.unlock(conn, first.lock)
    result = await second.run_once()
    assert result is not None and result.complete


async def add_trigger(db: Database) -> str:
    trigger_id = str(uuid.uuid4())
    now = to_db(utcnow())
    await db.execute(
        "INSERT INTO triggers (id, name, type, status, config, created_at, updated_at)"
        " VALUES (%s, 'sched', 'cron_scheduled', 'active', '{}', %s, %s)",
        (trigger_id, now, now),
    )
    return trigger_id


async def add_schedule(db: Database, trigger_id: str, fire_at: datetime, status: str,
                       settled: datetime | None = None, event_id: str | None = None) -> int:
    """An occurrence that settled (reached `status`) at `settled`, by default its time."""
    now = to_db(utcnow())
    return await db.execute(
        "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status, event_id,"
        " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (trigger_id, to_db(fire_at), to_db(fire_at), status, event_id, now,
         to_db(settled or fire_at)),
    )  # fmt: skip


async def test_finished_schedule_rows_are_purged_but_the_newest_kept(db: Database) -> None:
    now = utcnow()
    recurring, one_shot, gone = await add_trigger(db), await add_trigger(db), str(uuid.uuid4())
    for hours in (60, 55, 50):
        await add_schedule(db, recurring, now - timedelta(hours=hours), "completed")
    await add_schedule(db, recurring, now - timedelta(hours=49), "cancelled")
    await add_schedule(db, recurring, now - timedelta(hours=10), "completed")  # recent: kept
    await add_schedule(db, recurring, now + timedelta(hours=1), "pending")
    await add_schedule(db, one_shot, now - timedelta(hours=70), "completed")  # newest: kept
    await add_schedule(db, gone, now - timedelta(hours=70), "completed")  # trigger deleted

    result = await run_pass(RetentionStore(db), WINDOWS, now=now)

    assert result.schedules_deleted == 5
    rows = await db.fetchall("SELECT trigger_id, status FROM trigger_schedules ORDER BY fire_at")
    assert [(r["trigger_id"], r["status"]) for r in rows] == [
        (one_shot, "completed"), (recurring, "completed"), (recurring, "pending"),
    ]  # fmt: skip


async def test_occurrence_history_is_kept_as_long_as_its_events(db: Database) -> None:
    now = utcnow()
    trigger = await add_trigger(db)
    old = now - timedelta(hours=60)
    # Fired 60 h ago, its event still kept (delivery went on): the row stays with it.
    kept_event = await add_event(db, old, status="retrying")
    await add_schedule(db, trigger, old, "completed", event_id=kept_event)
    # Fired 60 h ago, its event deleted by this pass: the row goes with it.
    gone_event = await add_event(db, old - timedelta(hours=1))
    await add_schedule(db, trigger, old - timedelta(hours=1), "completed", event_id=gone_event)
    # Backfilled an hour ago, an occurrence of 70 h ago: young history, kept.
    backfilled = await add_event(db, now - timedelta(hours=1))
    await add_schedule(db, trigger, now - timedelta(hours=70), "completed",
                       settled=now - timedelta(hours=1), event_id=backfilled)  # fmt: skip
    # Missed 60 h ago: purged; missed 10 h ago (an occurrence of 55 h ago): kept.
    await add_schedule(db, trigger, old - timedelta(minutes=30), "missed")
    await add_schedule(db, trigger, now - timedelta(hours=55), "missed",
                       settled=now - timedelta(hours=10))  # fmt: skip
    await add_schedule(db, trigger, now + timedelta(hours=1), "pending")

    result = await run_pass(RetentionStore(db), WINDOWS, now=now)

    assert result.deleted == 1 and result.schedules_deleted == 2
    rows = await db.fetchall("SELECT status, event_id FROM trigger_schedules"
                             " WHERE trigger_id = %s ORDER BY scheduled_for", (trigger,))
    assert [(r["status"], r["event_id"]) for r in rows] == [
        ("completed", backfilled), ("completed", kept_event), ("missed", None),
        ("pending", None)]  # fmt: skip


async def test_role_and_gauges_ride_out_a_database_outage(tmp_path: Path,
                                                          settings_for: Any) -> None:  # fmt: skip
    server = MariaDBServer(base_dir=tmp_path / "db")
    await asyncio.to_thread(server.start)
    try:
        url = server.create_database("own")
        migrate = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "triggerd", "migrate"],
            env={**os.environ, "TRIGGERD_DATABASE_URL": url}, capture_output=True, text=True,
        )  # fmt: skip
        assert migrate.returncode == 0, migrate.stderr
        settings = settings_for(
            database_url=url, retention_interval="200ms", retention_archive_after="1s",
            retention_delete_after="1h",
        )  # fmt: skip
        db = Database(DatabaseUrl.parse(url), pool_size=4)
        await db.connect()
        services = services_for(settings, db)
        ready = asyncio.Event()
        role = asyncio.create_task(RetentionRole(services).run(ready.set))
        gauges = asyncio.create_task(refresh_forever(services, interval=0.2))
        try:
            await asyncio.wait_for(ready.wait(), 5)
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(2.0)  # passes fail meanwhile: retried, never raised
            assert not role.done() and not gauges.done()
            await asyncio.to_thread(server.start)
            added = await wait_until(lambda: _try_add(db), timeout=30, what="db back")
            assert added is not None
            event_id = added

            async def archived() -> bool:
                return bool((await state(db, event_id))["retention"] == "archived")

            await wait_until(archived, timeout=20, what="archived after the outage")
            assert not role.done() and not gauges.done()
            moved = services.metrics.registry.get_sample_value(
                "triggerd_retention_rows_total", {"action": "archived"}
            )
            assert moved == 1
        finally:
            for task in (role, gauges):
                task.cancel()
            await asyncio.gather(role, gauges, return_exceptions=True)
            await db.close()
    finally:
        await asyncio.to_thread(server.close)


async def _try_add(db: Database) -> str | None:
    try:
        return await add_event(db, utcnow() - timedelta(seconds=2))
    except Exception:
        return None


@pytest.mark.e2e
async def test_daemon_archives_and_deletes_visible_through_the_api(
    start_daemon: Any, db: Database
) -> None:
    daemon = start_daemon(roles="api,retention", env={
        "TRIGGERD_RETENTION_ARCHIVE_AFTER": "1s", "TRIGGERD_RETENTION_DELETE_AFTER": "6s",
        "TRIGGERD_RETENTION_INTERVAL": "200ms", "TRIGGERD_RETENTION_BATCH_SIZE": "10",
    })  # fmt: skip
    await daemon.wait_healthy()
    now = utcnow()
    event_id = await add_event(db, now, attempts=2, key="idem-1")
    in_flight = await add_event(db, now, status="retrying", attempts=1)
    api = f"{daemon.url}/api/v1/events"

    async with aiohttp.ClientSession() as http:

        async def listed(query: str) -> set[str]:
            async with http.get(f"{api}{query}") as resp:
                assert resp.status == 200, await resp.text()
                return {e["id"] for e in (await resp.json())["events"]}

        assert event_id in await listed("")

        async def archived() -> bool:
            return bool((await state(db, event_id))["retention"] == "archived")

        await wait_until(archived, timeout=15, what="archived")
        if (await state(db, event_id))["retention"] == "archived":  # not yet deleted
            assert event_id not in await listed("")
            assert event_id in await listed("?retention_status=archived")
            assert event_id in await listed("?retention_status=all")

        async def deleted() -> bool:
            return bool((await state(db, event_id))["retention"] is None)

        await wait_until(deleted, timeout=15, what="deleted")
        assert await state(db, event_id) == {"retention": None, "attempts": 0, "keys": 0}
        async with http.get(f"{api}/{event_id}") as resp:
            assert resp.status == 404
        # Still retrying: kept, active, with its attempt, however old it gets.
        assert await state(db, in_flight) == {"retention": "active", "attempts": 1, "keys": 0}
        async with http.get(f"{api}/{in_flight}") as resp:
            assert resp.status == 200
        await db.execute("UPDATE event_logs SET execution_status = 'failed' WHERE id = %s",
                         (in_flight,))  # fmt: skip

        async def in_flight_gone() -> bool:
            return bool((await state(db, in_flight))["retention"] is None)

        await wait_until(in_flight_gone, timeout=15, what="deleted once delivery ended")
        async with http.get(f"{daemon.url}/metrics") as resp:
            text = await resp.text()
    assert 'triggerd_retention_rows_total{action="deleted"} 2.0' in text
