"""Which event loop the daemon runs on (TRIGGERD_EVENT_LOOP).

uvloop by default: its libuv transports cost a fraction of the standard selector loop's
per read and write, which is most of what a webhook request costs us (bench/ingest.py).
`asyncio` keeps the standard loop, e.g. for debugging with PYTHONASYNCIODEBUG.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for `asyncio.Runner`; None means the standard loop."""
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:  # a platform without wheels: run on the standard loop
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], name: str) -> T:
    """asyncio.run(main) on the configured loop."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)
