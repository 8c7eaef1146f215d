"""Group commit for store calls made by many concurrent jobs.

The worker runs one task per job, and the jobs of one Kafka fetch move in step: their
event loads, attempt claims and outcome writes arrive together. Sent one by one, each is
a database round trip (and, for an outcome, a transaction of four). A `Coalescer`
flushes the calls of one event-loop turn, and those made while a flush is running,
as one batch, so the round trips per job fall as the load rises, at no cost in latency
when the worker is idle (a lone call is flushed at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[list[T]], Awaitable[Sequence[R]]]


class Coalescer(Generic[T, R]):
    """`submit(item)` resolves to `flush(batch)[i]` of the batch that carried it.

    At most `concurrency` flushes run at once, each of at most `max_batch` items. A flush
    that raises fails every call it served; callers retry as they would a single query.
    A flush runs in a task of its own: a caller that is cancelled stops waiting for it,
    but the batch goes on (what it writes is written whole or not at all)."""

    def __init__(self, flush: Flush[T, R], *, max_batch: int = 200, concurrency: int = 2) -> None:
        if max_batch < 1 or concurrency < 1:
            raise ValueError("max_batch and concurrency must be at least 1")
        self._flush = flush
        self.max_batch = max_batch
        self.concurrency = concurrency
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self.flushes = 0  # batches sent (for tests and diagnostics)

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, future))
        if not self._scheduled and len(self._running) < self.concurrency:
            # Not at once: the other calls of this loop turn join the batch.
            self._scheduled = True
            loop.call_soon(self._start)
        return await future

    def _start(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._waiting and len(self._running) < self.concurrency:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            task = loop.create_task(self._run(batch))
            self._running.add(task)  # also the reference that keeps it alive
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._waiting and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.flushes += 1
        futures = [future for _item, future in batch]
        try:
            results = await self._flush([item for item, _future in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"flush answered {len(results)} of {len(batch)} items")
        except BaseException as exc:
            for future in futures:
                if not future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)
