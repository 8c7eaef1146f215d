"""The schedule-row writes the API and the scheduler share; most run on a cursor
inside the caller's transaction so a trigger and its schedule change together.

A scheduler re-reads a claimed occurrence CHECK_AHEAD before it is due and publishes it
if it was still its own then. A change made through the API after that moment cannot
stop that firing any more, so the API lets it happen *before* it answers: such rows are
held (not cancelled) by `cancel_pending`, and `settle_held` waits for them to be
recorded, then cancels whatever next occurrence their recording inserted. A client
therefore never sees a firing of a trigger after its PATCH/PUT/DELETE returned.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from triggerd.domain.occurrences import Due
from triggerd.domain.timeutil import from_db, to_db, utcnow
from triggerd.store.db import Database
from triggerd.store.literals import statements, text, time_literal

CHECK_AHEAD = timedelta(milliseconds=500)  # the scheduler's last look before due
HOLD_AHEAD = CHECK_AHEAD + timedelta(milliseconds=150)  # and a margin for a busy loop
SETTLE_LIMIT = 2.0  # seconds past the due time the API waits for a held occurrence
SETTLE_POLL = 0.02

# ON DUPLICATE KEY UPDATE of an occurrence inserted as pending: a cancelled row comes back
# (with the new row's fire_at), any other is left as it is. `status` goes last: the
# conditions before it read the old value.
REVIVE_CANCELLED = (
    "attempt_count = IF(status = 'cancelled', 0, attempt_count),"
    " claimed_by = IF(status = 'cancelled', NULL, claimed_by),"
    " lease_until = IF(status = 'cancelled', NULL, lease_until),"
    " retry_at = IF(status = 'cancelled', NULL, retry_at),"
    " fire_at = IF(status = 'cancelled', VALUES(fire_at), fire_at),"
    " note = IF(status = 'cancelled', VALUES(note), note),"
    " updated_at = IF(status = 'cancelled', VALUES(updated_at), updated_at),"
    " status = IF(status = 'cancelled', 'pending', status)"
)


async def insert_occurrence(cur: Any, trigger_id: str, due: Due, now: datetime) -> None:
    """Add a pending occurrence. The (trigger_id, scheduled_for) key makes this
    idempotent: two schedulers inserting the same next occurrence make one row; a
    cancelled one comes back to pending (a re-activated trigger), at the fire time of the
    schedule as it is now; a completed or missed one stays as it is (never fired twice)."""
    await cur.execute(
        "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status,"
        " created_at, updated_at)"
        " VALUES (%(trigger_id)s, %(scheduled_for)s, %(fire_at)s, 'pending', %(now)s, %(now)s)"
        f" ON DUPLICATE KEY UPDATE {REVIVE_CANCELLED}",
        {"trigger_id": trigger_id, "scheduled_for": to_db(due.scheduled_for),
         "fire_at": to_db(due.fire_at), "now": to_db(now)},
    )  # fmt: skip


def insert_occurrences_statements(occurrences: Iterable[tuple[str, Due, datetime]]
                                  ) -> list[str]:  # fmt: skip
    """`insert_occurrence` of many (trigger id, due, now) as multi-row INSERTs, the values
    rendered as literals."""
    rows = []
    for trigger_id, due, now in occurrences:
        at = time_literal(now)
        rows.append(f"({text(trigger_id)},{time_literal(due.scheduled_for)},"
                    f"{time_literal(due.fire_at)},'pending',{at},{at})")  # fmt: skip
    return statements("INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at,"
                      " status, created_at, updated_at) VALUES ", rows,
                      f" ON DUPLICATE KEY UPDATE {REVIVE_CANCELLED}")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Held:
    """A claimed occurrence too close to its time to be stopped (`cancel_pending`)."""

    id: int
    scheduled_for: datetime
    fire_at: datetime


async def cancel_pending(
    cur: Any, trigger_id: str, now: datetime, note: str | None = None
) -> list[Held]:
    """Cancel the trigger's occurrences that have not fired (pending, or claimed: the
    holder re-checks CHECK_AHEAD before due and drops a cancelled one), saying why in
    `note`. Claimed ones due within HOLD_AHEAD may be past that check: they are left
    alone and returned, for `settle_held` once the transaction committed."""
    params = {"trigger_id": trigger_id, "now": to_db(now),
              "soon": to_db(now + HOLD_AHEAD), "note": note}  # fmt: skip
    await cur.execute(
        "SELECT id, scheduled_for, fire_at FROM trigger_schedules"
        " WHERE trigger_id = %(trigger_id)s AND status = 'processing' AND fire_at <= %(soon)s"
        " FOR UPDATE", params,
    )  # fmt: skip
    held: list[Held] = []
    for row in await cur.fetchall():  # a dict or a tuple, by the caller's cursor
        row_id, scheduled_for, fire_at = row.values() if isinstance(row, dict) else row
        held.append(Held(int(row_id), from_db(scheduled_for) or now, from_db(fire_at) or now))
    keep = "".join(f" AND id <> {int(item.id)}" for item in held)
    await cur.execute(
        "UPDATE trigger_schedules SET status = 'cancelled', updated_at = %(now)s,"
        " claimed_by = NULL, lease_until = NULL, note = %(note)s"
        f" WHERE trigger_id = %(trigger_id)s AND status IN ('pending', 'processing'){keep}",
        params,
    )
    return held


async def settle_held(
    db: Database, trigger_id: str, held: list[Held], changed_at: datetime,
    note: str | None = None,
) -> None:  # fmt: skip
    """Wait for the held occurrences to be recorded (fired before the change), at most
    SETTLE_LIMIT past the latest one's due time, then cancel what is left of them and any
    occurrence inserted after `changed_at` (the next one their recording computed from
    the trigger as it was)."""
    if not held:
        return
    ids = ", ".join(str(int(item.id)) for item in held)
    deadline = time.monotonic() + SETTLE_LIMIT + max(
        0.0, max((item.fire_at - changed_at).total_seconds() for item in held))  # fmt: skip
    while time.monotonic() < deadline:
        row = await db.fetchone(
            "SELECT COUNT(*) AS n FROM trigger_schedules"
            f" WHERE id IN ({ids}) AND status = 'processing'"
        )
        if not row or not row["n"]:
            break
        await asyncio.sleep(SETTLE_POLL)
    await db.execute(
        "UPDATE trigger_schedules SET status = 'cancelled', updated_at = %(now)s,"
        " claimed_by = NULL, lease_until = NULL, note = %(note)s WHERE trigger_id = %(trigger_id)s"
        f" AND status IN ('pending', 'processing') AND (id IN ({ids}) OR created_at > %(at)s)",
        {"trigger_id": trigger_id, "now": to_db(utcnow()), "at": to_db(changed_at),
         "note": note},
    )


async def next_pending(cur: Any, trigger_id: str) -> datetime | None:
    """The nominal time of the trigger's next pending occurrence (its
    `next_scheduled_run`)."""
    await cur.execute(NEXT_PENDING, {"trigger_id": trigger_id})
    row = await cur.fetchone()
    value = row["at"] if isinstance(row, dict) else (row[0] if row else None)
    return from_db(value)


# By uq_schedules_occurrence (trigger_id, scheduled_for).
NEXT_PENDING = (
    "SELECT MIN(scheduled_for) AS at FROM trigger_schedules"
    " WHERE trigger_id = %(trigger_id)s AND status IN ('pending', 'processing')"
)
