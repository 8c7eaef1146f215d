"""Putting a delivery off without using up an attempt: its event row owes the same job
again at a later time (`publish_at`), and the outbox relay publishes it then. Used for
deliveries that wait on an open circuit or a rate limit; nothing waits in memory, so a
worker that dies loses none of them.

The row must still owe this very attempt and still be in flight. `published_at` is set
too (the job was consumed, so it was published): the fast path's clearing of the
outbox mark skips rows that have it, and so cannot wipe the new `publish_at`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from triggerd.domain.timeutil import to_db, utcnow
from triggerd.store.coalesce import Coalescer
from triggerd.store.db import Database


@dataclass(frozen=True)
class Postponement:
    event_id: str
    attempt: int
    until: datetime


class Postponer:
    """Postponements of one loop turn (or made while the last batch ran) share one
    statement: a circuit that opens puts off many deliveries at once."""

    def __init__(self, db: Database, max_batch: int = 500) -> None:
        self.db = db
        self.batches: Coalescer[Postponement, None] = Coalescer(self._write, max_batch=max_batch)

    async def postpone(self, event_id: str, attempt: int, until: datetime) -> None:
        await self.batches.submit(Postponement(event_id, attempt, until))

    async def _write(self, items: list[Postponement]) -> list[None]:
        now = to_db(utcnow())
        row = "SELECT _ascii%s AS id, %s AS attempt, %s AS until"
        rows = " UNION ALL ".join([row] * len(items))
        params: list[Any] = []
        for item in items:
            params += [item.event_id, item.attempt, to_db(item.until)]
        await self.db.execute(
            f"UPDATE event_logs e JOIN ({rows}) v ON e.id = v.id"
            " SET e.publish_at = v.until, e.published_at = COALESCE(e.published_at, %s)"
            " WHERE e.publish_attempt = v.attempt"
            " AND e.execution_status IN ('pending', 'retrying')",
            [*params, now],
        )
        return [None] * len(items)
