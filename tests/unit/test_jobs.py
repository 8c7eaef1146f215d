from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from triggerd.domain.jobs import Job


def test_job_round_trip_and_contract() -> None:
    job = Job(
        event_id="e1", trigger_id="t1", type="cron_scheduled", source="scheduler",
        is_test_run=False, payload={"a": [1, 2]},
        scheduled_for=datetime(2026, 1, 1, 12, 0, 0, 500000, tzinfo=UTC),
        fired_at=datetime(2026, 1, 1, 12, 0, 0, 501000, tzinfo=UTC), attempt=2,
    )  # fmt: skip
    data = orjson.loads(job.encode())
    assert set(data) == {"event_id", "trigger_id", "type", "source", "is_test_run", "payload",
                         "scheduled_for", "fired_at", "attempt"}  # fmt: skip
    assert data["scheduled_for"] == "2026-01-01T12:00:00.500Z"
    assert job.key == b"t1"
    assert Job.decode(job.encode()) == job


def test_ephemeral_job_is_keyed_by_event() -> None:
    job = Job("e9", None, "webhook", "manual-test", True, {}, None,
              datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip
    assert job.key == b"e9"
    assert Job.decode(job.encode()).scheduled_for is None


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"event_id": "x"}',
                                 b'{"event_id":"x","type":"w","source":"s",'
                                 b'"fired_at":"2026-01-01T00:00:00Z","attempt":0}'])  # fmt: skip
def test_malformed_jobs_raise_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        Job.decode(raw)


def test_a_pre_encoded_payload_is_embedded_as_it_is() -> None:
    payload = {"b": [1, {"c": None}], "a": "é\u2028"}
    fired = datetime(2026, 1, 1, tzinfo=UTC)
    plain = Job("e1", "t1", "webhook", "webhook", False, payload, None, fired)
    encoded = Job("e1", "t1", "webhook", "webhook", False, payload, None, fired,
                  payload_json=orjson.dumps(payload))  # fmt: skip
    assert encoded.encode() == plain.encode()
    assert Job.decode(encoded.encode()) == plain


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_traceparent_travels_in_headers_not_in_the_value() -> None:
    fired = datetime(2026, 1, 1, tzinfo=UTC)
    job = Job("e1", "t1", "webhook", "webhook", False, {}, None, fired, traceparent=TRACEPARENT)
    assert "traceparent" not in orjson.loads(job.encode())
    headers = job.headers()
    assert headers == [("traceparent", TRACEPARENT.encode())]
    assert Job.decode(job.encode(), headers) == job
    assert Job.decode(job.encode()).traceparent is None
    assert Job("e1", "t1", "webhook", "webhook", False, {}, None, fired).headers() is None


@pytest.mark.parametrize("headers", [
    [("traceparent", b"00-bogus")],
    [("traceparent", b"\xff" * 55)],
    [("traceparent", TRACEPARENT.upper().encode())],
    [("other", TRACEPARENT.encode())],
    [("traceparent", b"")],
])  # fmt: skip
def test_an_invalid_traceparent_header_is_ignored(headers: list[tuple[str, bytes]]) -> None:
    job = Job("e1", "t1", "webhook", "webhook", False, {}, None, datetime(2026, 1, 1, tzinfo=UTC))
    assert Job.decode(job.encode(), headers).traceparent is None
