"""The `endpoints` table: each endpoint's circuit (domain/circuit.py), shared by every
worker process, the endpoint list of the API, and auto-disabling the triggers of an
endpoint that kept failing.

Writes happen on transitions only: a failure, a success that resets something, a probe
claimed or released. A success on a clean endpoint writes nothing at once; its
`last_success_at` is folded in later by `touch_successes` (one statement for many).
Transitions lock the row (`SELECT … FOR UPDATE`), so failures recorded by several
workers at once all count and exactly one of them opens the circuit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from triggerd.domain.audit import SYSTEM_ORIGIN, Action, AuditEntry
from triggerd.domain.circuit import STATE_ORDER, Health
from triggerd.domain.enums import CircuitState
from triggerd.domain.timeutil import from_db, to_db, to_iso
from triggerd.store import audit, schedule_rows
from triggerd.store.db import Database

log = logging.getLogger(__name__)

_HEALTH = ("state, consecutive_failures, failing_since, last_success_at, last_failure_at,"
           " opened_at, next_probe_at, cooldown_ms, probe_until")  # fmt: skip


# ON DUPLICATE KEY … (a no-op) rather than INSERT IGNORE, which would also turn other
# errors into warnings.
_ENSURE = ("INSERT INTO endpoints (url_hash, url, created_at, updated_at)"
           " VALUES (%(key)s, %(url)s, %(now)s, %(now)s) ON DUPLICATE KEY UPDATE url = url")


def health_of(row: dict[str, Any]) -> Health:
    return Health(
        state=CircuitState(row["state"]),
        consecutive_failures=int(row["consecutive_failures"]),
        failing_since=from_db(row["failing_since"]),
        last_success_at=from_db(row["last_success_at"]),
        last_failure_at=from_db(row["last_failure_at"]),
        opened_at=from_db(row["opened_at"]),
        next_probe_at=from_db(row["next_probe_at"]),
        cooldown=int(row["cooldown_ms"]) / 1000,
        probe_until=from_db(row["probe_until"]),
    )


def _columns(health: Health) -> dict[str, Any]:
    return {
        "state": health.state.value,
        "consecutive_failures": health.consecutive_failures,
        "failing_since": to_db(health.failing_since),
        "last_success_at": to_db(health.last_success_at),
        "last_failure_at": to_db(health.last_failure_at),
        "opened_at": to_db(health.opened_at),
        "next_probe_at": to_db(health.next_probe_at),
        "cooldown_ms": round(health.cooldown * 1000),
        "probe_until": to_db(health.probe_until),
    }


async def load_many(db: Database, keys: Sequence[str]) -> dict[str, Health]:
    if not keys:
        return {}
    marks = ", ".join(["%s"] * len(keys))
    rows = await db.fetchall(
        f"SELECT url_hash, {_HEALTH} FROM endpoints WHERE url_hash IN ({marks})", list(keys)
    )
    return {row["url_hash"]: health_of(row) for row in rows}


async def ensure(db: Database, key: str, url: str, now: datetime) -> None:
    """The endpoint's row, created closed when it is new (listed from its first attempt)."""
    await db.execute(_ENSURE, {"key": key, "url": url, "now": to_db(now)})


async def transition(db: Database, key: str, url: str, now: datetime,
                     change: Callable[[Health], Health]) -> tuple[Health, Health]:  # fmt: skip
    """Apply `change` to the endpoint's health under a row lock; (before, after)."""
    params = {"key": key, "url": url, "now": to_db(now)}
    select = f"SELECT {_HEALTH} FROM endpoints WHERE url_hash = %(key)s FOR UPDATE"
    async with db.transaction() as cur:
        await cur.execute(select, params)
        row = await cur.fetchone()
        if row is None:  # normally made at first sight; recreated if someone removed it
            await cur.execute(_ENSURE, params)
            await cur.execute(select, params)
            row = await cur.fetchone()
            assert row is not None
        before = health_of(row)
        after = change(before)
        if after != before:
            columns = _columns(after)
            sets = ", ".join(f"{name} = %({name})s" for name in columns)
            await cur.execute(f"UPDATE endpoints SET {sets}, updated_at = %(now)s"
                              " WHERE url_hash = %(key)s", {**params, **columns})  # fmt: skip
    return before, after


async def claim_probe(db: Database, key: str, now: datetime, until: datetime) -> bool:
    """Become the probe of an open circuit whose cool-down is over (or of a half-open one
    whose probe's lease ran out). One worker wins."""
    claimed = await db.execute(
        "UPDATE endpoints SET state = 'half_open', probe_until = %(until)s, updated_at = %(now)s"
        " WHERE url_hash = %(key)s AND ((state = 'open' AND next_probe_at <= %(now)s)"
        " OR (state = 'half_open' AND (probe_until IS NULL OR probe_until <= %(now)s)))",
        {"key": key, "now": to_db(now), "until": to_db(until)},
    )
    return claimed > 0


