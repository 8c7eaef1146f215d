"""Occurrences as the scheduler and the API compute them (domain/occurrences.py): upcoming
runs with their local wall times across DST, jitter, backfill ranges, cron periods."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggerd.domain.occurrences import (
    Due,
    due_at,
    in_range,
    jitter_offset,
    latest_fired_by,
    local_iso,
    next_due,
    shortest_gap,
    upcoming,
)
from triggerd.domain.timeutil import to_iso

TRIGGER = "5b3f0c1e-8d2a-4e7b-9f61-0a1b2c3d4e5f"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def cron(expr: str, zone: str = "UTC", **extra: Any) -> dict[str, Any]:
    return {"cron": expr, "timezone": zone, **extra}


def interval(seconds: float, first: datetime, **extra: Any) -> dict[str, Any]:
    return {"interval_seconds": seconds, "first_run_at": to_iso(first), **extra}


def local_times(found: list[Due], zone: str) -> list[str]:
    return [local_iso(d.scheduled_for, zone) for d in found]


# --- upcoming across DST, in several zones -----------------------------------------------


def test_new_york_spring_forward_skipped_time_fires_once_at_the_end_of_the_gap() -> None:
    zone = "America/New_York"
    now = utc(2026, 3, 6, 12)
    found = upcoming(TRIGGER, "cron_scheduled", cron("30 2 * * *", zone), now, 4)
    assert local_times(found, zone) == [
        "2026-03-07T02:30:00-05:00",
        "2026-03-08T03:00:00-04:00",  # 02:30 does not exist that night
        "2026-03-09T02:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
    ]
    assert [to_iso(d.scheduled_for) for d in found][1] == "2026-03-08T07:00:00.000Z"
    assert all(d.fire_at == d.scheduled_for for d in found)  # no jitter


def test_berlin_fall_back_repeated_hour_fires_once() -> None:
    zone = "Europe/Berlin"
    now = utc(2026, 10, 24, 23, 30)  # 01:30 CEST on the night of the change
    found = upcoming(TRIGGER, "cron_scheduled", cron("0 * * * *", zone), now, 4)
    assert local_times(found, zone) == [
        "2026-10-25T02:00:00+02:00",  # the first pass of 02:00 ...
        "2026-10-25T03:00:00+01:00",  # ... and not the second one, an hour later
        "2026-10-25T04:00:00+01:00",
        "2026-10-25T05:00:00+01:00",
    ]
    gaps = [b.scheduled_for - a.scheduled_for for a, b in itertools.pairwise(found)]
    assert gaps == [timedelta(hours=2), timedelta(hours=1), timedelta(hours=1)]


def test_lord_howe_half_hour_shift() -> None:
    zone = "Australia/Lord_Howe"  # DST moves the clock by 30 minutes, on 2026-10-04
    now = utc(2026, 10, 3, 12)
    found = upcoming(TRIGGER, "cron_scheduled", cron("15 2 * * *", zone), now, 3)
    assert local_times(found, zone) == [
        "2026-10-04T02:30:00+11:00",  # 02:15 lies in the 02:00-02:30 gap
        "2026-10-05T02:15:00+11:00",
        "2026-10-06T02:15:00+11:00",
    ]


def test_sydney_autumn_repeated_hour() -> None:
    zone = "Australia/Sydney"  # 03:00 AEDT becomes 02:00 AEST on 2026-04-05
    now = utc(2026, 4, 4, 14)  # 01:00 AEDT
    found = upcoming(TRIGGER, "cron_scheduled", cron("30 2 * * *", zone), now, 2)
    assert local_times(found, zone) == ["2026-04-05T02:30:00+11:00", "2026-04-06T02:30:00+10:00"]


def test_upcoming_interval_and_one_time_and_webhook() -> None:
    now = utc(2026, 1, 1, 12)
    config = interval(90, utc(2026, 1, 1, 11, 59))
    found = upcoming(TRIGGER, "interval_scheduled", config, now, 3)
    assert [to_iso(d.scheduled_for) for d in found] == [
        "2026-01-01T12:00:30.000Z", "2026-01-01T12:02:00.000Z", "2026-01-01T12:03:30.000Z"]
    assert local_iso(found[0].scheduled_for, "UTC") == "2026-01-01T12:00:30+00:00"
    one_time = {"run_at": "2026-01-01T13:00:00.000Z", "timezone": "UTC"}
    assert [d.scheduled_for for d in upcoming(TRIGGER, "time_scheduled", one_time, now, 5)] == [
        utc(2026, 1, 1, 13)]
    fired = {"run_at": "2026-01-01T11:00:00.000Z", "timezone": "UTC"}
    assert upcoming(TRIGGER, "time_scheduled", fired, now, 5) == []
    assert upcoming(TRIGGER, "webhook", {}, now, 5) == []


def test_local_times_keep_milliseconds_when_there_are_some() -> None:
    assert local_iso(utc(2026, 1, 1, 12, 0, 0, 250_000), "Asia/Kolkata") == (
        "2026-01-01T17:30:00.250+05:30")


# --- jitter ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.uuids(), st.integers(0, 10**9), st.integers(1, 3_600_000))
def test_jitter_offset_is_within_bounds_and_deterministic(
    trigger: Any, second: int, jitter: int
) -> None:
    at = utc(2026, 1, 1) + timedelta(seconds=second)
    offset = jitter_offset(str(trigger), at, jitter)
    assert timedelta(0) <= offset < timedelta(milliseconds=jitter)
    assert offset == jitter_offset(str(trigger), at, jitter)
    assert offset.microseconds % 1000 == 0  # the millisecond grid the database stores


def test_jitter_spreads_triggers_and_occurrences() -> None:
    at = utc(2026, 1, 1, 9)
    by_trigger = {jitter_offset(f"trigger-{i}", at, 60_000) for i in range(200)}
    by_occurrence = {jitter_offset(TRIGGER, at + timedelta(minutes=i), 60_000) for i in range(200)}
    assert len(by_trigger) > 150 and len(by_occurrence) > 150
    spread = sorted(by_trigger)
    assert spread[0] < timedelta(seconds=10) and spread[-1] > timedelta(seconds=50)


def test_upcoming_applies_jitter_and_keeps_the_order() -> None:
    now = utc(2026, 1, 1, 12)
    config = cron("* * * * *", jitter_seconds=59.5)
    found = upcoming(TRIGGER, "cron_scheduled", config, now, 100)
    assert len(found) == 100
    for due in found:
        assert due.scheduled_for.second == 0
        assert timedelta(0) <= due.fire_at - due.scheduled_for < timedelta(seconds=59.5)
        assert due == due_at(TRIGGER, config, due.scheduled_for)
    assert [d.fire_at for d in found] == sorted(d.fire_at for d in found)
    assert len({d.fire_at - d.scheduled_for for d in found}) > 50
    # Another trigger with the same schedule fires at other times.
    other = upcoming("another", "cron_scheduled", config, now, 100)
    assert [d.scheduled_for for d in other] == [d.scheduled_for for d in found]
    assert [d.fire_at for d in other] != [d.fire_at for d in found]


def test_a_pending_occurrence_held_back_by_jitter_is_still_upcoming() -> None:
    config = cron("0 * * * *", jitter_seconds=1800)
    nominal = utc(2026, 1, 1, 12)
    held = due_at(TRIGGER, config, nominal)
    now = nominal + (held.fire_at - nominal) / 2  # nominally past, not yet fired
    assert held.fire_at > now
    found = upcoming(TRIGGER, "cron_scheduled", config, now, 2, pending=held)
    assert [d.scheduled_for for d in found] == [nominal, utc(2026, 1, 1, 13)]
    # Without the pending row (a preview) the chain starts nominally after now.
    assert upcoming(TRIGGER, "cron_scheduled", config, now, 1)[0].scheduled_for == (
        utc(2026, 1, 1, 13))
    # A pending row that is already overdue (downtime) is not upcoming.
    late = upcoming(TRIGGER, "cron_scheduled", config, utc(2026, 1, 1, 15, 45), 1, pending=held)
    assert late[0].scheduled_for == utc(2026, 1, 1, 16)


def test_latest_fired_by_steps_back_while_jitter_holds_the_latest() -> None:
    config = cron("0 * * * *", jitter_seconds=3599)
    nominal = utc(2026, 1, 1, 12)
    held = due_at(TRIGGER, config, nominal)
    assert held.fire_at > nominal
    assert latest_fired_by(TRIGGER, "cron_scheduled", config, nominal).scheduled_for == (
        utc(2026, 1, 1, 11))
    assert latest_fired_by(TRIGGER, "cron_scheduled", config, held.fire_at) == held


def test_next_due_is_what_the_scheduler_chains() -> None:
    config = interval(10, utc(2026, 1, 1), jitter_seconds=5)
    after = utc(2026, 1, 1, 0, 0, 25)
    found = next_due(TRIGGER, "interval_scheduled", config, after)
    assert found is not None and found.scheduled_for == utc(2026, 1, 1, 0, 0, 30)
    assert found == due_at(TRIGGER, config, found.scheduled_for)


# --- backfill ranges ---------------------------------------------------------------------


def test_interval_range_extends_before_the_first_run() -> None:
    config = interval(3600, utc(2026, 1, 10, 12))
    found = in_range("interval_scheduled", config, utc(2026, 1, 10, 9, 30),
                     utc(2026, 1, 10, 14), 1000)  # fmt: skip
    assert found == [utc(2026, 1, 10, h) for h in (10, 11, 12, 13)]  # k = -2 .. 1
    # since included, until excluded
    assert in_range("interval_scheduled", config, utc(2026, 1, 10, 10), utc(2026, 1, 10, 11),
                    10) == [utc(2026, 1, 10, 10)]  # fmt: skip
    assert in_range("interval_scheduled", config, utc(2026, 1, 10, 11), utc(2026, 1, 10, 10),
                    10) == []  # fmt: skip


def test_cron_range_in_a_zone() -> None:
    config = cron("0 9 * * 1-5", "Europe/Paris")
    found = in_range("cron_scheduled", config, utc(2026, 3, 2), utc(2026, 3, 9), 1000)
    assert [local_iso(t, "Europe/Paris") for t in found] == [
        f"2026-03-0{d}T09:00:00+01:00" for d in range(2, 7)]
    exact = in_range("cron_scheduled", config, utc(2026, 3, 2, 8), utc(2026, 3, 3, 8), 1000)
    assert exact == [utc(2026, 3, 2, 8)]


@pytest.mark.parametrize("kind, config", [
    ("cron_scheduled", cron("* * * * * *")),
    ("interval_scheduled", interval(1, utc(2026, 1, 1))),
])  # fmt: skip
def test_range_stops_one_past_the_limit(kind: str, config: dict[str, Any]) -> None:
    since = utc(2026, 1, 1, 1)
    assert len(in_range(kind, config, since, since + timedelta(seconds=1000), 1000)) == 1000
    assert len(in_range(kind, config, since, since + timedelta(seconds=1001), 1000)) == 1001
    assert len(in_range(kind, config, since, since + timedelta(days=30), 1000)) == 1001


# --- a cron's period ---------------------------------------------------------------------


def test_shortest_gap() -> None:
    now = utc(2026, 1, 1)
    assert shortest_gap("cron_scheduled", cron("*/5 * * * *"), now) == timedelta(minutes=5)
    assert shortest_gap("cron_scheduled", cron("0 9,10 * * *"), now) == timedelta(hours=1)
    assert shortest_gap("cron_scheduled", cron("*/20 * * * * *"), now) == timedelta(seconds=20)
    # A DST gap collapses 02:00 and 02:30 onto 03:00: the shortest gap is around it.
    spring = utc(2026, 3, 7)
    assert shortest_gap("cron_scheduled", cron("*/30 * * * *", "America/New_York"),
                        spring) == timedelta(minutes=30)  # fmt: skip
