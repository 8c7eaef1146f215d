"""From claimed rows to occurrences ready to publish: trigger configs and the downtime rule.

Trigger configs are cached by `version` (bumped by every update of a trigger), so a claim
batch costs one small `id, version, status` query plus a full read of only the triggers
that are new or changed.

Downtime: a row nobody attempted (attempt_count 0) that was pending longer than the
grace after it became due was missed while no scheduler ran. The trigger's misfire
policy (domain/misfire.py) decides what fires of its missed occurrences: the most recent
(`latest`), none (`skip`), or each inside the catch-up window (`all`), flagged with its
own scheduled_for; the others are recorded `missed` and counted in
`triggerd_missed_occurrences_total{policy}`. Under `all` the claim fires the oldest
occurrence of the window, and its successor, already due, is inserted marked as a
catch-up, which fires in turn. Rows that were attempted (a Kafka outage) or that were
inserted late (the successor of an occurrence that was published late) are not missed:
they fire, one by one, so a Kafka outage loses nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from triggerd.domain.enums import MisfirePolicy, Source
from triggerd.domain.jobs import Headers, Job, trace_header
from triggerd.domain.misfire import CATCH_UP_NOTE, recover
from triggerd.domain.models import SCHEDULED_TYPES, occurrence_event_id
from triggerd.domain.occurrences import Due, next_due
from triggerd.domain.timeutil import to_iso
from triggerd.domain.timing import next_occurrence
from triggerd.domain.tracecontext import new_traceparent
from triggerd.store import schedules
from triggerd.store.db import Database
from triggerd.store.event_rows import EventRecord, delivery_snapshot
from triggerd.store.schedule_outcomes import Fired, MissedRows, Skipped
from triggerd.store.schedules import ClaimedRow

log = logging.getLogger(__name__)

SOURCE = Source.SCHEDULER
_UNSCHEDULABLE = "unschedulable"  # the status TriggerCache serves for a broken schedule

# Jobs are encoded when claimed, with this stand-in for fired_at; at due time the real
# publish time is spliced in (fired_at is the last field Job.encode writes but one).
_UNFIRED = datetime(1970, 1, 1, tzinfo=UTC)
_UNFIRED_FIELD = b'"fired_at":"' + (to_iso(_UNFIRED) or "").encode() + b'"'


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """A trigger at one version: what a claim needs. The config stays JSON until then."""

    id: str
    name: str
    type: str
    status: str
    version: int
    config_json: str

    @property
    def fires(self) -> bool:
        return self.status == "active" and self.type in SCHEDULED_TYPES

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = orjson.loads(self.config_json)
        return config


class TriggerCache:
    """Trigger specs by id, refreshed when a trigger's version or status moved.

    Entries are the plain row tuples (str and int only), which CPython stops tracking for
    garbage collection: a full collection then does not walk 100,000 cached triggers
    (with an object per trigger it took ~65 ms, several times a minute).

    A trigger whose stored schedule cannot be computed is served as not active. The API
    validates every schedule, so such a row was written some other way (by hand, a
    restore, a library that reads an expression differently); it must not crash every
    scheduler (the role would crash-loop, and no trigger would fire). Its occurrences
    are dropped, it is logged once per version, and a PUT of a valid config schedules it
    again."""

    def __init__(self, max_entries: int = 250_000) -> None:
        self.max_entries = max_entries
        self._rows: dict[str, schedules.SpecRow] = {}
        self._unschedulable: dict[str, int] = {}  # trigger id -> the version that failed

    def __len__(self) -> int:
        return len(self._rows)

    async def resolve(self, db: Database, ids: Iterable[str]) -> dict[str, TriggerSpec]:
        """The current spec of each trigger that still exists."""
        wanted = list(dict.fromkeys(ids))
        versions = await schedules.trigger_versions(db, wanted)
        stale = []
        for trigger_id, (version, status) in versions.items():
            row = self._rows.get(trigger_id)
            if row is None or row[4] != version or row[3] != status:
                stale.append(trigger_id)
        for row in await schedules.trigger_specs(db, stale):
            if len(self._rows) >= self.max_entries:
                oldest = next(iter(self._rows))  # the oldest insertion
                del self._rows[oldest]
                self._unschedulable.pop(oldest, None)
            self._rows[row[0]] = row
            self._check(row)
        return {i: self._spec(i) for i in versions if i in self._rows}

    def _check(self, row: schedules.SpecRow) -> None:
        trigger_id, _name, kind, status, version, config_json = row
        self._unschedulable.pop(trigger_id, None)
        if status != "active" or kind not in SCHEDULED_TYPES:
            return
        try:
            next_occurrence(kind, orjson.loads(config_json), datetime.now(UTC))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._unschedulable[trigger_id] = version
            log.error("trigger %s (version %d): its stored schedule cannot be computed (%s);"
                      " it does not fire until a valid config is PUT", trigger_id, version,
                      str(exc) or type(exc).__name__, extra={"trigger_id": trigger_id})  # fmt: skip

    def _spec(self, trigger_id: str) -> TriggerSpec:
        row = self._rows[trigger_id]
        if self._unschedulable.get(trigger_id) == row[4]:
            return TriggerSpec(*row[:3], _UNSCHEDULABLE, *row[4:])
        return TriggerSpec(*row)


@dataclass(slots=True)
class Claim:
    """An occurrence we hold a lease on, until it is published and recorded.

    Thousands are held at once (claimed seconds ahead), so a claim is one object whose
    fields are strings, numbers, datetimes and bytes: the trigger's config stays JSON
    text, parsed when the job is encoded and again when the event is written. With the
    config dicts and a TriggerSpec per claim, every full garbage collection walked four
    times the objects, and collections came more often."""

    schedule_id: int
    trigger_id: str
    trigger_name: str
    trigger_type: str
    config_json: str
    # What fires: the claimed row's occurrence, or after downtime a later one. Two
    # datetimes, not a Due: an object per claim would be one more for every collection.
    scheduled_for: datetime
    due: datetime  # when it is published: its fire_at (with jitter)
    attempt_count: int
    lease_until: datetime
    moved: bool = False  # `fire` is not the claimed row's occurrence (downtime)
    note: str | None = None  # the event's note ("fired after downtime…")
    catch_up: bool = False  # misfire policy `all`: a successor already due catches up too
    missed: MissedRows = ()  # occurrences the misfire policy passed over, to record
    checked: bool = False  # ownership re-read shortly before due (the API may cancel)
    event_id: str = field(init=False)
    # Every firing starts a trace of its own: minted with the claim, so due time costs
    # nothing more (a claim released and claimed again fires under a new one).
    traceparent: str = field(init=False, repr=False)
    _key: bytes = field(init=False, repr=False)
    _header: tuple[str, bytes] = field(init=False, repr=False)
    _encoded: tuple[bytes, bytes] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.event_id = occurrence_event_id(self.trigger_id, self.scheduled_for)
        self.traceparent = new_traceparent()
        # A tuple, not the headers list: untracked by the garbage collector (see above).
        self._header = trace_header(self.traceparent)
        job = self.job(_UNFIRED)
        self._key = job.key
        head, found, tail = job.encode().rpartition(_UNFIRED_FIELD)
        self._encoded = (head + b'"fired_at":"', b'"' + tail) if found else None

    @classmethod
    def of(cls, spec: TriggerSpec, **fields: Any) -> Claim:
        return cls(trigger_id=spec.id, trigger_name=spec.name, trigger_type=spec.type,
                   config_json=spec.config_json, **fields)  # fmt: skip

    @property
    def fire(self) -> Due:
        return Due(self.scheduled_for, self.due)

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = orjson.loads(self.config_json)
        return config

    def job(self, fired_at: datetime) -> Job:
        return Job(
            event_id=self.event_id, trigger_id=self.trigger_id, type=self.trigger_type,
            source=SOURCE, is_test_run=False, payload=self.config.get("payload", {}),
            scheduled_for=self.scheduled_for, fired_at=fired_at, attempt=1,
            traceparent=self.traceparent,
        )  # fmt: skip

    def record(self, fired_at: datetime, fired_iso: bytes) -> tuple[bytes, bytes, Headers]:
        """(key, value, headers) of the job fired at `fired_at` (`fired_iso` is its
        to_iso): the encoding prepared at claim time, so due time costs only the send."""
        if self._encoded is None:
            return self._key, self.job(fired_at).encode(), [self._header]
        head, tail = self._encoded
        return self._key, head + fired_iso + tail, [self._header]

    def fired(self, fired_at: datetime, published_at: datetime | None,
              error: str | None = None) -> Fired:  # fmt: skip
        """The outcome of a publish: acknowledged at `published_at`, or never to be
        published (`error`: why; its event ends failed)."""
        config = self.config
        event = EventRecord(
            id=self.event_id, trigger_id=self.trigger_id, trigger_name=self.trigger_name,
            trigger_type=self.trigger_type, source=SOURCE, is_test_run=False,
            payload=config.get("payload", {}), delivery=delivery_snapshot(config),
            fired_at=fired_at, scheduled_for=self.scheduled_for, note=self.note,
            publish_at=None, published_at=published_at, traceparent=self.traceparent,
        )  # fmt: skip
        # After the occurrence that fired, not after now: occurrences due during a Kafka
        # outage or a restart still fire (the misfire policy stops a burst).
        following = next_due(self.trigger_id, self.trigger_type, config, self.scheduled_for)
        catching_up = self.catch_up and following is not None and following.fire_at <= fired_at
        return Fired(
            schedule_id=self.schedule_id, trigger_id=self.trigger_id, moved=self.moved,
            fired=self.fire, event=event, next=following,
            next_note=CATCH_UP_NOTE if catching_up else None, missed=self.missed, error=error,
        )  # fmt: skip


@dataclass
class Plan:
    claims: list[Claim]
    drop: list[int]  # rows to cancel: trigger gone/inactive, or a duplicate catch-up
    missed: Counter[str]  # occurrences passed over, by misfire policy
    skipped: list[Skipped] = field(default_factory=list)  # policy `skip`: nothing fires
    inactive: list[int] = field(default_factory=list)  # of `drop`: the trigger's inactive

    @property
    def caught_up(self) -> int:
        return sum(1 for claim in self.claims if claim.note is not None)


def plan(
    rows: Sequence[ClaimedRow], specs: Mapping[str, TriggerSpec], *, now: datetime,
    lease_until: datetime, firing: set[tuple[str, datetime]] | None = None,
    started: datetime | None = None,
) -> Plan:  # fmt: skip
    """Turn claimed rows into claims, applying the misfire policy to rows missed during
    downtime (`row.stale`: pending past the grace). `firing` collects the (trigger,
    scheduled_for) already planned, across calls for slices of one claim. `started`:
    when this scheduler started; a `row.late` one's downtime ends there (what fell due
    since is late, not missed: it fires as itself)."""
    result = Plan([], [], Counter())
    firing = set() if firing is None else firing
    for row in rows:
        spec = specs.get(row.trigger_id)
        if spec is None or not spec.fires:
            result.drop.append(row.id)
            if spec is not None:
                result.inactive.append(row.id)
            continue
        fire = Due(row.scheduled_for, row.fire_at)
        note, catch_up = None, False
        missed: MissedRows = ()
        policy = MisfirePolicy.LATEST
        if row.attempt_count == 0 and row.stale:
            until = min(now, started) if row.late and started is not None else now
            recovery = recover(spec.id, spec.type, spec.config(), fire, until)
            policy = recovery.policy
            result.missed[policy] += recovery.missed_total
            missed = tuple(zip(recovery.missed, recovery.missed_notes(), strict=True))
            if recovery.fire is None:
                result.skipped.append(Skipped(row.id, spec.id, missed, recovery.resume))
                continue
            fire, note = recovery.fire, recovery.fired_note()
            catch_up = policy is MisfirePolicy.ALL
        elif row.note == CATCH_UP_NOTE:
            note, catch_up = CATCH_UP_NOTE, True
        if (spec.id, fire.scheduled_for) in firing:  # two missed rows collapsed onto one
            result.drop.append(row.id)
            result.missed[policy] += 1
            continue
        firing.add((spec.id, fire.scheduled_for))
        result.claims.append(Claim.of(
            spec, schedule_id=row.id, scheduled_for=fire.scheduled_for, due=fire.fire_at,
            attempt_count=row.attempt_count,
            lease_until=lease_until, moved=fire.scheduled_for != row.scheduled_for,
            note=note, catch_up=catch_up, missed=missed,
        ))  # fmt: skip
    return result


__all__ = ["Claim", "Plan", "TriggerCache", "TriggerSpec", "plan"]
