"""The scheduler's SQL: reading the window, claiming with leases (recording the outcomes
is store/schedule_outcomes.py).

Every query the scheduler runs in its loop lives here, one function each, and is served
by an index of `trigger_schedules` (tests/integration/test_scheduler_sql.py EXPLAINs them):

- the window's due points and the due claim: `ix_schedules_due (status, fire_at)`;
- leases running out and expired: `ix_schedules_lease (status, lease_until)`;
- everything else goes by primary key (`id IN (...)`) or by `uq_schedules_occurrence`.

Claims are one short READ COMMITTED transaction: `SELECT … FOR UPDATE SKIP LOCKED`, then
`UPDATE … SET status='processing', claimed_by, lease_until`. READ COMMITTED keeps the
range scan from taking gap locks that would stall the API's inserts of new occurrences,
and releases the rows it read but did not return. Every later write to a claimed row is
conditional on `status='processing' AND claimed_by = <us>`: a row the API cancelled, or
one whose lease expired and another scheduler took, is never advanced by us.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiomysql

from triggerd.domain.timeutil import from_db, to_db
from triggerd.store.db import Database
from triggerd.store.literals import int_list, uuid_literals

# The queries the loop runs on every reconcile and every claim (EXPLAINed in the tests).
# Wake-up points: the earliest due time in each second and how many rows fall in it, so
# a reload returns at most one row per second of the window however many occurrences it
# holds. The exact times of the rows come with the claim.
DUE_POINTS = (
    "SELECT MIN(fire_at), COUNT(*) FROM trigger_schedules"
    " WHERE status = 'pending' AND fire_at <= %(horizon)s"
    " GROUP BY TO_SECONDS(fire_at) ORDER BY NULL"
)
LEASE_POINTS = (  # a dead holder's rows become claimable once their leases ran out
    "SELECT MAX(lease_until) FROM trigger_schedules"
    " WHERE status = 'processing' AND lease_until <= %(horizon)s"
    " GROUP BY TO_SECONDS(lease_until) ORDER BY NULL"
)
# Times as text: datetime.fromisoformat is far cheaper than the driver's conversion.
# stale: the downtime rule (claims.py), which differs for pending rows and for rows a
# dead holder's lease kept (claim_due).
_CLAIM_COLUMNS = (
    "SELECT id, trigger_id, CAST(scheduled_for AS CHAR), CAST(fire_at AS CHAR), attempt_count,"
    " {stale}, note, {late} FROM trigger_schedules"
)
CLAIM_EXPIRED = (
    _CLAIM_COLUMNS.format(stale="GREATEST(fire_at, created_at) < %(reclaim_stale_before)s",
                          late="0")
    + " WHERE status = 'processing' AND lease_until < %(now)s"
    " ORDER BY lease_until LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
)
CLAIM_PENDING = (
    _CLAIM_COLUMNS.format(
        stale="(fire_at < %(started_before)s OR GREATEST(fire_at, created_at) < %(stale_before)s)",
        late="(fire_at < %(started_before)s AND created_at >= %(started_before)s)")
    + " WHERE status = 'pending' AND fire_at <= %(until)s"
    " AND (retry_at IS NULL OR retry_at <= %(now)s)"
    " ORDER BY fire_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
)


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    id: int
    trigger_id: str
    scheduled_for: datetime  # the occurrence (its event id derives from it)
    fire_at: datetime  # when it is due: scheduled_for plus the trigger's jitter
    attempt_count: int
    stale: bool  # due and created before the downtime cut-off (claim_due)
    note: str | None = None  # "fired after downtime": a catch-up of misfire policy `all`
    # Due before this scheduler started but written after: the successor of an occurrence
    # that fired late after a restart. Only what fell due before the start was missed.
    late: bool = False


def _dt(value: Any) -> datetime:
    converted = from_db(value)
    assert converted is not None
    return converted


async def ours(cur: Any, ids: Sequence[int], condition: str, params: list[Any]) -> set[int]:
    """The `ids` still processing and matching `condition` (which may end FOR UPDATE):
    a COUNT first, as that is all of them nearly always and one row is cheaper to read
    than a thousand; the ids only when some are not."""
    where = f"WHERE id IN ({int_list(ids)}) AND status = 'processing' AND {condition}"
    await cur.execute("SELECT COUNT(*) FROM trigger_schedules " + where, params)
    row = await cur.fetchone()
    if row is not None and int(row[0]) == len(set(ids)):
        return set(ids)
    await cur.execute("SELECT id FROM trigger_schedules " + where, params)
    return {int(r[0]) for r in await cur.fetchall()}


async def _tuples(db: Database, sql: str, params: Any) -> list[tuple[Any, ...]]:
    """Plain tuples: cheaper than dict rows on the loop's hot reads."""
    async with db.acquire() as conn, conn.cursor() as cur:
        await cur.execute(sql, params)
        return list(await cur.fetchall())


