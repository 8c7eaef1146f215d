"""W3C Trace Context: the `traceparent` value, kept as the plain string it travels as.

    00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex>

Every event has one (stored with it, carried in its Kafka records' headers): the trace
it belongs to and the span that fired it. A webhook request's own `traceparent`
continues its caller's trace; anything else starts a new trace. Each delivery attempt
sends a child: the same trace id, a new span id.

Strings rather than objects: a traceparent is minted for every event on the ingestion
and scheduling hot paths, and a 55-character string costs one allocation, is written
to SQL and Kafka as it is, and is not tracked by the garbage collector. Ids are random
bits from the `random` module, as OpenTelemetry's own id generator makes them: unique
with overwhelming odds, not secrets, and a third of the cost of os.urandom.
"""

from __future__ import annotations

import random
import re

HEADER = "traceparent"
VERSION = "00"
LENGTH = 55
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_bits = random.getrandbits  # reseeded in a forked child by the random module itself
# Version 00 exactly, lowercase hex, as the recommendation writes it; a value of another
# version or case is not ours to guess at, so it is ignored (a new trace starts).
_FORMAT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def parse_traceparent(value: str | None) -> str | None:
    """`value` if it is a valid version-00 traceparent, else None (never raises). All-zero
    trace or parent ids are invalid. Surrounding whitespace is dropped."""
    if not value:
        return None
    if len(value) != LENGTH:
        value = value.strip()
        if len(value) != LENGTH:
            return None
    if _FORMAT.fullmatch(value) is None:
        return None
    if value[3:35] == _ZERO_TRACE or value[36:52] == _ZERO_SPAN:
        return None
    return value


def new_traceparent() -> str:
    """The start of a new trace (scheduled firings, test runs, replays, backfills, and
    webhooks that came without one), flagged sampled: nothing upstream decided against
    recording it."""
    trace, span = _bits(128), _bits(64)
    if not trace or not span:  # all-zero ids are invalid: never send one
        return new_traceparent()
    return f"00-{trace:032x}-{span:016x}-01"


def child_of(parent: str) -> str:
    """A traceparent for a new span under `parent` (a valid traceparent): the same trace
    id and flags, a new span id."""
    span = _bits(64)
    if not span:
        return child_of(parent)
    return f"{parent[:36]}{span:016x}{parent[52:]}"


def continue_or_start(incoming: str | None) -> tuple[str, str | None]:
    """For a request that may carry a traceparent: (the traceparent of our span, the
    caller's parsed traceparent or None). An invalid one is ignored: a new trace starts."""
    parent = parse_traceparent(incoming)
    return (child_of(parent) if parent is not None else new_traceparent()), parent


def trace_id(traceparent: str) -> str:
    return traceparent[3:35]


def span_id(traceparent: str) -> str:
    return traceparent[36:52]


def flags(traceparent: str) -> int:
    return int(traceparent[53:55], 16)


__all__ = ["HEADER", "child_of", "continue_or_start", "flags", "new_traceparent",
           "parse_traceparent", "span_id", "trace_id"]  # fmt: skip
