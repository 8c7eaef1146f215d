"""Holding claimed occurrences until due, publishing them, recording what happened.

Three stages, so none waits on another's round trips:

- the planner (loop.py) claims rows a little ahead of their due time and `add()`s them;
- `publish_forever` sleeps until the earliest is due, then sends everything due at once
  (jobs were encoded at claim time; several batches may await their acks at once, so an
  ack never delays the next due occurrence; a crowded instant's claims beyond the first
  CROWD go a few hundred per turn after what else is due, so a burst delays no other
  occurrence). It never publishes on a lease that is about
  to run out (APScheduler #1116): such a claim is dropped and its row is claimed again
  once the lease expired;
- `record_forever` writes the outcomes of the batches that finished, up to RECORD_BATCH
  per transaction: completed + event rows + next occurrences, or back to pending with a
  backoff after a failed publish. It retries through a database outage. A job Kafka can
  never take (JobTooLarge) is not retried: the occurrence completes and its event is
  written `failed` with the reason.

The CPU work around the sends (event rows, next occurrences, escaping SQL) is cut in
slices of YIELD_EVERY items with a yield between, so it never holds the loop for long
while occurrences fall due.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiokafka.structs import RecordMetadata

from triggerd.bus.producer import JobTooLarge
from triggerd.domain.backoff import Backoff, backoff_delay
from triggerd.domain.timeutil import to_iso, utcnow
from triggerd.scheduler.claims import Claim
from triggerd.scheduler.reconcile import Window
from triggerd.services import Services
from triggerd.store import schedules
from triggerd.store.db import is_transient
from triggerd.store.schedule_outcomes import Failed, Fired, record_outcomes
from triggerd.tracing import Kind, Tracer

log = logging.getLogger(__name__)

PUBLISH_BATCH = 2000  # jobs per publish_many
# An instant (a millisecond) with more claims due than this is crowded (a burst of
# one-time triggers): its claims beyond the first CROWD wait in a heap of their own, and
# every publish turn sends what else is due first, so a burst never delays the other
# occurrences. Its own jobs go out CROWD_BATCH per turn, with at most CROWD_IN_FLIGHT
# awaiting acks (the rest of MAX_IN_FLIGHT stays free for the others).
CROWD = 1000
CROWD_BATCH = 500
CROWD_IN_FLIGHT = 15_000
CROWD_POLL = 0.01  # seconds: the longest a due claim can wait behind a crowd's acks
FORGET_AFTER = 60  # seconds: the counts by instant are kept about this long
# Jobs sent and awaiting their acks, at most (a burst waits beyond that). A count of
# jobs, not of sends: at 100,000 triggers occurrences fall due every millisecond or two,
# one or two per send, and a limit of 8 sends made a whole second's cron occurrences
# wait for a slot whenever the broker took a few ms longer to ack (p99 up to 140 ms).
MAX_IN_FLIGHT = 20_000
RECORD_BATCH = 1000  # outcomes per recording transaction
RETRY_BASE, RETRY_CAP = 0.5, 5.0  # publish retry backoff (seconds)
YIELD_EVERY = 100  # items of CPU work between yields to the loop, which has jobs to send


@dataclass
class Outcome:
    """What one publish_many did: the claims Kafka acknowledged, and the failures."""

    fired_at: datetime
    acked: datetime
    published: list[Claim] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    too_large: list[tuple[Claim, str]] = field(default_factory=list)  # never: the reason

    def __len__(self) -> int:
        return len(self.published) + len(self.failed) + len(self.too_large)


class Dispatcher:
    def __init__(self, services: Services, window: Window, lease_margin: timedelta) -> None:
        self.services = services
        self.window = window
        self.lease_margin = lease_margin
        self.instance = services.settings.instance_id
        self._due: list[tuple[datetime, int, int]] = []  # (due, seq, schedule_id)
        self._crowd: list[tuple[datetime, int, int]] = []  # the same, of crowded instants
        self._forget_at = datetime.now(UTC)
        self._per_instant: Counter[int] = Counter()  # claims added, by due millisecond
        self._seq = itertools.count()
        self._waiting: dict[int, Claim] = {}  # claimed, not yet published
        # The unchecked among them by due time: the planner asks for the earliest ones on
        # every turn, and a scan of thousands of held claims each time cost ~10% of a core.
        self._unchecked: list[tuple[datetime, int, int]] = []  # (due, seq, schedule_id)
        self._unrecorded: dict[int, Claim] = {}  # published (or failed), not yet recorded
        self._arrived = asyncio.Event()
        self._outcomes: list[Outcome] = []
        self._outcome_ready = asyncio.Event()
        self._publishing: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._room = asyncio.Event()  # set while _in_flight is below MAX_IN_FLIGHT
        self._room.set()
        self._settled = asyncio.Event()  # set whenever a batch's acks are in
        self._recording: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        return len(self._waiting) + len(self._unrecorded)

    def add(self, claims: Iterable[Claim]) -> None:
        for claim in claims:
            self._waiting[claim.schedule_id] = claim
            entry = (claim.due, next(self._seq), claim.schedule_id)
            instant = _ms(claim.due)
            self._per_instant[instant] += 1
            crowded = self._per_instant[instant] > CROWD
            heapq.heappush(self._crowd if crowded else self._due, entry)
            if not claim.checked:
                heapq.heappush(self._unchecked, entry)
        self._arrived.set()

    def leased(self) -> list[Claim]:
        return [*self._waiting.values(), *self._unrecorded.values()]

    def renewed(
        self, claims: Sequence[Claim], owned: set[int], lease_until: datetime | None = None
    ) -> None:
        """After a lease refresh or an ownership check: note (and extend) ours; forget
        unpublished ones that are not ours any more (the API cancelled them), so they are
        never published."""
        for claim in claims:
            if claim.schedule_id in owned:
                claim.checked = True
                if lease_until is not None:
                    claim.lease_until = lease_until
            elif self._waiting.pop(claim.schedule_id, None) is not None:
                log.info("occurrence %s no longer ours; not publishing it", claim.schedule_id)

    def unchecked(self, due_by: datetime) -> list[Claim]:
        """Unpublished claims not yet checked, due by `due_by`, earliest first."""
        found: dict[int, Claim] = {}
        keep: list[tuple[datetime, int, int]] = []
        while self._unchecked and self._unchecked[0][0] <= due_by:
            entry = heapq.heappop(self._unchecked)
            claim = self._unchecked_claim(entry)
            if claim is not None and entry[2] not in found:
                found[entry[2]] = claim
                keep.append(entry)  # stays until renewed() marks it checked or drops it
        for entry in keep:
            heapq.heappush(self._unchecked, entry)
        return list(found.values())

    def next_unchecked(self) -> datetime | None:
        """When the earliest unchecked claim is due."""
        while self._unchecked:
            if self._unchecked_claim(self._unchecked[0]) is not None:
                return self._unchecked[0][0]
            heapq.heappop(self._unchecked)  # checked, published or forgotten
        return None

    def _unchecked_claim(self, entry: tuple[datetime, int, int]) -> Claim | None:
        claim = self._waiting.get(entry[2])
        if claim is None or claim.checked or claim.due != entry[0]:
            return None
        return claim

    # ------------------------------------------------------------- publishing

    def _next_due(self) -> datetime | None:
        due, crowd = self._top(self._due), self._top(self._crowd)
        if due is None or crowd is None:
            return due or crowd
        return min(due, crowd)

    def _top(self, heap: list[tuple[datetime, int, int]]) -> datetime | None:
        while heap:
            due, _, schedule_id = heap[0]
            claim = self._waiting.get(schedule_id)
            if claim is not None and claim.due == due:
                return due
            heapq.heappop(heap)  # published, forgotten or re-added: a stale entry
        return None

    def _pop_due(self, now: datetime) -> list[Claim]:
        """What is due, the crowded seconds' claims after the others (see CROWD)."""
        batch = self._pop(self._due, now, PUBLISH_BATCH)
        room = min(CROWD_BATCH, PUBLISH_BATCH - len(batch), CROWD_IN_FLIGHT - self._in_flight)
        if room > 0:
            batch += self._pop(self._crowd, now, room)
        return batch

    def _pop(self, heap: list[tuple[datetime, int, int]], now: datetime, limit: int
             ) -> list[Claim]:  # fmt: skip
        batch: list[Claim] = []
        while len(batch) < limit and (due := self._top(heap)) is not None and due <= now:
            claim = self._waiting.pop(heapq.heappop(heap)[2])
            self._unrecorded[claim.schedule_id] = claim
            batch.append(claim)
        return batch

    def _forget_instants(self, before: datetime) -> None:
        """Drop the counts of instants long gone."""
        cutoff = _ms(before)
        for instant in [i for i in self._per_instant if i < cutoff]:
            del self._per_instant[instant]

    async def publish_forever(self) -> None:
        while True:
            self._arrived.clear()
            due = self._next_due()
            if due is None:
                await self._arrived.wait()
                continue
            delay = (due - datetime.now(UTC)).total_seconds()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._arrived.wait()
                continue
            if self._in_flight >= MAX_IN_FLIGHT:
                self._room.clear()
                await self._room.wait()
                continue
            now = datetime.now(UTC)
            if now >= self._forget_at:
                self._forget_instants(now - timedelta(seconds=FORGET_AFTER))
                self._forget_at = now + timedelta(seconds=FORGET_AFTER)
            batch = self._pop_due(now)
            if not batch:
                # Only crowded claims are due, and their share of the sends awaiting acks
                # is taken: wait for an ack, or for another claim to fall due.
                await self._wait_settled(now)
                continue
            # The sends happen here, right at due time; a task waits for the acks.
            fired_at, live = self._still_leased(batch)
            fired_iso = (to_iso(fired_at) or "").encode()
            try:
                sent = await self.services.bus.send_encoded(
                    [c.record(fired_at, fired_iso) for c in live]
                )
            except Exception as exc:  # whatever it was, these jobs are not on Kafka
                sent = [exc] * len(live)
            task = asyncio.create_task(self._settle(fired_at, live, sent),
                                       name="scheduler:publish-acks")  # fmt: skip
            self._publishing.add(task)
            self._in_flight += len(live)
            task.add_done_callback(functools.partial(self._published, jobs=len(live)))

    async def _wait_settled(self, now: datetime) -> None:
        timeout = CROWD_POLL
        if (due := self._top(self._due)) is not None:
            timeout = min(timeout, max(0.0, (due - now).total_seconds()))
        self._settled.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._settled.wait()

    def _published(self, task: asyncio.Task[None], jobs: int) -> None:
        self._publishing.discard(task)
        self._in_flight -= jobs
        self._settled.set()
        if self._in_flight < MAX_IN_FLIGHT:
            self._room.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("publishing a batch failed", exc_info=task.exception())

    def _still_leased(self, batch: list[Claim]) -> tuple[datetime, list[Claim]]:
        """The publish time, and the claims whose lease leaves the margin to publish."""
        fired_at = utcnow()
        live = [c for c in batch if c.lease_until - fired_at > self.lease_margin]
        if len(live) < len(batch):
            kept = {c.schedule_id for c in live}
            for claim in batch:
                if claim.schedule_id not in kept:
                    self._unrecorded.pop(claim.schedule_id, None)
            log.warning("%d occurrence(s) not published: lease about to expire; they will be"
                        " claimed again", len(batch) - len(live))  # fmt: skip
        return fired_at, live

    async def _settle(
        self, fired_at: datetime, live: list[Claim],
        sent: Sequence[asyncio.Future[RecordMetadata] | BaseException],
    ) -> None:  # fmt: skip
        metrics = self.services.metrics
        results = await self.services.bus.acked(sent)
        acked = datetime.now(UTC)
        # Only bookkeeping here: the jobs this task holds count toward MAX_IN_FLIGHT. The
        # event rows and next occurrences are worked out by the recorder.
        outcome = Outcome(fired_at, acked)
        fires: Counter[str] = Counter()
        for n, (claim, result) in enumerate(zip(live, results, strict=True), 1):
            if n % (10 * YIELD_EVERY) == 0:
                await asyncio.sleep(0)
            if isinstance(result, JobTooLarge):
                outcome.too_large.append((claim, result.reason))
                log.error("occurrence of trigger %s not fired: %s", claim.trigger_id,
                          result.reason, extra={"trigger_id": claim.trigger_id,
                                                "event_id": claim.event_id})  # fmt: skip
                continue
            if isinstance(result, BaseException):
                attempt = claim.attempt_count + 1
                retry_at = acked + timedelta(seconds=backoff_delay(attempt, RETRY_BASE, RETRY_CAP))
                failure = Failed(claim.schedule_id, claim.trigger_id, claim.attempt_count,
                                 retry_at, claim.moved, claim.fire, claim.missed)  # fmt: skip
                outcome.failed.append(failure)
                continue
            outcome.published.append(claim)
            fires[claim.trigger_type] += 1
            metrics.fire_delay.observe((acked - claim.due).total_seconds())  # due: with jitter
        for trigger_type, count in fires.items():
            metrics.fires.labels(type=trigger_type, source="scheduler").inc(count)
        if self.services.tracer.enabled:
            trace_firings(self.services.tracer, live, results, fired_at, acked,
                          self.services.bus.topic)  # fmt: skip
        if outcome.too_large:
            metrics.jobs_too_large.inc(len(outcome.too_large))
        if outcome.failed:
            metrics.publish_failures.inc(len(outcome.failed))
            log.warning("%d job(s) not published (%s); retrying with backoff",
                        len(outcome.failed), results[0] if results else "")  # fmt: skip
        if outcome:
            self._outcomes.append(outcome)
            self._outcome_ready.set()

    # -------------------------------------------------------------- recording

    async def record_forever(self) -> None:
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            while self._outcomes:
                task = asyncio.create_task(self._record_some(), name="scheduler:record")
                self._recording = task
                try:
                    # Shielded: a shutdown must not cut a commit in half; drain() waits.
                    await asyncio.shield(task)
                    backoff.reset()
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    delay = backoff.next()
                    log.warning("recording outcomes failed (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                finally:
                    if task.done():
                        self._recording = None

    async def _record_some(self) -> None:
        batch: list[Outcome] = []
        size = 0
        while self._outcomes and (not batch or size + len(self._outcomes[0]) <= RECORD_BATCH):
            batch.append(self._outcomes.pop(0))
            size += len(batch[-1])
        try:
            fired: list[Fired] = []
            for outcome in batch:
                for claim in outcome.published:
                    fired.append(claim.fired(outcome.fired_at, outcome.acked))
                    if len(fired) % YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # the loop has jobs to send
                fired += [claim.fired(outcome.fired_at, None, error=reason)
                          for claim, reason in outcome.too_large]  # fmt: skip
            failed = [f for outcome in batch for f in outcome.failed]
            ours = await record_outcomes(
                self.services.db, instance=self.instance, now=utcnow(), fired=fired,
                failed=failed,
            )  # fmt: skip
        except BaseException:
            self._outcomes[:0] = batch  # try again later
            raise
        for item in fired:
            self._unrecorded.pop(item.schedule_id, None)
            if item.schedule_id in ours and item.next is not None:
                self.window.hint(item.next.fire_at)
        for failure in failed:
            self._unrecorded.pop(failure.schedule_id, None)
            if failure.schedule_id in ours:
                self.window.hint(failure.retry_at)

    # --------------------------------------------------------------- shutdown

    async def drain(self, release_also: Sequence[int] = ()) -> None:
        """Finish what is in flight, hand back what was never published, record the
        rest. Called once the stages are stopped; the caller bounds it with a timeout."""
        if self._publishing:
            await asyncio.wait(set(self._publishing))
        unpublished = [*self._waiting, *release_also]
        self._waiting.clear()
        self._due.clear()
        self._crowd.clear()
        if unpublished:
            released = await schedules.release(
                self.services.db, unpublished, instance=self.instance, now=utcnow()
            )
            log.info("released %d claimed occurrence(s) on shutdown", released)
        if self._recording is not None:
            with contextlib.suppress(Exception):
                await self._recording
        while self._outcomes:
            await self._record_some()


def trace_firings(tracer: Tracer, claims: Sequence[Claim], results: Sequence[object],
                  fired_at: datetime, acked: datetime, topic: str) -> None:  # fmt: skip
    """The root span of each firing's trace: from its send to the broker's ack, under
    the traceparent its job and event carry."""
    start, end = _ns(fired_at), _ns(acked)
    for claim, result in zip(claims, results, strict=True):
        error = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else None
        delay = (acked - claim.due).total_seconds()  # due: fire_at, with jitter
        tracer.record(f"fire {claim.trigger_type}", Kind.PRODUCER, own=claim.traceparent,
                      start_ns=start, end_ns=end, error=error,
                      attributes={"messaging.system": "kafka",
                                  "messaging.destination.name": topic,
                                  "triggerd.trigger_id": claim.trigger_id,
                                  "triggerd.event_id": claim.event_id,
                                  "triggerd.scheduled_for": to_iso(claim.scheduled_for) or "",
                                  "triggerd.fire_at": to_iso(claim.due) or "",
                                  "triggerd.fire_delay_ms": round(delay * 1000, 3),
                                  "triggerd.after_downtime": claim.note is not None})  # fmt: skip


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000) * 1000


__all__ = ["Dispatcher", "Outcome", "trace_firings"]
