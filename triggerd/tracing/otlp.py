"""Span export over OTLP/HTTP with OpenTelemetry's SDK (imported only from here, and only
when export is configured).

Batched and bounded: ended spans go to the SDK's BatchSpanProcessor, whose queue holds
at most OTEL_BSP_MAX_QUEUE_SIZE spans (2048 by default) and which exports from a thread
of its own, each request bounded by OTEL_EXPORTER_OTLP_TIMEOUT. A slow or dead
collector therefore never makes the event loop wait, and memory stays bounded: once
the queue is full, spans are dropped (the SDK says so in a warning, at most one per 20
seconds).

The spans take the ids triggerd minted and propagated (`own`), through an id generator
that hands out the preset ids of the span being started: the SDK would otherwise pick
its own, and the exported trace would not match the traceparent the delivery's
receiver saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace import Span as OtelSpan

from triggerd import __version__
from triggerd.config import OtelSettings
from triggerd.tracing import Attributes, AttributeValue, Kind, Span, Tracer

log = logging.getLogger(__name__)

_KINDS = {Kind.SERVER: SpanKind.SERVER, Kind.CLIENT: SpanKind.CLIENT,
          Kind.PRODUCER: SpanKind.PRODUCER, Kind.CONSUMER: SpanKind.CONSUMER,
          Kind.INTERNAL: SpanKind.INTERNAL}  # fmt: skip
_ROOT = Context()  # no parent: never the caller's ambient context


class _GivenIds(IdGenerator):
    """The SDK's id generator, except for the span being started by `OtlpTracer.start`
    with ids of ours: those are handed out once, then random ids again."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0
        self._random = RandomIdGenerator()

    def generate_trace_id(self) -> int:
        given, self.trace_id = self.trace_id, 0
        return given or self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        given, self.span_id = self.span_id, 0
        return given or self._random.generate_span_id()

    def is_trace_id_random(self) -> bool:
        return True


class _Span(Span):
    __slots__ = ("_span",)

    def __init__(self, span: OtelSpan) -> None:
        self._span = span

    def set(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def fail(self, description: str) -> None:
        self._span.set_status(Status(StatusCode.ERROR, description))

    def end(self, end_ns: int | None = None) -> None:
        self._span.end(end_time=end_ns)


def _context(traceparent: str | None) -> Context:
    if traceparent is None:
        return _ROOT
    parent = SpanContext(trace_id=int(traceparent[3:35], 16),
                         span_id=int(traceparent[36:52], 16), is_remote=True,
                         trace_flags=TraceFlags(int(traceparent[53:55], 16)))  # fmt: skip
    return set_span_in_context(NonRecordingSpan(parent), _ROOT)


class OtlpTracer(Tracer):
    enabled = True

    def __init__(self, settings: OtelSettings, instance_id: str = "") -> None:
        attributes: dict[str, AttributeValue] = {"service.name": settings.service_name,
                                                 "service.version": __version__}  # fmt: skip
        if instance_id:
            attributes["service.instance.id"] = instance_id
        self._ids = _GivenIds()
        # shutdown_on_exit=False: the SDK's atexit hook would hold the exit of a process
        # whose collector is down for the whole export timeout; aclose() bounds it.
        self._provider = TracerProvider(resource=Resource.create(attributes),
                                        id_generator=self._ids, shutdown_on_exit=False)  # fmt: skip
        self.exporter = OTLPSpanExporter(endpoint=settings.endpoint)
        self._provider.add_span_processor(BatchSpanProcessor(self.exporter))
        self._tracer = self._provider.get_tracer("triggerd", __version__)
        log.info("exporting traces over OTLP/HTTP to %s as %s", settings.endpoint,
                 settings.service_name)  # fmt: skip

    def start(self, name: str, kind: Kind, *, own: str | None = None,
              parent: str | None = None, attributes: Attributes | None = None,
              start_ns: int | None = None) -> Span:  # fmt: skip
        if own is not None:
            if parent is None:
                self._ids.trace_id = int(own[3:35], 16)
            self._ids.span_id = int(own[36:52], 16)
        try:
            span = self._tracer.start_span(name, _context(parent), _KINDS[kind], attributes,
                                           start_time=start_ns)  # fmt: skip
        finally:
            self._ids.trace_id = self._ids.span_id = 0
        return _Span(span)

    async def aclose(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """Flush and stop the exporter in a thread of its own (the SDK's shutdown blocks
        for up to its export timeout when the collector is down); wait `timeout` at most.
        A daemon thread: an export still hanging then does not hold the process's exit."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        def shut_down() -> None:
            try:
                self._provider.shutdown()
            except Exception:
                log.exception("trace export shutdown failed")
            finally:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(finished)

        threading.Thread(target=shut_down, name="otel-shutdown", daemon=True).start()
        try:
            async with asyncio.timeout(timeout):
                await done
        except TimeoutError:
            log.warning("trace export did not finish within %.1fs; spans still queued are lost",
                        timeout)  # fmt: skip
