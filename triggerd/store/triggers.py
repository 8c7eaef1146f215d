"""Trigger rows and the schedule rows that follow them.

Every write that changes when a trigger fires changes its schedule rows in the same
transaction: a created trigger gets its first occurrence, an update that moves the
schedule (or the status) cancels what is pending and inserts the next occurrence,
and a delete cancels what is pending. The scheduler is told through `Wakeup` by the
caller; it would also find the rows at its next reconcile.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

import aiomysql
import orjson

from triggerd.domain.audit import Action, AuditEntry, Origin
from triggerd.domain.audit import changes as changes_between
from triggerd.domain.circuit import endpoint_key
from triggerd.domain.contract import PAST_GRACE, TriggerDefinition, schedule_changed
from triggerd.domain.enums import TriggerStatus, TriggerType
from triggerd.domain.models import Trigger
from triggerd.domain.occurrences import Due, due_at
from triggerd.domain.retry import Retry
from triggerd.domain.timeutil import from_db, to_db
from triggerd.store import audit, labels, schedule_rows
from triggerd.store.changes import TriggerChanges
from triggerd.store.coalesce import Coalescer
from triggerd.store.db import Database
from triggerd.store.literals import json_hex, statements, text, time_literal
from triggerd.store.mysql_errors import is_lock_conflict, is_transient

_COLUMNS = "id, name, type, status, status_reason, config, version, created_at, updated_at"
# A deadlock victim was rolled back whole, so running its transaction again is safe.
# The schedulers' batch transactions lock many triggers' schedule rows at once, so under
# a burst of changes a victim can lose again right away: jittered backoff spreads the
# colliding writers apart, for up to ~6 s in all before the API answers 503.
_DEADLOCK_RETRY = Retry(tries=16, base=0.02, cap=0.5, log_level=logging.INFO)

# Why pending occurrences were cancelled (the `note` of the occurrence history).
RESCHEDULED = "cancelled: the schedule changed"
DEACTIVATED = "cancelled: the trigger was set inactive"
REACTIVATED = "cancelled: the trigger was set active again"
DELETED = "cancelled: the trigger was deleted"

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class TriggerRecord:
    """A trigger and its next pending occurrence (None: none, or not scheduled)."""

    trigger: Trigger
    next_scheduled_run: datetime | None


@dataclass(frozen=True)
class TriggerPage:
    records: list[TriggerRecord]
    total: int


def definition_of(trigger: Trigger) -> TriggerDefinition:
    kind, status = TriggerType(trigger.type), TriggerStatus(trigger.status)
    return TriggerDefinition(name=trigger.name, type=kind, status=status, config=trigger.config,
                             labels=trigger.labels)  # fmt: skip


def audited_fields(definition: TriggerDefinition, stored: dict[str, Any] | None = None
                   ) -> dict[str, Any]:  # fmt: skip
    """The fields of a trigger the audit log compares, as the API names them (the config
    in its stored form, `stored` when the caller has it; secrets are masked by
    `changes`)."""
    config = definition.config.stored() if stored is None else stored
    return {"name": definition.name, "type": str(definition.type),
            "status": str(definition.status), "config": config,
            "labels": dict(definition.labels)}  # fmt: skip


async def _locked(cur: Any, trigger_id: str) -> dict[str, Any] | None:
    """The trigger's row, locked for the rest of the transaction (None: no such trigger)."""
    await cur.execute(f"SELECT {_COLUMNS} FROM triggers WHERE id = %(id)s FOR UPDATE",
                      {"id": trigger_id})  # fmt: skip
    row: dict[str, Any] | None = await cur.fetchone()
    return row


async def _labels_of(cur: Any, trigger_id: str) -> dict[str, str]:
    """A trigger's labels, read in the transaction that holds its row."""
    await cur.execute(
        "SELECT label_key, label_value FROM trigger_labels WHERE trigger_id = %(id)s",
        {"id": trigger_id},
    )
    return {r["label_key"]: r["label_value"] for r in await cur.fetchall()}


