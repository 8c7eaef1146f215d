"""Pure time math of the scheduler: zones, cron, intervals, DST. No loop, no I/O.

Everything in and out is aware UTC. Zones appear only here, where a cron
expression or a naive ``run_at`` is read as wall-clock time (STYLE "Data").

DST: wall-clock candidates are enumerated on naive local datetimes and
mapped to UTC by :func:`resolve_local`, which sends a time skipped by a
spring-forward to the end of the gap and a repeated time to its first pass. That
mapping never decreases, so the gap's candidates collapse onto one instant (fired
once) and the second pass of a repeated hour is never produced.
"""

from __future__ import annotations

import copy
import functools
import re
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from triggerd.domain.timeutil import parse_iso_utc

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_MS = timedelta(milliseconds=1)
_MAX_YEARS = 50  # croniter's own horizon between two matches
_MAX_STEPS = 64  # a candidate loop needs 1-2 steps; the bound only guards against bugs
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    # ZoneInfo's own strong cache holds only 8 zones; with many triggers in many
    # zones it would re-read tzdata from disk.
    return ZoneInfo(name)


# tzdata files that are not IANA zone names: the host's zone (it differs between hosts),
# and the duplicate trees of the database's build.
_NOT_IANA = re.compile(r"(?:localtime|posixrules|Factory|(?:posix|right)/.*)$")


