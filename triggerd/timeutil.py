"""UTC helpers. The database and the daemon work in naive-free, aware UTC datetimes;
time zones appear only at the edges (cron evaluation, API input)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


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
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration (use 500ms, 90s, 15m, 2h, 1d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


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


__all__ = [
    "from_db",
    "monotonic",
    "parse_duration",
    "parse_iso_utc",
    "to_db",
    "to_iso",
    "utcnow",
]
