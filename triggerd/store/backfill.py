"""Backfill: fire past occurrences of a schedule now, each at most once.

Each occurrence's event gets the id the scheduler gives that occurrence
(`occurrence_event_id`), so an occurrence whose event is still kept — fired by the
scheduler, or by an earlier backfill — is not fired again. One transaction per request:
the trigger row is locked first, so two backfills of one trigger take turns; the ids
already there are read, the others inserted (an existing id is kept: the scheduler may
fire one of them at the same moment, and then it is its event, not ours), and the occurrence
rows record the firings (a missed or cancelled one becomes fired).

The scheduler's own occurrences are left to it: one whose row is still pending or
claimed (due, or held back by its jitter) fires as scheduled, not twice; and one after
the first such row (the scheduler is behind: it was down) fires now but gets no row of
its own, so that the scheduler, coming to it, finds the way on free (a row there would
end its chain) and fires it again as itself: a duplicate job, absorbed by the event id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from triggerd.domain.audit import Action, AuditEntry, Origin
from triggerd.domain.models import Trigger
from triggerd.domain.timeutil import to_db
from triggerd.store import audit
from triggerd.store.db import Database
from triggerd.store.event_rows import EventRecord, insert_events
from triggerd.store.literals import uuid_literals

NOTE = "backfill"

# A missed or cancelled occurrence row becomes the fired one; any other is left as it is.
_RECORD = (
    "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status, attempt_count,"
    " last_attempt_at, event_id, note, created_at, updated_at)"
    " VALUES (%s, %s, %s, 'completed', 1, %s, %s, %s, %s, %s)"
    " ON DUPLICATE KEY UPDATE"
    "  event_id = IF(status IN ('missed', 'cancelled'), VALUES(event_id), event_id),"
    "  note = IF(status IN ('missed', 'cancelled'), VALUES(note), note),"
    "  last_attempt_at = IF(status IN ('missed', 'cancelled'), VALUES(last_attempt_at),"
    "                       last_attempt_at),"
    "  updated_at = IF(status IN ('missed', 'cancelled'), VALUES(updated_at), updated_at),"
    "  status = IF(status IN ('missed', 'cancelled'), 'completed', status)"
)


@dataclass(frozen=True, slots=True)
class BackfillResult:
    fired: list[EventRecord]  # in scheduled_for order
    already_fired: int


async def backfill(
    db: Database, trigger: Trigger, records: Sequence[EventRecord], now: datetime,
    origin: Origin,
) -> BackfillResult | None:
    """Insert the events of `records` (the range's occurrences, ids derived from them)
    whose id is not taken yet, and record their occurrences and, when any fired, the
    backfill in the audit log (by `origin`). None: the trigger is gone."""
    async with db.transaction() as cur:
        await cur.execute("SELECT id FROM triggers WHERE id = %(id)s FOR UPDATE",
                          {"id": trigger.id})  # fmt: skip
        if await cur.fetchone() is None:
            return None
        open_rows = await _open_occurrences(cur, trigger.id)
        head = min(open_rows, default=None)
        mine = [r for r in records if _stored(r.scheduled_for) not in open_rows]
        taken = await _existing(cur, [record.id for record in mine])
        new = [record for record in mine if record.id not in taken]
        inserted = await insert_events(cur, new) if new else 0
        if inserted < len(new):  # the scheduler fired some meanwhile: theirs, not ours
            ours = await _existing(cur, [record.id for record in new])
            new = [record for record in new if record.id in ours]
        if new:
            stamp = to_db(now)
            rows = [r for r in new if head is None or _stored(r.scheduled_for) < head]
            if rows:
                await cur.executemany(_RECORD, [
                    (trigger.id, to_db(r.scheduled_for), to_db(r.scheduled_for), stamp, r.id,
                     NOTE, stamp, stamp) for r in rows])  # fmt: skip
            await audit.record(cur, AuditEntry(Action.TRIGGER_BACKFILLED, origin, now,
                                               trigger.id))  # fmt: skip
    return BackfillResult(new, len(mine) - len(new))


def _stored(moment: datetime | None) -> datetime:
    stored = to_db(moment)
    assert stored is not None, "an occurrence has its time"
    return stored


async def _open_occurrences(cur: Any, trigger_id: str) -> set[datetime]:
    """The nominal times (as stored) of the trigger's occurrences the scheduler has yet
    to fire: pending, or claimed."""
    await cur.execute(
        "SELECT scheduled_for FROM trigger_schedules WHERE trigger_id = %(id)s"
        " AND status IN ('pending', 'processing')", {"id": trigger_id},
    )  # fmt: skip
    return {row["scheduled_for"] for row in await cur.fetchall()}


async def _existing(cur: Any, ids: Sequence[str]) -> set[str]:
    """The ids among `ids` that have an event, as this transaction sees them (its own
    inserts included, what others committed after its first read not)."""
    if not ids:
        return set()
    await cur.execute(f"SELECT id FROM event_logs WHERE id IN ({uuid_literals(ids)})")
    return {row["id"] for row in await cur.fetchall()}


__all__ = ["NOTE", "BackfillResult", "backfill"]