def get_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError("unknown time zone 'X'") otherwise."""
    if not isinstance(name, str) or not name.strip() or _NOT_IANA.match(name):
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, TypeError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _offset_change(zone: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """The first whole-second instant in (lo, hi] whose UTC offset differs from lo's.

    zoneinfo does not expose its transition table, so bisect; tzdata transitions
    fall on whole seconds and the window is at most one DST shift (~12 steps).
    """
    lo_s = (lo - _EPOCH) // _SECOND
    hi_s = -((_EPOCH - hi) // _SECOND)  # ceil
    before = datetime.fromtimestamp(lo_s, zone).utcoffset()
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == before:
            lo_s = mid
        else:
            hi_s = mid
    return _EPOCH + timedelta(seconds=hi_s)


def resolve_local(wall: datetime, tz: str) -> datetime:
    """Naive wall-clock time in zone ``tz`` -> aware UTC.

    A time skipped by DST maps to the end of the gap (03:00 EDT for 02:30 on a US
    spring-forward), not Python's default of shifting it by the gap's length; a
    repeated time maps to its first occurrence (fold=0).
    """
    if wall.tzinfo is not None:
        raise ValueError("resolve_local expects a naive wall-clock time")
    zone = get_zone(tz)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first  # valid: unambiguous, or the first pass of a repeated time
    # In a gap fold=0 reads the wall with the offset before the transition and
    # fold=1 with the one after, so the transition lies between the two readings.
    earlier = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return _offset_change(zone, earlier, first)


def _to_wall(instant: datetime, zone: ZoneInfo) -> tuple[datetime, datetime | None]:
    """``instant`` as naive local wall time, plus the wall time at which the
    repeated hour ends when ``instant`` lies in its second pass (else None).

    Candidates in the repeated hour map to its first pass, so an instant in the
    second pass is already later than all of them.
    """
    local = instant.astimezone(zone)
    wall = local.replace(tzinfo=None, fold=0)
    if local.fold == 0:
        return wall, None
    first_offset = local.replace(fold=0).utcoffset()
    second_offset = local.utcoffset()
    if first_offset is None or second_offset is None or first_offset == second_offset:
        return wall, None
    shift = first_offset - second_offset
    transition = _offset_change(zone, instant - shift, instant)
    end = (transition + first_offset).replace(tzinfo=None)
    return wall, end


@dataclass(frozen=True, slots=True)
class _Spec:
    """A cron expression of plain numbers, ranges, steps and lists, expanded.

    croniter costs ~100 µs per step; walking the sorted field values directly is
    ~10x cheaper, which matters when ~100k triggers are scheduled at start-up.
    """

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    doms: frozenset[int] | None  # None: any day of the month
    months: tuple[int, ...]
    dows: frozenset[int] | None  # 0 = Sunday; None: any day of the week

    def day_ok(self, year: int, month: int, day: int) -> bool:
        # Vixie cron (and croniter): with both day fields restricted, either matches.
        if self.doms is not None and day in self.doms:
            return True
        if self.dows is None:
            return self.doms is None
        return date(year, month, day).isoweekday() % 7 in self.dows


@dataclass(frozen=True, slots=True)
class _Cron:
    template: croniter  # the fallback for L, W and #
    spec: _Spec | None


def _month_days(year: int, month: int) -> int:
    if month == 2 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        return 28
    return _DAYS_IN_MONTH[month - 1]


def _values(field: list[Any], low: int, high: int) -> tuple[int, ...] | None:
    if field == ["*"]:
        return tuple(range(low, high + 1))
    if all(isinstance(v, int) for v in field):
        return tuple(sorted({int(v) for v in field}))
    return None


def _build_spec(cron: croniter, six: bool) -> _Spec | None:
    if cron.nth_weekday_of_month or cron.nearest_weekday:
        return None
    fields = cron.expanded
    seconds = _values(fields[5], 0, 59) if six else (0,)
    minutes, hours = _values(fields[0], 0, 59), _values(fields[1], 0, 23)
    doms, months = _values(fields[2], 1, 31), _values(fields[3], 1, 12)
    dows = _values(fields[4], 0, 6)
    if seconds is None or minutes is None or hours is None:
        return None  # a special value ('l'…): let croniter handle it
    if doms is None or months is None or dows is None:
        return None
    return _Spec(
        seconds=seconds,
        minutes=minutes,
        hours=hours,
        doms=None if fields[2] == ["*"] else frozenset(doms),
        months=months,
        dows=None if fields[4] == ["*"] else frozenset(v % 7 for v in dows),
    )


def _compile(expr: str) -> _Cron:
    if not isinstance(expr, str):
        raise ValueError("cron expression must be a string")
    return _parse(expr.strip())


@functools.lru_cache(maxsize=8192)
def _parse(expr: str) -> _Cron:
    count = len(expr.split())
    if count not in (5, 6):  # croniter would also take 7 (a trailing year)
        raise ValueError(
            f"invalid cron expression {expr!r}: expected 5 fields (minute hour "
            f"day-of-month month day-of-week) or 6 with leading seconds, got {count}"
        )
    six = count == 6
    try:
        # strict: reject days a month never has (Feb 30) instead of never firing.
        croniter.expand(expr, second_at_beginning=six, strict=True)
        template = croniter(expr, datetime(2000, 1, 1), second_at_beginning=six)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        lines = str(exc).strip().splitlines() or ["not a cron expression"]
        raise ValueError(f"invalid cron expression {expr!r}: {lines[-1]}") from None
    return _Cron(template=template, spec=_build_spec(template, six))


_LAST_WEEKDAY = re.compile(r"(?:^|[,\d])L(?:$|,)")  # `5L`, `L` (not the L of a name)


_NAMES = {name: number for number, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)}
_NAMES.update({name: number for number, name in enumerate(
    ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))})  # fmt: skip
_RANGE = re.compile(r"^(\w+)-(\w+)(?:/\d+)?$")


def _backwards_range(field: str) -> str | None:
    """The first range of a field written high to low (`5-2`), which croniter would
    wrap around and Vixie cron refuses."""
    for item in field.upper().split(","):
        match = _RANGE.match(item)
        if match is None:
            continue
        low, high = (_NAMES.get(v, int(v) if v.isdigit() else None) for v in match.groups())
        if low is not None and high is not None and low > high:
            return item
    return None


def validate_cron(expr: str) -> None:
    """Accept 5 fields (minute hour day-of-month month day-of-week) or 6 with a
    leading seconds field; raise ValueError with the reason otherwise."""
    _compile(expr)
    fields = expr.split()
    for field in fields:
        backwards = _backwards_range(field)
        if backwards is not None:
            raise ValueError(f"invalid cron expression {expr!r}: the range {backwards!r} "
                             "runs backwards (write it low-high, or as two ranges)")  # fmt: skip
    dom, dow = fields[-3].upper(), fields[-1].upper()
    special = "L" in dom or "W" in dom or "#" in dow or _LAST_WEEKDAY.search(dow) is not None
    if special and dom not in ("*", "?") and dow not in ("*", "?"):
        # Either day field alone is fine; together, croniter ignores the day of month.
        raise ValueError(f"invalid cron expression {expr!r}: L, W and # need the other "
                         "day field to be * (restrict day-of-month or day-of-week, not both)")


def _ceil(values: tuple[int, ...], v: int) -> int | None:
    i = bisect_left(values, v)
    return values[i] if i < len(values) else None


def _floor(values: tuple[int, ...], v: int) -> int | None:
    i = bisect_right(values, v)
    return values[i - 1] if i else None


# Reset values of (month, day, hour, minute, second) when a larger field moves:
# the smallest going forward, the largest going back (day 31 is clamped per month).
_LOWEST = (1, 1, 0, 0, 0)
_HIGHEST = (12, 31, 23, 59, 59)


def _spec_walk(spec: _Spec, start: datetime, forward: bool) -> datetime | None:
    """The first match >= ``start`` (forward) or the last one <= it (backward),
    at whole seconds. Fields are settled from the month down; a field with no
    value left carries into the next larger one and resets the smaller ones.
    """
    t = [start.year, start.month, start.day, start.hour, start.minute, start.second]
    fields = (spec.months, (), spec.hours, spec.minutes, spec.seconds)
    resets, step = (_LOWEST, 1) if forward else (_HIGHEST, -1)
    first_year = start.year
    while 1 <= t[0] <= 9999 and abs(t[0] - first_year) <= _MAX_YEARS:
        for i in range(1, 6):
            if i == 2:  # the day depends on the year and month
                last = _month_days(t[0], t[1])
                days = range(t[2], last + 1) if forward else range(min(t[2], last), 0, -1)
                found = next((d for d in days if spec.day_ok(t[0], t[1], d)), None)
            else:
                found = (_ceil if forward else _floor)(fields[i - 1], t[i])
            if found is None:
                t[i - 1] += step
                t[i:] = resets[i - 1 :]
                break
            if found != t[i]:
                t[i] = found
                t[i + 1 :] = resets[i:]
        else:
            return datetime(t[0], t[1], t[2], t[3], t[4], t[5])
    return None


def _wall_step(cron: _Cron, wall: datetime, forward: bool) -> datetime | None:
    """The first naive wall-clock match strictly after ``wall`` (forward) or the
    last one at or before it (backward); None beyond the 50-year horizon."""
    wall = wall.replace(microsecond=0)
    if cron.spec is not None:
        return _spec_walk(cron.spec, wall + _SECOND if forward else wall, forward)
    walker = copy.copy(cron.template)  # croniter is stateful; the template is shared
    try:  # get_prev is strict too, so start it just past ``wall``
        if forward:
            found: datetime = walker.get_next(datetime, wall)
        else:
            found = walker.get_prev(datetime, wall + timedelta(microseconds=1))
    except ValueError:  # CroniterBadDateError: no match within the horizon
        return None
    return found


def _cron_after(expr: str, tz: str, after: datetime) -> datetime | None:
    cron, zone = _compile(expr), get_zone(tz)
    after = after.astimezone(UTC)
    wall, repeat_end = _to_wall(after, zone)
    if repeat_end is not None:
        wall = repeat_end - _SECOND  # candidates before the end map to the past
    for _ in range(_MAX_STEPS):
        candidate = _wall_step(cron, wall, forward=True)
        if candidate is None:
            return None
        instant = resolve_local(candidate, tz)
        if instant > after:
            return instant
        wall = candidate
    raise RuntimeError(f"cron {expr!r} in {tz}: no progress after {after.isoformat()}")


def next_cron(expr: str, tz: str, after: datetime) -> datetime:
    """The first occurrence of ``expr`` in zone ``tz`` strictly after ``after``.

    ValueError when the expression never fires again (within croniter's 50-year
    horizon; :func:`validate_cron` rejects the impossible ones up front).
    """
    found = _cron_after(expr, tz, after)
    if found is None:
        raise ValueError(f"cron expression {expr!r} has no occurrence after {after.isoformat()}")
    return found


def prev_cron(expr: str, tz: str, at_or_before: datetime) -> datetime | None:
    """The latest occurrence <= ``at_or_before`` (the one missed occurrence that
    the downtime rule fires on recovery), or None within the horizon."""
    cron, zone = _compile(expr), get_zone(tz)
    at_or_before = at_or_before.astimezone(UTC)
    wall, repeat_end = _to_wall(at_or_before, zone)
    if repeat_end is not None:
        wall = repeat_end - _SECOND  # the whole first pass is already in the past
    for _ in range(_MAX_STEPS):
        candidate = _wall_step(cron, wall, forward=False)
        if candidate is None:
            return None
        instant = resolve_local(candidate, tz)
        if instant <= at_or_before:
            return instant
        wall = candidate - _SECOND
    raise RuntimeError(f"cron {expr!r} in {tz}: no progress before {at_or_before.isoformat()}")


def parse_run_at(value: str, tz: str) -> datetime:
    """ISO 8601 -> aware UTC, truncated to the millisecond we store. An offset or
    ``Z`` in the value wins; a naive value is wall-clock time in ``tz``."""
    zone_name = get_zone(tz).key
    if not isinstance(value, str):
        raise ValueError("run_at must be an ISO 8601 string")
    text = value.strip()
    if text[-1:] == "z":  # RFC 3339 allows the lower-case UTC designator too
        text = text[:-1] + "Z"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"run_at {value!r} is not an ISO 8601 timestamp") from None
    resolved = parsed.astimezone(UTC) if parsed.tzinfo else resolve_local(parsed, zone_name)
    return resolved.replace(microsecond=resolved.microsecond // 1000 * 1000)


def _grid(first: datetime, interval_seconds: float) -> tuple[datetime, int]:
    """``first`` and the interval on the millisecond grid the database stores.

    An occurrence that is not a whole millisecond would be truncated on write and
    then compare as not-yet-fired, firing twice; so the interval is rounded to
    whole milliseconds and all arithmetic is in integers (no float drift).
    """
    if isinstance(interval_seconds, bool) or not isinstance(interval_seconds, int | float):
        raise ValueError("interval_seconds must be a number")
    step_ms = round(interval_seconds * 1000)
    if step_ms <= 0:
        raise ValueError("interval_seconds must be positive")
    first = first.astimezone(UTC)
    return first.replace(microsecond=first.microsecond // 1000 * 1000), step_ms


def next_interval(first: datetime, interval_seconds: float, after: datetime) -> datetime:
    """The smallest ``first + n·interval`` (n >= 0) strictly after ``after``,
    computed from ``first`` every time so the schedule never drifts."""
    first, step_ms = _grid(first, interval_seconds)
    if after < first:
        return first
    n = (after - first) // _MS // step_ms + 1
    return first + n * step_ms * _MS


def prev_interval(
    first: datetime, interval_seconds: float, at_or_before: datetime
) -> datetime | None:
    """The largest ``first + n·interval`` <= ``at_or_before``; None before ``first``."""
    first, step_ms = _grid(first, interval_seconds)
    if at_or_before < first:
        return None
    n = (at_or_before - first) // _MS // step_ms
    return first + n * step_ms * _MS


def next_occurrence(
    trigger_type: str, config: Mapping[str, Any], after: datetime
) -> datetime | None:
    """The next firing strictly after ``after`` from a normalized, stored config;
    None when there is none (webhook, a one-shot already past, a dead cron)."""
    if trigger_type == "time_scheduled":
        run_at = parse_iso_utc(config["run_at"])
        return run_at if run_at > after else None
    if trigger_type == "cron_scheduled":
        return _cron_after(config["cron"], config.get("timezone") or "UTC", after)
    if trigger_type == "interval_scheduled":
        first = parse_iso_utc(config["first_run_at"])
        return next_interval(first, config["interval_seconds"], after)
    if trigger_type == "webhook":
        return None
    raise ValueError(f"unknown trigger type {trigger_type!r}")


def latest_due(
    trigger_type: str, config: Mapping[str, Any], at_or_before: datetime
) -> datetime | None:
    """The latest firing <= ``at_or_before``: the single missed occurrence to fire
    on recovery (the downtime rule), or None."""
    if trigger_type == "time_scheduled":
        run_at = parse_iso_utc(config["run_at"])
        return run_at if run_at <= at_or_before else None
    if trigger_type == "cron_scheduled":
        return prev_cron(config["cron"], config.get("timezone") or "UTC", at_or_before)
    if trigger_type == "interval_scheduled":
        first = parse_iso_utc(config["first_run_at"])
        return prev_interval(first, config["interval_seconds"], at_or_before)
    if trigger_type == "webhook":
        return None
    raise ValueError(f"unknown trigger type {trigger_type!r}")


__all__ = [
    "get_zone", "latest_due", "next_cron", "next_interval", "next_occurrence",
    "parse_run_at", "prev_cron", "prev_interval", "resolve_local", "validate_cron",
]  # fmt: skip
