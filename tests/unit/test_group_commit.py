"""The group commit's batching (ingest/pipeline.py _Batcher): a burst is shared among
idle writers, a small batch waits once for company, and only one writer waits at a time."""

from __future__ import annotations

import asyncio
import contextlib

from triggerd.ingest.pipeline import _Batcher


class Recording(_Batcher[int]):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(max_queue=1000, **kwargs)  # type: ignore[arg-type]
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()

    def offer(self, items: list[int]) -> None:
        self._offer_all(items)

    async def _handle(self, batch: list[int]) -> None:
        self.batches.append(batch)
        await self.release.wait()


async def _until(predicate: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.001)


async def _running(batcher: Recording) -> asyncio.Task[None]:
    task = asyncio.create_task(batcher.run())
    await asyncio.sleep(0)  # the writer tasks start and wait
    await asyncio.sleep(0)
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_burst_is_shared_between_idle_writers() -> None:
    batcher = Recording(concurrency=2, max_batch=256, max_wait=0.0, split=True, min_batch=4)
    task = await _running(batcher)
    batcher.offer(list(range(30)))
    await _until(lambda: len(batcher.batches) == 2)
    assert [len(b) for b in batcher.batches] == [15, 15]
    assert sorted(batcher.batches[0] + batcher.batches[1]) == list(range(30))
    batcher.release.set()
    await _stop(task)


async def test_a_small_batch_is_not_split_and_waits_once_for_company() -> None:
    batcher = Recording(concurrency=2, max_batch=256, max_wait=0.05, split=True, min_batch=4)
    task = await _running(batcher)
    batcher.offer([1])
    await asyncio.sleep(0.01)
    batcher.offer([2, 3])  # arrives inside the window: joins the first batch
    await _until(lambda: len(batcher.batches) == 1)
    assert batcher.batches == [[1, 2, 3]]
    batcher.release.set()
    await _stop(task)


async def test_a_batch_of_min_batch_goes_at_once() -> None:
    batcher = Recording(concurrency=1, max_batch=256, max_wait=30.0, split=True, min_batch=4)
    task = await _running(batcher)
    batcher.offer([1, 2, 3, 4])
    await _until(lambda: len(batcher.batches) == 1, timeout=5)
    assert batcher.batches == [[1, 2, 3, 4]]
    batcher.release.set()
    await _stop(task)
