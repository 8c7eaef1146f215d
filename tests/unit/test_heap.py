"""The scheduler's heap of wake-up points: ordering, replacement, lazy deletion, compaction."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from triggerd.scheduler.heap import WakeHeap, WakePoint

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def occ(seconds: float, key: int) -> WakePoint:
    return WakePoint(T0 + timedelta(seconds=seconds), key)


def drain(heap: WakeHeap) -> list[WakePoint]:
    return heap.pop_due(T0 + timedelta(days=365))


def test_pops_in_time_order_with_schedule_id_tiebreak() -> None:
    items = [occ(s % 17, s) for s in range(200)]
    random.Random(7).shuffle(items)
    heap = WakeHeap()
    for item in items:
        assert heap.push(item)
    assert len(heap) == 200
    assert drain(heap) == sorted(items)
    assert len(heap) == 0
    assert heap.peek() is None


def test_points_order_by_time_then_key() -> None:
    assert occ(1, 5) < occ(1, 6)
    assert occ(0, 9) < occ(1, 1)


def test_push_same_time_is_a_noop() -> None:
    heap = WakeHeap()
    assert heap.push(occ(10, 1))
    assert not heap.push(occ(10, 1))
    assert len(heap) == 1
    assert drain(heap) == [occ(10, 1)]


def test_push_new_time_replaces() -> None:
    heap = WakeHeap()
    heap.push(occ(10, 1))
    heap.push(occ(20, 2))
    assert heap.push(occ(30, 1))  # later
    assert heap.peek() == occ(20, 2)
    assert heap.push(occ(5, 2))  # earlier
    assert len(heap) == 2
    popped = drain(heap)
    assert [o.at for o in popped] == [T0 + timedelta(seconds=5), T0 + timedelta(seconds=30)]


def test_pop_due_respects_now_and_limit() -> None:
    heap = WakeHeap([occ(s, s) for s in range(10)])
    assert heap.pop_due(T0 - timedelta(seconds=1)) == []
    assert heap.pop_due(T0 + timedelta(seconds=4), limit=3) == [occ(0, 0), occ(1, 1), occ(2, 2)]
    assert heap.pop_due(T0 + timedelta(seconds=4), limit=0) == []
    assert heap.pop_due(T0 + timedelta(seconds=4)) == [occ(3, 3), occ(4, 4)]  # <= now
    assert len(heap) == 5
    assert heap.peek() == occ(5, 5)


def test_pop_due_skips_dead_entries() -> None:
    heap = WakeHeap([occ(s, s) for s in range(5)])
    heap.push(occ(100, 0))
    heap.push(occ(100, 1))
    assert heap.pop_due(T0 + timedelta(seconds=3), limit=2) == [occ(2, 2), occ(3, 3)]
    assert heap.pop_due(T0 + timedelta(seconds=3)) == []


def test_replace_all_makes_the_heap_exactly_that_set() -> None:
    heap = WakeHeap([occ(1, 1), occ(2, 2), occ(3, 3)])
    heap.replace_all([occ(5, 2), occ(4, 7), occ(6, 7)])  # later duplicate wins
    assert len(heap) == 2
    assert heap.peek() == occ(5, 2)
    assert drain(heap) == [occ(5, 2), occ(6, 7)]
    heap.replace_all([])
    assert len(heap) == 0


def test_compaction_bounds_dead_entries() -> None:
    heap = WakeHeap([occ(0, 0)])
    for step in range(1, 5000):
        heap.push(occ(step, 1))  # each push kills the previous entry of schedule 1
        heap.push(occ(step, 2))
        assert len(heap._heap) <= 2 * len(heap) + 1
    assert len(heap) == 3
    assert drain(heap) == [occ(0, 0), occ(4999, 1), occ(4999, 2)]


def test_popping_compacts() -> None:
    heap = WakeHeap([occ(s, s) for s in range(1000)] + [occ(5000, 5000)])
    for key in range(1000):
        heap.push(occ(6000, key))  # 1000 dead entries ahead of the live ones
    assert len(heap._heap) <= 2 * len(heap) + 1
    assert len(heap.pop_due(T0 + timedelta(seconds=5000))) == 1
    assert len(heap._heap) <= 2 * len(heap) + 1


def test_rejects_naive_times() -> None:
    naive = WakePoint(datetime(2026, 1, 1), 1)
    with pytest.raises(ValueError, match="aware"):
        WakeHeap().push(naive)
    with pytest.raises(ValueError, match="aware"):
        WakeHeap([naive])


class HeapModel(RuleBasedStateMachine):
    """Random operations against a plain dict model of the live set."""

    def __init__(self) -> None:
        super().__init__()
        self.heap = WakeHeap()
        self.model: dict[int, WakePoint] = {}
        self.now = T0

    @rule(seconds=st.integers(0, 60), key=st.integers(0, 15))
    def push(self, seconds: int, key: int) -> None:
        item = occ(seconds, key)
        current = self.model.get(key)
        changed = self.heap.push(item)
        assert changed == (current is None or current.at != item.at)
        self.model[key] = item

    @rule(advance=st.integers(0, 20), limit=st.none() | st.integers(0, 5))
    def pop_due(self, advance: int, limit: int | None) -> None:
        self.now += timedelta(seconds=advance)
        expected = sorted(o for o in self.model.values() if o.at <= self.now)
        if limit is not None:
            expected = expected[:limit]
        assert self.heap.pop_due(self.now, limit) == expected
        for item in expected:
            del self.model[item.key]

    @rule(items=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 15)), max_size=10))
    def replace_all(self, items: list[tuple[int, int]]) -> None:
        occs = [occ(s, i) for s, i in items]
        self.heap.replace_all(occs)
        self.model = {o.key: o for o in occs}

    @invariant()
    def agrees_with_model(self) -> None:
        assert len(self.heap) == len(self.model)
        assert set(self.heap._live) == set(self.model)
        assert self.heap.peek() == (min(self.model.values()) if self.model else None)
        assert len(self.heap._heap) <= 2 * len(self.model) + 1


HeapModel.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
test_heap_model = HeapModel.TestCase
