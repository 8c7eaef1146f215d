"""Webhook ingestion: 202 after a durable write, validation, errors,
signatures, idempotency, the trigger cache and the metric."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.integration.webhook_harness import Api, make_trigger, running_api
from tests.support import read_jobs, wait_until
from triggerd.api.webhook import INGEST
from triggerd.devstack import free_port
from triggerd.domain.timeutil import from_db
from triggerd.domain.tracecontext import parse_traceparent

SCHEMA = {
    "type": "object",
    "required": ["order_id", "amount"],
    "properties": {
        "order_id": {"type": "string"},
        "amount": {"type": "number", "minimum": 0},
        "items": {"type": "array", "items": {"type": "object", "required": ["sku"]}},
    },
}
JOB_FIELDS = {"event_id", "trigger_id", "type", "source", "is_test_run", "payload",
              "scheduled_for", "fired_at", "attempt"}  # fmt: skip


@pytest.fixture
async def api(settings_for: Any) -> AsyncIterator[Api]:
    async with running_api(settings_for(max_body=4096)) as running:
        yield running


async def test_valid_webhook_is_stored_then_published(api: Api, kafka_bootstrap: str,
                                                      topic: str) -> None:  # fmt: skip
    config = {"schema": SCHEMA, "endpoint": "http://127.0.0.1:9/hook", "headers": {"X-A": "1"}}
    trigger_id = await make_trigger(api.db, config=config, name="orders")
    payload = {"order_id": "o-1", "amount": 12.5, "items": [{"sku": "a"}]}
    status, body = await api.post(f"/api/v1/webhook/{trigger_id}", payload)
    assert status == 202, body
    assert body["status"] == "accepted"
    event_id = body["event_id"]

    row = await api.event_row(event_id)  # committed before the 202
    assert row is not None
    assert row["trigger_id"] == trigger_id and row["source"] == "webhook"
    assert row["trigger_name"] == "orders" and row["trigger_type"] == "webhook"
    assert orjson.loads(row["payload"]) == payload
    assert orjson.loads(row["delivery"])["endpoint"] == "http://127.0.0.1:9/hook"
    assert row["execution_status"] == "pending" and row["is_test_run"] == 0

    jobs = await read_jobs(kafka_bootstrap, topic, count=1,
                           match=lambda j: j["event_id"] == event_id)  # fmt: skip
    assert len(jobs) == 1
    job = jobs[0]
    assert job["_key"] == trigger_id
    assert set(job) - {"_key", "_timestamp", "_headers"} == JOB_FIELDS
    # A request without a traceparent starts a trace; its record carries the event's.
    assert job["_headers"] == {"traceparent": row["traceparent"]}
    assert parse_traceparent(row["traceparent"]) == row["traceparent"]
    assert job["payload"] == payload and job["attempt"] == 1
    assert job["source"] == "webhook" and job["type"] == "webhook"
    assert job["is_test_run"] is False and job["scheduled_for"] is None

    async def cleared() -> bool:
        r = await api.event_row(event_id)
        return bool(r and r["publish_at"] is None and r["published_at"] is not None)

    await wait_until(cleared, timeout=10, what="the fast path to clear publish_at")
    status, text = await api.request("GET", "/metrics")
    assert 'triggerd_webhook_requests_total{code="202"} 1.0' in text.decode()


async def test_the_202_does_not_wait_for_kafka(settings_for: Any) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with running_api(settings_for(kafka_bootstrap=dead), connect_bus=False) as api:
        trigger_id = await make_trigger(api.db)
        status, body = await api.post(f"/api/v1/webhook/{trigger_id}", {"any": "thing"})
        assert status == 202, body
        row = await api.event_row(body["event_id"])
        assert row is not None
        # Still owed to Kafka: the relay publishes it once the grace has passed.
        assert row["published_at"] is None and row["publish_at"] is not None
        assert from_db(row["publish_at"]) > from_db(row["fired_at"])  # type: ignore[operator]

        async def failure_counted() -> bool:
            _, text = await api.request("GET", "/metrics")
            return "triggerd_publish_failures_total 1.0" in text.decode()

        await wait_until(failure_counted, timeout=5, what="the publish failure metric")


@pytest.mark.parametrize(
    ("payload", "paths"),
    [
        ({"amount": 1}, {""}),  # missing order_id: reported at the object
        ({"order_id": 5, "amount": -1}, {"/order_id", "/amount"}),
        ({"order_id": "x", "amount": 1, "items": [{"sku": "a"}, {}]}, {"/items/1"}),
        ([1, 2], {""}),
    ],
)
async def test_violations_are_400_with_pointers_and_nothing_stored(
    api: Api, payload: Any, paths: set[str]
) -> None:
    trigger_id = await make_trigger(api.db, config={"schema": SCHEMA})
    status, body = await api.post(f"/api/v1/webhook/{trigger_id}", payload)
    assert status == 400, body
    assert body["error"]["code"] == "validation_error"
    found = body["error"]["details"]["violations"]
    assert {v["path"] for v in found} == paths
    assert all(isinstance(v["message"], str) and v["message"] for v in found)
    assert await api.count_events() == 0


async def test_a_payload_too_deep_to_store_is_400_alone(api: Api) -> None:
    """JSON that parses but cannot be written back (nested past orjson's ~250 levels) is
    refused with its own request; requests sent alongside it are stored as usual (it
    once failed the whole group-commit batch it joined with a 503)."""
    trigger_id = await make_trigger(api.db)
    url = f"/api/v1/webhook/{trigger_id}"
    deep = b'{"deep": ' + b"[" * 300 + b"]" * 300 + b"}"

    async def post_deep() -> tuple[int, Any]:
        return await api.request("POST", url, data=deep,
                                 headers={"Content-Type": "application/json"})  # fmt: skip

    results = await asyncio.gather(post_deep(), *[api.post(url, {"i": i}) for i in range(8)])
    status, body = results[0]
    assert status == 400, body
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"]["field"] == "payload"
    assert [r[0] for r in results[1:]] == [202] * 8
    assert await api.count_events() == 8


async def test_error_statuses(api: Api) -> None:
    hook = await make_trigger(api.db)
    inactive = await make_trigger(api.db, status="inactive")
    cron = await make_trigger(api.db, type="cron_scheduled", config={"cron": "* * * * *"})
    cases = [
        (f"/api/v1/webhook/{'0' * 8}", {"a": 1}, None, 404),
        ("/api/v1/webhook/6a0c1f5e-6d7a-4b7e-9a51-000000000000", {"a": 1}, None, 404),
        (f"/api/v1/webhook/{cron}", {"a": 1}, None, 404),
        (f"/api/v1/webhook/{inactive}", {"a": 1}, None, 409),
    ]
    for path, payload, _, expected in cases:
        status, body = await api.post(path, payload)
        assert status == expected, (path, body)
        assert body["error"]["request_id"]
    url = f"/api/v1/webhook/{hook}"
    status, body = await api.request("POST", url, data=b"a=1",
                                     headers={"Content-Type": "text/plain"})  # fmt: skip
    assert status == 415 and body["error"]["code"] == "unsupported_media_type"
    status, body = await api.request("POST", url, data=b'{"a": ',
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    assert status == 400 and body["error"]["code"] == "malformed_json"
    big = orjson.dumps({"blob": "x" * 5000})
    status, body = await api.request("POST", url, data=big,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    assert status == 413, body
    status, body = await api.post(url, {"a": 1}, headers={"Idempotency-Key": "k" * 256})
    assert status == 400 and body["error"]["details"]["field"] == "Idempotency-Key"
    assert await api.count_events() == 0
    _, text = await api.request("GET", "/metrics")
    metrics = text.decode()
    for code, count in (("404", 3), ("409", 1), ("415", 1), ("400", 2), ("413", 1)):
        assert f'triggerd_webhook_requests_total{{code="{code}"}} {count}.0' in metrics, code


async def test_signature_required_when_the_trigger_has_a_secret(api: Api) -> None:
    trigger_id = await make_trigger(api.db, config={"secret": "s3cret"})
    url = f"/api/v1/webhook/{trigger_id}"
    raw = b'{"order": 1}'
    good = "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    json_type = {"Content-Type": "application/json"}
    for headers in ({}, {"X-Signature": "sha256=" + "0" * 64}, {"X-Signature": good[7:]},
                    {"X-Signature": "sha256=" + hmac.new(b"s3cret", raw + b" ",
                                                         hashlib.sha256).hexdigest()}):
        status, body = await api.request("POST", url, data=raw, headers={**json_type, **headers})
        assert status == 401, (headers, body)
        assert body["error"]["code"] == "unauthorized"
    status, body = await api.request("POST", url, data=raw,
                                     headers={**json_type, "X-Signature": good})  # fmt: skip
    assert status == 202, body
    shouting = "SHA256=" + good[7:].upper()  # the scheme and hex digits in either case
    status, body = await api.request("POST", url, data=raw,
                                     headers={**json_type, "X-Signature": shouting})  # fmt: skip
    assert status == 202, body
    assert await api.count_events() == 2


async def test_idempotency_key_returns_the_first_event(api: Api) -> None:
    trigger_id = await make_trigger(api.db)
    other = await make_trigger(api.db)
    url = f"/api/v1/webhook/{trigger_id}"
    first = await api.post(url, {"n": 1}, headers={"Idempotency-Key": "order-1"})
    again = await api.post(url, {"n": 2}, headers={"Idempotency-Key": "order-1"})
    assert first[0] == again[0] == 202
    assert first[1]["event_id"] == again[1]["event_id"]
    # Keys are exact (case-sensitive) and scoped by trigger.
    upper = await api.post(url, {"n": 3}, headers={"Idempotency-Key": "ORDER-1"})
    elsewhere = await api.post(f"/api/v1/webhook/{other}", {"n": 4},
                               headers={"Idempotency-Key": "order-1"})  # fmt: skip
    ids = {first[1]["event_id"], upper[1]["event_id"], elsewhere[1]["event_id"]}
    assert len(ids) == 3
    assert await api.count_events() == 3
    row = await api.event_row(first[1]["event_id"])
    assert row is not None and orjson.loads(row["payload"]) == {"n": 1}


async def test_concurrent_requests_with_one_key_make_one_event(api: Api) -> None:
    trigger_id = await make_trigger(api.db)
    url = f"/api/v1/webhook/{trigger_id}"
    for round_ in range(3):
        key = f"race-{round_}"
        results = await asyncio.gather(*[
            api.post(url, {"n": i}, headers={"Idempotency-Key": key}) for i in range(25)
        ])  # fmt: skip
        assert {status for status, _ in results} == {202}
        assert len({body["event_id"] for _, body in results}) == 1
    assert await api.count_events() == 3
    keys = await api.db.fetchone("SELECT COUNT(*) AS n FROM idempotency_keys")
    assert keys is not None and keys["n"] == 3


async def test_status_change_takes_effect_within_the_cache_ttl(api: Api) -> None:
    trigger_id = await make_trigger(api.db)
    url = f"/api/v1/webhook/{trigger_id}"
    assert (await api.post(url, {"a": 1}))[0] == 202
    await api.db.execute("UPDATE triggers SET status = 'inactive' WHERE id = %s", (trigger_id,))

    async def conflict() -> bool:
        return (await api.post(url, {"a": 1}))[0] == 409

    await wait_until(conflict, timeout=2.5, interval=0.1, what="409 after deactivation")
    await api.db.execute("DELETE FROM triggers WHERE id = %s", (trigger_id,))

    async def gone() -> bool:
        return (await api.post(url, {"a": 1}))[0] == 404

    await wait_until(gone, timeout=2.5, interval=0.1, what="404 after delete")


async def test_changes_through_this_api_apply_to_the_very_next_webhook(api: Api) -> None:
    """No cache delay for what this process changed itself: deactivate, change the
    schema or delete through the API, and the next webhook already sees it."""
    status, created = await api.post("/api/v1/triggers", {
        "name": "hook", "type": "webhook", "config": {"schema": {"type": "object"}}})  # fmt: skip
    assert status == 201, created
    item = f"/api/v1/triggers/{created['id']}"
    url = f"/api/v1/webhook/{created['id']}"
    assert (await api.post(url, {"a": 1}))[0] == 202  # now cached
    assert (await api.request("PATCH", item, json={"status": "inactive"}))[0] == 200
    assert (await api.post(url, {"a": 1}))[0] == 409
    assert (await api.request("PATCH", item, json={"status": "active"}))[0] == 200
    assert (await api.post(url, {"a": 1}))[0] == 202
    strict = {"config": {"schema": {"type": "object", "required": ["b"]}}}
    assert (await api.request("PUT", item, json=strict))[0] == 200
    status, body = await api.post(url, {"a": 1})
    assert status == 400 and body["error"]["details"]["violations"], body
    assert (await api.request("DELETE", item))[0] == 204
    assert (await api.post(url, {"b": 1}))[0] == 404


async def test_a_body_not_in_its_declared_encoding_is_400(api: Api) -> None:
    trigger_id = await make_trigger(api.db)
    status, body = await api.request("POST", f"/api/v1/webhook/{trigger_id}", data=b'{"a": 1}',
                                     headers={"Content-Type": "application/json",
                                              "Content-Encoding": "gzip"})  # fmt: skip
    assert status == 400 and body["error"]["code"] == "malformed_body", body
    assert await api.count_events() == 0


async def test_schema_change_uses_the_new_version(api: Api) -> None:
    trigger_id = await make_trigger(api.db, config={"schema": {"type": "object"}})
    url = f"/api/v1/webhook/{trigger_id}"
    assert (await api.post(url, {"a": 1}))[0] == 202
    strict = orjson.dumps({"schema": {"type": "object", "required": ["b"]}}).decode()
    await api.db.execute("UPDATE triggers SET config = %s, version = 2 WHERE id = %s",
                         (strict, trigger_id))  # fmt: skip

    async def rejected() -> bool:
        return (await api.post(url, {"a": 1}))[0] == 400

    await wait_until(rejected, timeout=2.5, interval=0.1, what="the new schema to apply")


async def test_a_full_queue_is_503_and_stores_nothing(api: Api) -> None:
    trigger_id = await make_trigger(api.db)
    writer = api.app[INGEST].writer
    writer.max_queue = 0  # as if saturated
    status, body = await api.post(f"/api/v1/webhook/{trigger_id}", {"a": 1})
    assert status == 503 and body["error"]["code"] == "overloaded"
    writer.max_queue = 5000
    assert (await api.post(f"/api/v1/webhook/{trigger_id}", {"a": 1}))[0] == 202
    assert await api.count_events() == 1


async def test_integers_beyond_64_bits_are_refused_not_rounded(api: Api) -> None:
    """orjson would read them as floats, and the target would get another number."""
    trigger_id = await make_trigger(api.db)
    url = f"/api/v1/webhook/{trigger_id}"
    json_type = {"Content-Type": "application/json"}
    for raw in (b'{"a": 123456789012345678901234567890}', b'[1, [18446744073709551616]]',
                b'{"a": {"b": -9223372036854775809}}'):
        status, body = await api.request("POST", url, data=raw, headers=json_type)
        assert status == 400 and body["error"]["code"] == "number_out_of_range", (raw, body)
    assert await api.count_events() == 0
    edge = (b'{"max": 18446744073709551615, "min": -9223372036854775808,'
            b' "id": "1234567890123456789012"}')
    status, body = await api.request("POST", url, data=edge, headers=json_type)
    assert status == 202, body
    row = await api.event_row(body["event_id"])
    assert row is not None and orjson.loads(row["payload"]) == orjson.loads(edge)