def transaction(db: Database, read_committed: bool = False
                ) -> contextlib.AbstractAsyncContextManager[aiomysql.Cursor]:  # fmt: skip
    """db.transaction() with a plain (tuple) cursor, optionally READ COMMITTED."""
    return db.transaction(read_committed=read_committed, rows=aiomysql.Cursor)


# ----------------------------------------------------------------- the window


async def due_points(
    db: Database, horizon: datetime, lease_horizon: datetime | None = None
) -> tuple[list[tuple[datetime, int]], list[datetime]]:
    """When the loop should look by `horizon`: the earliest pending occurrence of each
    second (overdue ones included) with the number of rows in that second, and for each
    second in which claimed rows' leases run out by `lease_horizon` (default `horizon`),
    the last of them."""
    params = {"horizon": to_db(horizon)}
    pending = [(_dt(row[0]), int(row[1])) for row in await _tuples(db, DUE_POINTS, params)]
    leases = [_dt(row[0]) for row in await _tuples(
        db, LEASE_POINTS, {"horizon": to_db(lease_horizon or horizon)})]  # fmt: skip
    return pending, leases


# ------------------------------------------------------------------ claiming


async def claim_due(
    db: Database, *, instance: str, now: datetime, until: datetime, lease_until: datetime,
    limit: int, stale_before: datetime, reclaim_stale_before: datetime,
    started_before: datetime,
) -> list[ClaimedRow]:  # fmt: skip
    """Lease up to `limit` rows: expired leases of a dead holder first, then pending rows
    due by `until` (the claim-ahead) whose publish backoff is over. A row is `stale` when
    it was due and created before `stale_before` (pending rows) or
    `reclaim_stale_before` (expired leases), or, pending, was due before
    `started_before` whenever it was inserted: the successors of an occurrence fired late
    after a restart fell due while no scheduler ran, however late they were written."""
    params = {"now": to_db(now), "until": to_db(until), "limit": limit,
              "stale_before": to_db(stale_before),
              "reclaim_stale_before": to_db(reclaim_stale_before),
              "started_before": to_db(started_before)}  # fmt: skip
    async with transaction(db, read_committed=True) as cur:
        await cur.execute(CLAIM_EXPIRED, params)
        found = list(await cur.fetchall())
        if len(found) < limit:
            await cur.execute(CLAIM_PENDING, {**params, "limit": limit - len(found)})
            found += list(await cur.fetchall())
        if not found:
            return []
        ids = [int(row[0]) for row in found]
        await cur.execute(
            "UPDATE trigger_schedules SET status = 'processing', claimed_by = %s,"
            f" lease_until = %s, updated_at = %s WHERE id IN ({int_list(ids)})",
            [instance, to_db(lease_until), to_db(now)],
        )
    return [
        ClaimedRow(int(r[0]), r[1], datetime.fromisoformat(r[2]).replace(tzinfo=UTC),
                   datetime.fromisoformat(r[3]).replace(tzinfo=UTC), int(r[4]), bool(r[5]),
                   r[6], bool(r[7]))
        for r in found
    ]  # fmt: skip


