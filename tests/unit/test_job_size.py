"""Sizing jobs against TRIGGERD_KAFKA_MAX_REQUEST_SIZE, and which producer errors are
final (JobTooLarge) rather than worth another try (BusUnavailable)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import orjson
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from triggerd.api.jobsize import check_config_payload, check_event
from triggerd.bus.producer import (
    _SIZE_SLACK,
    MAX_BATCH_BYTES,
    Bus,
    BusUnavailable,
    JobTooLarge,
    _bus_error,
    _Staged,
    job_size,
    record_size,
    too_large,
)
from triggerd.config import load_settings
from triggerd.domain.errors import ApiError, ConfigError, ValidationError
from triggerd.domain.jobs import Job
from triggerd.store.event_rows import EventRecord

NOW = datetime(2030, 1, 1, 9, tzinfo=UTC)
LIMIT = 20_000


def bus(limit: int = LIMIT) -> Bus:
    return Bus(load_settings({"TRIGGERD_KAFKA_MAX_REQUEST_SIZE": str(limit)}))


def job(payload: object, *, encoded: bool = True) -> Job:
    return Job(event_id="e" * 36, trigger_id="t" * 36, type="webhook", source="webhook",
               is_test_run=False, payload=payload, scheduled_for=None, fired_at=NOW,
               payload_json=orjson.dumps(payload) if encoded else None,
               traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")  # fmt: skip


def record(payload: object) -> EventRecord:
    return EventRecord(id="e" * 36, trigger_id="t" * 36, trigger_name="n",
                       trigger_type="webhook", source="webhook", is_test_run=False,
                       payload=payload, delivery={}, fired_at=NOW,
                       payload_json=orjson.dumps(payload))  # fmt: skip


def test_the_setting_defaults_to_aiokafkas_limit_and_is_bounded() -> None:
    assert load_settings({}).kafka_max_request_size == 1024 * 1024
    assert bus(2 * 1024 * 1024).max_request_size == 2 * 1024 * 1024
    with pytest.raises(ConfigError, match=r"^TRIGGERD_KAFKA_MAX_REQUEST_SIZE: must be between"):
        load_settings({"TRIGGERD_KAFKA_MAX_REQUEST_SIZE": "1000"})


def test_no_batch_is_larger_than_the_largest_job() -> None:
    assert bus(1024 * 1024).max_batch_bytes == MAX_BATCH_BYTES
    assert bus(LIMIT).max_batch_bytes == LIMIT


def test_a_jobs_size_is_the_records_as_the_producer_counts_it() -> None:
    j = job({"a": "x" * 1000})
    value, headers = j.encode(), j.headers()
    assert headers is not None
    expected = DefaultRecordBatchBuilder.estimate_size_in_bytes(j.key, value, headers)
    assert job_size(j) == record_size(j.key, value, headers) == expected
    # The envelope around the payload: a few hundred bytes, below the slack the quick
    # check (the payload's length only) leaves.
    assert 0 < job_size(j) - len(j.payload_json or b"") < _SIZE_SLACK


def test_too_large_only_over_the_limit() -> None:
    assert too_large(LIMIT, LIMIT) is None
    refused = too_large(LIMIT + 1, LIMIT)
    assert isinstance(refused, JobTooLarge)
    assert (refused.size, refused.limit, refused.by_broker) == (LIMIT + 1, LIMIT, False)
    assert "TRIGGERD_KAFKA_MAX_REQUEST_SIZE" in refused.reason
    assert "replay" in refused.reason and "message.max.bytes" in refused.reason


@pytest.mark.parametrize("encoded", [True, False])
def test_check_size(encoded: bool) -> None:
    b = bus()
    assert b.check_size(job({"a": "x" * 100}, encoded=encoded)) is None
    assert b.check_size(job({"a": "x" * (LIMIT - 1000)}, encoded=encoded)) is None
    refused = b.check_size(job({"a": "x" * LIMIT}, encoded=encoded))
    assert refused is not None and refused.size is not None and refused.size > LIMIT


def test_a_refusal_as_too_large_is_final_only_for_a_job_sent_alone() -> None:
    for error in (MessageSizeTooLargeError(), RecordListTooLargeError()):
        alone = _bus_error(error, LIMIT, alone=True)
        assert isinstance(alone, JobTooLarge) and alone.by_broker
        assert "MESSAGE_TOO_LARGE" in alone.reason
        # A batch of several may be refused for their sum: each is tried again.
        assert isinstance(_bus_error(error, LIMIT, alone=False), BusUnavailable)
    assert isinstance(_bus_error(KafkaConnectionError(), LIMIT, alone=True), BusUnavailable)
    assert isinstance(_bus_error(OSError("reset"), LIMIT, alone=True), BusUnavailable)
    final = JobTooLarge(LIMIT + 5, LIMIT)
    assert _bus_error(final, LIMIT, alone=False) is final


def test_ingest_refuses_an_event_whose_job_is_too_large_with_413() -> None:
    b = bus()
    check_event(b, record({"a": "x" * 100}))
    with pytest.raises(ApiError) as info:
        check_event(b, record({"a": "x" * LIMIT}))
    error = info.value
    assert (error.status, error.code) == (413, "payload_too_large")
    assert str(LIMIT) in error.message and "TRIGGERD_KAFKA_MAX_REQUEST_SIZE" in error.message
    assert error.details["limit_bytes"] == LIMIT and error.details["job_bytes"] > LIMIT


def test_a_trigger_payload_too_large_for_any_of_its_jobs_is_a_400() -> None:
    b = bus()
    check_config_payload(b, "cron_scheduled", {"a": "x" * 100}, NOW)
    with pytest.raises(ValidationError) as info:
        check_config_payload(b, "cron_scheduled", {"a": "x" * LIMIT}, NOW)
    assert info.value.field == "config.payload" and info.value.status == 400
    # Sized with the widest other fields: a payload whose webhook job would just fit
    # but a scheduled retry's would not is refused.
    fits_barely = "x" * (LIMIT - job_size(job({"a": ""})) - 1)
    assert bus().check_size(job({"a": fits_barely})) is None
    with pytest.raises(ValidationError):
        check_config_payload(b, "interval_scheduled", {"a": fits_barely}, NOW)


def staged(*values: bytes) -> _Staged:
    builder = BatchBuilder(1024 * 1024, 0)
    for value in values:
        assert builder.append(key=b"k", value=value, timestamp=None) is not None
    return _Staged(builder, cast(Any, None), 0.0)


def test_a_batch_refused_as_too_large_makes_the_next_batches_smaller() -> None:
    """The broker's limit is below ours: the jobs of a refused batch are tried again in
    batches half its size, down to one job, whose refusal is then final."""
    b = bus(1024 * 1024)
    batch = staged(b"x" * 30_000, b"y" * 30_000, b"z" * 30_000)
    assert batch.jobs == 3 and batch.size > 90_000
    assert isinstance(b._failure(MessageSizeTooLargeError(), batch), BusUnavailable)
    assert b.batch_bytes == batch.size // 2
    assert not b._fits(staged(b"x" * 30_000), (b"k", b"y" * 30_000, None))
    assert b._fits(staged(b"x" * 10_000), (b"k", b"y" * 10_000, None))
    assert isinstance(b._failure(KafkaConnectionError(), batch), BusUnavailable)
    assert b.batch_bytes == batch.size // 2  # only a refusal as too large shrinks them
    alone = staged(b"x" * 30_000)
    refused = b._failure(RecordListTooLargeError(), alone)
    assert isinstance(refused, JobTooLarge) and refused.by_broker
    oversized = _Staged(BatchBuilder(1024, 0), cast(Any, None), 0.0,
                        oversized=(b"k", b"x" * 5000, None))  # fmt: skip
    assert oversized.jobs == 1 and oversized.size > 5000
    assert isinstance(b._failure(MessageSizeTooLargeError(), oversized), JobTooLarge)