def first_occurrence(
    definition: TriggerDefinition, now: datetime, previous: TriggerDefinition | None = None
) -> datetime | None:
    """When a new (or re-timed) schedule fires first: its next occurrence after now,
    except that a new `run_at` / `start_at` that validation accepted inside its grace
    (up to PAST_GRACE ago) still fires, at once, instead of being skipped."""
    config = definition.config
    anchor = config.anchor()
    if (
        anchor is not None
        and now - PAST_GRACE <= anchor <= now
        and (previous is None or previous.config.anchor() != anchor)
    ):
        # The latest occurrence due by now: an interval shorter than the grace must not
        # fire start_at and the grid points after it in a burst.
        return config.latest_due(now) or anchor
    return config.next_occurrence(now)


@dataclass(frozen=True, slots=True)
class _NewTrigger:
    definition: TriggerDefinition
    trigger_id: str
    now: datetime
    origin: Origin
    first: datetime | None  # its first occurrence (None: none)


_INSERT_TRIGGERS = ("INSERT INTO triggers (id, name, type, status, config, endpoint_hash,"
                    " version, created_at, updated_at) VALUES ")  # fmt: skip


def endpoint_hash(config: Mapping[str, Any]) -> str | None:
    """`triggers.endpoint_hash` for a stored config: the key of its endpoint's circuit
    (endpoints.url_hash), None without an endpoint."""
    endpoint = config.get("endpoint")
    return endpoint_key(endpoint) if isinstance(endpoint, str) else None


def _new_trigger_statements(batch: Sequence[_NewTrigger]) -> list[str]:
    """What `TriggerStore.create` writes for each item, as multi-row INSERTs."""
    rows: list[str] = []
    occurrences: list[tuple[str, Due, datetime]] = []
    entries: list[AuditEntry] = []
    for item in batch:
        definition, trigger_id = item.definition, item.trigger_id
        at = time_literal(item.now)
        stored = definition.config.stored()
        config = json_hex(orjson.dumps(stored))
        key = endpoint_hash(stored)
        rows.append(f"({text(trigger_id)},{text(definition.name)},{text(str(definition.type))},"
                    f"{text(str(definition.status))},{config},"
                    f"{'NULL' if key is None else text(key)},1,{at},{at})")  # fmt: skip
        if item.first is not None:
            timing = definition.config.timing()
            occurrences.append((trigger_id, due_at(trigger_id, timing, item.first), item.now))
        created = changes_between(None, audited_fields(definition, stored))
        entries.append(AuditEntry(Action.TRIGGER_CREATED, item.origin, item.now, trigger_id,
                                  changes=created))  # fmt: skip
    sql = statements(_INSERT_TRIGGERS, rows)
    sql += labels.insert_statements((item.trigger_id, item.definition.labels) for item in batch)
    sql += schedule_rows.insert_occurrences_statements(occurrences)
    sql += audit.insert_statements(entries)
    return sql


