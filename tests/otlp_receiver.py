"""A tiny OTLP/HTTP trace receiver for tests: `POST /v1/traces` with a protobuf
ExportTraceServiceRequest, decoded with opentelemetry-proto into `ReceivedSpan`s.

    async with OtlpReceiver() as receiver:
        env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
        ...
        spans = await receiver.wait_for(lambda s: s.trace_id == wanted, count=4)

`OtlpReceiver(hang=True)` accepts the requests and never answers: a collector that is
up but stuck, the worst case for an exporter. Listens on 127.0.0.1, a free port.

As a stand-in collector for measuring export's cost (bench/ingest.py with the OTEL_*
variables set), `python -m tests.otlp_receiver --port 4318 [--decode]` answers every
export and prints the spans received every 10 s; without --decode it only counts bytes,
so its own CPU stays out of the measurement as far as it can.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.support import wait_until

KINDS = {Span.SPAN_KIND_INTERNAL: "internal", Span.SPAN_KIND_SERVER: "server",
         Span.SPAN_KIND_CLIENT: "client", Span.SPAN_KIND_PRODUCER: "producer",
         Span.SPAN_KIND_CONSUMER: "consumer"}  # fmt: skip


def _value(value: AnyValue) -> Any:
    field = value.WhichOneof("value")
    return getattr(value, field) if field else None


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    kind: str
    trace_id: str  # hex, as in a traceparent
    span_id: str
    parent_span_id: str  # "" for a root
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    error: bool

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


class OtlpReceiver:
    def __init__(self, *, hang: bool = False, decode: bool = True, port: int = 0) -> None:
        self.hang = hang
        self.decode = decode
        self.received_bytes = 0
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.port = port
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL, for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter adds /v1/traces)."""
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> OtlpReceiver:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:  # fmt: skip
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.hang:
            await self._release.wait()
        assert request.content_type == "application/x-protobuf", request.content_type
        body = await request.read()
        self.received_bytes += len(body)
        if not self.decode:
            return web.Response(body=b"", content_type="application/x-protobuf")
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(ReceivedSpan(
                        name=span.name, kind=KINDS.get(span.kind, "unspecified"),
                        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        resource=resource,
                        error=span.status.code == Status.STATUS_CODE_ERROR,
                    ))  # fmt: skip
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")  # fmt: skip

    async def wait_for(self, match: Callable[[ReceivedSpan], bool], count: int = 1,
                       timeout: float = 20.0) -> list[ReceivedSpan]:  # fmt: skip
        """Wait until at least `count` received spans match; returns them all."""

        def found() -> list[ReceivedSpan]:
            return [s for s in self.spans if match(s)]

        async def enough() -> bool:
            return len(found()) >= count

        try:
            await wait_until(enough, timeout=timeout, what=f"{count} matching span(s)")
        except AssertionError as exc:
            seen = [(s.kind, s.name, s.trace_id) for s in self.spans]
            raise AssertionError(f"{exc}; {self.requests} export request(s) of {seen}") from None
        return found()


async def _serve(port: int, decode: bool) -> None:
    async with OtlpReceiver(port=port, decode=decode) as receiver:
        print(f"OTLP/HTTP receiver on {receiver.url}/v1/traces", flush=True)
        while True:
            await asyncio.sleep(10)
            spans = f", {len(receiver.spans)} spans" if decode else ""
            print(f"{receiver.requests} exports, {receiver.received_bytes} bytes{spans}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a local OTLP/HTTP trace receiver")
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--decode", action="store_true", help="decode and keep the spans")
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.decode))
