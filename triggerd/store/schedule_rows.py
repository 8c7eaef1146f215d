"""The two schedule-row writes the API and the scheduler share; both run on a cursor
inside the caller's transaction so a trigger and its schedule change together."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from triggerd.timeutil import from_db, to_db


async def insert_occurrence(cur: Any, trigger_id: str, fire_at: datetime, now: datetime) -> None:
    """Add a pending occurrence. The (trigger_id, fire_at) key makes this idempotent: two
    schedulers inserting the same next occurrence make one row; a cancelled one comes
    back to pending (a re-activated trigger); a completed one stays completed (never
    fired twice)."""
    await cur.execute(
        "INSERT INTO trigger_schedules (trigger_id, fire_at, status, created_at, updated_at)"
        " VALUES (%(trigger_id)s, %(fire_at)s, 'pending', %(now)s, %(now)s)"
        " ON DUPLICATE KEY UPDATE"
        "  attempt_count = IF(status = 'cancelled', 0, attempt_count),"
        "  claimed_by = IF(status = 'cancelled', NULL, claimed_by),"
        "  lease_until = IF(status = 'cancelled', NULL, lease_until),"
        "  retry_at = IF(status = 'cancelled', NULL, retry_at),"
        "  updated_at = IF(status = 'cancelled', VALUES(updated_at), updated_at),"
        "  status = IF(status = 'cancelled', 'pending', status)",
        {"trigger_id": trigger_id, "fire_at": to_db(fire_at), "now": to_db(now)},
    )


async def cancel_pending(cur: Any, trigger_id: str, now: datetime) -> int:
    """Cancel the trigger's occurrences that have not fired (pending, or claimed but not
    yet completed: a scheduler holding one re-checks the status before completing)."""
    return int(
        await cur.execute(
            "UPDATE trigger_schedules SET status = 'cancelled', updated_at = %(now)s,"
            " claimed_by = NULL, lease_until = NULL"
            " WHERE trigger_id = %(trigger_id)s AND status IN ('pending', 'processing')",
            {"trigger_id": trigger_id, "now": to_db(now)},
        )
    )


async def next_pending(cur: Any, trigger_id: str) -> datetime | None:
    """The trigger's next pending occurrence (its `next_scheduled_run`)."""
    await cur.execute(
        "SELECT MIN(fire_at) AS fire_at FROM trigger_schedules"
        " WHERE trigger_id = %(trigger_id)s AND status IN ('pending', 'processing')",
        {"trigger_id": trigger_id},
    )
    row = await cur.fetchone()
    value = row["fire_at"] if isinstance(row, dict) else (row[0] if row else None)
    return from_db(value)
