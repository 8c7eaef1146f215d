"""The one way the daemon runs an operation again after a transient fault.

A `Retry` says how many tries an operation gets (or "until it works") and how long to
wait in between (`backoff_delay`: exponential with jitter, capped); the caller says
which faults are worth another try (`retry_on`: a database that went away, a deadlock
victim...). Anything else propagates at once, and so does cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from triggerd.domain.backoff import backoff_delay

T = TypeVar("T")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retry:
    tries: int | None  # None: until it succeeds (or the caller is cancelled)
    base: float  # seconds before the first retry (jittered down to half)
    cap: float  # the longest wait between two tries
    log_every: int = 10  # log the first failure and every n-th after it
    log_level: int = logging.WARNING  # INFO where a retry is routine (a deadlock victim)

    async def run(
        self,
        op: Callable[[], Awaitable[T]],
        *,
        retry_on: Callable[[BaseException], bool],
        what: str,
        log: logging.Logger = _log,
    ) -> T:
        """`op()` until it returns; a failure `retry_on` accepts is retried after a
        backoff while tries remain, then re-raised."""
        failures = 0
        while True:
            try:
                return await op()
            except Exception as exc:
                failures += 1
                if not retry_on(exc) or (self.tries is not None and failures >= self.tries):
                    raise
                delay = backoff_delay(failures, self.base, self.cap)
                if failures == 1 or failures % self.log_every == 0:
                    log.log(self.log_level, "%s failed (%s); retry %d in %.2fs", what, exc,
                            failures, delay)  # fmt: skip
                await asyncio.sleep(delay)
