"""The UTC helpers every event goes through: millisecond truncation, the ISO form of
the Kafka job and the API, and event ids."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triggerd.domain.models import new_id
from triggerd.domain.timeutil import parse_duration, parse_query_time, to_iso, utcnow


def test_utcnow_is_aware_utc_in_whole_milliseconds() -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    now = utcnow()
    after = datetime.now(UTC)
    assert now.tzinfo is UTC
    assert now.microsecond % 1000 == 0
    assert before <= now <= after


def test_to_iso_forms() -> None:
    assert to_iso(None) is None
    assert to_iso(datetime(2026, 3, 8, 7, 0, 0, 5999, tzinfo=UTC)) == "2026-03-08T07:00:00.005Z"
    # naive values are UTC by convention; other zones are converted
    assert to_iso(datetime(2026, 3, 8, 7, 0)) == "2026-03-08T07:00:00.000Z"
    eastern = datetime(2026, 3, 8, 3, 0, 0, 250000, tzinfo=ZoneInfo("America/New_York"))
    assert to_iso(eastern) == "2026-03-08T07:00:00.250Z"
    assert to_iso(datetime(999, 1, 2, tzinfo=timezone(timedelta(hours=1)))) == (
        "0999-01-01T23:00:00.000Z"
    )


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([UTC, None, timezone(timedelta(hours=-5))])))
def test_to_iso_matches_strftime(value: datetime) -> None:
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    expected = utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    assert to_iso(value) == expected.rjust(24, "0")


def test_new_id_is_a_time_ordered_version_7_uuid() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 2000
    for value in ids[:200]:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                            value)  # fmt: skip
        assert before <= int(value[:8] + value[9:13], 16) <= after  # its milliseconds
    # made in different milliseconds, they sort in the order they were made
    millis = [value[:13] for value in ids]
    assert millis == sorted(millis)


@pytest.mark.parametrize("value", ["9" * 400, "1" * 30 + "d", 1e300, float("inf"), float("nan")])
def test_durations_past_a_century_are_refused_not_overflowed(value: object) -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2026-11-22T10:00:00Z", "2026-11-22T10:00:00.000Z"),
     ("2026-11-22T10:00:00", "2026-11-22T10:00:00.000Z"),  # no offset: UTC
     ("2026-11-22", "2026-11-22T00:00:00.000Z"),
     ("2026-11-22T12:00:00 02:00", "2026-11-22T10:00:00.000Z"),  # "+" sent unencoded
     ("2026-11-22T12:00:00.5+02:00", "2026-11-22T10:00:00.500Z")],
)  # fmt: skip
def test_query_times_are_read_leniently(text: str, expected: str) -> None:
    assert to_iso(parse_query_time(text)) == expected
