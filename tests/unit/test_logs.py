"""Every line the daemon logs is one JSON object, Python warnings included."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest

from triggerd import logs


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buffer = io.StringIO()
    monkeypatch.setattr("sys.stderr", buffer)
    logs.setup_logging("info", "json")
    try:
        yield buffer
    finally:
        logging.captureWarnings(False)
        root.handlers[:], level = saved
        root.setLevel(level)


def test_a_python_warning_is_a_json_line(stderr: io.StringIO) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("Duplicate entry 'x' for key 'PRIMARY'", UserWarning, stacklevel=1)
    logging.getLogger("triggerd.test").info("after")
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 2
    entries = [json.loads(line) for line in lines]
    assert entries[0]["logger"] == "py.warnings" and entries[0]["level"] == "warning"
    assert "Duplicate entry" in entries[0]["message"]
    assert entries[1]["message"] == "after"
