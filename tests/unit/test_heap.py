"""The scheduler's occurrence heap: ordering, replacement, lazy deletion, compaction."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from triggerd.scheduler.heap import Occurrence, OccurrenceHeap

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def occ(seconds: float, schedule_id: int, trigger_id: str = "t") -> Occurrence:
    return Occurrence(T0 + timedelta(seconds=seconds), schedule_id, trigger_id)


def drain(heap: OccurrenceHeap) -> list[Occurrence]:
    return heap.pop_due(T0 + timedelta(days=365))


def test_pops_in_time_order_with_schedule_id_tiebreak() -> None:
    items = [occ(s % 17, s) for s in range(200)]
    random.Random(7).shuffle(items)
    heap = OccurrenceHeap()
    for item in items:
        assert heap.push(item)
    assert len(heap) == 200
    assert drain(heap) == sorted(items)
    assert len(heap) == 0
    assert heap.peek() is None


def test_occurrence_order_ignores_trigger_id() -> None:
    assert occ(1, 5, "b") < occ(1, 6, "a")
    assert occ(1, 5, "a") == occ(1, 5, "z")
    assert occ(0, 9) < occ(1, 1)


def test_push_same_time_is_a_noop() -> None:
    heap = OccurrenceHeap()
    assert heap.push(occ(10, 1))
    assert not heap.push(occ(10, 1))
    assert len(heap) == 1
    assert drain(heap) == [occ(10, 1)]


def test_push_new_time_replaces() -> None:
    heap = OccurrenceHeap()
    heap.push(occ(10, 1))
    heap.push(occ(20, 2))
    assert heap.push(occ(30, 1))  # later
    assert heap.peek() == occ(20, 2)
    assert heap.push(occ(5, 2))  # earlier
    assert len(heap) == 2
    popped = drain(heap)
    assert [o.fire_at for o in popped] == [T0 + timedelta(seconds=5), T0 + timedelta(seconds=30)]


def test_discard() -> None:
    heap = OccurrenceHeap([occ(1, 1), occ(2, 2), occ(3, 3)])
    assert heap.discard(1)
    assert not heap.discard(1)
    assert not heap.discard(99)
    assert 1 not in heap
    assert 2 in heap
    assert heap.peek() == occ(2, 2)
    assert heap.schedule_ids() == {2, 3}
    assert drain(heap) == [occ(2, 2), occ(3, 3)]


def test_discard_then_push_again_fires_once() -> None:
    heap = OccurrenceHeap()
    item = occ(1, 1)
    heap.push(item)
    heap.discard(1)
    assert heap.push(item)  # the very same object is back
    assert drain(heap) == [item]


def test_discard_trigger() -> None:
    heap = OccurrenceHeap([occ(1, 1, "a"), occ(2, 2, "b"), occ(3, 3, "a"), occ(4, 4, "c")])
    assert heap.discard_trigger("a") == 2
    assert heap.discard_trigger("a") == 0
    assert heap.discard_trigger("nope") == 0
    assert heap.schedule_ids() == {2, 4}
    # a replaced occurrence counts once, under its current trigger
    heap.push(occ(9, 2, "b"))
    assert heap.discard_trigger("b") == 1
    assert drain(heap) == [occ(4, 4, "c")]


def test_pop_due_respects_now_and_limit() -> None:
    heap = OccurrenceHeap([occ(s, s) for s in range(10)])
    assert heap.pop_due(T0 - timedelta(seconds=1)) == []
    assert heap.pop_due(T0 + timedelta(seconds=4), limit=3) == [occ(0, 0), occ(1, 1), occ(2, 2)]
    assert heap.pop_due(T0 + timedelta(seconds=4), limit=0) == []
    assert heap.pop_due(T0 + timedelta(seconds=4)) == [occ(3, 3), occ(4, 4)]  # <= now
    assert len(heap) == 5
    assert heap.peek() == occ(5, 5)


def test_pop_due_skips_dead_entries() -> None:
    heap = OccurrenceHeap([occ(s, s) for s in range(5)])
    heap.discard(0)
    heap.push(occ(100, 1))
    assert heap.pop_due(T0 + timedelta(seconds=3), limit=2) == [occ(2, 2), occ(3, 3)]
    assert heap.pop_due(T0 + timedelta(seconds=3)) == []


def test_replace_all_makes_the_heap_exactly_that_set() -> None:
    heap = OccurrenceHeap([occ(1, 1, "a"), occ(2, 2, "a"), occ(3, 3, "b")])
    heap.replace_all([occ(5, 2, "a"), occ(4, 7, "c"), occ(6, 7, "c")])  # later duplicate wins
    assert heap.schedule_ids() == {2, 7}
    assert heap.discard_trigger("b") == 0
    assert heap.peek() == occ(5, 2, "a")
    assert drain(heap) == [occ(5, 2, "a"), occ(6, 7, "c")]
    heap.replace_all([])
    assert len(heap) == 0


def test_compaction_bounds_dead_entries() -> None:
    heap = OccurrenceHeap([occ(0, 0)])
    for step in range(1, 5000):
        heap.push(occ(step, 1))  # each push kills the previous entry of schedule 1
        heap.push(occ(step, 2))
        heap.discard(2)
        assert len(heap._heap) <= 2 * len(heap) + 1
    assert len(heap) == 2
    assert drain(heap) == [occ(0, 0), occ(4999, 1)]


def test_discard_trigger_compacts() -> None:
    heap = OccurrenceHeap([occ(s, s, "big") for s in range(1000)] + [occ(5000, 5000, "x")])
    assert heap.discard_trigger("big") == 1000
    assert len(heap._heap) <= 2 * len(heap) + 1


def test_rejects_naive_times() -> None:
    naive = Occurrence(datetime(2026, 1, 1), 1, "t")
    with pytest.raises(ValueError, match="aware"):
        OccurrenceHeap().push(naive)
    with pytest.raises(ValueError, match="aware"):
        OccurrenceHeap([naive])


class HeapModel(RuleBasedStateMachine):
    """Random operations against a plain dict model of the live set."""

    def __init__(self) -> None:
        super().__init__()
        self.heap = OccurrenceHeap()
        self.model: dict[int, Occurrence] = {}
        self.now = T0

    @rule(
        seconds=st.integers(0, 60),
        schedule_id=st.integers(0, 15),
        trigger=st.sampled_from("abc"),
    )
    def push(self, seconds: int, schedule_id: int, trigger: str) -> None:
        item = occ(seconds, schedule_id, trigger)
        current = self.model.get(schedule_id)
        changed = self.heap.push(item)
        assert changed == (
            current is None or (current.fire_at, current.trigger_id) != (item.fire_at, trigger)
        )
        self.model[schedule_id] = item

    @rule(schedule_id=st.integers(0, 15))
    def discard(self, schedule_id: int) -> None:
        assert self.heap.discard(schedule_id) == (self.model.pop(schedule_id, None) is not None)

    @rule(trigger=st.sampled_from("abc"))
    def discard_trigger(self, trigger: str) -> None:
        gone = [k for k, v in self.model.items() if v.trigger_id == trigger]
        for key in gone:
            del self.model[key]
        assert self.heap.discard_trigger(trigger) == len(gone)

    @rule(advance=st.integers(0, 20), limit=st.none() | st.integers(0, 5))
    def pop_due(self, advance: int, limit: int | None) -> None:
        self.now += timedelta(seconds=advance)
        expected = sorted(o for o in self.model.values() if o.fire_at <= self.now)
        if limit is not None:
            expected = expected[:limit]
        assert self.heap.pop_due(self.now, limit) == expected
        for item in expected:
            del self.model[item.schedule_id]

    @rule(items=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 15)), max_size=10))
    def replace_all(self, items: list[tuple[int, int]]) -> None:
        occs = [occ(s, i) for s, i in items]
        self.heap.replace_all(occs)
        self.model = {o.schedule_id: o for o in occs}

    @invariant()
    def agrees_with_model(self) -> None:
        assert len(self.heap) == len(self.model)
        assert self.heap.schedule_ids() == set(self.model)
        assert self.heap.peek() == (min(self.model.values()) if self.model else None)
        assert len(self.heap._heap) <= 2 * len(self.model) + 1


HeapModel.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
test_heap_model = HeapModel.TestCase
