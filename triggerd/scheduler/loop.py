"""The scheduler role: every occurrence fired once, on time, across restarts and instances.

How it fits together (a reader's map of triggerd/scheduler/):

- reconcile.py `Window` — a WakeHeap (heap.py) of what is due soon, re-read from
  MySQL every `scheduler_reconcile_interval` and on a wake-up from the API;
- loop.py (this module) — the planner: sleeps until the earliest entry is due minus the
  claim-ahead, then claims every due row in batches with a lease (store/schedules.py);
- claims.py — trigger configs for the claimed rows (cached by version) and the misfire
  policies after downtime (domain/misfire.py);
- dispatch.py — publishes each claim at its due time and records the outcome (completed +
  event + next occurrence, or back to pending with a backoff).

Several scheduler processes may share one database: SKIP LOCKED hands each row to one of
them, every write after the claim checks the lease is still ours, UNIQUE(trigger_id,
fire_at) makes two inserts of the same next occurrence one row, and event rows are keyed
by an id derived from the occurrence (an existing id is kept), so a re-claim cannot make
a second.

Faults: the database or Kafka being down is ridden out with backoff (a failed publish
goes back to pending with attempt_count+1 and a retry time; nothing is dropped). A
process that dies holding claims leaves leases that expire; another scheduler (or this
one, restarted) claims those rows then. On cancellation the role stops claiming, lets
in-flight publishes finish, hands back what it never published, records the rest, and
re-raises — all of it shielded and bounded by `shutdown_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from triggerd.domain.backoff import Backoff
from triggerd.domain.timeutil import utcnow
from triggerd.scheduler.claims import TriggerCache, plan
from triggerd.scheduler.dispatch import YIELD_EVERY, Dispatcher
from triggerd.scheduler.reconcile import Window
from triggerd.services import Services
from triggerd.store import schedule_outcomes, schedules
from triggerd.store.db import is_transient
from triggerd.store.schedule_outcomes import Skipped
from triggerd.store.schedule_rows import CHECK_AHEAD
from triggerd.store.triggers import DEACTIVATED

log = logging.getLogger(__name__)

MAX_CLAIM_AHEAD = 2.0  # seconds: claims run this far ahead, so due time costs one publish
# A crowded second (100,000 one-time triggers due together) is claimed up to this long
# before it is due, so that due time costs only the sends: claiming runs at ~6,000 rows/s
# here, recording at ~4,000/s, publishing at ~80,000/s.
MAX_LEAD = 30.0
REFRESH_EVERY = 1.0  # seconds between lease refreshes while a long claim runs
WAKE_DEBOUNCE = 0.1  # seconds between reloads caused by API wake-ups
FULL_RECHECK = 0.05  # seconds between looks while the dispatcher holds its maximum
INITIAL_CLAIM_RATE = 5000.0  # rows/s, until measured
BUS_START_WAIT = 10.0  # seconds the first claim waits for Kafka at start-up
# Rows due at least this long before the role started were missed while it was down.
STARTUP_MARGIN = timedelta(seconds=1)
# Claims are re-read CHECK_AHEAD before due (store/schedule_rows.py): a trigger deleted
# or deactivated after its occurrence was claimed is then not fired; after that moment,
# the API waits for the occurrence to fire and be recorded before it answers.
# One look covers every claim due within CHECK_AHEAD and waits until the earliest is
# CHECK_AHEAD - CHECK_SPAN away: with occurrences due every few ms, a look per claim made
# hundreds of queries a second (a tenth of the process's CPU at 100,000 triggers).
CHECK_SPAN = timedelta(milliseconds=200)


class SchedulerRole:
    name = "scheduler"

    def __init__(self, services: Services) -> None:
        self.services = services
        settings = services.settings
        self.lease = timedelta(seconds=settings.scheduler_lease)
        self.claim_ahead = timedelta(seconds=min(MAX_CLAIM_AHEAD, settings.scheduler_lease / 4))
        # A publish needs this much lease left; a refresh happens at half the lease.
        self.lease_margin = min(self.lease / 4, timedelta(seconds=5))
        # The downtime rule (claims.py) applies to rows nobody attempted that were due
        # before this role started (missed while no scheduler ran), or that stayed
        # pending this long past due while it ran and reached the database (a row due
        # during a database outage fires as itself: nothing lost across a
        # database restart). A dead holder's rows are taken over as they are unless
        # older than this grace: it may have published them already.
        self.grace = 2 * self.lease
        self.started = utcnow()
        self.db_reached = self.started  # when the last turn that reached the database began
        # Claims in memory at most, claimed and not yet recorded (~1.1 KB each), and at
        # least a few batches' worth.
        self.max_held = max(4 * settings.scheduler_batch_size, settings.scheduler_max_held)
        # A crowded second starts claiming earlier, by up to this, at the claim rate
        # measured here (rows/s, a moving average). Claims taken ahead hold their lease
        # from the time they are claimed for (see _claim_batch), not from now.
        self.max_lead = min(MAX_LEAD, settings.scheduler_lookahead)
        self.claim_rate = INITIAL_CLAIM_RATE
        self.cache = TriggerCache()
        self._claiming: asyncio.Task[list[schedules.ClaimedRow]] | None = None
        self._limbo: list[int] = []  # claimed, not yet handed to the dispatcher
        self._refreshed = 0.0  # monotonic time of the last lease refresh

    async def run(self, ready: Callable[[], None]) -> None:
        window = Window(self.services.settings, self.claim_ahead.total_seconds(), self.max_lead)
        dispatcher = Dispatcher(self.services, window, self.lease_margin)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._plan_forever(window, dispatcher, ready),
                                  name="scheduler:plan")  # fmt: skip
                group.create_task(dispatcher.publish_forever(), name="scheduler:publish")
                group.create_task(dispatcher.record_forever(), name="scheduler:record")
        finally:
            await asyncio.shield(self._wind_down(dispatcher))

    # ---------------------------------------------------------------- planner

    async def _plan_forever(
        self, window: Window, dispatcher: Dispatcher, ready: Callable[[], None]
    ) -> None:
        services, settings = self.services, self.services.settings
        backoff = Backoff(base=0.5, cap=10.0)
        next_reload, last_reload, serving = 0.0, float("-inf"), False
        self.started = self.db_reached = utcnow()
        # Claims made before the producer is up would only fail; give it a moment.
        await services.bus.wait_connected(BUS_START_WAIT)
        taken_over = False
        while True:
            turn_began = utcnow()
            try:
                now = time.monotonic()
                woken = services.wakeup.is_set() and now - last_reload >= WAKE_DEBOUNCE
                if not taken_over:
                    await self._take_over_own_leases()
                    taken_over = True
                if now >= next_reload or woken:
                    services.wakeup.clear()
                    await window.reload(services.db, utcnow(), self.claim_rate)
                    last_reload = time.monotonic()
                    next_reload = last_reload + settings.scheduler_reconcile_interval
                    await self._refresh_leases(dispatcher)
                    if not serving:
                        ready()
                        serving = True
                await self._claim_due(window, dispatcher)
                await self._check_ownership(dispatcher)
                backoff.reset()
                self.db_reached = turn_began
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = backoff.next()
                log.warning("scheduler: database unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            await self._sleep(window, dispatcher, next_reload, last_reload)

    async def _sleep(
        self, window: Window, dispatcher: Dispatcher, next_reload: float, last_reload: float
    ) -> None:
        """Until the earliest entry minus the claim-ahead, the next reload, a wake-up from
        the API, or a hint earlier than what this sleep was for."""
        wakeup = self.services.wakeup
        window.nudged.clear()
        timeout = next_reload - time.monotonic()
        if dispatcher.held >= self.max_held:
            timeout = min(timeout, FULL_RECHECK)
        elif (due := window.next_due()) is not None:
            timeout = min(timeout, (due - self.claim_ahead - utcnow()).total_seconds())
        if (unchecked := dispatcher.next_unchecked()) is not None:
            check_at = unchecked - CHECK_AHEAD + CHECK_SPAN
            timeout = min(timeout, (check_at - utcnow()).total_seconds())
        if wakeup.is_set():  # debounce: reload at most every WAKE_DEBOUNCE
            timeout = min(timeout, last_reload + WAKE_DEBOUNCE - time.monotonic())
            if timeout > 0:
                await asyncio.sleep(timeout)
            return
        if timeout > 0:
            waits = [asyncio.ensure_future(wakeup.wait()),
                     asyncio.ensure_future(window.nudged.wait())]  # fmt: skip
            try:
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()

    async def _claim_due(self, window: Window, dispatcher: Dispatcher) -> None:
        while True:
            now = utcnow()
            due = window.next_due()
            if due is None or due > now + self.claim_ahead:
                return
            reach = window.take_due(now + self.claim_ahead)
            while True:
                if dispatcher.held >= self.max_held:
                    window.hint(utcnow(), reach)  # come back for the rest
                    return
                now = utcnow()
                if not await self._claim_batch(dispatcher, now, max(reach, now + self.claim_ahead)):
                    break  # a batch that was not full: nothing more due by then
                # Claiming a crowded second's rows ahead takes many batches (seconds):
                # meanwhile, what the planner's turn does between claims still happens —
                # the last look before due, and leases kept (a published claim waiting
                # to be recorded must not run out and be claimed again).
                await self._check_ownership(dispatcher)
                if time.monotonic() >= self._refreshed + REFRESH_EVERY:
                    await self._refresh_leases(dispatcher)

    async def _claim_batch(self, dispatcher: Dispatcher, now: datetime, until: datetime) -> bool:
        """Claim one batch of rows due by `until`; True when it was full (more may be due)."""
        services, settings = self.services, self.services.settings
        started = time.monotonic()
        # The lease runs from when the rows are due (at the latest), not from now: rows
        # claimed seconds ahead of a crowded second would otherwise need their leases
        # refreshed before they are even due. A holder that dies leaves them claimable
        # `lease` after that time, as it would rows claimed just before.
        lease_until = max(now, until) + self.lease
        claiming = asyncio.ensure_future(schedules.claim_due(
            services.db, instance=settings.instance_id, now=now, until=until,
            lease_until=lease_until, limit=settings.scheduler_batch_size,
            stale_before=max(self._late_before(now), self.started - STARTUP_MARGIN),
            reclaim_stale_before=self._late_before(now),
            started_before=self.started - STARTUP_MARGIN,
        ))  # fmt: skip
        self._claiming = claiming
        # Shielded: if we are cancelled mid-claim, _wind_down waits for it and releases.
        rows = await asyncio.shield(claiming)
        self._claiming = None
        if not rows:
            return False
        self._limbo = [row.id for row in rows]
        specs = await self.cache.resolve(services.db, (row.trigger_id for row in rows))
        firing: set[tuple[str, datetime]] = set()
        drop: list[int] = []
        inactive: set[int] = set()
        skipped: list[Skipped] = []
        missed: Counter[str] = Counter()
        caught_up = 0
        for start in range(0, len(rows), YIELD_EVERY):  # slices: the loop has jobs to send
            planned = plan(rows[start : start + YIELD_EVERY], specs, now=utcnow(),
                           lease_until=lease_until, firing=firing,
                           started=self.started - STARTUP_MARGIN)  # fmt: skip
            for claim in planned.claims:  # just claimed: ours, no need to look again
                claim.checked = claim.due - now <= CHECK_AHEAD
            dispatcher.add(planned.claims)  # the dispatcher answers for these from now on
            drop += planned.drop
            inactive.update(planned.inactive)
            skipped += planned.skipped
            self._limbo = ([row.id for row in rows[start + YIELD_EVERY :]] + drop
                           + [s.schedule_id for s in skipped])  # fmt: skip
            missed += planned.missed
            caught_up += planned.caught_up
            await asyncio.sleep(0)
        if len(rows) >= min(settings.scheduler_batch_size, 200):  # small ones are all latency
            rate = len(rows) / max(time.monotonic() - started, 1e-3)
            self.claim_rate = max(100.0, 0.8 * self.claim_rate + 0.2 * rate)
        for policy, count in missed.items():
            services.metrics.missed.labels(policy=policy).inc(count)
        if missed or skipped:
            log.info("downtime: %d occurrence(s) fire after it, %d trigger(s) skip theirs;"
                     " %d missed", caught_up, len(skipped), missed.total())  # fmt: skip
        if skipped:  # misfire policy `skip`: record the missed ones, resume the schedule
            await self._record_skipped(dispatcher.window, skipped)
        if drop:  # trigger deleted or inactive: its rows do not fire
            # Said as the API says it: an occurrence the API's own cancel missed (the
            # scheduler claimed it first) must not show a cancellation without a reason.
            for ids, note in (([i for i in drop if i in inactive], DEACTIVATED),
                              ([i for i in drop if i not in inactive], None)):
                await schedules.release(services.db, ids, instance=settings.instance_id,
                                        now=utcnow(), status="cancelled", note=note)  # fmt: skip
        self._limbo = []
        return len(rows) >= settings.scheduler_batch_size

    async def _record_skipped(self, window: Window, skipped: list[Skipped]) -> None:
        owned = await schedule_outcomes.record_skipped(
            self.services.db, instance=self.services.settings.instance_id, now=utcnow(),
            skipped=skipped,
        )  # fmt: skip
        for item in skipped:
            if item.schedule_id in owned and item.resume is not None:
                window.hint(item.resume.fire_at)

    def _late_before(self, now: datetime) -> datetime:
        """Rows due before this were pending past the grace while this scheduler ran and
        reached the database: time without the database does not count."""
        return min(now, self.db_reached) - self.grace

    async def _take_over_own_leases(self) -> None:
        instance = self.services.settings.instance_id
        count = await schedules.expire_own_leases(self.services.db, instance=instance,
                                                  now=utcnow())  # fmt: skip
        if count:
            log.info("taking over %d occurrence(s) claimed by an earlier process named %s",
                     count, instance)  # fmt: skip

    async def _check_ownership(self, dispatcher: Dispatcher) -> None:
        now = utcnow()
        soon = dispatcher.unchecked(due_by=now + CHECK_AHEAD)
        if soon:
            owned = await schedules.still_ours(
                self.services.db, [c.schedule_id for c in soon],
                instance=self.services.settings.instance_id, now=now,
            )  # fmt: skip
            dispatcher.renewed(soon, owned)

    async def _refresh_leases(self, dispatcher: Dispatcher) -> None:
        self._refreshed = time.monotonic()
        now = utcnow()
        aging = [c for c in dispatcher.leased() if c.lease_until - now < self.lease / 2]
        if not aging:
            return
        lease_until = now + self.lease
        owned = await schedules.refresh_leases(
            self.services.db, [c.schedule_id for c in aging],
            instance=self.services.settings.instance_id, now=now, lease_until=lease_until,
        )  # fmt: skip
        dispatcher.renewed(aging, owned, lease_until)

    # --------------------------------------------------------------- shutdown

    async def _wind_down(self, dispatcher: Dispatcher) -> None:
        limbo = list(self._limbo)
        try:
            async with asyncio.timeout(self.services.settings.shutdown_timeout):
                if self._claiming is not None:
                    with contextlib.suppress(Exception):
                        limbo += [row.id for row in await self._claiming]
                await dispatcher.drain(release_also=limbo)
        except Exception as exc:
            log.warning("scheduler: could not hand back every claim on shutdown (%s: %s); "
                        "their leases expire within %s", type(exc).__name__, exc, self.lease)
        finally:
            self._claiming, self._limbo = None, []


__all__ = ["SchedulerRole"]
