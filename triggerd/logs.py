"""Logging: one JSON object per line (or plain text), with request/trigger/event IDs
carried by contextvars so every line written while handling something names it. Python
warnings are routed through logging too (logger `py.warnings`), so nothing reaches
stderr unformatted."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
trigger_id_var: ContextVar[str | None] = ContextVar("trigger_id", default=None)
event_id_var: ContextVar[str | None] = ContextVar("event_id", default=None)
_CONTEXT = (
    ("request_id", request_id_var),
    ("trigger_id", trigger_id_var),
    ("event_id", event_id_var),
)

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


@contextlib.contextmanager
def log_context(**values: str | None) -> Iterator[None]:
    """Bind trigger_id / event_id / request_id for the lines logged inside the block."""
    tokens = [(var, var.set(values[name])) for name, var in _CONTEXT if name in values]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, var in _CONTEXT:
            value = var.get()
            if value is not None:
                entry[name] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{n}={v.get()}" for n, v in _CONTEXT if v.get() is not None)
        return f"{line} [{context}]" if context else line


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Python warnings (a library's DeprecationWarning, a driver's note) would otherwise be
    # written raw to stderr, breaking the one-JSON-object-per-line contract.
    logging.captureWarnings(True)
    # aiokafka logs every reconnect attempt at ERROR; our own lines say what is down.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
