"""The misfire policies' choice of occurrences after downtime (domain/misfire.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from triggerd.domain.enums import MisfirePolicy
from triggerd.domain.misfire import MISSED_LISTED, recover
from triggerd.domain.occurrences import due_at
from triggerd.domain.timeutil import to_iso

TRIGGER = "0d9e8f7a-6b5c-4d3e-8f2a-1b0c9d8e7f6a"
NOW = datetime(2026, 5, 4, 12, 0, 30, 250_000, tzinfo=UTC)


def minutely(**extra: Any) -> dict[str, Any]:
    return {"cron": "* * * * *", "timezone": "UTC", **extra}


def minutes_ago(n: int) -> datetime:
    return NOW.replace(second=0, microsecond=0) - timedelta(minutes=n)


def test_latest_fires_the_most_recent_and_lists_the_rest_missed() -> None:
    config = minutely()
    first = due_at(TRIGGER, config, minutes_ago(5))
    result = recover(TRIGGER, "cron_scheduled", config, first, NOW)
    assert result.policy is MisfirePolicy.LATEST
    assert result.fire is not None and result.fire.scheduled_for == minutes_ago(0)
    assert [d.scheduled_for for d in result.missed] == [minutes_ago(n) for n in (5, 4, 3, 2, 1)]
    assert result.missed_total == 5 and result.resume is None
    assert result.fired_note() == "fired after downtime; 5 missed occurrence(s) skipped"
    assert all("misfire_policy latest" in note for note in result.missed_notes())


def test_latest_with_one_missed_occurrence_fires_it_as_itself() -> None:
    config = minutely()
    first = due_at(TRIGGER, config, minutes_ago(0))
    result = recover(TRIGGER, "cron_scheduled", config, first, NOW)
    assert result.fire == first and result.missed == () and result.missed_total == 0
    assert result.fired_note() == "fired after downtime"


def test_skip_fires_nothing_and_goes_on_after_now() -> None:
    config = minutely(misfire_policy="skip")
    first = due_at(TRIGGER, config, minutes_ago(3))
    result = recover(TRIGGER, "cron_scheduled", config, first, NOW)
    assert result.fire is None
    assert [d.scheduled_for for d in result.missed] == [minutes_ago(n) for n in (3, 2, 1, 0)]
    assert result.resume is not None and result.resume.scheduled_for == minutes_ago(-1)
    assert result.resume.scheduled_for > NOW


def test_all_fires_the_oldest_inside_the_window_and_misses_the_older() -> None:
    config = minutely(misfire_policy="all", catchup_window_seconds=150)
    first = due_at(TRIGGER, config, minutes_ago(6))
    result = recover(TRIGGER, "cron_scheduled", config, first, NOW)
    # The window reaches back to 11:58:00.250: 11:59 and 12:00 fire (the chain), 11:58
    # and older are missed.
    assert result.fire is not None and result.fire.scheduled_for == minutes_ago(1)
    assert [d.scheduled_for for d in result.missed] == [minutes_ago(n) for n in (6, 5, 4, 3, 2)]
    # A window covering everything misses nothing.
    wide = minutely(misfire_policy="all", catchup_window_seconds=3600)
    everything = recover(TRIGGER, "cron_scheduled", wide, first, NOW)
    assert everything.fire == first and everything.missed == ()


def test_all_with_nothing_due_inside_the_window_is_a_skip() -> None:
    config = {"interval_seconds": 600, "first_run_at": "2026-05-04T10:00:00.000Z",
              "misfire_policy": "all", "catchup_window_seconds": 20}  # fmt: skip
    first = due_at(TRIGGER, config, datetime(2026, 5, 4, 11, 0, tzinfo=UTC))
    result = recover(TRIGGER, "interval_scheduled", config, first, NOW)
    assert result.fire is None
    assert [to_iso(d.scheduled_for) for d in result.missed] == [
        "2026-05-04T11:00:00.000Z", "2026-05-04T11:10:00.000Z", "2026-05-04T11:20:00.000Z",
        "2026-05-04T11:30:00.000Z", "2026-05-04T11:40:00.000Z", "2026-05-04T11:50:00.000Z",
        "2026-05-04T12:00:00.000Z"]  # fmt: skip
    assert result.resume is not None and to_iso(result.resume.scheduled_for) == (
        "2026-05-04T12:10:00.000Z")


def test_missed_ones_are_listed_up_to_the_limit_and_counted() -> None:
    config = {"interval_seconds": 1, "first_run_at": "2026-05-01T00:00:00.000Z"}
    start = NOW.replace(microsecond=0) - timedelta(hours=2)  # 7,200 occurrences ago
    result = recover(TRIGGER, "interval_scheduled", config, due_at(TRIGGER, config, start), NOW)
    assert result.fire is not None and result.fire.scheduled_for == NOW.replace(microsecond=0)
    assert result.missed_total == 7200 and not result.capped
    assert len(result.missed) == MISSED_LISTED
    listed = [d.scheduled_for for d in result.missed]
    assert listed[0] == start  # the claimed one, then the most recent before what fired
    assert listed[1:] == [result.fire.scheduled_for - timedelta(seconds=n)
                          for n in range(MISSED_LISTED - 1, 0, -1)]  # fmt: skip
    assert result.unlisted == 7200 - MISSED_LISTED
    assert "6200 more missed after it are not listed" in result.missed_notes()[0]
    assert result.fired_note().endswith("7200 missed occurrence(s) skipped (6200 not listed)")


def test_a_cron_count_stops_at_the_cap() -> None:
    config = {"cron": "* * * * * *", "timezone": "UTC", "misfire_policy": "skip"}
    start = NOW.replace(microsecond=0) - timedelta(hours=5)
    result = recover(TRIGGER, "cron_scheduled", config, due_at(TRIGGER, config, start), NOW)
    assert result.capped and result.missed_total == 10_000
    assert len(result.missed) == MISSED_LISTED
    assert result.missed[-1].scheduled_for == NOW.replace(microsecond=0)


def test_jitter_decides_what_was_missed() -> None:
    """An occurrence nominally past whose jittered time is still ahead was not missed:
    `latest` fires the one before it, and the held one fires later as itself."""
    config = minutely(jitter_seconds=59)
    for seconds in range(0, 60):
        now = minutes_ago(0) + timedelta(seconds=seconds)
        held = due_at(TRIGGER, config, minutes_ago(0))
        result = recover(TRIGGER, "cron_scheduled", config,
                         due_at(TRIGGER, config, minutes_ago(3)), now)  # fmt: skip
        assert result.fire is not None and result.fire.fire_at <= now
        expected = minutes_ago(0) if held.fire_at <= now else minutes_ago(1)
        assert result.fire.scheduled_for == expected
