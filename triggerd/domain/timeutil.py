"""UTC helpers. The database and the daemon work in naive-free, aware UTC datetimes;
time zones appear only at the edges (cron evaluation, API input)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
MAX_DURATION = 100 * 365 * 86400.0  # seconds: past any sane setting; timedelta's range ends
# A space where an offset's sign belongs: a `+` that reached a query string unencoded.
_SPACE_FOR_PLUS = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$"
)


def utcnow() -> datetime:
    """Aware UTC now, truncated to milliseconds (the precision we store)."""
    # Whole milliseconds as a float are exact to well under a microsecond, and
    # fromtimestamp rounds to the nearest one: the result is the millisecond itself.
    # (Twice as fast as now().replace(); this runs for every event.)
    return datetime.fromtimestamp(time.time_ns() // 1_000_000 / 1000, UTC)


def monotonic() -> float:
    return time.monotonic()


def parse_duration(value: str | int | float) -> float:
    """`500ms`, `90s`, `15m`, `2h`, `1d` or a bare number of seconds -> seconds.

    Raises ValueError with a short reason; callers add the key name.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration like 90s, 15m, 2h")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("must not be negative")
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            shown = str(value) if len(str(value)) <= 40 else str(value)[:40] + "…"
            raise ValueError(f"{shown!r} is not a duration (use 500ms, 90s, 15m, 2h, 1d)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not seconds <= MAX_DURATION:  # also NaN and infinity
        raise ValueError("is too large (at most 100 years)")
    return seconds


def to_iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with milliseconds and a `Z`, or None."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    # "YYYY-MM-DDTHH:MM:SS.mmm" + "Z": isoformat is C code, strftime is not.
    return value.isoformat(timespec="milliseconds")[:23] + "Z"


def from_db(value: datetime | None) -> datetime | None:
    """DATETIME(3) columns come back naive; they are UTC by convention."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_db(value: datetime | None) -> datetime | None:
    """Aware datetime -> naive UTC for DATETIME(3) parameters."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def parse_iso_utc(value: str) -> datetime:
    """Parse an ISO 8601 timestamp that carries an offset (or `Z`) into aware UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("timestamp needs an offset or Z")
    return parsed.astimezone(UTC)


def parse_query_time(value: str) -> datetime:
    """A timestamp from a query string, read leniently: an offset or `Z` when given, UTC
    when not (`2026-11-22T10:00:00`, a date alone), and `+01:00` whose `+` arrived as a
    space because the client did not encode it."""
    text = _SPACE_FOR_PLUS.sub(r"\1+\2", value.strip())
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


__all__ = [
    "from_db",
    "monotonic",
    "parse_duration",
    "parse_iso_utc",
    "parse_query_time",
    "to_db",
    "to_iso",
    "utcnow",
]
