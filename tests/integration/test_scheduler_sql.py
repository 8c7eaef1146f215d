"""Every query the scheduler runs in its loop is served by an index, and the
claim hands a row to one claimer only."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from triggerd.domain.occurrences import Due
from triggerd.domain.timeutil import to_db, utcnow
from triggerd.store import occurrences, schedules
from triggerd.store.db import Database
from triggerd.store.event_rows import EventRecord
from triggerd.store.schedule_outcomes import Failed, Fired, record_outcomes

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # no scheduler start to count from


async def _fill(db: Database, rows: int = 3000) -> None:
    """A table shaped like production: mostly history, some pending and claimed rows."""
    now = utcnow()
    values = []
    statuses = ("completed",) * 3 + ("pending", "processing", "cancelled")
    for i in range(rows):
        status = statuses[i % 6]
        fire_at = now + timedelta(seconds=(i % 600) - 300, milliseconds=i)
        lease = now + timedelta(seconds=(i % 60) - 30) if status == "processing" else None
        values.append((str(uuid.uuid4()), to_db(fire_at), to_db(fire_at), status,
                       "x" if lease else None, to_db(lease), to_db(now), to_db(now)))  # fmt: skip
    await db.executemany(
        "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status, claimed_by,"
        " lease_until, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        values,
    )
    await db.execute("ANALYZE TABLE trigger_schedules")


async def _explain(db: Database, sql: str, params: Any) -> list[dict[str, Any]]:
    return await db.fetchall("EXPLAIN " + sql, params)


async def test_loop_queries_use_indexes(db: Database) -> None:
    await _fill(db)
    now = utcnow()
    horizon, until = to_db(now + timedelta(seconds=11)), to_db(now + timedelta(seconds=2))
    checks = [
        (schedules.DUE_POINTS, {"horizon": horizon}, "ix_schedules_due"),
        (schedules.LEASE_POINTS, {"horizon": horizon}, "ix_schedules_lease"),
        (schedules.CLAIM_EXPIRED, {"now": to_db(now), "limit": 1000, "reclaim_stale_before": until},
         "ix_schedules_lease"),
        (schedules.CLAIM_PENDING, {"now": to_db(now), "until": until, "limit": 1000,
                                   "stale_before": until, "started_before": until},
         "ix_schedules_due"),
        ("SELECT id FROM trigger_schedules WHERE id IN (%s, %s, %s) AND status = 'processing'"
         " AND claimed_by = %s FOR UPDATE", [1, 2, 3, "me"], "PRIMARY"),
        ("UPDATE trigger_schedules SET status = 'processing' WHERE id IN (%s, %s)", [1, 2],
         "PRIMARY"),
        ("SELECT id, version, status FROM triggers WHERE id IN (%s, %s)", ["a", "b"], "PRIMARY"),
    ]  # fmt: skip
    for sql, params, index in checks:
        plan = await _explain(db, sql, params)
        assert len(plan) == 1, plan
        assert plan[0]["key"] == index, (sql, plan)
        assert plan[0]["type"] in ("range", "ref", "const", "eq_ref"), (sql, plan)
        assert "filesort" not in (plan[0]["Extra"] or ""), (sql, plan)


async def test_concurrent_claims_never_share_a_row(db: Database) -> None:
    now = utcnow()
    await db.executemany(
        "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status, created_at,"
        " updated_at) VALUES (%s, %s, %s, 'pending', %s, %s)",
        [(str(uuid.uuid4()), to_db(now - timedelta(milliseconds=i)),
          to_db(now - timedelta(milliseconds=i)), to_db(now), to_db(now)) for i in range(600)],
    )  # fmt: skip

    async def claimer(name: str) -> list[int]:
        got: list[int] = []
        while True:
            rows = await schedules.claim_due(
                db, instance=name, now=utcnow(), until=utcnow(), limit=50,
                lease_until=utcnow() + timedelta(seconds=30), stale_before=utcnow(),
                reclaim_stale_before=utcnow(), started_before=EPOCH,
            )  # fmt: skip
            if not rows:
                return got
            got += [row.id for row in rows]

    results = await asyncio.gather(*(claimer(f"s{i}") for i in range(3)))
    claimed = [row_id for result in results for row_id in result]
    assert len(claimed) == len(set(claimed)) == 600
    owners = await db.fetchall(
        "SELECT claimed_by, COUNT(*) AS n FROM trigger_schedules GROUP BY claimed_by"
    )
    assert {row["claimed_by"]: row["n"] for row in owners} == {
        f"s{i}": len(result) for i, result in enumerate(results) if result
    }


async def test_a_failed_catch_up_keeps_its_decision(db: Database) -> None:
    """After downtime the latest missed occurrence was chosen; if its publish fails, that
    occurrence is retried (the claimed, older row stays missed), not the older one."""
    now = utcnow()
    old, latest = now - timedelta(seconds=50), now - timedelta(seconds=5)
    trigger_id = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status, created_at,"
        " updated_at) VALUES (%s, %s, %s, 'pending', %s, %s)",
        [trigger_id, to_db(old), to_db(old), to_db(old), to_db(old)],
    )
    [row] = await schedules.claim_due(
        db, instance="me", now=now, until=now, limit=10,
        lease_until=now + timedelta(seconds=30), stale_before=now - timedelta(seconds=10),
        reclaim_stale_before=now - timedelta(seconds=10), started_before=EPOCH,
    )  # fmt: skip
    assert row.stale
    retry_at = now + timedelta(seconds=2)
    failure = Failed(row.id, trigger_id, 0, retry_at, True, Due(latest, latest))
    assert await record_outcomes(db, instance="me", now=now, fired=[],
                                 failed=[failure]) == {row.id}  # fmt: skip
    rows = await db.fetchall(
        "SELECT fire_at, status, attempt_count, retry_at FROM trigger_schedules"
        " WHERE trigger_id = %s ORDER BY fire_at", [trigger_id],
    )  # fmt: skip
    assert [(r["status"], r["attempt_count"]) for r in rows] == [("missed", 0), ("pending", 1)]
    assert rows[1]["fire_at"] == to_db(latest) and rows[1]["retry_at"] == to_db(retry_at)


async def test_pending_and_reclaimed_rows_have_their_own_downtime_cut_off(db: Database) -> None:
    """A pending row due before the cut-off is stale (missed); a row a dead holder leased
    is judged by its own cut-off (its job may already be on Kafka)."""
    now = utcnow()
    due = now - timedelta(seconds=20)
    pending, leased = str(uuid.uuid4()), str(uuid.uuid4())
    await db.execute(
        "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status, claimed_by,"
        " lease_until, created_at, updated_at) VALUES (%s, %s, %s, 'pending', NULL, NULL, %s, %s),"
        " (%s, %s, %s, 'processing', 'dead', %s, %s, %s)",
        [pending, to_db(due), to_db(due), to_db(due), to_db(due),
         leased, to_db(due), to_db(due), to_db(now - timedelta(seconds=1)), to_db(due),
         to_db(due)],
    )  # fmt: skip
    rows = await schedules.claim_due(
        db, instance="me", now=now, until=now, limit=10,
        lease_until=now + timedelta(seconds=30), stale_before=now - timedelta(seconds=10),
        reclaim_stale_before=now - timedelta(seconds=60), started_before=EPOCH,
    )  # fmt: skip
    assert {row.trigger_id: row.stale for row in rows} == {pending: True, leased: False}


async def test_a_restarted_scheduler_takes_over_its_own_leases_at_once(db: Database) -> None:
    now = utcnow()
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    lease = to_db(now + timedelta(seconds=30))
    await db.execute(
        "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status, claimed_by,"
        " lease_until, created_at, updated_at)"
        " VALUES (%s, %s, %s, 'processing', 'me', %s, %s, %s),"
        " (%s, %s, %s, 'processing', 'someone-else', %s, %s, %s)",
        [mine, to_db(now), to_db(now), lease, to_db(now), to_db(now),
         other, to_db(now), to_db(now), lease, to_db(now), to_db(now)],
    )  # fmt: skip
    assert await schedules.expire_own_leases(db, instance="me", now=now) == 1
    later = now + timedelta(milliseconds=5)
    rows = await schedules.claim_due(
        db, instance="me", now=later, until=later, limit=10,
        lease_until=later + timedelta(seconds=30), stale_before=now - timedelta(seconds=60),
        reclaim_stale_before=now - timedelta(seconds=60), started_before=EPOCH,
    )  # fmt: skip
    assert [row.trigger_id for row in rows] == [mine]  # the other process's lease holds


async def test_an_occurrence_keeps_its_publish_time_when_its_event_is_republished(
    db: Database,
) -> None:
    """An occurrence's `published_at` (and so its delay) is when its job was acknowledged,
    kept with the occurrence: a retry's publish or a replay rewrites the event's."""
    now = utcnow()
    due = now - timedelta(seconds=1)
    triggers = [str(uuid.uuid4()) for _ in range(3)]
    for trigger_id in triggers:
        await db.execute(
            "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status,"
            " created_at, updated_at) VALUES (%s, %s, %s, 'pending', %s, %s)",
            [trigger_id, to_db(due), to_db(due), to_db(due), to_db(due)],
        )  # fmt: skip
    rows = await schedules.claim_due(
        db, instance="me", now=now, until=now, limit=10,
        lease_until=now + timedelta(seconds=30), stale_before=now - timedelta(seconds=60),
        reclaim_stale_before=now - timedelta(seconds=60), started_before=EPOCH,
    )  # fmt: skip
    acked = {row.trigger_id: now + timedelta(milliseconds=3 + i) for i, row in enumerate(rows)}
    fired = [
        Fired(schedule_id=row.id, trigger_id=row.trigger_id, moved=False,
              fired=Due(due, due), next=None,
              event=EventRecord(id=str(uuid.uuid4()), trigger_id=row.trigger_id,
                                trigger_name="t", trigger_type="cron_scheduled",
                                source="scheduler", is_test_run=False, payload={},
                                delivery={}, fired_at=now, scheduled_for=due,
                                published_at=acked[row.trigger_id]))
        for row in rows
    ]  # fmt: skip
    assert len(fired) == 3
    await record_outcomes(db, instance="me", now=now, fired=fired, failed=[])
    # a retry of each event is published later: the backstop's clock moves
    await db.execute("UPDATE event_logs SET published_at = %s WHERE trigger_id IN (%s, %s, %s)",
                     [to_db(now + timedelta(minutes=5)), *triggers])  # fmt: skip
    for trigger_id in triggers:
        found, total = await occurrences.history(db, trigger_id, occurrences.OccurrenceFilter(),
                                                 limit=10, offset=0)  # fmt: skip
        assert total == 1 and found[0].outcome == "fired"
        assert found[0].published_at == acked[trigger_id]
        assert found[0].delay_ms == (acked[trigger_id] - due) // timedelta(milliseconds=1)
