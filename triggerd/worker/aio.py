"""Small asyncio helpers of the worker: shielded bookkeeping and DB-retrying calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from triggerd.domain.retry import Retry
from triggerd.store.db import is_transient

log = logging.getLogger(__name__)

T = TypeVar("T")


async def shielded(aw: Awaitable[T], *, grace: float) -> T:
    """Await `aw` so that cancelling the caller does not cut it short: on cancellation it
    gets up to `grace` more seconds to finish (then it is cancelled), and the caller's
    cancellation is re-raised either way. For the writes that record what happened."""
    task = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait({task}, timeout=grace)
            task.cancel()
        raise


async def retry_transient(
    op: Callable[[], Awaitable[T]], what: str, *, base: float = 0.2, cap: float = 5.0
) -> T:
    """Run `op` until it does not fail with a transient database error (server down,
    connection lost, deadlock), backing off in between. Other errors propagate."""
    return await Retry(tries=None, base=base, cap=cap).run(op, retry_on=is_transient,
                                                            what=what, log=log)  # fmt: skip
