"""The scheduler's in-memory min-heap of wake-up points. Pure: no loop, no I/O.

A wake-up point is a time at which the scheduler loop should claim what is due (the
window of reconcile.py derives them from the schedule rows of the next minutes, and
from what this process just wrote). The database stays the source of truth (claims,
leases); the heap only decides when to look, so it may be rebuilt from the database
at any time with :meth:`WakeHeap.replace_all`.

Removal is lazy: a replaced or discarded entry stays in the list, marked dead by a
sequence number that no longer matches, and is dropped when it reaches the top.
The list is rebuilt once dead entries outnumber live ones, so memory stays within
twice the live size and each removal costs amortized O(1) beyond the heap push.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

# (at, key, seq, point): the unique seq breaks ties before the point itself is ever
# compared and tells a live entry from a dead one.
_Entry = tuple[datetime, int, int, "WakePoint"]


@dataclass(frozen=True, order=True, slots=True)
class WakePoint:
    """Look for due work at ``at`` (aware UTC); ``key`` names the point (unique)."""

    at: datetime
    key: int


class WakeHeap:
    """Earliest-first wake-up points, at most one per ``key``."""

    def __init__(self, points: Iterable[WakePoint] = ()) -> None:
        self._heap: list[_Entry] = []
        self._live: dict[int, tuple[int, WakePoint]] = {}  # key -> (seq, point)
        self._seq = itertools.count()
        self.replace_all(points)

    def __len__(self) -> int:
        return len(self._live)

    def __repr__(self) -> str:
        return f"<WakeHeap live={len(self._live)} entries={len(self._heap)}>"

    def push(self, point: WakePoint) -> bool:
        """Add ``point``. The same key at the same time is a no-op (False), so
        repeated preloads are idempotent; a different time replaces the old one."""
        if point.at.tzinfo is None:
            raise ValueError("WakePoint.at must be an aware UTC datetime")
        current = self._live.get(point.key)
        if current is not None:
            old = current[1]
            if old.at == point.at:
                return False
            self._forget(point.key)
        self._add(point)
        self._maybe_compact()
        return True

    def peek(self) -> WakePoint | None:
        """The earliest live point, without removing it."""
        self._drop_dead_top()
        return self._heap[0][3] if self._heap else None

    def pop_due(self, now: datetime, limit: int | None = None) -> list[WakePoint]:
        """Remove and return live points with ``at <= now``, earliest
        first, at most ``limit`` of them (a bounded claim batch)."""
        due: list[WakePoint] = []
        while self._heap and (limit is None or len(due) < limit):
            self._drop_dead_top()
            if not self._heap or self._heap[0][0] > now:
                break
            point = heapq.heappop(self._heap)[3]
            self._forget(point.key)
            due.append(point)
        if due:
            self._maybe_compact()  # fewer live entries may leave dead ones in the majority
        return due

    def replace_all(self, points: Iterable[WakePoint]) -> None:
        """Make the heap hold exactly ``points`` (a later duplicate key wins).

        One O(n) heapify: reading the new set is O(n) anyway, and it beats n
        pushes plus n lazy deletions after a full reload from the database.
        """
        latest: dict[int, WakePoint] = {}
        for point in points:
            if point.at.tzinfo is None:
                raise ValueError("WakePoint.at must be an aware UTC datetime")
            latest[point.key] = point
        self._heap = []
        self._live = {}
        for point in latest.values():
            self._add(point, heapify_later=True)
        heapq.heapify(self._heap)

    # ------------------------------------------------------------- internals

    def _add(self, point: WakePoint, heapify_later: bool = False) -> None:
        seq = next(self._seq)
        entry: _Entry = (point.at, point.key, seq, point)
        if heapify_later:
            self._heap.append(entry)
        else:
            heapq.heappush(self._heap, entry)
        self._live[point.key] = (seq, point)

    def _forget(self, key: int) -> None:
        """Mark the key's entry dead; it stays in the list until popped or compacted."""
        del self._live[key]

    def _is_live(self, entry: _Entry) -> bool:
        current = self._live.get(entry[1])
        return current is not None and current[0] == entry[2]

    def _drop_dead_top(self) -> None:
        while self._heap and not self._is_live(self._heap[0]):
            heapq.heappop(self._heap)

    def _maybe_compact(self) -> None:
        if len(self._heap) - len(self._live) > len(self._live):
            self._heap = [entry for entry in self._heap if self._is_live(entry)]
            heapq.heapify(self._heap)


__all__ = ["WakeHeap", "WakePoint"]
