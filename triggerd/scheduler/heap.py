"""The scheduler's in-memory min-heap of near-term occurrences. Pure: no loop, no I/O.

The scheduler loop preloads the next few minutes of pending schedule rows into
this heap and sleeps until the top is due. The database stays the source of truth
(claims, leases); the heap only decides when to look, so it may be rebuilt from
the database at any time with :meth:`OccurrenceHeap.replace_all`.

Removal is lazy: a replaced or discarded entry stays in the list, marked dead by a
sequence number that no longer matches, and is dropped when it reaches the top.
The list is rebuilt once dead entries outnumber live ones, so memory stays within
twice the live size and each removal costs amortized O(1) beyond the heap push.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

# (fire_at, schedule_id, seq, occurrence): the unique seq breaks ties before the
# occurrence itself is ever compared and tells a live entry from a dead one.
_Entry = tuple[datetime, int, int, "Occurrence"]


@dataclass(frozen=True, order=True, slots=True)
class Occurrence:
    """One pending schedule row: fire ``trigger_id`` at ``fire_at`` (aware UTC)."""

    fire_at: datetime
    schedule_id: int
    trigger_id: str = field(compare=False)


class OccurrenceHeap:
    """Earliest-first occurrences, at most one per ``schedule_id``."""

    def __init__(self, occs: Iterable[Occurrence] = ()) -> None:
        self._heap: list[_Entry] = []
        self._live: dict[int, tuple[int, Occurrence]] = {}  # schedule_id -> (seq, occ)
        self._by_trigger: dict[str, set[int]] = {}
        self._seq = itertools.count()
        self.replace_all(occs)

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, schedule_id: object) -> bool:
        return schedule_id in self._live

    def __repr__(self) -> str:
        return f"<OccurrenceHeap live={len(self._live)} entries={len(self._heap)}>"

    def schedule_ids(self) -> set[int]:
        return set(self._live)

    def push(self, occ: Occurrence) -> bool:
        """Add ``occ``. The same schedule at the same time is a no-op (False), so
        repeated preloads are idempotent; a different time replaces the old one."""
        if occ.fire_at.tzinfo is None:
            raise ValueError("Occurrence.fire_at must be an aware UTC datetime")
        current = self._live.get(occ.schedule_id)
        if current is not None:
            old = current[1]
            if old.fire_at == occ.fire_at and old.trigger_id == occ.trigger_id:
                return False
            self._forget(occ.schedule_id)
        self._add(occ)
        self._maybe_compact()
        return True

    def discard(self, schedule_id: int) -> bool:
        """Remove the schedule's occurrence; True if it was present."""
        if schedule_id not in self._live:
            return False
        self._forget(schedule_id)
        self._maybe_compact()
        return True

    def discard_trigger(self, trigger_id: str) -> int:
        """Remove every occurrence of a trigger (deleted, deactivated, rescheduled);
        returns how many were present."""
        ids = list(self._by_trigger.get(trigger_id, ()))
        for schedule_id in ids:
            self._forget(schedule_id)
        if ids:
            self._maybe_compact()
        return len(ids)

    def peek(self) -> Occurrence | None:
        """The earliest live occurrence, without removing it."""
        self._drop_dead_top()
        return self._heap[0][3] if self._heap else None

    def pop_due(self, now: datetime, limit: int | None = None) -> list[Occurrence]:
        """Remove and return live occurrences with ``fire_at <= now``, earliest
        first, at most ``limit`` of them (a bounded claim batch)."""
        due: list[Occurrence] = []
        while self._heap and (limit is None or len(due) < limit):
            self._drop_dead_top()
            if not self._heap or self._heap[0][0] > now:
                break
            occ = heapq.heappop(self._heap)[3]
            self._forget(occ.schedule_id)
            due.append(occ)
        if due:
            self._maybe_compact()  # fewer live entries may leave dead ones in the majority
        return due

    def replace_all(self, occs: Iterable[Occurrence]) -> None:
        """Make the heap hold exactly ``occs`` (a later duplicate schedule_id wins).

        One O(n) heapify: reading the new set is O(n) anyway, and it beats n
        pushes plus n lazy deletions after a full reload from the database.
        """
        latest: dict[int, Occurrence] = {}
        for occ in occs:
            if occ.fire_at.tzinfo is None:
                raise ValueError("Occurrence.fire_at must be an aware UTC datetime")
            latest[occ.schedule_id] = occ
        self._heap = []
        self._live = {}
        self._by_trigger = {}
        for occ in latest.values():
            self._add(occ, heapify_later=True)
        heapq.heapify(self._heap)

    # ------------------------------------------------------------- internals

    def _add(self, occ: Occurrence, heapify_later: bool = False) -> None:
        seq = next(self._seq)
        entry: _Entry = (occ.fire_at, occ.schedule_id, seq, occ)
        if heapify_later:
            self._heap.append(entry)
        else:
            heapq.heappush(self._heap, entry)
        self._live[occ.schedule_id] = (seq, occ)
        self._by_trigger.setdefault(occ.trigger_id, set()).add(occ.schedule_id)

    def _forget(self, schedule_id: int) -> None:
        """Mark the schedule's entry dead; it stays in the list until popped or compacted."""
        _, occ = self._live.pop(schedule_id)
        ids = self._by_trigger[occ.trigger_id]
        ids.discard(schedule_id)
        if not ids:
            del self._by_trigger[occ.trigger_id]

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


__all__ = ["Occurrence", "OccurrenceHeap"]
