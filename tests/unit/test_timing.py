"""Time math of the scheduler: cron (5/6 fields, zones, DST), run_at, intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from croniter import croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from triggerd.domain.timing import (
    get_zone,
    latest_due,
    next_cron,
    next_interval,
    next_occurrence,
    parse_run_at,
    prev_cron,
    prev_interval,
    resolve_local,
    validate_cron,
)

NY = "America/New_York"
LORD_HOWE = "Australia/Lord_Howe"  # half-hour DST shift


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, sec, us, tzinfo=UTC)


def chain(expr: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    """Every occurrence in (start, end], by repeated next_cron."""
    out: list[datetime] = []
    current = start
    while True:
        current = next_cron(expr, tz, current)
        if current > end:
            return out
        out.append(current)


def brute_force(expr: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    """Reference: croniter's naive wall-clock matches (no DST logic of ours),
    each mapped with resolve_local, deduplicated."""
    zone = get_zone(tz)
    wall = start.astimezone(zone).replace(tzinfo=None) - timedelta(hours=3)
    stop = end.astimezone(zone).replace(tzinfo=None) + timedelta(hours=3)
    walls = croniter(expr, wall, second_at_beginning=len(expr.split()) == 6)
    seen: set[datetime] = set()
    while (wall := walls.get_next(datetime)) <= stop:
        instant = resolve_local(wall, tz)
        if start < instant <= end:
            seen.add(instant)
    return sorted(seen)


# ------------------------------------------------------------------ zones


def test_get_zone_accepts_iana_names() -> None:
    assert get_zone("Asia/Tokyo").key == "Asia/Tokyo"
    assert get_zone("UTC").key == "UTC"


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "  ", "../etc/passwd", "/etc/localtime"])
def test_get_zone_rejects_unknown_names(name: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        get_zone(name)


@pytest.mark.parametrize("name", [None, 5, b"UTC"])
def test_get_zone_rejects_non_strings(name: Any) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        get_zone(name)


# ------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "expr",
    [
        "* * * * *",
        "*/15 9-17 * * mon-fri",
        "0 0 1,15 * *",
        "0 12 * jan,jul sun",
        "0 0 29 2 *",  # leap years only, still fires
        "0 0 L * *",
        "0 0 * * 1#2",
        "30 * * * * *",  # 6 fields, leading seconds
        "  0 0 * * *  ",
        "0 22-23,0-2 * * 5-7",  # an overnight span as two ranges; Sunday as 7
    ],
)
def test_validate_cron_accepts(expr: str) -> None:
    validate_cron(expr)


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "* * * *",
        "0 0 * * * * 2030",  # 7 fields (a year) is not part of the contract
        "@daily",
        "not a cron",
        "a b c d e",
        "60 * * * *",
        "* 24 * * *",
        "* * 32 * *",
        "* * 0 * *",
        "* * * 13 *",
        "* * * * 8",
        "61 * * * * *",  # a leading seconds field out of range
        "*/0 * * * *",
        "1-70 * * * *",
        "0 0 30 2 *",  # never fires
        "H * * * *",
        "0 5-2 * * *",  # backwards ranges: croniter wraps them, Vixie cron refuses
        "0 0 * * FRI-MON",
        "0 0 * DEC-JAN *",
        "30-10/5 * * * * *",
    ],
)
def test_validate_cron_rejects(expr: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        validate_cron(expr)


@pytest.mark.parametrize("expr", [None, 5, ["*"] * 5])
def test_validate_cron_rejects_non_strings(expr: Any) -> None:
    with pytest.raises(ValueError, match="string"):
        validate_cron(expr)


def test_next_cron_rejects_what_validation_rejects() -> None:
    with pytest.raises(ValueError):
        next_cron("0 0 * * * * 2030", "UTC", utc(2026, 1, 1))
    with pytest.raises(ValueError, match="unknown time zone"):
        next_cron("* * * * *", "Nowhere/Town", utc(2026, 1, 1))


# ------------------------------------------------------------------- cron


def test_five_fields_in_utc() -> None:
    assert next_cron("*/5 * * * *", "UTC", utc(2026, 1, 1, 0, 2)) == utc(2026, 1, 1, 0, 5)
    # strictly after: an occurrence at `after` itself is not returned
    assert next_cron("*/5 * * * *", "UTC", utc(2026, 1, 1, 0, 5)) == utc(2026, 1, 1, 0, 10)
    after = utc(2026, 1, 1, 0, 4, 59, 999000)
    assert next_cron("*/5 * * * *", "UTC", after) == utc(2026, 1, 1, 0, 5)
    # Friday 2026-01-02 17:45 -> Monday 09:00
    got = next_cron("*/15 9-17 * * mon-fri", "UTC", utc(2026, 1, 2, 17, 45))
    assert got == utc(2026, 1, 5, 9, 0)


def test_six_fields_have_leading_seconds() -> None:
    # "30 0 12 * * *" is 12:00:30 (sec min hour), not 00:12 on the 30th second field
    assert next_cron("30 0 12 * * *", "UTC", utc(2026, 1, 1)) == utc(2026, 1, 1, 12, 0, 30)
    got = chain("*/20 * * * * *", "UTC", utc(2026, 1, 1), utc(2026, 1, 1, 0, 1))
    assert got == [utc(2026, 1, 1, 0, 0, s) for s in (20, 40)] + [utc(2026, 1, 1, 0, 1)]


def test_day_of_month_or_day_of_week() -> None:
    # both restricted: either matches (Vixie cron); 2026-03-02 is a Monday
    got = chain("0 0 1 * mon", "UTC", utc(2026, 2, 28), utc(2026, 3, 10))
    assert got == [utc(2026, 3, 1), utc(2026, 3, 2), utc(2026, 3, 9)]


def test_special_syntax_goes_through_croniter() -> None:
    assert next_cron("0 0 L * *", "UTC", utc(2026, 2, 1)) == utc(2026, 2, 28)
    assert next_cron("0 0 L * *", "UTC", utc(2028, 2, 1)) == utc(2028, 2, 29)
    assert next_cron("0 0 * * 1#1", "UTC", utc(2026, 3, 15)) == utc(2026, 4, 6)
    assert prev_cron("0 0 L * *", "UTC", utc(2026, 3, 15)) == utc(2026, 2, 28)
    assert prev_cron("0 0 L * *", "UTC", utc(2026, 2, 28)) == utc(2026, 2, 28)  # inclusive
    assert next_cron("0 0 L * *", "UTC", utc(2026, 2, 28)) == utc(2026, 3, 31)  # strict
    # the second Sunday of March 2026 is the US spring-forward: 02:30 -> 03:00 EDT
    assert next_cron("30 2 * * 0#2", NY, utc(2026, 3, 1)) == utc(2026, 3, 8, 7)
    assert prev_cron("30 2 * * 0#2", NY, utc(2026, 4, 1)) == utc(2026, 3, 8, 7)


def test_leap_day_cron_spans_years() -> None:
    assert next_cron("0 0 29 2 *", "UTC", utc(2026, 1, 1)) == utc(2028, 2, 29)
    assert prev_cron("0 0 29 2 *", "UTC", utc(2026, 1, 1)) == utc(2024, 2, 29)


def test_zones() -> None:
    # 09:00 in Tokyo (UTC+9, no DST) is midnight UTC
    assert next_cron("0 9 * * *", "Asia/Tokyo", utc(2026, 6, 30, 23)) == utc(2026, 7, 1)
    # New York in summer is UTC-4, in winter UTC-5
    assert next_cron("0 9 * * *", NY, utc(2026, 7, 1)) == utc(2026, 7, 1, 13)
    assert next_cron("0 9 * * *", NY, utc(2026, 1, 1)) == utc(2026, 1, 1, 14)


def test_us_spring_forward_skipped_time_fires_once_at_gap_end() -> None:
    # 2026-03-08 02:00 EST -> 03:00 EDT; 02:30 does not exist
    assert next_cron("30 2 * * *", NY, utc(2026, 3, 7, 8)) == utc(2026, 3, 8, 7)
    assert next_cron("30 2 * * *", NY, utc(2026, 3, 8, 7)) == utc(2026, 3, 9, 6, 30)
    day = chain("30 2 * * *", NY, utc(2026, 3, 6), utc(2026, 3, 11))
    assert [d.astimezone(get_zone(NY)).strftime("%d %H:%M") for d in day] == [
        "06 02:30", "07 02:30", "08 03:00", "09 02:30", "10 02:30",
    ]  # fmt: skip


def test_us_spring_forward_quarter_hours_give_0300_once() -> None:
    got = chain("*/15 * * * *", NY, utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 30))
    assert got == [
        utc(2026, 3, 8, 6, 45),  # 01:45 EST
        utc(2026, 3, 8, 7, 0),  # 02:00-02:45 collapse onto 03:00 EDT
        utc(2026, 3, 8, 7, 15),
        utc(2026, 3, 8, 7, 30),
    ]


def test_us_fall_back_repeated_time_fires_once_on_first_pass() -> None:
    # 2026-11-01 02:00 EDT -> 01:00 EST; 01:30 happens at 05:30Z and 06:30Z
    assert next_cron("30 1 * * *", NY, utc(2026, 10, 31, 12)) == utc(2026, 11, 1, 5, 30)
    assert next_cron("30 1 * * *", NY, utc(2026, 11, 1, 5, 30)) == utc(2026, 11, 2, 6, 30)


def test_us_fall_back_half_hours_skip_second_pass() -> None:
    got = chain("*/30 * * * *", NY, utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 8))
    assert got == [
        utc(2026, 11, 1, 5),  # 01:00 EDT
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT
        utc(2026, 11, 1, 7),  # 02:00 EST; 01:00 and 01:30 EST never fire
        utc(2026, 11, 1, 7, 30),
        utc(2026, 11, 1, 8),
    ]


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (utc(2026, 11, 1, 6), utc(2026, 11, 1, 7)),  # 01:00 EST, start of second pass
        (utc(2026, 11, 1, 6, 10), utc(2026, 11, 1, 7)),  # inside the second pass
        (utc(2026, 11, 1, 6, 59, 59, 999000), utc(2026, 11, 1, 7)),
        (utc(2026, 11, 1, 5, 59, 59), utc(2026, 11, 1, 7)),  # end of first pass
    ],
)
def test_after_inside_repeated_hour(after: datetime, expected: datetime) -> None:
    assert next_cron("*/30 * * * *", NY, after) == expected
    assert next_cron("*/30 * * * * *", NY, after) == expected


def test_per_second_cron_in_second_pass_jumps_to_end_of_repeated_hour() -> None:
    # every second 01:00-01:59 was already produced in the first pass
    assert next_cron("* * * * * *", NY, utc(2026, 11, 1, 6, 10)) == utc(2026, 11, 1, 7)
    assert next_cron("* * * * * *", NY, utc(2026, 11, 1, 5, 10)) == utc(2026, 11, 1, 5, 10, 1)


@pytest.mark.parametrize(
    ("tz", "start"),
    [
        (NY, utc(2026, 3, 8, 4)),
        (NY, utc(2026, 11, 1, 3)),
        (LORD_HOWE, utc(2026, 10, 3, 13)),  # 02:00 -> 02:30 local
        (LORD_HOWE, utc(2026, 4, 4, 12)),  # 02:00 -> 01:30 local
        ("Asia/Tokyo", utc(2026, 3, 8, 4)),
    ],
)
@pytest.mark.parametrize(
    "expr", ["*/15 * * * *", "*/30 * * * *", "0 * * * *", "30 2 * * *", "45 1 * * *", "*/7 * * * *"]
)
def test_matches_brute_force_around_transitions(tz: str, start: datetime, expr: str) -> None:
    end = start + timedelta(hours=6)
    got = chain(expr, tz, start, end)
    assert got == brute_force(expr, tz, start, end)
    assert len(set(got)) == len(got)


def test_lord_howe_half_hour_shifts() -> None:
    # gap 02:00-02:30 on 2026-10-04: 02:15 fires at 02:30 (+11) = 15:30Z the day before
    assert next_cron("15 2 * * *", LORD_HOWE, utc(2026, 10, 3)) == utc(2026, 10, 3, 15, 30)
    # repeated 01:30-02:00 on 2026-04-05: 01:45 fires once, at +11
    assert next_cron("45 1 * * *", LORD_HOWE, utc(2026, 4, 4)) == utc(2026, 4, 4, 14, 45)
    assert next_cron("45 1 * * *", LORD_HOWE, utc(2026, 4, 4, 14, 45)) == utc(2026, 4, 5, 15, 15)


# -------------------------------------------------------------- prev_cron


def test_prev_cron_is_inclusive() -> None:
    assert prev_cron("*/15 * * * *", "UTC", utc(2026, 1, 1, 0, 15)) == utc(2026, 1, 1, 0, 15)
    at = utc(2026, 1, 1, 0, 14, 59, 999000)
    assert prev_cron("*/15 * * * *", "UTC", at) == utc(2026, 1, 1)
    assert prev_cron("0 9 * * mon", "UTC", utc(2026, 1, 7)) == utc(2026, 1, 5, 9)


def test_prev_cron_around_dst() -> None:
    # inside the second pass the latest firing is the first pass's last one
    assert prev_cron("*/10 * * * *", NY, utc(2026, 11, 1, 6, 40)) == utc(2026, 11, 1, 5, 50)
    assert prev_cron("*/10 * * * *", NY, utc(2026, 11, 1, 7, 5)) == utc(2026, 11, 1, 7)
    # the skipped 02:30 counts as fired at 03:00 EDT
    assert prev_cron("30 2 * * *", NY, utc(2026, 3, 8, 7, 5)) == utc(2026, 3, 8, 7)
    assert prev_cron("30 2 * * *", NY, utc(2026, 3, 8, 6, 59)) == utc(2026, 3, 7, 7, 30)


# ------------------------------------------------------------- properties


def cron_field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    return st.one_of(
        st.just("*"),
        value.map(str),
        st.tuples(value, value).map(lambda t: f"{min(t)}-{max(t)}"),
        st.integers(1, high - low + 1).map(lambda n: f"*/{n}"),
        st.tuples(value, value, st.integers(1, 10)).map(
            lambda t: f"{min(t[:2])}-{max(t[:2])}/{t[2]}"
        ),
        st.lists(value, min_size=1, max_size=4).map(lambda v: ",".join(map(str, v))),
    )


@st.composite
def cron_exprs(draw: st.DrawFn) -> str:
    parts = [
        draw(cron_field(0, 59)),
        draw(cron_field(0, 23)),
        draw(cron_field(1, 31)),
        draw(cron_field(1, 12)),
        draw(cron_field(0, 6)),
    ]
    if draw(st.booleans()):
        parts.insert(0, draw(cron_field(0, 59)))
    expr = " ".join(parts)
    try:
        validate_cron(expr)
    except ValueError:  # e.g. day 31 restricted to February
        assume(False)
    return expr


_INSTANTS = st.datetimes(datetime(2025, 1, 1), datetime(2028, 12, 31)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=UTC)
)
# DST transitions of the zones below, to land `after` near a gap or a repeated hour
_TRANSITIONS = [
    utc(2026, 3, 8, 7), utc(2026, 11, 1, 6),  # New York
    utc(2026, 10, 3, 15, 30), utc(2026, 4, 4, 15),  # Lord Howe
    utc(2026, 3, 29, 1), utc(2026, 10, 25, 1),  # London
]  # fmt: skip
_NEAR_TRANSITIONS = st.builds(
    lambda t, ms: t + timedelta(milliseconds=ms),
    st.sampled_from(_TRANSITIONS),
    st.integers(-3 * 3_600_000, 3 * 3_600_000),
)


@settings(max_examples=200, deadline=None)
@given(expr=cron_exprs(), after=_INSTANTS)
def test_utc_matches_croniter(expr: str, after: datetime) -> None:
    six = len(expr.split()) == 6
    naive = after.replace(tzinfo=None)
    ref = croniter(expr, naive, second_at_beginning=six)
    assert next_cron(expr, "UTC", after) == ref.get_next(datetime).replace(tzinfo=UTC)
    back = croniter(expr, naive + timedelta(microseconds=1), second_at_beginning=six)
    assert prev_cron(expr, "UTC", after) == back.get_prev(datetime).replace(tzinfo=UTC)


@settings(max_examples=200, deadline=None)
@given(
    expr=cron_exprs(),
    tz=st.sampled_from([NY, LORD_HOWE, "Europe/London", "Asia/Tokyo"]),
    after=st.one_of(_INSTANTS, _NEAR_TRANSITIONS),
)
def test_next_and_prev_agree_in_zones(expr: str, tz: str, after: datetime) -> None:
    nxt = next_cron(expr, tz, after)
    assert nxt > after
    # never the second pass of a repeated hour
    assert resolve_local(nxt.astimezone(get_zone(tz)).replace(tzinfo=None), tz) == nxt
    assert prev_cron(expr, tz, nxt) == nxt
    # nothing fires in (after, nxt)
    before = prev_cron(expr, tz, nxt - timedelta(milliseconds=1))
    assert before is None or before <= after


# ---------------------------------------------------------- resolve_local


def test_resolve_local() -> None:
    assert resolve_local(datetime(2026, 7, 1, 9), NY) == utc(2026, 7, 1, 13)
    # gap: the end of the gap, 03:00 EDT
    assert resolve_local(datetime(2026, 3, 8, 2, 30), NY) == utc(2026, 3, 8, 7)
    assert resolve_local(datetime(2026, 3, 8, 2, 0), NY) == utc(2026, 3, 8, 7)
    assert resolve_local(datetime(2026, 3, 8, 3, 0), NY) == utc(2026, 3, 8, 7)
    assert resolve_local(datetime(2026, 3, 8, 1, 59, 59), NY) == utc(2026, 3, 8, 6, 59, 59)
    # overlap: the first pass (EDT)
    assert resolve_local(datetime(2026, 11, 1, 1, 30), NY) == utc(2026, 11, 1, 5, 30)
    assert resolve_local(datetime(2026, 11, 1, 2, 0), NY) == utc(2026, 11, 1, 7)
    # half-hour gap in Lord Howe
    assert resolve_local(datetime(2026, 10, 4, 2, 10), LORD_HOWE) == utc(2026, 10, 3, 15, 30)
    with pytest.raises(ValueError, match="naive"):
        resolve_local(utc(2026, 1, 1), NY)


# ------------------------------------------------------------- parse_run_at


def test_parse_run_at() -> None:
    assert parse_run_at("2026-05-01T12:00:00Z", NY) == utc(2026, 5, 1, 12)
    assert parse_run_at("2026-05-01T12:00:00+09:00", NY) == utc(2026, 5, 1, 3)
    assert parse_run_at("2026-05-01T12:00:00", NY) == utc(2026, 5, 1, 16)
    assert parse_run_at("2026-05-01T12:00:00", "UTC") == utc(2026, 5, 1, 12)
    assert parse_run_at("2026-03-08T02:30:00", NY) == utc(2026, 3, 8, 7)  # gap
    assert parse_run_at("2026-11-01T01:30:00", NY) == utc(2026, 11, 1, 5, 30)  # overlap
    # truncated to the millisecond the database stores
    assert parse_run_at("2026-05-01T12:00:00.123456Z", "UTC") == utc(2026, 5, 1, 12, 0, 0, 123000)
    assert parse_run_at("2026-05-01T12:00:00.987654", "UTC") == utc(2026, 5, 1, 12, 0, 0, 987000)


@pytest.mark.parametrize("value", ["", "tomorrow", "2026-13-01T00:00:00", "2026-05-01 25:00", 5])
def test_parse_run_at_rejects_garbage(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_run_at(value, "UTC")


def test_parse_run_at_rejects_bad_zone() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        parse_run_at("2026-05-01T12:00:00", "Nowhere/Town")


# --------------------------------------------------------------- intervals

FIRST = utc(2026, 1, 1, 0, 0, 0, 123000)


def test_next_interval_basics() -> None:
    assert next_interval(FIRST, 60, FIRST - timedelta(days=1)) == FIRST  # n = 0
    assert next_interval(FIRST, 60, FIRST) == FIRST + timedelta(seconds=60)  # strictly after
    assert next_interval(FIRST, 60, FIRST + timedelta(seconds=59.999)) == FIRST + timedelta(
        seconds=60
    )
    assert next_interval(FIRST, 60, FIRST + timedelta(seconds=60)) == FIRST + timedelta(seconds=120)


@pytest.mark.parametrize("interval", [1, 1.1, 2.5, 7.3, 86400, 0.1 + 0.2 + 1])
def test_interval_nth_is_exact_after_a_million(interval: float) -> None:
    n = 10**6
    step_ms = round(interval * 1000)
    nth = FIRST + timedelta(milliseconds=n * step_ms)
    assert next_interval(FIRST, interval, nth - timedelta(milliseconds=1)) == nth
    assert next_interval(FIRST, interval, nth) == nth + timedelta(milliseconds=step_ms)
    assert prev_interval(FIRST, interval, nth) == nth
    assert prev_interval(FIRST, interval, nth - timedelta(milliseconds=1)) == nth - timedelta(
        milliseconds=step_ms
    )


def test_interval_does_not_drift_like_repeated_float_addition() -> None:
    # summing 1.1 a million times as floats drifts; the grid is computed from `first`
    assert sum([1.1] * 1_000_000) != 1_100_000
    got = next_interval(FIRST, 1.1, FIRST + timedelta(seconds=1.1 * 999_999))
    assert got == FIRST + timedelta(milliseconds=1100 * 1_000_000)


def test_prev_interval() -> None:
    assert prev_interval(FIRST, 60, FIRST - timedelta(milliseconds=1)) is None
    assert prev_interval(FIRST, 60, FIRST) == FIRST
    assert prev_interval(FIRST, 60, FIRST + timedelta(seconds=179)) == FIRST + timedelta(
        seconds=120
    )


@pytest.mark.parametrize("interval", [0, -5, 0.0001])
def test_interval_rejects_non_positive(interval: float) -> None:
    with pytest.raises(ValueError):
        next_interval(FIRST, interval, FIRST)


@settings(max_examples=200, deadline=None)
@given(
    interval=st.one_of(st.integers(1, 10**6), st.floats(1, 10**5)),
    offset_ms=st.integers(-(10**9), 10**13),
)
def test_interval_properties(interval: float, offset_ms: int) -> None:
    after = FIRST + timedelta(milliseconds=offset_ms)
    nxt = next_interval(FIRST, interval, after)
    step = timedelta(milliseconds=round(interval * 1000))
    assert nxt > after
    assert (nxt - FIRST) % step == timedelta(0)
    assert nxt == FIRST or nxt - step <= after
    prv = prev_interval(FIRST, interval, after)
    assert prv is None if after < FIRST else prv is not None and nxt - prv == step


# ---------------------------------------------------------------- dispatch


def test_dispatch_time_scheduled() -> None:
    config = {"run_at": "2026-05-01T12:00:00.000Z"}
    run_at = utc(2026, 5, 1, 12)
    assert next_occurrence("time_scheduled", config, run_at - timedelta(seconds=1)) == run_at
    assert next_occurrence("time_scheduled", config, run_at) is None
    assert latest_due("time_scheduled", config, run_at) == run_at
    assert latest_due("time_scheduled", config, run_at - timedelta(milliseconds=1)) is None


def test_dispatch_cron_scheduled() -> None:
    config = {"cron": "0 9 * * *", "timezone": "Asia/Tokyo"}
    assert next_occurrence("cron_scheduled", config, utc(2026, 1, 1, 1)) == utc(2026, 1, 2)
    assert latest_due("cron_scheduled", config, utc(2026, 1, 1, 1)) == utc(2026, 1, 1)
    default_utc = {"cron": "0 9 * * *"}
    assert next_occurrence("cron_scheduled", default_utc, utc(2026, 1, 1)) == utc(2026, 1, 1, 9)


def test_dispatch_interval_scheduled() -> None:
    config = {"interval_seconds": 30, "first_run_at": "2026-01-01T00:00:00.000Z"}
    assert next_occurrence("interval_scheduled", config, utc(2025, 1, 1)) == utc(2026, 1, 1)
    assert next_occurrence("interval_scheduled", config, utc(2026, 1, 1, 0, 1, 5)) == utc(
        2026, 1, 1, 0, 1, 30
    )
    assert latest_due("interval_scheduled", config, utc(2025, 1, 1)) is None
    assert latest_due("interval_scheduled", config, utc(2026, 1, 1, 1, 0, 29)) == utc(2026, 1, 1, 1)


def test_dispatch_webhook_and_unknown() -> None:
    assert next_occurrence("webhook", {}, utc(2026, 1, 1)) is None
    assert latest_due("webhook", {}, utc(2026, 1, 1)) is None
    with pytest.raises(ValueError, match="unknown trigger type"):
        next_occurrence("sometimes", {}, utc(2026, 1, 1))
    with pytest.raises(ValueError, match="unknown trigger type"):
        latest_due("sometimes", {}, utc(2026, 1, 1))
