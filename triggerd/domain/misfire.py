"""The misfire policies: what fires of the occurrences a trigger missed while no scheduler
ran, and which are recorded as missed. Pure: the scheduler applies `recover()` to the
oldest missed occurrence it claims after downtime.

- `latest` (the default): the most recent missed occurrence fires, once; the others are
  missed.
- `skip`: none fires; all are missed, and the schedule goes on from the first occurrence
  still ahead.
- `all`: each missed occurrence nominally within `catchup_window_seconds` of now fires,
  oldest first; older ones are missed. The scheduler fires the first of them at once and
  each of the others as the successor of the one before (so a catch-up is paced by the
  scheduler's own publish-and-record cycle, one occurrence per trigger at a time).

Missed occurrences are listed one by one up to MISSED_LISTED per trigger and recovery:
the oldest (the row the scheduler claimed) and the most recent ones before what fires.
The notes say how many more there were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from triggerd.domain.enums import MisfirePolicy
from triggerd.domain.occurrences import Due, due_at, latest_fired_by, next_due, previous
from triggerd.domain.timeutil import parse_iso_utc
from triggerd.domain.timing import next_occurrence

MISSED_LISTED = 1000  # missed occurrences recorded one by one, per trigger and recovery
MISSED_COUNT_CAP = 10_000  # beyond this a cron's missed occurrences are not counted
DEFAULT_CATCHUP_WINDOW = 3600
MAX_CATCHUP_WINDOW = 604_800
CATCH_UP_NOTE = "fired after downtime"
_MS = timedelta(milliseconds=1)
_WHY = {
    MisfirePolicy.LATEST: "missed while no scheduler ran; misfire_policy latest fired only the"
                          " most recent one",
    MisfirePolicy.SKIP: "missed while no scheduler ran; misfire_policy skip",
    MisfirePolicy.ALL: "missed while no scheduler ran; older than catchup_window_seconds",
}  # fmt: skip


def policy_of(config: Mapping[str, Any]) -> MisfirePolicy:
    try:
        return MisfirePolicy(str(config.get("misfire_policy")))
    except ValueError:  # not set (a trigger stored before policies existed)
        return MisfirePolicy.LATEST


def catchup_window(config: Mapping[str, Any]) -> timedelta:
    value = config.get("catchup_window_seconds")
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        value = DEFAULT_CATCHUP_WINDOW
    return timedelta(seconds=min(value, MAX_CATCHUP_WINDOW))


@dataclass(frozen=True, slots=True)
class Recovery:
    """The decision for one trigger. `fire`: what fires now (None: nothing); `missed`:
    the occurrences to record as missed, oldest first; `resume`: where the schedule goes
    on when nothing fired (else after `fire`, as after any firing)."""

    policy: MisfirePolicy
    fire: Due | None
    missed: tuple[Due, ...]
    missed_total: int
    capped: bool  # missed_total stopped counting at MISSED_COUNT_CAP
    resume: Due | None = None

    @property
    def unlisted(self) -> int:
        return self.missed_total - len(self.missed)

    def _count(self) -> str:
        return f"{self.missed_total}{'+' if self.capped else ''}"

    def fired_note(self) -> str:
        if not self.missed_total:
            return CATCH_UP_NOTE
        note = f"{CATCH_UP_NOTE}; {self._count()} missed occurrence(s) skipped"
        return note + (f" ({self.unlisted} not listed)" if self.unlisted > 0 else "")

    def missed_notes(self) -> list[str]:
        """One note per entry of `missed`; the first also counts those not listed."""
        why = _WHY[self.policy]
        notes = [why] * len(self.missed)
        if notes and self.unlisted > 0:
            notes[0] = f"{why}; {self.unlisted} more missed after it are not listed"
        return notes


def recover(
    trigger_id: str, trigger_type: str, config: Mapping[str, Any], first: Due, now: datetime
) -> Recovery:
    """Apply the trigger's policy to its missed occurrences, `first` (due, never
    attempted) being the oldest."""
    policy = policy_of(config)
    last = latest_fired_by(trigger_id, trigger_type, config, now)
    if last is None or last.scheduled_for < first.scheduled_for:
        last = first
    if policy is MisfirePolicy.LATEST:
        return _recovery(policy, last, trigger_id, trigger_type, config, first,
                         previous(trigger_type, config, last.scheduled_for))  # fmt: skip
    if policy is MisfirePolicy.ALL:
        start = now - catchup_window(config)
        oldest = first if first.scheduled_for >= start else next_due(
            trigger_id, trigger_type, config, start - _MS)  # fmt: skip
        if oldest is not None and oldest.scheduled_for <= last.scheduled_for:
            return _recovery(policy, oldest, trigger_id, trigger_type, config, first,
                             previous(trigger_type, config, oldest.scheduled_for))  # fmt: skip
    listed, total, capped = _between(trigger_id, trigger_type, config, first, last.scheduled_for)
    resume = next_due(trigger_id, trigger_type, config, last.scheduled_for)
    return Recovery(policy, None, listed, total, capped, resume)


def _recovery(
    policy: MisfirePolicy, fire: Due, trigger_id: str, trigger_type: str,
    config: Mapping[str, Any], first: Due, last_missed: datetime | None,
) -> Recovery:  # fmt: skip
    if fire.scheduled_for <= first.scheduled_for or last_missed is None:
        return Recovery(policy, fire, (), 0, False)
    listed, total, capped = _between(trigger_id, trigger_type, config, first, last_missed)
    return Recovery(policy, fire, listed, total, capped)


def _between(
    trigger_id: str, trigger_type: str, config: Mapping[str, Any], first: Due, last: datetime
) -> tuple[tuple[Due, ...], int, bool]:
    """The occurrences from `first` to `last` (both included) to list, how many there are
    and whether counting stopped at the cap."""
    if last < first.scheduled_for:
        return (), 0, False
    total, capped = _count(trigger_type, config, first.scheduled_for, last)
    times: list[datetime] = []
    if total <= MISSED_LISTED:
        current: datetime | None = next_occurrence(trigger_type, config, first.scheduled_for)
        while current is not None and current <= last and len(times) < MISSED_LISTED - 1:
            times.append(current)
            current = next_occurrence(trigger_type, config, current)
    else:
        newest: datetime | None = last
        while newest is not None and newest > first.scheduled_for and (
                len(times) < MISSED_LISTED - 1):  # fmt: skip
            times.append(newest)
            newest = previous(trigger_type, config, newest)
        times.reverse()
    rest = tuple(due_at(trigger_id, config, when) for when in times)
    return (first, *rest), total, capped


def _count(
    trigger_type: str, config: Mapping[str, Any], first: datetime, last: datetime
) -> tuple[int, bool]:
    """Occurrences in [first, last]: by arithmetic for an interval, by walking (up to the
    cap) for a cron."""
    if trigger_type == "interval_scheduled":
        parse_iso_utc(config["first_run_at"])  # a malformed config fails here, not later
        step_ms = round(config["interval_seconds"] * 1000)
        return (last - first) // _MS // step_ms + 1, False
    count, current = 1, first
    while count < MISSED_COUNT_CAP:
        following = next_occurrence(trigger_type, config, current)
        if following is None or following > last:
            return count, False
        count, current = count + 1, following
    return count, True


__all__ = ["CATCH_UP_NOTE", "DEFAULT_CATCHUP_WINDOW", "MAX_CATCHUP_WINDOW", "MISSED_COUNT_CAP",
           "MISSED_LISTED", "Recovery", "catchup_window", "policy_of", "recover"]  # fmt: skip
