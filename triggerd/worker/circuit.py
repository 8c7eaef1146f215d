"""The worker's view of endpoint circuits (domain/circuit.py, store/endpoints.py).

Deciding costs no database round trip in the common case: each endpoint's health is
cached in memory and `run()` re-reads every cached endpoint once a second in one query
(so a circuit another worker opened is seen within about a second), and folds the
successes of healthy endpoints into their `last_success_at` in one statement. Only
transitions are written when they happen: a failure, a success that resets something,
a probe claimed or released.

    admit(url) ─► PASS (closed) | PROBE (this delivery tests an endpoint whose cool-down
                  is over) | WAIT until t (open, or another delivery is probing)
    settle(admission, verdict) after the attempt is recorded
    release(admission) when a probe ends without an attempt (e.g. a duplicate job)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from triggerd.config import Settings
from triggerd.domain import circuit
from triggerd.domain.backoff import Backoff
from triggerd.domain.circuit import Health
from triggerd.domain.enums import CircuitState, Verdict
from triggerd.domain.redact import redact_url
from triggerd.domain.timeutil import to_iso, utcnow
from triggerd.metrics import Metrics
from triggerd.store import endpoints
from triggerd.store.coalesce import Coalescer
from triggerd.store.db import Database, is_transient
from triggerd.worker.aio import retry_transient

log = logging.getLogger(__name__)

# An endpoint failing this long is handed to `on_failing` (auto-disable), at most once
# per CHECK_EVERY per endpoint and process.
OnFailing = Callable[[str, str, datetime], Awaitable[None]]


class Decision(StrEnum):
    PASS = "pass"
    PROBE = "probe"
    WAIT = "wait"


@dataclass(frozen=True)
class Admission:
    decision: Decision
    key: str
    until: datetime | None = None  # WAIT: when to look again; PROBE: the probe's lease


@dataclass(eq=False)
class _Entry:
    key: str
    url: str
    health: Health
    used: float  # monotonic: the last delivery that asked
    changes: int = 0  # local writes, so a refresh read before one does not undo it
    success_at: datetime | None = None  # a success not written yet (healthy endpoint)
    failing_checked: float = field(default=-1e18)  # monotonic: last auto-disable check


class Circuits:
    REFRESH = 1.0  # seconds between re-reads of the cached endpoints
    # An endpoint nobody asked about this long leaves the cache: far longer than any
    # delivery takes (timeout_seconds <= 300), so one admitted is still there to settle.
    IDLE = 900.0
    MAX_KEYS = 10_000
    RECHECK = 1.0  # half-open: a waiting delivery looks again this soon
    PROBE_MARGIN = 5.0  # the probe's lease: its timeout plus this
    CHECK_EVERY = 60.0

    def __init__(self, db: Database, metrics: Metrics, settings: Settings,
                 on_failing: OnFailing | None = None) -> None:  # fmt: skip
        self.db = db
        self.metrics = metrics
        self.threshold = settings.circuit_failure_threshold
        self.cooldown = settings.circuit_cooldown
        self.disable_after = settings.endpoint_disable_after
        self.on_failing = on_failing
        self._entries: dict[str, _Entry] = {}
        self._keys: dict[str, tuple[str, str]] = {}  # delivery URL -> (key, endpoint URL)
        self._loads: Coalescer[str, Health | None] = Coalescer(self._load, max_batch=500)

    # --- the delivery path ---------------------------------------------------------

    async def admit(self, url: str, request_seconds: float) -> Admission:
        """`request_seconds`: how long the delivery may take (the probe's lease)."""
        entry = self._entries.get(self._key(url)[0]) or await self._first_sight(url)
        entry.used = time.monotonic()
        health = entry.health
        if health.state is CircuitState.CLOSED:
            return Admission(Decision.PASS, entry.key)
        now = utcnow()
        if not health.probe_due(now):
            return Admission(Decision.WAIT, entry.key, self._look_again(health, now))
        lease = now + timedelta(seconds=request_seconds + self.PROBE_MARGIN)
        claimed = await retry_transient(
            lambda: endpoints.claim_probe(self.db, entry.key, now, lease), "claiming a probe"
        )
        if claimed:
            self._apply(entry, health, circuit.on_probe(health, lease))
            log.info("circuit of %s half-open: this delivery is the probe", redact_url(entry.url))
            return Admission(Decision.PROBE, entry.key, lease)
        fresh = await retry_transient(lambda: self._loads.submit(entry.key), "loading a circuit")
        if fresh is not None:
            entry.health = fresh
        if entry.health.state is CircuitState.CLOSED:
            return Admission(Decision.PASS, entry.key)
        return Admission(Decision.WAIT, entry.key, self._look_again(entry.health, now))

    def _look_again(self, health: Health, now: datetime) -> datetime:
        soon = now + timedelta(seconds=self.RECHECK)
        if health.state is CircuitState.OPEN and health.next_probe_at is not None:
            return max(health.next_probe_at, now)
        if health.probe_until is not None:
            return min(health.probe_until, soon)
        return soon

    async def settle(self, admission: Admission, verdict: Verdict) -> None:
        """Account for the attempt's verdict. Called after its outcome is stored."""
        entry = self._entries.get(admission.key)
        if entry is None:
            return  # cannot happen while IDLE outlasts any delivery
        now = utcnow()
        if verdict is Verdict.SUCCESS:
            if admission.decision is Decision.PASS and entry.health.clean:
                entry.success_at = now  # written by run(), with the others
                return
            await self._write(entry, now, lambda h: circuit.on_success(h, now))
        elif verdict is Verdict.RETRY:
            after = await self._write(entry, now, lambda h: circuit.on_failure(
                h, now, threshold=self.threshold, cooldown=self.cooldown))  # fmt: skip
            await self._check_failing(entry, after, now)
        else:
            # Another 4xx (or a refused destination): neither a count nor a reset for the
            # circuit, and no verdict of a probe; but a trigger whose deliveries all end
            # so is failing as surely as one whose endpoint is down.
            if admission.decision is Decision.PROBE:
                await self.release(admission)
            after = await self._write(entry, now, lambda h: circuit.on_refusal(h, now))
            await self._check_failing(entry, after, now)

    async def release(self, admission: Admission) -> None:
        if admission.decision is not Decision.PROBE or admission.until is None:
            return
        until = admission.until
        await retry_transient(lambda: endpoints.release_probe(self.db, admission.key, until),
                              "releasing a probe")  # fmt: skip
        entry = self._entries.get(admission.key)
        if entry is not None:
            entry.health = circuit.released(entry.health)
            entry.changes += 1

    async def _write(self, entry: _Entry, now: datetime,
                     change: Callable[[Health], Health]) -> Health:  # fmt: skip
        before, after = await retry_transient(
            lambda: endpoints.transition(self.db, entry.key, entry.url, now, change),
            "recording endpoint health",
        )
        self._apply(entry, before, after)
        return after

    def _apply(self, entry: _Entry, before: Health, after: Health) -> None:
        entry.health = after
        entry.changes += 1
        if before.state is after.state:
            return
        self.metrics.circuit_transitions.labels(to=after.state.value).inc()
        if after.state is CircuitState.OPEN:
            log.warning(
                "circuit of %s open after %d consecutive failures; next probe at %s",
                redact_url(entry.url), after.consecutive_failures, to_iso(after.next_probe_at),
                extra={"endpoint": redact_url(entry.url), "cooldown_seconds": after.cooldown},
            )  # fmt: skip
        elif after.state is CircuitState.CLOSED:
            log.info("circuit of %s closed: deliveries resume", redact_url(entry.url),
                     extra={"endpoint": redact_url(entry.url)})  # fmt: skip

    async def _check_failing(self, entry: _Entry, health: Health, now: datetime) -> None:
        if self.on_failing is None or self.disable_after <= 0 or health.failing_since is None:
            return
        if health.failing_since > now - timedelta(seconds=self.disable_after):
            return
        clock = time.monotonic()
        if clock - entry.failing_checked < min(self.CHECK_EVERY, self.disable_after):
            return
        entry.failing_checked = clock
        await self.on_failing(entry.key, entry.url, health.failing_since)

    # --- the cache -----------------------------------------------------------------

    def _key(self, url: str) -> tuple[str, str]:
        known = self._keys.get(url)
        if known is None:
            if len(self._keys) >= self.MAX_KEYS:
                self._keys.clear()
            known = self._keys[url] = (circuit.endpoint_key(url), circuit.endpoint_url(url))
        return known

    async def _first_sight(self, url: str) -> _Entry:
        """Load the endpoint's health, creating its row when it is new (an endpoint is
        listed from its first attempt)."""
        key, endpoint = self._key(url)
        health = await retry_transient(lambda: self._loads.submit(key), "loading a circuit")
        if health is None:
            await retry_transient(lambda: endpoints.ensure(self.db, key, endpoint, utcnow()),
                                  "recording an endpoint")  # fmt: skip
            health = Health()
        entry = self._entries.get(key)  # another delivery may have got here first
        if entry is None:
            entry = self._entries[key] = _Entry(key, endpoint, health, time.monotonic())
        return entry

    async def _load(self, keys: list[str]) -> list[Health | None]:
        found = await endpoints.load_many(self.db, list(dict.fromkeys(keys)))
        return [found.get(key) for key in keys]

    async def run(self) -> None:
        """Keep the cache fresh and write healthy endpoints' successes, until cancelled.
        A database outage is ridden out (the cache keeps its last view)."""
        backoff = Backoff(base=self.REFRESH, cap=10.0)
        while True:
            try:
                await self.refresh_once()
                backoff.reset()
                pause = self.REFRESH
            except Exception as exc:
                pause = backoff.next()
                if not is_transient(exc):
                    log.exception("endpoint health refresh failed; retry in %.1fs", pause)
                elif backoff.failures == 1:
                    log.warning("endpoint health refresh: database unavailable (%s)", exc)
            await asyncio.sleep(pause)

    async def refresh_once(self) -> None:
        clock = time.monotonic()
        for key in [k for k, e in self._entries.items() if clock - e.used > self.IDLE]:
            del self._entries[key]
        successes = [(e, e.success_at) for e in self._entries.values() if e.success_at]
        if successes:
            await endpoints.touch_successes(self.db, [(e.key, at) for e, at in successes if at])
            for entry, at in successes:
                if entry.success_at == at:
                    entry.success_at = None
        keys = list(self._entries)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            seen = {key: self._entries[key].changes for key in chunk if key in self._entries}
            found = await endpoints.load_many(self.db, chunk)
            for key, health in found.items():
                cached = self._entries.get(key)
                if cached is not None and cached.changes == seen.get(key):
                    cached.health = health
