"""The row-count gauges, refreshed on an interval, never per scrape.

`triggerd_triggers{type,status}` and `triggerd_schedules{status}` come from grouped
COUNTs over covering indexes; `triggerd_events{retention_status}` is exact up to 200k rows
per status and derived from InnoDB's row estimate above that (store/retention.py: an
exact count of 1M index entries costs too much to repeat every 15 s in every process);
`triggerd_schedule_lag_seconds` is one index dive per open status;
`triggerd_endpoints{state}` a grouped COUNT of the (small) endpoints table. Every process
refreshes them (each process serves `/metrics`), so when several are scraped the series
are the same numbers: aggregate them with `max`, not `sum`.

A label set that was reported once and no longer occurs is set to 0 instead of staying
at its last value. The database being down is ridden out: the gauges keep their last
values and the next refresh comes after a backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from prometheus_client import Gauge

from triggerd.domain.backoff import Backoff
from triggerd.domain.enums import CircuitState, ScheduleStatus, TriggerStatus, TriggerType, values
from triggerd.domain.timeutil import utcnow
from triggerd.metrics import Metrics
from triggerd.services import Services
from triggerd.store import endpoints
from triggerd.store.db import Database, is_transient
from triggerd.store.events import RETENTION_STATUSES
from triggerd.store.retention import RowCounts

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 15.0

TRIGGER_TYPES = values(TriggerType)
TRIGGER_STATUSES = values(TriggerStatus)
SCHEDULE_STATUSES = values(ScheduleStatus)

Labels = tuple[str, ...]
QueryHook = Callable[[str, float], None]
T = TypeVar("T")


class GaugeRefresher:
    def __init__(self, db: Database, metrics: Metrics) -> None:
        self.db = db
        self.counts = RowCounts(db)
        self.metrics = metrics
        # Label sets ever reported, per gauge: the ones a refresh no longer sees go to 0.
        self._seen: dict[str, set[Labels]] = {
            "triggers": {(t, s) for t in TRIGGER_TYPES for s in TRIGGER_STATUSES},
            "schedules": {(s,) for s in SCHEDULE_STATUSES},
            "events": {(s,) for s in RETENTION_STATUSES},
            "endpoints": {(s.value,) for s in CircuitState},
        }
        # Known label sets exist (at 0) from the first scrape on.
        for name, gauge in self._gauges():
            for labels in self._seen[name]:
                gauge.labels(*labels)

    def _gauges(self) -> Iterable[tuple[str, Gauge]]:
        m = self.metrics
        return (("triggers", m.triggers), ("schedules", m.schedules), ("events", m.events),
                ("endpoints", m.endpoints))  # fmt: skip

    async def refresh(self, on_query: QueryHook | None = None) -> None:
        """Run the counts, then update the gauges (all queries first, so a failure half-way
        leaves every gauge at its previous refresh)."""

        async def timed(name: str, query: Awaitable[T]) -> T:
            started = time.perf_counter()
            value = await query
            if on_query is not None:
                on_query(name, time.perf_counter() - started)
            return value

        triggers = await timed("triggers", self.counts.triggers())
        schedules = await timed("schedules", self.counts.schedules())
        events = await timed("events", self.counts.events())
        oldest = await timed("schedule_lag", self.counts.oldest_open_schedule())
        circuits = await timed("endpoints", endpoints.count_by_state(self.db))
        self._set("triggers", self.metrics.triggers, triggers)
        self._set("schedules", self.metrics.schedules, schedules)
        self._set("events", self.metrics.events, events)
        self._set("endpoints", self.metrics.endpoints,
                  {(state,): count for state, count in circuits.items()})  # fmt: skip
        lag = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
        self.metrics.schedule_lag.set(max(0.0, lag))

    def _set(self, name: str, gauge: Gauge, counts: dict[Labels, int]) -> None:
        seen = self._seen[name]
        seen.update(counts)
        for labels in seen:
            gauge.labels(*labels).set(counts.get(labels, 0))


async def refresh_forever(services: Services, interval: float = REFRESH_INTERVAL) -> None:
    """Refresh at start, then every `interval`; runs until cancelled, never raises."""
    refresher = GaugeRefresher(services.db, services.metrics)
    backoff = Backoff(base=1.0, cap=interval)
    while True:
        try:
            await refresher.refresh()
        except Exception as exc:  # the gauges must never take the process down
            delay = backoff.next()
            if not is_transient(exc):
                log.exception("gauges: refresh failed; retrying in %.1fs", delay)
            elif backoff.failures == 1:
                log.warning("gauges: database unavailable (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            continue
        if backoff.failures:
            log.info("gauges: refreshed again after %d failures", backoff.failures)
        backoff.reset()
        await asyncio.sleep(interval)
