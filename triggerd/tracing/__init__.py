"""Spans: recorded and exported only when OpenTelemetry export is configured.

Trace context propagation is always on and needs none of this (domain/tracecontext.py:
every event has a traceparent, carried to Kafka and to each delivery). This package
decides whether spans are *recorded*:

- `Tracer` (the default) records nothing. Its `enabled` is False, and the hot paths
  (webhook ingestion, the scheduler's publishing, the worker's deliveries) test that
  one attribute before doing any per-event tracing work, so unconfigured triggerd pays
  nothing for it;
- `build_tracer(settings.otel)` returns the OTLP exporter of tracing/otlp.py when
  OTEL_TRACES_EXPORTER=otlp. Only that module imports the OpenTelemetry SDK.

A span is described by traceparents, the form triggerd carries context in: `own` names
the span itself (its trace and span id are the ones we minted and sent along, so what
we export matches what receivers saw), `parent` the span it belongs under (a remote
caller's, or the event's). Spans are started and ended on the event loop's thread.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from enum import StrEnum

from triggerd.config import OtelSettings
from triggerd.domain.jobs import Job

AttributeValue = str | int | float | bool
Attributes = Mapping[str, AttributeValue]


class Kind(StrEnum):
    SERVER = "server"
    CLIENT = "client"
    PRODUCER = "producer"
    CONSUMER = "consumer"
    INTERNAL = "internal"


class Span:
    """A span that records nothing (what the default Tracer hands out)."""

    __slots__ = ()

    def set(self, key: str, value: AttributeValue) -> None:
        """Set an attribute."""

    def fail(self, description: str) -> None:
        """Mark the span as failed (error status), saying why."""

    def end(self, end_ns: int | None = None) -> None:
        """End the span now, or at `end_ns` (time.time_ns())."""


NO_SPAN = Span()


class Tracer:
    """Records nothing: the tracer of a daemon without OpenTelemetry export."""

    enabled = False

    def start(self, name: str, kind: Kind, *, own: str | None = None,
              parent: str | None = None, attributes: Attributes | None = None,
              start_ns: int | None = None) -> Span:  # fmt: skip
        """Start a span. `own`: the traceparent the span is (its trace and span ids);
        without it the span gets a new span id under `parent`. `parent`: the traceparent
        of the span it belongs under; without it (and without `own`'s) it is a root."""
        return NO_SPAN

    def record(self, name: str, kind: Kind, *, start_ns: int, end_ns: int, own: str | None = None,
               parent: str | None = None, attributes: Attributes | None = None,
               error: str | None = None) -> None:  # fmt: skip
        """A finished span in one call (for work measured in batches: every job of a
        batch gets a span of its own with the batch's times). `error`: it failed, why."""
        span = self.start(name, kind, own=own, parent=parent, attributes=attributes,
                          start_ns=start_ns)  # fmt: skip
        if error is not None:
            span.fail(error)
        span.end(end_ns)

    async def aclose(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """Export what is queued, waiting at most `timeout` seconds."""


def trace_publishes(tracer: Tracer, jobs: Sequence[Job], results: Sequence[object],
                    started_ns: int, topic: str) -> None:  # fmt: skip
    """A producer span per job of one batch publish (`results`: Bus.publish_many's),
    each under its event's trace, with the batch's start and now as its times."""
    ended = time.time_ns()
    for job, result in zip(jobs, results, strict=True):
        error = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else None
        tracer.record(f"publish {topic}", Kind.PRODUCER, parent=job.traceparent,
                      start_ns=started_ns, end_ns=ended, error=error,
                      attributes={"messaging.system": "kafka",
                                  "messaging.destination.name": topic,
                                  "triggerd.event_id": job.event_id,
                                  "triggerd.attempt": job.attempt})  # fmt: skip


def build_tracer(settings: OtelSettings, instance_id: str = "") -> Tracer:
    """The tracer the settings ask for: OTLP export, or the one that records nothing."""
    if not settings.enabled:
        return Tracer()
    from triggerd.tracing.otlp import OtlpTracer

    return OtlpTracer(settings, instance_id)


__all__ = ["NO_SPAN", "Attributes", "Kind", "Span", "Tracer", "build_tracer", "trace_publishes"]