class TriggerStore:
    """All SQL on the `triggers` table; one method per query or transaction."""

    def __init__(self, db: Database, changes: TriggerChanges | None = None) -> None:
        self.db = db
        self.changes = changes or TriggerChanges()
        # Group commit of creates: a transaction's round trips are shared by the creates
        # that arrive together (or while one is being written), not paid by each.
        self.creates: Coalescer[_NewTrigger, Exception | None] = Coalescer(self._write_creates)

    async def create(self, definition: TriggerDefinition, trigger_id: str, now: datetime,
                     origin: Origin) -> TriggerRecord:  # fmt: skip
        """INSERT the trigger and, when it is scheduled and active, its first occurrence;
        `origin` made it (its audit entry is written in the same transaction).

        Creates made together share a transaction (`_write_creates`); each returns once
        the transaction holding its rows committed."""
        first = None
        if definition.type != "webhook" and definition.status == "active":
            first = first_occurrence(definition, now)
        failed = await self.creates.submit(_NewTrigger(definition, trigger_id, now, origin, first))
        if failed is not None:
            raise failed
        stored = now.replace(microsecond=now.microsecond // 1000 * 1000)
        trigger = Trigger(
            id=trigger_id,
            name=definition.name,
            type=definition.type,
            status=definition.status,
            config=definition.config,
            version=1,
            created_at=stored,
            updated_at=stored,
            labels=dict(definition.labels),
        )
        return TriggerRecord(trigger, first)

    async def _write_creates(self, batch: list[_NewTrigger]) -> list[Exception | None]:
        """Write a batch of creates in one transaction. When it fails for a reason other
        than a transient one (the data of one item, say), it was rolled back whole, and
        each item is written alone, so that only the item at fault fails, with its own
        error. A deadlock is retried (the batch was rolled back whole); another transient
        error (the database away) fails the batch.

        The wake-ups are sent here, once committed, also for a caller that stopped
        waiting (the batch goes on without it)."""
        if len(batch) == 1:
            await self._insert_new(batch)
            self._notify(batch)
            return [None]
        try:
            await self._insert_new(batch)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.info("a batch of %d creates failed (%s); writing them one by one",
                     len(batch), exc)  # fmt: skip
        else:
            self._notify(batch)
            return [None] * len(batch)
        outcomes: list[Exception | None] = []
        for item in batch:
            try:
                await self._insert_new([item])
            except Exception as exc:
                outcomes.append(exc)
                continue
            self._notify([item])
            outcomes.append(None)
        return outcomes

    def _notify(self, committed: Sequence[_NewTrigger]) -> None:
        for item in committed:
            self.changes.notify(item.trigger_id)

    async def _insert_new(self, batch: Sequence[_NewTrigger]) -> None:
        """The rows of new triggers, their labels, first occurrences and audit entries,
        each table's as multi-row INSERTs (values rendered by us: the driver's escaping
        per value cost more than the database did), in one transaction."""
        sql = _new_trigger_statements(batch)

        async def insert() -> None:
            async with self.db.transaction(rows=aiomysql.Cursor) as cur:
                for statement in sql:
                    await cur.execute(statement)

        await _retry_deadlocks(insert)

    async def get(self, trigger_id: str) -> TriggerRecord | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS}, (SELECT MIN(s.scheduled_for) FROM trigger_schedules s"
            "  WHERE s.trigger_id = t.id AND s.status IN ('pending', 'processing')) AS next_run"
            " FROM triggers t WHERE t.id = %(id)s",
            {"id": trigger_id},
        )
        if row is None:
            return None
        found = await labels.of(self.db, [trigger_id])
        trigger = replace(Trigger.from_row(row), labels=found.get(trigger_id, {}))
        return TriggerRecord(trigger, from_db(row["next_run"]))

    async def list(self, *, type: str | None, status: str | None, limit: int, offset: int,
                   label: Sequence[labels.Selector] = ()) -> TriggerPage:  # fmt: skip
        """A page, newest first, with the total; the page's next runs and labels in one
        query each. `label`: only triggers carrying every one of these labels."""
        where, params = _filters(type=type, status=status, label=label)
        count = await self.db.fetchone(f"SELECT COUNT(*) AS n FROM triggers{where}", params)
        total = int(count["n"]) if count else 0
        if offset >= total:
            return TriggerPage([], total)
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM triggers{where}"
            " ORDER BY created_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s",
            {**params, "limit": limit, "offset": offset},
        )
        found = await labels.of(self.db, [row["id"] for row in rows])
        triggers = [replace(Trigger.from_row(row), labels=found.get(row["id"], {}))
                    for row in rows]  # fmt: skip
        next_runs = await self._next_runs([t.id for t in triggers if t.is_scheduled])
        return TriggerPage([TriggerRecord(t, next_runs.get(t.id)) for t in triggers], total)

    async def _next_runs(self, trigger_ids: Sequence[str]) -> dict[str, datetime | None]:
        if not trigger_ids:
            return {}
        names = {f"id{i}": value for i, value in enumerate(trigger_ids)}
        placeholders = ", ".join(f"%({name})s" for name in names)
        rows = await self.db.fetchall(
            "SELECT trigger_id, MIN(scheduled_for) AS next_run FROM trigger_schedules"
            f" WHERE trigger_id IN ({placeholders}) AND status IN ('pending', 'processing')"
            " GROUP BY trigger_id",
            names,
        )
        return {row["trigger_id"]: from_db(row["next_run"]) for row in rows}

    async def update(
        self,
        trigger_id: str,
        change: Callable[[TriggerDefinition], TriggerDefinition],
        now: datetime,
        origin: Origin,
    ) -> TriggerRecord | None:
        """Lock the row, apply `change` (validation: it may raise, and then nothing is
        written; a change that changes nothing writes nothing either), write it with
        version + 1 and, when the schedule or the status changed,
        cancel pending occurrences and insert the next one after now, and record what
        changed and who (`origin`) in the audit log. None: no such id."""
        record = await _retry_deadlocks(lambda: self._update(trigger_id, change, now, origin))
        if record is not None:
            self.changes.notify(trigger_id)
        return record

    async def _update(
        self,
        trigger_id: str,
        change: Callable[[TriggerDefinition], TriggerDefinition],
        now: datetime,
        origin: Origin,
    ) -> TriggerRecord | None:
        # READ COMMITTED: cancelling scans the trigger's schedule rows, and under
        # REPEATABLE READ its next-key locks reached into the neighbouring triggers' rows
        # and gaps, so concurrent changes of different triggers deadlocked each other.
        async with self.db.transaction(read_committed=True) as cur:
            row = await _locked(cur, trigger_id)
            if row is None:
                return None
            current = replace(Trigger.from_row(row), labels=await _labels_of(cur, trigger_id))
            # Never older than the change it follows: an update that waited for the row
            # lock behind a later-dated one would write an updated_at (and an audit `at`)
            # that goes back. Only then does the time move (to the one it follows), so the
            # schedule rows, the audit entry and the trigger keep one time of change.
            now = max(now, current.updated_at)
            old = definition_of(current)
            new = change(old)
            # Why triggerd set it inactive holds until it is active again.
            reason = None if new.status == "active" else current.status_reason
            diff = changes_between(audited_fields(old), audited_fields(new))
            if reason != current.status_reason:  # set by auto-disable, cleared on activation
                diff["status_reason"] = [current.status_reason, reason]
            if not diff:  # nothing changed: nothing to write, and no entry in the audit log
                next_run = await schedule_rows.next_pending(cur, trigger_id)
                return TriggerRecord(current, next_run if current.is_scheduled else None)
            if new.labels != old.labels:
                await labels.replace(cur, trigger_id, new.labels)
            written = new.config.stored()
            await cur.execute(
                "UPDATE triggers SET name = %(name)s, status = %(status)s,"
                " status_reason = %(reason)s, config = %(config)s, endpoint_hash = %(key)s,"
                " version = version + 1, updated_at = %(now)s WHERE id = %(id)s",
                {
                    "id": trigger_id,
                    "name": new.name,
                    "status": new.status,
                    "reason": reason,
                    "config": orjson.dumps(written).decode(),
                    "key": endpoint_hash(written),
                    "now": to_db(now),
                },
            )
            retimed = schedule_changed(old, new)
            held: list[schedule_rows.Held] = []
            why = _cancel_note(retimed, new.status)
            if current.is_scheduled and (retimed or new.status != old.status):
                held = await schedule_rows.cancel_pending(cur, trigger_id, now, why)
                if new.status == "active":
                    # A new schedule starts from its own first occurrence; an unchanged
                    # one resumes after now: no burst of the occurrences missed while
                    # inactive.
                    first = (first_occurrence(new, now, old) if retimed
                             else new.config.next_occurrence(now))  # fmt: skip
                    # A held occurrence fires at its time anyway: when the schedule also
                    # fires then, that firing is it, and the schedule goes on from the
                    # next one (its row is taken: inserting it would add nothing, and
                    # settle_held would leave the trigger with no occurrence at all).
                    taken = {to_db(item.scheduled_for) for item in held}
                    while first is not None and to_db(first) in taken:
                        first = new.config.next_occurrence(first)
                    if first is not None:
                        due = due_at(trigger_id, new.config.timing(), first)
                        await schedule_rows.insert_occurrence(cur, trigger_id, due, now)
            next_run = await schedule_rows.next_pending(cur, trigger_id)
            await audit.record(cur, AuditEntry(Action.TRIGGER_UPDATED, origin, now, trigger_id,
                                               changes=diff))  # fmt: skip
        if held:  # an occurrence past the scheduler's last look fires before we answer
            await schedule_rows.settle_held(self.db, trigger_id, held, now, why)
            next_run = (await self._next_runs([trigger_id])).get(trigger_id)
        stored = now.replace(microsecond=now.microsecond // 1000 * 1000)
        trigger = Trigger(
            id=trigger_id,
            name=new.name,
            type=current.type,
            status=new.status,
            config=new.config,
            version=current.version + 1,
            created_at=current.created_at,
            updated_at=stored,
            labels=dict(new.labels),
            status_reason=reason,
        )
        return TriggerRecord(trigger, next_run if current.is_scheduled else None)

    async def delete(self, trigger_id: str, now: datetime, origin: Origin) -> bool:
        """Cancel the pending occurrences and delete the row, recording what it was in
        the audit log; events stay. False: no such id."""
        deleted = await _retry_deadlocks(lambda: self._delete(trigger_id, now, origin))
        if deleted:
            self.changes.notify(trigger_id)
        return deleted

    async def _delete(self, trigger_id: str, now: datetime, origin: Origin) -> bool:
        async with self.db.transaction(read_committed=True) as cur:
            row = await _locked(cur, trigger_id)
            if row is None:
                return False
            now = max(now, Trigger.from_row(row).updated_at)  # as in _update
            held_labels = await _labels_of(cur, trigger_id)
            await cur.execute("DELETE FROM triggers WHERE id = %(id)s", {"id": trigger_id})
            await labels.replace(cur, trigger_id, {})
            held = await schedule_rows.cancel_pending(cur, trigger_id, now, DELETED)
            before = audited_fields(definition_of(replace(Trigger.from_row(row),
                                                          labels=held_labels)))  # fmt: skip
            await audit.record(cur, AuditEntry(Action.TRIGGER_DELETED, origin, now, trigger_id,
                                               changes=changes_between(before, None)))
        await schedule_rows.settle_held(self.db, trigger_id, held, now, DELETED)
        return True


async def _retry_deadlocks(work: Callable[[], Awaitable[T]]) -> T:
    """Run a transaction again when InnoDB chose it as a deadlock victim (it was rolled
    back whole, so running it again is safe); the scheduler locks the same rows."""
    return await _DEADLOCK_RETRY.run(work, retry_on=is_lock_conflict, what="trigger write",
                                     log=log)  # fmt: skip


def _cancel_note(retimed: bool, status: str) -> str:
    if status != "active":
        return DEACTIVATED
    return RESCHEDULED if retimed else REACTIVATED


def _filters(*, type: str | None, status: str | None,
             label: Sequence[labels.Selector]) -> tuple[str, dict[str, Any]]:  # fmt: skip
    clauses, params = labels.filters(label)
    if type is not None:
        clauses.append("type = %(type)s")
        params["type"] = type
    if status is not None:
        clauses.append("status = %(status)s")
        params["status"] = status
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

