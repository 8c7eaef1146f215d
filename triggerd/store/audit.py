"""The audit log's SQL: recording an entry inside the caller's transaction, and the
newest-first list behind `GET /api/v1/audit`.

`record(cur, entry)` is the one way in. It takes the cursor of the transaction that
makes the change, never a connection of its own: the entry and the change commit
together or not at all, and a transaction retried after a deadlock writes its entry
once, as it makes its change once.

The list is served by indexes: `(at)` without a filter, `(trigger_id, at)`,
`(actor, at)` or `(action, at)` with one; InnoDB appends the id to each, so
`ORDER BY at DESC, id DESC` is an index walk, not a sort.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from triggerd.domain.audit import AuditEntry
from triggerd.domain.timeutil import from_db, to_db, to_iso
from triggerd.store.db import Database, Row
from triggerd.store.literals import json_hex, statements, text, time_literal

_INSERT = (
    "INSERT INTO audit_log (at, actor, action, trigger_id, event_id, request_id, changes)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
_COLUMNS = "id, at, actor, action, trigger_id, event_id, request_id, changes"


def _values(entry: AuditEntry) -> tuple[Any, ...]:
    changes = None if entry.changes is None else orjson.dumps(entry.changes).decode()
    return (to_db(entry.at), entry.origin.actor, str(entry.action), entry.trigger_id,
            entry.event_id, entry.origin.request_id, changes)  # fmt: skip


async def record(cur: Any, entry: AuditEntry) -> None:
    """INSERT `entry` in the open transaction of `cur` (the one making the change)."""
    await cur.execute(_INSERT, _values(entry))


async def record_many(cur: Any, entries: Sequence[AuditEntry]) -> None:
    """INSERT `entries` in the open transaction of `cur`, as multi-row statements."""
    for statement in insert_statements(entries):
        await cur.execute(statement)


_INSERT_HEAD = ("INSERT INTO audit_log (at, actor, action, trigger_id, event_id, request_id,"
                " changes) VALUES ")  # fmt: skip


def insert_statements(entries: Sequence[AuditEntry]) -> list[str]:
    """Multi-row INSERTs of `entries`, the values rendered as literals (store/literals.py):
    the same rows as `record` writes, without the driver's escaping per value."""
    rows = []
    for e in entries:
        changes = "NULL" if e.changes is None else json_hex(orjson.dumps(e.changes))
        rows.append(f"({time_literal(e.at)},{text(e.origin.actor)},{text(str(e.action))},"
                    f"{text(e.trigger_id)},{text(e.event_id)},{text(e.origin.request_id)},"
                    f"{changes})")  # fmt: skip
    return statements(_INSERT_HEAD, rows)


@dataclass(frozen=True)
class AuditFilter:
    trigger_id: str | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        for name in ("trigger_id", "actor", "action"):
            value = getattr(self, name)
            if value is not None:
                clauses.append(f"{name} = %({name})s")
                params[name] = value
        if self.since is not None:
            clauses.append("at >= %(since)s")
            params["since"] = to_db(self.since)
        if self.until is not None:
            clauses.append("at < %(until)s")
            params["until"] = to_db(self.until)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def list_sql(flt: AuditFilter) -> tuple[str, dict[str, Any]]:
    """The page query (for EXPLAIN in tests, and for `list_entries`)."""
    where, params = flt.where()
    return (f"SELECT {_COLUMNS} FROM audit_log{where}"
            " ORDER BY at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s", params)  # fmt: skip


async def list_entries(db: Database, flt: AuditFilter, *, page: int, limit: int
                       ) -> tuple[list[Row], int]:  # fmt: skip
    """A page of entries, newest first, and how many match in all."""
    where, params = flt.where()
    total_row = await db.fetchone(f"SELECT COUNT(*) AS n FROM audit_log{where}", params)
    total = int(total_row["n"]) if total_row else 0
    if total <= (page - 1) * limit:
        return [], total
    sql, params = list_sql(flt)
    rows = await db.fetchall(sql, {**params, "limit": limit, "offset": (page - 1) * limit})
    return rows, total


def entry_json(row: Row) -> dict[str, Any]:
    """The API shape of an entry; `changes` is stored JSON and goes out as is."""
    changes = row["changes"]
    return {
        "id": int(row["id"]),
        "at": to_iso(from_db(row["at"])),
        "actor": row["actor"],
        "action": row["action"],
        "trigger_id": row["trigger_id"],
        "event_id": row["event_id"],
        "request_id": row["request_id"],
        "changes": None if changes is None else orjson.Fragment(changes),
    }


__all__ = ["AuditFilter", "entry_json", "insert_statements", "list_entries", "list_sql",
           "record", "record_many"]
