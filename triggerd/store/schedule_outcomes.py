"""The scheduler's writes after a publish: what fired, what failed, what was missed.

`record_outcomes` writes a batch of publish outcomes in one transaction: the claimed rows
completed (or back to pending with a backoff), their event rows, their next occurrences.
After downtime a claim may fire another occurrence than its row's (misfire policy
`latest` or `all`); its row is then `missed`, the occurrence that fired gets a completed
row of its own, and the other missed occurrences are listed with it. `record_skipped`
writes the claims that fire nothing at all (policy `skip`). Every write to a claimed row
is conditional on it still being ours (store/schedules.py explains the leases).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from triggerd.domain.occurrences import Due
from triggerd.domain.timeutil import to_db
from triggerd.store.db import Database
from triggerd.store.event_rows import EventRecord, insert_events
from triggerd.store.literals import case_of, int_list, texts, times, uuid_literals
from triggerd.store.outbox import Unpublishable, fail_unpublishable_in
from triggerd.store.schedule_rows import REVIVE_CANCELLED
from triggerd.store.schedules import ours, transaction

EVENT_CHUNK = 100  # rows per INSERT: rendering them is the costliest CPU work here; the
# loop runs between chunks
MISSED_CHUNK = 1000

# The next occurrences, as one multi-row INSERT (rows rendered by _next_rows), with the
# semantics of schedule_rows.insert_occurrence.
_INSERT_NEXT_HEAD = (
    "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status, note,"
    " created_at, updated_at) VALUES "
)
_INSERT_NEXT_TAIL = f" ON DUPLICATE KEY UPDATE {REVIVE_CANCELLED}"

# The occurrence a catch-up after downtime fired (not the row that was claimed).
_INSERT_FIRED = (  # status 'completed', attempt_count 1
    "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status, attempt_count,"
    " last_attempt_at, event_id, published_at, created_at, updated_at)"
    " VALUES (%s, %s, %s, 'completed', 1, %s, %s, %s, %s, %s)"
    " ON DUPLICATE KEY UPDATE status = 'completed', event_id = VALUES(event_id),"
    "  published_at = VALUES(published_at), claimed_by = NULL, lease_until = NULL,"
    "  retry_at = NULL, updated_at = VALUES(updated_at)"
)
# A catch-up occurrence whose publish failed, to be retried (a row already there is
# left as it is, unless cancelled).
_INSERT_RETRY = (
    "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status, attempt_count,"
    " last_attempt_at, retry_at, created_at, updated_at)"
    " VALUES (%s, %s, %s, 'pending', %s, %s, %s, %s, %s)"
    " ON DUPLICATE KEY UPDATE retry_at = IF(status = 'cancelled', VALUES(retry_at), retry_at),"
    "  attempt_count = IF(status = 'cancelled', VALUES(attempt_count), attempt_count),"
    "  status = IF(status = 'cancelled', 'pending', status)"
)
# Occurrences a misfire policy passed over. A row already there (the claimed one, made
# missed just before) only takes the note; any other is left as it is.
_INSERT_MISSED = (
    "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status, note,"
    " created_at, updated_at) VALUES (%s, %s, %s, 'missed', %s, %s, %s)"
    " ON DUPLICATE KEY UPDATE note = IF(status = 'missed', VALUES(note), note)"
)

MissedRows = tuple[tuple[Due, str], ...]  # occurrences to record as missed, with notes


@dataclass(frozen=True, slots=True)
class Fired:
    """A claimed row whose job Kafka acknowledged; or, with `error`, whose job Kafka can
    never take (too large): the occurrence is done all the same and its event ends
    `failed` with the reason, rather than the row being retried forever."""

    schedule_id: int
    trigger_id: str
    moved: bool  # what fired is another occurrence than the claimed row's (downtime)
    fired: Due  # the occurrence that fired
    event: EventRecord
    next: Due | None  # inserted only if the row is still ours
    next_note: str | None = None  # "fired after downtime": the next one catches up too
    missed: MissedRows = ()
    error: str | None = None  # not published, never: why


@dataclass(frozen=True, slots=True)
class Failed:
    """A claimed row whose job did not reach Kafka: back to pending until `retry_at`."""

    schedule_id: int
    trigger_id: str
    attempt_count: int  # before this attempt
    retry_at: datetime
    moved: bool
    fired: Due  # what was to fire (after downtime, maybe not the claimed row's occurrence)
    missed: MissedRows = ()


@dataclass(frozen=True, slots=True)
class Skipped:
    """A claimed row after downtime under misfire policy `skip`: nothing fires, the
    missed occurrences (the row's among them) are recorded, the schedule resumes."""

    schedule_id: int
    trigger_id: str
    missed: MissedRows
    resume: Due | None


def _next_rows(fired: Sequence[Fired], now: datetime) -> str:
    """The VALUES rows of the next occurrences of `fired` (literals: the driver's
    escaping of several values a row showed up in the scheduler's profile)."""
    text, when = texts(), times()
    stamp = when(now)
    rows = []
    for f in fired:
        assert f.next is not None
        rows.append(f"({text(f.trigger_id)},{when(f.next.scheduled_for)},{when(f.next.fire_at)},"
                    f"'pending',{text(f.next_note)},{stamp},{stamp})")  # fmt: skip
    return ",".join(rows)


async def record_outcomes(
    db: Database, *, instance: str, now: datetime, fired: Sequence[Fired],
    failed: Sequence[Failed],
) -> set[int]:  # fmt: skip
    """One transaction for a batch of publish outcomes; returns the ids that were still
    ours (and so were completed, advanced or re-queued).

    Every published job gets its event row (kept when its event_id exists: a re-claimed
    occurrence cannot make a second one), even for a row the API cancelled meanwhile —
    the job is on Kafka, so the event happened. Only rows still ours are completed and
    get their next occurrence; a failed one goes back to pending with a backoff.
    """
    ids = [f.schedule_id for f in fired] + [f.schedule_id for f in failed]
    if not ids:
        return set()
    stamp = to_db(now)
    async with transaction(db) as cur:
        owned = await ours(cur, ids, "claimed_by = %s FOR UPDATE", [instance])
        done = [f for f in fired if f.schedule_id in owned and not f.moved]
        caught_up = [f for f in fired if f.schedule_id in owned and f.moved]
        if done:
            cases = " ".join(f"WHEN {int(f.schedule_id)} THEN {uuid_literals([f.event.id])}"
                             for f in done)  # fmt: skip
            await cur.execute(
                "UPDATE trigger_schedules SET status = 'completed',"
                f" event_id = CASE id {cases} END, published_at = {_published_at(done)},"
                " attempt_count = attempt_count + 1, last_attempt_at = %s,"
                " claimed_by = NULL, lease_until = NULL, retry_at = NULL, updated_at = %s"
                f" WHERE id IN ({int_list(f.schedule_id for f in done)})",
                [stamp, stamp],
            )
        if caught_up:
            # The claimed (oldest missed) row is missed; the occurrence that fired is
            # recorded as its own completed row.
            await _mark_missed(cur, [f.schedule_id for f in caught_up], stamp)
            await cur.executemany(
                _INSERT_FIRED,
                [(f.trigger_id, to_db(f.fired.scheduled_for), to_db(f.fired.fire_at), stamp,
                  f.event.id, to_db(f.event.published_at), stamp, stamp) for f in caught_up],
            )  # fmt: skip
        await _insert_missed(cur, [(f.trigger_id, f.missed) for f in done + caught_up], stamp)
        for start in range(0, len(fired), EVENT_CHUNK):  # the loop runs between chunks
            await insert_events(cur, [f.event for f in fired[start : start + EVENT_CHUNK]])
        refused = [Unpublishable(f.event.id, 1, f.error) for f in fired if f.error is not None]
        if refused:  # an event that exists already and went out before is left alone
            await fail_unpublishable_in(cur, refused, now, unpublished_only=True)
        nexts = [f for f in fired if f.schedule_id in owned and f.next is not None]
        for start in range(0, len(nexts), EVENT_CHUNK):
            rows = _next_rows(nexts[start : start + EVENT_CHUNK], now)
            await cur.execute(_INSERT_NEXT_HEAD + rows + _INSERT_NEXT_TAIL)
        await _requeue(cur, [f for f in failed if f.schedule_id in owned], stamp)
    return owned


def _published_at(done: Sequence[Fired]) -> str:
    """The SQL value of `published_at` for the completed rows of `done`: when each job was
    acknowledged (NULL: never published). One literal when they share it, as the jobs of
    one produce batch do."""
    when = times()
    return case_of("id", [str(int(f.schedule_id)) for f in done],
                   [when(f.event.published_at) for f in done])  # fmt: skip


async def record_skipped(
    db: Database, *, instance: str, now: datetime, skipped: Sequence[Skipped]
) -> set[int]:
    """Record claims under misfire policy `skip`; returns the ids that were still ours."""
    if not skipped:
        return set()
    stamp = to_db(now)
    async with transaction(db) as cur:
        owned = await ours(cur, [s.schedule_id for s in skipped], "claimed_by = %s FOR UPDATE",
                           [instance])  # fmt: skip
        mine = [s for s in skipped if s.schedule_id in owned]
        if not mine:
            return owned
        await _mark_missed(cur, [s.schedule_id for s in mine], stamp)
        await _insert_missed(cur, [(s.trigger_id, s.missed) for s in mine], stamp)
        resumed = [(s.trigger_id, s.resume) for s in mine if s.resume is not None]
        if resumed:
            text, when = texts(), times()
            rows = ",".join(f"({text(t)},{when(d.scheduled_for)},{when(d.fire_at)},'pending',"
                            f"NULL,{when(now)},{when(now)})" for t, d in resumed)  # fmt: skip
            await cur.execute(_INSERT_NEXT_HEAD + rows + _INSERT_NEXT_TAIL)
    return owned


async def _mark_missed(cur: Any, ids: Iterable[int], stamp: datetime | None) -> None:
    await cur.execute(
        "UPDATE trigger_schedules SET status = 'missed', claimed_by = NULL, lease_until = NULL,"
        f" updated_at = %s WHERE id IN ({int_list(ids)})",
        [stamp],
    )


async def _insert_missed(
    cur: Any, missed: Sequence[tuple[str, MissedRows]], stamp: datetime | None
) -> None:
    rows = [(trigger_id, to_db(due.scheduled_for), to_db(due.fire_at), note, stamp, stamp)
            for trigger_id, entries in missed for due, note in entries]  # fmt: skip
    for start in range(0, len(rows), MISSED_CHUNK):
        await cur.executemany(_INSERT_MISSED, rows[start : start + MISSED_CHUNK])


async def _requeue(cur: Any, failed: Sequence[Failed], stamp: datetime | None) -> None:
    caught_up = [f for f in failed if f.moved]
    if caught_up:
        # The downtime decision stands: the claimed row stays missed and the occurrence
        # chosen to fire is what gets retried (as itself: attempted, so never collapsed).
        await _mark_missed(cur, [f.schedule_id for f in caught_up], stamp)
        await cur.executemany(
            _INSERT_RETRY,
            [(f.trigger_id, to_db(f.fired.scheduled_for), to_db(f.fired.fire_at),
              f.attempt_count + 1, stamp, to_db(f.retry_at), stamp, stamp)
             for f in caught_up],
        )  # fmt: skip
    await _insert_missed(cur, [(f.trigger_id, f.missed) for f in failed], stamp)
    by_attempt: dict[int, list[Failed]] = {}
    for item in failed:
        if not item.moved:
            by_attempt.setdefault(item.attempt_count, []).append(item)
    for group in by_attempt.values():
        # One retry time per group (the items share an attempt count, so a backoff).
        retry_at = to_db(max(item.retry_at for item in group))
        ids = [item.schedule_id for item in group]
        await cur.execute(
            "UPDATE trigger_schedules SET status = 'pending', attempt_count = attempt_count + 1,"
            " last_attempt_at = %s, retry_at = %s, claimed_by = NULL, lease_until = NULL,"
            f" updated_at = %s WHERE id IN ({int_list(ids)})",
            [stamp, retry_at, stamp],
        )


__all__ = ["Failed", "Fired", "MissedRows", "Skipped", "record_outcomes", "record_skipped"]
