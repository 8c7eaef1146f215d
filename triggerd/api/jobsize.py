"""Refusing at the door what Kafka would never take: a job (one Kafka record) larger
than TRIGGERD_KAFKA_MAX_REQUEST_SIZE. Ingestion (webhooks, test runs) answers 413 before
anything is stored; a trigger whose `config.payload` would make such a job is a 400 on
that field. What slips through anyway (the limit lowered later) ends `failed` where it
is published (bus/producer.py, JobTooLarge)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from triggerd.bus.producer import MAX_REQUEST_SIZE_SETTING, Bus, JobTooLarge, job_size, too_large
from triggerd.domain.enums import Source
from triggerd.domain.errors import ApiError, ValidationError
from triggerd.domain.jobs import Job
from triggerd.domain.tracecontext import new_traceparent
from triggerd.ingest.pipeline import job_for
from triggerd.store.event_rows import EventRecord

_HOW = (f"raise {MAX_REQUEST_SIZE_SETTING} (and the Kafka broker's message.max.bytes) to"
        " accept larger payloads")  # fmt: skip
# The widest values of a job's other fields: the size checked for a trigger's payload
# holds for every job it makes (any source, a late retry).
_WIDEST_SOURCE = max((str(s) for s in Source), key=len)
_WIDEST_ID = "00000000-0000-0000-0000-000000000000"
_MANY_ATTEMPTS = 1_000_000


def payload_too_large(refused: JobTooLarge) -> ApiError:
    return ApiError(
        f"the payload makes a Kafka job of {refused.size} bytes, over the {refused.limit}"
        f" bytes allowed; {_HOW}",
        status=413, code="payload_too_large",
        details={"job_bytes": refused.size, "limit_bytes": refused.limit},
    )  # fmt: skip


def check_event(bus: Bus, record: EventRecord) -> None:
    """413 when the job of `record` is larger than Kafka is sent. Costs a length
    comparison unless the payload comes near the limit."""
    payload = record.payload_json
    if payload is not None and len(payload) < bus.size_check_from:
        return
    refused = bus.check_size(job_for(record))
    if refused is not None:
        raise payload_too_large(refused)


def check_config_payload(bus: Bus, trigger_type: str, payload: Any, now: datetime) -> None:
    """400 on `config.payload` when a job carrying it would be too large for Kafka. Costs
    the payload's encoding and a length comparison unless it comes near the limit."""
    if len(orjson.dumps(payload)) < bus.size_check_from:  # as a job encodes it
        return
    job = Job(event_id=_WIDEST_ID, trigger_id=_WIDEST_ID, type=trigger_type,
              source=_WIDEST_SOURCE, is_test_run=True, payload=payload, scheduled_for=now,
              fired_at=now, attempt=_MANY_ATTEMPTS, traceparent=new_traceparent())  # fmt: skip
    size = job_size(job)
    if too_large(size, bus.max_request_size) is not None:
        raise ValidationError(
            "config.payload",
            f"makes a Kafka job of {size} bytes, over the {bus.max_request_size} bytes"
            f" allowed; make it smaller, or {_HOW}",
            details={"job_bytes": size, "limit_bytes": bus.max_request_size},
        )
