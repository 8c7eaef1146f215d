"""Span export off (the default): nothing recorded, and the SDK never imported."""

from __future__ import annotations

import subprocess
import sys

from triggerd.config import OtelSettings
from triggerd.domain.tracecontext import new_traceparent
from triggerd.tracing import NO_SPAN, Kind, Tracer, build_tracer


def test_the_default_tracer_records_nothing() -> None:
    tracer = build_tracer(OtelSettings())
    assert type(tracer) is Tracer and not tracer.enabled
    span = tracer.start("x", Kind.SERVER, own=new_traceparent())
    assert span is NO_SPAN
    span.set("a", 1)
    span.fail("no")
    span.end()
    tracer.record("y", Kind.PRODUCER, parent=new_traceparent(), start_ns=1, end_ns=2, error="e")


def test_without_export_the_sdk_is_not_imported() -> None:
    """The daemon's modules, every role's, and an unconfigured tracer: no opentelemetry
    module loaded (a fresh interpreter, so no other test's imports count)."""
    code = (
        "import sys\n"
        "import triggerd.daemon, triggerd.api.routes, triggerd.scheduler.loop\n"
        "import triggerd.worker.role, triggerd.retention\n"
        "from triggerd.config import load_settings\n"
        "from triggerd.tracing import build_tracer\n"
        "build_tracer(load_settings({}).otel)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PATH": ""})  # fmt: skip
    assert out.stdout.strip() == "[]", out.stdout
