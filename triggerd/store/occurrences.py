"""A trigger's occurrences as the API shows them: the pending one, and the history of
those that fell due (fired, missed, cancelled), newest first.

Every query goes by `uq_schedules_occurrence (trigger_id, scheduled_for)`: one trigger's
rows in nominal order (tests/integration/test_schedules_api.py EXPLAINs them); an
event is joined by its primary key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from triggerd.domain.enums import Outcome, ScheduleStatus
from triggerd.domain.occurrences import Due
from triggerd.domain.timeutil import from_db, to_db
from triggerd.store.db import Database

STATUSES_OF: dict[Outcome, tuple[str, ...]] = {
    Outcome.PENDING: (ScheduleStatus.PENDING, ScheduleStatus.PROCESSING),
    Outcome.FIRED: (ScheduleStatus.COMPLETED,),
    Outcome.MISSED: (ScheduleStatus.MISSED,),
    Outcome.CANCELLED: (ScheduleStatus.CANCELLED,),
}
OUTCOME_OF = {status: outcome for outcome, statuses in STATUSES_OF.items()
              for status in statuses}  # fmt: skip

PENDING = (
    "SELECT scheduled_for, fire_at FROM trigger_schedules"
    " WHERE trigger_id = %(trigger_id)s AND status IN ('pending', 'processing')"
    " ORDER BY scheduled_for LIMIT 1"
)
_FROM = (
    " FROM trigger_schedules s FORCE INDEX (uq_schedules_occurrence)"
    " WHERE s.trigger_id = %(trigger_id)s"
)
HISTORY_COUNT = "SELECT COUNT(*) AS n" + _FROM + "{where}"
HISTORY_ROWS = (
    "SELECT s.scheduled_for, s.fire_at, s.status, s.event_id, s.published_at, s.note" + _FROM
    + "{where} ORDER BY s.scheduled_for DESC LIMIT %(limit)s OFFSET %(offset)s"
)
# The page's events joined by primary key.
_PAGE = (
    "SELECT s.scheduled_for, s.fire_at, s.status, s.event_id, s.note,"
    # The occurrence's own publish time; the event's for rows without one (fired before
    # it was kept, or backfilled): the event's is rewritten by retries and replays.
    " IFNULL(s.published_at, e.published_at) AS published_at,"
    " e.note AS event_note"
    " FROM ({rows}) s LEFT JOIN event_logs e ON e.id = s.event_id"
    " ORDER BY s.scheduled_for DESC"
)


@dataclass(frozen=True, slots=True)
class OccurrenceFilter:
    outcome: Outcome | None = None
    since: datetime | None = None  # scheduled_for >= since
    until: datetime | None = None  # scheduled_for < until

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if self.outcome is not None:
            statuses = STATUSES_OF[self.outcome]
            names = {f"status{i}": str(status) for i, status in enumerate(statuses)}
            clauses.append(f"s.status IN ({', '.join(f'%({n})s' for n in names)})")
            params.update(names)
        if self.since is not None:
            clauses.append("s.scheduled_for >= %(since)s")
            params["since"] = to_db(self.since)
        if self.until is not None:
            clauses.append("s.scheduled_for < %(until)s")
            params["until"] = to_db(self.until)
        return "".join(f" AND {clause}" for clause in clauses), params


@dataclass(frozen=True, slots=True)
class OccurrenceRow:
    scheduled_for: datetime
    fire_at: datetime
    outcome: Outcome
    event_id: str | None
    published_at: datetime | None
    note: str | None

    @property
    def delay_ms(self) -> int | None:
        if self.published_at is None:
            return None
        return (self.published_at - self.fire_at) // _MS


_MS = timedelta(milliseconds=1)


async def pending(db: Database, trigger_id: str) -> Due | None:
    """The trigger's next occurrence not yet fired (pending, or claimed by a scheduler)."""
    row = await db.fetchone(PENDING, {"trigger_id": trigger_id})
    if row is None:
        return None
    scheduled_for, fire_at = from_db(row["scheduled_for"]), from_db(row["fire_at"])
    assert scheduled_for is not None and fire_at is not None
    return Due(scheduled_for, fire_at)


async def history(
    db: Database, trigger_id: str, flt: OccurrenceFilter, *, limit: int, offset: int
) -> tuple[list[OccurrenceRow], int]:
    """A page of the trigger's occurrences, newest first, and how many match in all."""
    where, params = flt.where()
    params = {**params, "trigger_id": trigger_id, "limit": limit, "offset": offset}
    count = await db.fetchone(HISTORY_COUNT.format(where=where), params)
    total = int(count["n"]) if count else 0
    if offset >= total:
        return [], total
    rows = await db.fetchall(_PAGE.format(rows=HISTORY_ROWS.format(where=where)), params)
    return [_row(row) for row in rows], total


def _row(row: dict[str, Any]) -> OccurrenceRow:
    scheduled_for, fire_at = from_db(row["scheduled_for"]), from_db(row["fire_at"])
    assert scheduled_for is not None and fire_at is not None
    outcome = OUTCOME_OF[ScheduleStatus(row["status"])]
    fired = outcome is Outcome.FIRED
    return OccurrenceRow(
        scheduled_for=scheduled_for, fire_at=fire_at, outcome=outcome,
        event_id=row["event_id"] if fired else None,
        published_at=from_db(row["published_at"]) if fired else None,
        note=(row["event_note"] or row["note"]) if fired else row["note"],
    )  # fmt: skip


__all__ = ["OccurrenceFilter", "OccurrenceRow", "history", "pending"]
