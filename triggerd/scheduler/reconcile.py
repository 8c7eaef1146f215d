"""The scheduler's window: a WakeHeap of when something is due soon, kept in step
with MySQL.

The heap only decides *when* the loop claims; the database decides *what*: the claim
takes every row due by then, exact times and all, whether the heap knew of it or not. So
the heap can be rebuilt from the database at any time, idempotently, with `replace_all`:

- `reload()` runs every `scheduler_reconcile_interval` and on a wake-up from the API in
  this process (the far part of the span, there for crowded seconds, every FAR_EVERY).
  It reads the *due points* of the span: the earliest pending occurrence of each second
  (overdue ones included; the claim it starts reaches to the end of that second) and,
  for each second of the near span in which claimed rows' leases run out, the last of them
  (a dead holder's rows become claimable then). New, moved and cancelled rows
  written by other processes appear or vanish here. One GROUP BY over the
  `(status, fire_at)` index returns at most one row per second of the span, however
  many triggers there are; reading every row instead cost a third of the process's CPU
  at 100,000 triggers (bench/scheduler_drift.py).
- `hint()` adds what this process knows without asking: the next occurrence it just
  inserted, a retry time after a failed publish. Hints made while a reload was reading
  are re-applied on top of its result, so the reload cannot erase them.

The span is the lookahead setting, capped at two reconcile intervals plus the claim-ahead
and the longest lead (and a second): every row enters it at least one reload before it
is due, and a crowded second early enough to start its lead.

A crowded second (a burst of one-time triggers, a popular cron minute) is claimed early:
its entry sits ahead of it by the time claiming its rows takes at the measured claim rate
(at most `max_lead`), and reaches to it, so the claims are done when it is due and due
time costs only the sends.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta

from triggerd.config import Settings
from triggerd.scheduler.heap import WakeHeap, WakePoint
from triggerd.store import schedules
from triggerd.store.db import Database


def window_span(settings: Settings, claim_ahead: float, max_lead: float = 0.0) -> timedelta:
    reach = 2 * settings.scheduler_reconcile_interval + claim_ahead + 1.0 + max_lead
    seconds = min(settings.scheduler_lookahead, reach)
    return timedelta(seconds=seconds)


# The span beyond the near one (the leads of crowded seconds) is read once in this many
# seconds, not on every reload: it holds tens of thousands of rows at a million triggers
# (and a whole burst for up to its lead), and only decides how early a crowded second
# starts. In between, its due points from the last read stand.
FAR_EVERY = 5.0


LEAD_ROOM = 1.5
_SECOND_END = timedelta(milliseconds=999)  # a due point stands for its whole second
_AFTER = timedelta(milliseconds=1)


class Window:
    def __init__(self, settings: Settings, claim_ahead: float, max_lead: float) -> None:
        self.span = window_span(settings, claim_ahead, max_lead)
        self.near = window_span(settings, claim_ahead)
        self._far: list[tuple[datetime, int]] = []  # due points beyond `near`, last read
        self._far_next: datetime | None = None  # when the far span is read again
        self.claim_ahead = timedelta(seconds=claim_ahead)
        self.max_lead = max_lead
        self.heap = WakeHeap()
        self.horizon: datetime | None = None  # what the last reload covered
        self._recording: list[tuple[WakePoint, datetime]] | None = None
        # Entries are wake-up points, not rows: their ids only need to be unique.
        self._ids = itertools.count(-1, -1)
        # id -> how far the claim an entry starts must reach, when beyond the entry: the
        # end of its second (a crowded second's entry also sits `lead` before it).
        self._reach: dict[int, datetime] = {}
        # Set when a hint became the earliest entry: the planner may be sleeping past it.
        self.nudged = asyncio.Event()

    def __len__(self) -> int:
        return len(self.heap)

    async def reload(self, db: Database, now: datetime, claim_rate: float) -> int:
        """Rebuild the heap from the database; returns the number of due points.
        `claim_rate` (rows/s this process claims) sets how early a crowded second starts."""
        horizon, near = now + self.span, now + self.near
        far = horizon > near and (self._far_next is None or now >= self._far_next)
        recorded: list[tuple[WakePoint, datetime]] = []
        self._recording = recorded
        try:
            pending, leases = await schedules.due_points(db, horizon if far else near, near)
        finally:
            self._recording = None
        if far:
            self._far = [(due, rows) for due, rows in pending if due > near]
            self._far_next = now + timedelta(seconds=FAR_EVERY)
        else:
            pending += [(due, rows) for due, rows in self._far if due > near]
        entries, self._reach = [], {}
        for due, rows in pending:
            # Claim every row of that second, starting early when there are many (with
            # room: the rows due meanwhile are claimed on the way, and the due load
            # competes with the claiming).
            lead = timedelta(seconds=min(self.max_lead, LEAD_ROOM * rows / claim_rate))
            entries.append(self._entry(due - lead, due.replace(microsecond=0) + _SECOND_END))
        for last in leases:
            # Expired leases are claimed when the claim runs, not ahead: look once the
            # last lease of that second is over.
            at = last + self.claim_ahead + _AFTER
            entries.append(self._entry(at, at))
        self.heap.replace_all(entries)
        for point, reach in recorded:
            self._push(point, reach)
        self.horizon = horizon
        return len(entries)

    def hint(self, due: datetime, reach: datetime | None = None) -> None:
        """Look at `due` (a row this process inserted or re-queued), claiming up to `reach`
        (default `due`). Beyond the horizon it is left to a later reload, which will read
        it before it is due."""
        if self.horizon is not None and due > self.horizon:
            return
        point = WakePoint(due, next(self._ids))
        top = self.heap.peek()
        self._push(point, reach or due)
        if top is None or due < top.at:
            self.nudged.set()
        if self._recording is not None:
            self._recording.append((point, reach or due))

    def _entry(self, at: datetime, reach: datetime) -> WakePoint:
        point = WakePoint(at, next(self._ids))
        if reach > at:
            self._reach[point.key] = reach
        return point

    def _push(self, point: WakePoint, reach: datetime) -> None:
        self.heap.push(point)
        if reach > point.at:
            self._reach[point.key] = reach

    def next_due(self) -> datetime | None:
        top = self.heap.peek()
        return top.at if top is not None else None

    def take_due(self, until: datetime) -> datetime:
        """Drop the entries due by `until`; returns how far the claim that follows must
        reach: `until`, or further when a crowded second starts early."""
        reach = until
        for point in self.heap.pop_due(until):
            far = self._reach.pop(point.key, None)
            if far is not None and far > reach:
                reach = far
        return reach


__all__ = ["Window", "window_span"]
