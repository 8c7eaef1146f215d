"""The Kafka job contract: one JSON message per delivery attempt, and its event's W3C
`traceparent` in the record's headers (not in the JSON: any consumer's tracing library
finds it where it looks for it, and the value stays as the contract lists it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from triggerd.domain.timeutil import parse_iso_utc, to_iso
from triggerd.domain.tracecontext import HEADER, parse_traceparent

# Kafka record headers: (name, value) pairs, in a list (aiokafka's record builder
# takes nothing else).
Headers = list[tuple[str, bytes]]


def trace_header(traceparent: str) -> tuple[str, bytes]:
    return HEADER, traceparent.encode()


def trace_headers(traceparent: str | None) -> Headers | None:
    """The record headers that carry `traceparent` (None: no headers)."""
    return None if traceparent is None else [(HEADER, traceparent.encode())]


def traceparent_in(headers: Iterable[tuple[str, bytes]] | None) -> str | None:
    """The valid traceparent among a record's headers; an invalid one is ignored."""
    for name, value in headers or ():
        if name == HEADER and value:
            try:
                return parse_traceparent(value.decode("ascii"))
            except UnicodeDecodeError:
                return None
    return None


@dataclass(frozen=True, slots=True)
class Job:
    event_id: str
    trigger_id: str | None
    type: str
    source: str
    is_test_run: bool
    payload: Any
    scheduled_for: datetime | None
    fired_at: datetime
    attempt: int = 1
    # `payload` already encoded, when the producer of the job has it: encode() embeds
    # the bytes instead of serializing the payload again.
    payload_json: bytes | None = field(default=None, compare=False, repr=False)
    # The event's trace context: travels in the record's headers, not in encode()'s JSON.
    traceparent: str | None = None
    # When the record reached Kafka (its timestamp), for a consumed job; not encoded.
    published_at: datetime | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> bytes:
        """Partition key: the trigger, so one trigger's jobs stay ordered. An ephemeral
        test run has no trigger and is keyed by its event."""
        return (self.trigger_id or self.event_id).encode()

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "event_id": self.event_id,
                "trigger_id": self.trigger_id,
                "type": self.type,
                "source": self.source,
                "is_test_run": self.is_test_run,
                "payload": self.payload
                if self.payload_json is None
                else orjson.Fragment(self.payload_json),
                "scheduled_for": to_iso(self.scheduled_for),
                "fired_at": to_iso(self.fired_at),
                "attempt": self.attempt,
            }
        )

    def headers(self) -> Headers | None:
        return trace_headers(self.traceparent)

    @classmethod
    def decode(cls, raw: bytes, headers: Iterable[tuple[str, bytes]] | None = None,
               timestamp_ms: int | None = None) -> Job:  # fmt: skip
        """The job of a record's value, headers and timestamp (milliseconds since the
        epoch). Raises ValueError for a value that does not follow the contract; a missing
        or invalid traceparent is None, and so is a timestamp of -1 (none) or less."""
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("a job is a JSON object")
            scheduled = data.get("scheduled_for")
            attempt = data.get("attempt", 1)
            if not isinstance(attempt, int) or attempt < 1:
                raise ValueError("attempt must be a positive integer")
            return cls(
                event_id=str(data["event_id"]),
                trigger_id=data.get("trigger_id"),
                type=str(data["type"]),
                source=str(data["source"]),
                is_test_run=bool(data.get("is_test_run", False)),
                payload=data.get("payload"),
                scheduled_for=parse_iso_utc(scheduled) if scheduled else None,
                fired_at=parse_iso_utc(data["fired_at"]),
                attempt=attempt,
                traceparent=traceparent_in(headers),
                published_at=_from_ms(timestamp_ms),
            )
        except (KeyError, TypeError, AttributeError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"malformed job: {exc}") from exc


def _from_ms(timestamp_ms: int | None) -> datetime | None:
    if timestamp_ms is None or timestamp_ms <= 0:
        return None
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC)
