"""Coalescer: calls of one loop turn share a flush, calls made during a flush share the
next one, a lone call is flushed at once, and failures reach every call of their batch."""

from __future__ import annotations

import asyncio

import pytest

from triggerd.store.coalesce import Coalescer


class Recorder:
    def __init__(self, hold: asyncio.Event | None = None, fail: BaseException | None = None):
        self.batches: list[list[int]] = []
        self.hold = hold
        self.fail = fail

    async def flush(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        return [item * 10 for item in items]


async def test_calls_of_one_turn_share_one_flush() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush)
    assert await asyncio.gather(*[coalescer.submit(i) for i in range(5)]) == [0, 10, 20, 30, 40]
    assert recorder.batches == [[0, 1, 2, 3, 4]]
    assert await coalescer.submit(7) == 70  # a later lone call: a batch of its own
    assert recorder.batches[-1] == [7]


async def test_calls_made_while_flushes_run_wait_for_a_free_slot_and_go_together() -> None:
    hold = asyncio.Event()
    recorder = Recorder(hold)
    coalescer = Coalescer(recorder.flush, concurrency=1)
    first = asyncio.ensure_future(coalescer.submit(1))
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(coalescer.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0)
    later.append(asyncio.ensure_future(coalescer.submit(4)))  # another turn, same wait
    await asyncio.sleep(0.01)
    assert recorder.batches == [[1]]
    hold.set()
    assert await first == 10
    assert await asyncio.gather(*later) == [20, 30, 40]
    assert recorder.batches == [[1], [2, 3, 4]]


async def test_batches_are_cut_at_max_batch_and_run_up_to_concurrency() -> None:
    hold = asyncio.Event()
    recorder = Recorder(hold)
    coalescer = Coalescer(recorder.flush, max_batch=2, concurrency=2)
    calls = [asyncio.ensure_future(coalescer.submit(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    assert recorder.batches == [[0, 1], [2, 3]]  # the fifth waits for a free slot
    hold.set()
    assert await asyncio.gather(*calls) == [0, 10, 20, 30, 40]
    assert recorder.batches == [[0, 1], [2, 3], [4]]


async def test_a_failed_flush_fails_every_call_of_its_batch_only() -> None:
    recorder = Recorder(fail=ConnectionResetError("gone"))
    coalescer = Coalescer(recorder.flush)
    results = await asyncio.gather(coalescer.submit(1), coalescer.submit(2),
                                   return_exceptions=True)  # fmt: skip
    assert [type(r) for r in results] == [ConnectionResetError, ConnectionResetError]
    recorder.fail = None
    assert await coalescer.submit(3) == 30


async def test_a_flush_answering_the_wrong_count_is_an_error() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    coalescer = Coalescer(short)
    with pytest.raises(RuntimeError, match="answered 1 of 2"):
        await asyncio.gather(coalescer.submit(1), coalescer.submit(2))


async def test_a_cancelled_caller_leaves_the_batch_and_the_others_alone() -> None:
    hold = asyncio.Event()
    recorder = Recorder(hold)
    coalescer = Coalescer(recorder.flush)
    first = asyncio.ensure_future(coalescer.submit(1))
    second = asyncio.ensure_future(coalescer.submit(2))
    await asyncio.sleep(0.01)
    first.cancel()
    hold.set()
    assert await second == 20
    with pytest.raises(asyncio.CancelledError):
        await first
    assert recorder.batches == [[1, 2]]  # the flush went on, whole


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        Coalescer(Recorder().flush, max_batch=0)