async def release_probe(db: Database, key: str, until: datetime) -> None:
    """The probe ended without a verdict: let the next delivery probe (if the lease is
    still ours)."""
    await db.execute(
        "UPDATE endpoints SET probe_until = NULL WHERE url_hash = %(key)s"
        " AND state = 'half_open' AND probe_until = %(until)s",
        {"key": key, "until": to_db(until)},
    )


async def touch_successes(db: Database, successes: Sequence[tuple[str, datetime]]) -> None:
    """Record the latest success of endpoints whose circuit had nothing to reset: one
    statement for all of them (a derived table of key and time, joined on the key)."""
    for start in range(0, len(successes), 500):
        chunk = successes[start : start + 500]
        row = "SELECT _ascii%s AS url_hash, %s AS at"
        rows = " UNION ALL ".join([row] * len(chunk))
        params: list[Any] = []
        for key, at in chunk:
            params += [key, to_db(at)]
        await db.execute(
            f"UPDATE endpoints e JOIN ({rows}) v ON e.url_hash = v.url_hash"
            " SET e.last_success_at = GREATEST(COALESCE(e.last_success_at, v.at), v.at)",
            params,
        )


async def count_by_state(db: Database) -> dict[str, int]:
    rows = await db.fetchall("SELECT state, COUNT(*) AS n FROM endpoints GROUP BY state")
    return {row["state"]: int(row["n"]) for row in rows}


# --- the API's list ------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointRow:
    url: str
    health: Health
    triggers: int


@dataclass(frozen=True)
class EndpointPage:
    rows: list[EndpointRow]
    total: int


_ORDER = "FIELD(state, " + ", ".join(f"'{s.value}'" for s in STATE_ORDER) + ")"


async def list_page(db: Database, *, state: str | None, limit: int,
                    offset: int) -> EndpointPage:  # fmt: skip
    """Open circuits first, then half-open, then closed; by URL within a state."""
    where, params = ("", {}) if state is None else (" WHERE state = %(state)s", {"state": state})
    count = await db.fetchone(f"SELECT COUNT(*) AS n FROM endpoints{where}", params)
    total = int(count["n"]) if count else 0
    if offset >= total:
        return EndpointPage([], total)
    rows = await db.fetchall(
        f"SELECT e.url, {_HEALTH},"
        " (SELECT COUNT(*) FROM triggers t WHERE t.endpoint_hash = e.url_hash) AS triggers"
        f" FROM endpoints e{where} ORDER BY {_ORDER}, url, url_hash"
        " LIMIT %(limit)s OFFSET %(offset)s",
        {**params, "limit": limit, "offset": offset},
    )
    return EndpointPage([EndpointRow(row["url"], health_of(row), int(row["triggers"]))
                         for row in rows], total)  # fmt: skip


# --- auto-disable --------------------------------------------------------------------


async def disable_triggers(db: Database, key: str, reason: str, *, unchanged_since: datetime,
                           now: datetime) -> list[str]:  # fmt: skip
    """Set the endpoint's active triggers inactive with `reason`, cancelling their pending
    occurrences as an update to `inactive` does, and record each in the audit log (actor
    `system`) in the same transaction. A trigger changed after `unchanged_since` (e.g.
    re-activated by its owner) is left alone: it gets a full period of its own. Returns
    the ids disabled."""
    async with db.transaction() as cur:
        await cur.execute(
            "SELECT id, type FROM triggers WHERE endpoint_hash = %(key)s AND status = 'active'"
            " AND updated_at <= %(since)s ORDER BY id FOR UPDATE",
            {"key": key, "since": to_db(unchanged_since)},
        )
        rows = list(await cur.fetchall())
        if not rows:
            return []
        ids = [row["id"] for row in rows]
        marks = ", ".join(["%s"] * len(ids))
        await cur.execute(
            "UPDATE triggers SET status = 'inactive', status_reason = %s, version = version + 1,"
            f" updated_at = %s WHERE id IN ({marks})",
            [reason, to_db(now), *ids],
        )
        await audit.record_many(cur, [
            AuditEntry(Action.TRIGGER_DISABLED, SYSTEM_ORIGIN, now, trigger_id,
                       changes={"status": ["active", "inactive"],
                                "status_reason": [None, reason]})
            for trigger_id in ids
        ])  # fmt: skip
        held: dict[str, list[schedule_rows.Held]] = {}
        note = f"cancelled: the trigger was set inactive ({reason})"
        for row in rows:
            if row["type"] != "webhook":
                held[row["id"]] = await schedule_rows.cancel_pending(cur, row["id"], now, note)
    for trigger_id, occurrences in held.items():
        if occurrences:  # claimed occurrences about to fire: they fire, as on an update
            await schedule_rows.settle_held(db, trigger_id, occurrences, now, note)
    return ids


def failing_reason(since: datetime) -> str:
    return f"endpoint failing since {to_iso(since)}"
