"""The cyclic garbage collector, settled once the daemon has started.

A full (generation 2) collection walks every tracked object. After start-up most of
them are the code itself (functions, classes, modules: some 60,000 objects), and walking
them took 45-65 ms per full collection in the scheduler under bench/scheduler_drift.py,
about every 7 s: every occurrence due meanwhile was published that much late. Those
objects live as long as the process, so once the roles are up they are moved out of the
collector's sight with gc.freeze(); collections then walk only what the work allocates.
Refcounting still frees frozen objects; only cyclic garbage among them would stay, and
start-up leaves none behind after the collection that precedes the freeze.

The young generation is then collected after YOUNG_THRESHOLD net allocations instead of
Python's 700. Working through a backlog, the worker keeps thousands of short-lived
objects in flight (jobs, rows, futures, driver buffers), and at 700 it ran a young
collection every few jobs, each walking the in-flight ones again and finding no garbage:
a tenth of its CPU (docs/performance.md). Refcounting frees nearly everything the daemon
allocates; the collector is only there for cycles (an exception and its traceback, say),
and 20,000 objects of those are a few megabytes at most.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 20_000


def settle_after_startup() -> None:
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    log.debug("garbage collector: %d objects frozen", gc.get_freeze_count())
