"""A schedule's occurrences, as everyone who needs them computes them: the scheduler
(the next occurrence after one fired), the API (a trigger's first occurrence, `upcoming`,
`preview`) and backfill. One module, so what the API shows and what fires cannot differ.

An occurrence has two times. `scheduled_for` is the nominal time of the schedule; the
event's id and the job's `scheduled_for` derive from it alone. `fire_at` is when it is
published: `scheduled_for` plus the trigger's jitter offset, a fixed function of the
trigger id and `scheduled_for` (a hash), so every process, before and after a restart,
computes the same one. Jitter is below the schedule's shortest period, which keeps the
`fire_at` of successive occurrences in the order of their `scheduled_for`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from triggerd.domain.timeutil import parse_iso_utc, to_iso
from triggerd.domain.timing import get_zone, latest_due, next_occurrence

MAX_JITTER_SECONDS = 3600
GAP_SAMPLE = 100  # a cron's period, for the jitter bound: its shortest gap among this many
DEFAULT_ZONE = "UTC"
_MS = timedelta(milliseconds=1)
_NO_OFFSET = timedelta(0)


@dataclass(frozen=True, slots=True, order=True)
class Due:
    """One occurrence: its nominal time and the time it is published."""

    scheduled_for: datetime
    fire_at: datetime


def jitter_ms(config: Mapping[str, Any]) -> int:
    """The trigger's jitter in whole milliseconds (0: none)."""
    value = config.get("jitter_seconds")
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return 0
    return round(value * 1000)


def jitter_offset(trigger_id: str, scheduled_for: datetime, jitter: int) -> timedelta:
    """The offset in [0, jitter) ms of one occurrence of one trigger: a hash of both, so
    it is the same wherever and whenever it is computed."""
    if jitter <= 0:
        return _NO_OFFSET
    key = f"{trigger_id}@{to_iso(scheduled_for)}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return timedelta(milliseconds=int.from_bytes(digest, "big") % jitter)


def due_at(trigger_id: str, config: Mapping[str, Any], scheduled_for: datetime) -> Due:
    """The occurrence of the trigger nominally at `scheduled_for`."""
    offset = jitter_offset(trigger_id, scheduled_for, jitter_ms(config))
    return Due(scheduled_for, scheduled_for + offset)


def next_due(
    trigger_id: str, trigger_type: str, config: Mapping[str, Any], after: datetime
) -> Due | None:
    """The first occurrence nominally after `after`; None when there is none (a webhook,
    a one-time trigger past its time, a cron that never fires again)."""
    scheduled_for = next_occurrence(trigger_type, config, after)
    return None if scheduled_for is None else due_at(trigger_id, config, scheduled_for)


def previous(trigger_type: str, config: Mapping[str, Any], before: datetime) -> datetime | None:
    """The latest nominal time strictly before `before` (schedules are on the
    millisecond grid)."""
    return latest_due(trigger_type, config, before - _MS)


def latest_fired_by(
    trigger_id: str, trigger_type: str, config: Mapping[str, Any], now: datetime
) -> Due | None:
    """The latest occurrence whose `fire_at` is not after `now`: the nominal latest one,
    or, while its jitter still holds it back, the one before."""
    scheduled_for = latest_due(trigger_type, config, now)
    if scheduled_for is None:
        return None
    found = due_at(trigger_id, config, scheduled_for)
    if found.fire_at <= now:
        return found
    earlier = previous(trigger_type, config, scheduled_for)
    return None if earlier is None else due_at(trigger_id, config, earlier)


def upcoming(
    trigger_id: str, trigger_type: str, config: Mapping[str, Any], now: datetime, count: int,
    pending: Due | None = None,
) -> list[Due]:  # fmt: skip
    """The next `count` occurrences to fire after `now`, the way the scheduler chains them:
    from the trigger's pending occurrence when it is still ahead (its jitter may hold one
    nominally past back), else from the first one nominally after `now`."""
    current = pending if pending is not None and pending.fire_at > now else None
    if current is None:
        current = next_due(trigger_id, trigger_type, config, now)
    found: list[Due] = []
    while current is not None and len(found) < count:
        found.append(current)
        try:
            current = next_due(trigger_id, trigger_type, config, current.scheduled_for)
        except OverflowError:  # the next one lies past the year 9999: there is none
            break
    return found


def shortest_gap(
    trigger_type: str, config: Mapping[str, Any], now: datetime, sample: int = GAP_SAMPLE
) -> timedelta | None:
    """The shortest time between two of the next `sample` occurrences (a cron's period);
    None when fewer than two come."""
    gap: timedelta | None = None
    current = next_occurrence(trigger_type, config, now)
    for _ in range(sample - 1):
        if current is None:
            break
        following = next_occurrence(trigger_type, config, current)
        if following is None:
            break
        step = following - current
        gap = step if gap is None else min(gap, step)
        current = following
    return gap


def period(
    trigger_type: str, config: Mapping[str, Any], now: datetime
) -> tuple[float, str] | None:
    """What jitter must stay below, in seconds, and what that is: `interval_seconds`, or a
    cron's shortest gap among its next GAP_SAMPLE occurrences; None for a schedule that
    fires once more at most (nothing to keep in order)."""
    if trigger_type == "interval_scheduled":
        return float(config["interval_seconds"]), "interval_seconds"
    gap = shortest_gap(trigger_type, config, now)
    if gap is None:
        return None
    return gap.total_seconds(), f"the shortest gap between its next {GAP_SAMPLE} occurrences"


def in_range(
    trigger_type: str, config: Mapping[str, Any], since: datetime, until: datetime, limit: int
) -> list[datetime]:
    """The nominal times in [since, until), at most `limit` + 1 of them (one more than
    the limit says the range holds too many). An interval schedule extends before its
    first run: `first_run_at + k * interval_seconds` for every integer k."""
    if until <= since:
        return []
    if trigger_type == "interval_scheduled":
        first = parse_iso_utc(config["first_run_at"])
        step_ms = round(config["interval_seconds"] * 1000)
        low = -((first - since) // _MS // step_ms)  # ceil((since - first) / step)
        high = -((first - until) // _MS // step_ms)  # first k at or past until
        return [first + k * step_ms * _MS for k in range(low, min(high, low + limit + 1))]
    found: list[datetime] = []
    current = next_occurrence(trigger_type, config, since - _MS)
    while current is not None and current < until and len(found) <= limit:
        found.append(current)
        current = next_occurrence(trigger_type, config, current)
    return found


def zone_of(config: Mapping[str, Any]) -> str:
    zone = config.get("timezone")
    return zone if isinstance(zone, str) and zone else DEFAULT_ZONE


def local_iso(instant: datetime, zone: str) -> str:
    """`instant` as wall time in `zone` with its UTC offset (`2026-03-08T03:00:00-04:00`),
    milliseconds shown only when there are some."""
    local = instant.astimezone(get_zone(zone))
    return local.isoformat(timespec="milliseconds" if local.microsecond else "seconds")


__all__ = ["MAX_JITTER_SECONDS", "Due", "due_at", "in_range", "jitter_ms", "jitter_offset",
           "latest_fired_by", "local_iso", "next_due", "period", "previous", "shortest_gap",
           "upcoming", "zone_of"]  # fmt: skip