async def trigger_versions(db: Database, ids: Sequence[str]) -> dict[str, tuple[int, str]]:
    """id -> (version, status) of the triggers that still exist."""
    if not ids:
        return {}
    rows = await _tuples(
        db, f"SELECT id, version, status FROM triggers WHERE id IN ({uuid_literals(ids)})", ()
    )
    return {r[0]: (int(r[1]), r[2]) for r in rows}


SpecRow = tuple[str, str, str, str, int, str]  # id, name, type, status, version, config JSON


async def trigger_specs(db: Database, ids: Sequence[str]) -> list[SpecRow]:
    """What the scheduler needs of each trigger, the config left as its JSON text."""
    if not ids:
        return []
    rows = await _tuples(
        db,
        "SELECT id, name, type, status, version, config FROM triggers"
        f" WHERE id IN ({uuid_literals(ids)})",
        (),
    )
    return [(r[0], r[1], r[2], r[3], int(r[4]), r[5]) for r in rows]


async def still_ours(
    db: Database, ids: Sequence[int], *, instance: str, now: datetime
) -> set[int]:
    """The ids we still hold an unexpired lease on (the API may have cancelled others)."""
    if not ids:
        return set()
    async with db.acquire() as conn, conn.cursor() as cur:
        return await ours(cur, ids, "claimed_by = %s AND lease_until > %s",
                           [instance, to_db(now)])  # fmt: skip


async def refresh_leases(
    db: Database, ids: Sequence[int], *, instance: str, now: datetime, lease_until: datetime
) -> set[int]:
    """Extend our unexpired leases (APScheduler #864: a lease must not run out under a
    holder that is still working). Returns the ids still ours."""
    if not ids:
        return set()
    async with transaction(db) as cur:
        owned = await ours(cur, ids, "claimed_by = %s AND lease_until > %s FOR UPDATE",
                            [instance, to_db(now)])  # fmt: skip
        if owned:
            await cur.execute(
                f"UPDATE trigger_schedules SET lease_until = %s WHERE id IN ({int_list(owned)})",
                [to_db(lease_until)],
            )
    return owned


async def release(
    db: Database, ids: Sequence[int], *, instance: str, now: datetime, status: str = "pending",
    note: str | None = None,
) -> int:
    """Hand rows we hold back (`pending`, on shutdown) or drop them (`cancelled`: their
    trigger is gone or inactive; `note` says why). Only rows still ours are touched."""
    if not ids:
        return 0
    assert status in ("pending", "cancelled")
    return await db.execute(
        "UPDATE trigger_schedules SET status = %s, claimed_by = NULL, lease_until = NULL,"
        " note = COALESCE(%s, note),"
        f" updated_at = %s WHERE id IN ({int_list(ids)}) AND status = 'processing'"
        " AND claimed_by = %s",
        [status, note, to_db(now), instance],
    )


async def expire_own_leases(db: Database, *, instance: str, now: datetime) -> int:
    """Rows still leased to `instance` when a scheduler of that name starts were held by
    an earlier process of the same name that died (instance ids are unique per live
    process): their leases end now, so they are taken over at once, the way any dead
    holder's rows are (and may already be on Kafka), instead of after the lease."""
    return await db.execute(
        "UPDATE trigger_schedules SET lease_until = %s, updated_at = %s"
        " WHERE status = 'processing' AND claimed_by = %s AND lease_until > %s",
        [to_db(now), to_db(now), instance, to_db(now)],
    )


__all__ = ["ClaimedRow", "SpecRow", "claim_due", "due_points", "ours", "refresh_leases",
           "release", "still_ours", "transaction", "trigger_specs", "trigger_versions"]  # fmt: skip
