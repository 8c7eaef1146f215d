"""Trigger definition validation and normalization (triggerd.domain.contract)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triggerd.domain.contract import (
    TRIGGER_TYPES,
    TriggerDefinition,
    schedule_changed,
    validate_create,
    validate_update,
)
from triggerd.domain.errors import ValidationError
from triggerd.domain.redact import REDACTED, redact_config
from triggerd.store.triggers import first_occurrence

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
URL = "https://example.com/hook"
DEFAULT_RETRY = {"max_attempts": 5, "backoff_seconds": 1, "max_backoff_seconds": 300}

BASE_CONFIG: dict[str, dict[str, Any]] = {
    "webhook": {},
    "time_scheduled": {"endpoint": URL, "run_in": "10m"},
    "cron_scheduled": {"endpoint": URL, "cron": "*/5 * * * *"},
    "interval_scheduled": {"endpoint": URL, "interval_seconds": 60},
}


def body(kind: str = "cron_scheduled", **config: Any) -> dict[str, Any]:
    return {"name": "t", "type": kind, "config": {**BASE_CONFIG[kind], **config}}


def create(data: Any, now: datetime = NOW) -> TriggerDefinition:
    return validate_create(data, now=now)


def field_of(data: Any, current: TriggerDefinition | None = None) -> str:
    with pytest.raises(ValidationError) as caught:
        if current is None:
            create(data)
        else:
            validate_update(data, current, now=NOW)
    return caught.value.field


# --- one failing field per rule ----------------------------------------------------------

BAD_TOP_LEVEL = [
    (None, "body"),
    ([], "body"),
    ("x", "body"),
    (5, "body"),
    ({"name": "t", "type": "webhook", "colour": "red"}, "colour"),
    ({"type": "webhook"}, "name"),
    ({"name": "", "type": "webhook"}, "name"),
    ({"name": "   ", "type": "webhook"}, "name"),
    ({"name": "x" * 256, "type": "webhook"}, "name"),
    ({"name": 5, "type": "webhook"}, "name"),
    ({"name": ["t"], "type": "webhook"}, "name"),
    ({"name": "t"}, "type"),
    ({"name": "t", "type": "hourly"}, "type"),
    ({"name": "t", "type": ["webhook"]}, "type"),
    ({"name": "t", "type": "webhook", "status": "paused"}, "status"),
    ({"name": "t", "type": "webhook", "status": ""}, "status"),
    ({"name": "t", "type": "webhook", "status": True}, "status"),
    ({"name": "t", "type": "webhook", "config": []}, "config"),
    ({"name": "t", "type": "webhook", "config": "x"}, "config"),
    ({"name": "t", "type": "cron_scheduled"}, "config"),
]


@pytest.mark.parametrize(("data", "field"), BAD_TOP_LEVEL)
def test_bad_top_level(data: Any, field: str) -> None:
    assert field_of(data) == field


BAD_CONFIG = [
    (body(extra=1), "config.extra"),
    (body("webhook", cron="* * * * *"), "config.cron"),
    (body("cron_scheduled", schema={}), "config.schema"),
    (body(endpoint=None), "config.endpoint"),
    (body(endpoint="ftp://example.com/x"), "config.endpoint"),
    (body(endpoint="/relative/path"), "config.endpoint"),
    (body(endpoint="https://"), "config.endpoint"),
    (body(endpoint="https://exa mple.com/"), "config.endpoint"),
    (body(endpoint="https://example.com:99999/"), "config.endpoint"),
    (body(endpoint="http://[::1/"), "config.endpoint"),
    (body(endpoint=5), "config.endpoint"),
    # numeric hosts the HTTP client will not connect to: every delivery would fail
    (body(endpoint="http://8.8.8.8./x"), "config.endpoint"),
    (body(endpoint="http://8.8.8/x"), "config.endpoint"),
    (body(endpoint="http://134744072/x"), "config.endpoint"),
    (body(endpoint="http://010.8.8.8/x"), "config.endpoint"),
    (body(endpoint="http://8.8.8.256/x"), "config.endpoint"),
    # credentials Basic authentication cannot send, or sent beside an Authorization header
    (body(endpoint="http://us%3Aer:pw@example.com/"), "config.endpoint"),
    (body(endpoint="http://%E2%82%AC:pw@example.com/"), "config.endpoint"),
    (body(endpoint="http://u:%E2%82%AC@example.com/"), "config.endpoint"),
    (body(endpoint="http://u:pw@example.com/", headers={"authorization": "Bearer x"}),
     "config.endpoint"),
    (body("webhook", endpoint="http://u@example.com/", headers={"Authorization": "x"}),
     "config.endpoint"),
    (body(http_method="TRACE"), "config.http_method"),
    (body(http_method=1), "config.http_method"),
    (body(headers=[]), "config.headers"),
    (body(headers={"X-Foo": 1}), "config.headers.X-Foo"),
    (body(headers={"X-Foo": None}), "config.headers.X-Foo"),
    (body(headers={"X-Foo": "a\r\nInjected: 1"}), "config.headers.X-Foo"),
    (body(headers={"X-Foo": "a\nb"}), "config.headers.X-Foo"),
    (body(headers={"Bad Name": "v"}), "config.headers.Bad Name"),
    (body(headers={"X:Y": "v"}), "config.headers.X:Y"),
    (body(headers={"": "v"}), "config.headers."),
    (body(headers={"Content-Length": "5"}), "config.headers.Content-Length"),
    (body(headers={"X-A": "1", "x-a": "2"}), "config.headers.x-a"),
    (body(timeout_seconds=0), "config.timeout_seconds"),
    (body(timeout_seconds=-1), "config.timeout_seconds"),
    (body(timeout_seconds=301), "config.timeout_seconds"),
    (body(timeout_seconds=True), "config.timeout_seconds"),
    (body(timeout_seconds="10"), "config.timeout_seconds"),
    (body(timeout_seconds=float("nan")), "config.timeout_seconds"),
    (body(timeout_seconds=float("inf")), "config.timeout_seconds"),
    (body(retry=[]), "config.retry"),
    (body(retry={"attempts": 3}), "config.retry.attempts"),
    (body(retry={"max_attempts": 0}), "config.retry.max_attempts"),
    (body(retry={"max_attempts": 21}), "config.retry.max_attempts"),
    (body(retry={"max_attempts": 2.5}), "config.retry.max_attempts"),
    (body(retry={"max_attempts": True}), "config.retry.max_attempts"),
    (body(retry={"max_attempts": 10**30}), "config.retry.max_attempts"),
    (body(retry={"backoff_seconds": 0}), "config.retry.backoff_seconds"),
    (body(retry={"backoff_seconds": 3601}), "config.retry.backoff_seconds"),
    (body(retry={"backoff_seconds": 5, "max_backoff_seconds": 4}),
     "config.retry.max_backoff_seconds"),
    (body(signing_secret=""), "config.signing_secret"),
    (body(signing_secret=5), "config.signing_secret"),
    (body(extra=None), "config.extra"),
    (body("webhook", schema={"type": "strnig"}), "config.schema"),
    (body("webhook", schema=[]), "config.schema"),
    (body("webhook", secret=""), "config.secret"),
    (body("webhook", secret=" "), "config.secret"),
    (body("webhook", secret=["x"]), "config.secret"),
    (body("webhook", endpoint="mailto:a@b.c"), "config.endpoint"),
    (body("time_scheduled", run_in=None), "config.run_at"),
    (body("time_scheduled", run_at="2025-03-01T13:00:00Z"), "config.run_at"),
    (body("time_scheduled", run_in=None, run_at="yesterday"), "config.run_at"),
    (body("time_scheduled", run_in=None, run_at=5), "config.run_at"),
    (body("time_scheduled", run_in=None, run_at="2025-03-01T11:59:54Z"), "config.run_at"),
    (body("time_scheduled", run_in=None, run_at="0001-01-01T00:00:00+01:00"), "config.run_at"),
    (body("time_scheduled", run_in="soon"), "config.run_in"),
    (body("time_scheduled", run_in="0s"), "config.run_in"),
    (body("time_scheduled", run_in=0), "config.run_in"),
    (body("time_scheduled", run_in=-5), "config.run_in"),
    (body("time_scheduled", run_in=True), "config.run_in"),
    (body("time_scheduled", run_in=["10m"]), "config.run_in"),
    (body("time_scheduled", run_in=float("inf")), "config.run_in"),
    (body("time_scheduled", run_in=10**400), "config.run_in"),
    (body("time_scheduled", run_in="99999999d"), "config.run_in"),
    (body("time_scheduled", timezone="Mars/Olympus"), "config.timezone"),
    (body("time_scheduled", timezone=""), "config.timezone"),
    (body("time_scheduled", timezone=3), "config.timezone"),
    (body("time_scheduled", timezone="../../etc/passwd"), "config.timezone"),
    (body("cron_scheduled", cron=None), "config.cron"),
    (body("cron_scheduled", cron="* * * *"), "config.cron"),
    (body("cron_scheduled", cron="61 * * * *"), "config.cron"),
    (body("cron_scheduled", cron="0 0 30 2 *"), "config.cron"),
    (body("cron_scheduled", cron="* * * * * * *"), "config.cron"),
    (body("cron_scheduled", cron=["* * * * *"]), "config.cron"),
    (body("cron_scheduled", cron="99999999999999999999 * * * *"), "config.cron"),
    (body("cron_scheduled", timezone="Nowhere/Town"), "config.timezone"),
    (body("cron_scheduled", run_at="2030-01-01T00:00:00Z"), "config.run_at"),
    (body("interval_scheduled", interval_seconds=None), "config.interval_seconds"),
    (body("interval_scheduled", interval_seconds=0.5), "config.interval_seconds"),
    (body("interval_scheduled", interval_seconds=0), "config.interval_seconds"),
    (body("interval_scheduled", interval_seconds=True), "config.interval_seconds"),
    (body("interval_scheduled", interval_seconds="60"), "config.interval_seconds"),
    (body("interval_scheduled", interval_seconds=float("nan")), "config.interval_seconds"),
    (body("interval_scheduled", interval_seconds=float("inf")), "config.interval_seconds"),
    (body("interval_scheduled", interval_seconds=10**20), "config.interval_seconds"),
    (body("interval_scheduled", interval_seconds=11 * 365 * 86400),
     "config.interval_seconds"),
    (body("interval_scheduled", start_at="not a time"), "config.start_at"),
    (body("interval_scheduled", start_at="2025-03-01T11:00:00Z"), "config.start_at"),
    (body("interval_scheduled", start_at=12345), "config.start_at"),
    (body("interval_scheduled", timezone="UTC"), "config.timezone"),
]


@pytest.mark.parametrize(("data", "field"), BAD_CONFIG)
def test_bad_config(data: Any, field: str) -> None:
    assert field_of(data) == field


def test_payload_nested_too_deep() -> None:
    deep: Any = 1
    for _ in range(150):
        deep = [deep]
    assert field_of(body(payload=deep)) == "config.payload"
    assert field_of(body("webhook", schema={"items": deep})) == "config.schema"


def test_payload_integer_beyond_64_bits() -> None:
    assert field_of(body(payload={"n": 2**64})) == "config.payload"
    assert create(body(payload={"n": 2**64 - 1, "m": -(2**63)})).config["payload"]


# --- normalization and defaults ----------------------------------------------------------


def test_webhook_defaults() -> None:
    trigger = create({"name": "hook", "type": "webhook"})
    assert trigger == TriggerDefinition(
        name="hook",
        type="webhook",
        status="active",
        config={"http_method": "POST", "timeout_seconds": 10, "retry": DEFAULT_RETRY},
    )


def test_webhook_with_everything() -> None:
    schema = {"type": "object", "required": ["id"]}
    trigger = create(body("webhook", endpoint=URL, schema=schema, secret="s3",
                          payload={"x": 1}, signing_secret="whsec_abc"))
    assert trigger.config["schema"] == schema
    assert trigger.config["secret"] == "s3"
    assert trigger.config["signing_secret"] == "whsec_abc"
    assert trigger.config["payload"] == {"x": 1}
    assert trigger.config["endpoint"] == URL


def test_credentials_either_in_the_url_or_in_a_header() -> None:
    for endpoint, headers in [("http://u:p%3Aw@example.com/", None),  # ':' in a password
                              ("http://%C3%A9:pw@example.com/", None),  # Latin-1
                              ("http://example.com/", {"Authorization": "Bearer x"}),
                              ("http://u:pw@example.com/", {"X-Token": "t"})]:  # fmt: skip
        assert create(body(endpoint=endpoint, headers=headers)).config["endpoint"] == endpoint


def test_null_optional_values_mean_absent() -> None:
    trigger = create({"name": "t", "type": "webhook", "status": None,
                      "config": {"endpoint": None, "schema": None, "retry": None}})
    assert trigger.status == "active"
    assert "endpoint" not in trigger.config and "schema" not in trigger.config
    assert trigger.config["retry"] == DEFAULT_RETRY


def test_null_payload_is_kept() -> None:
    assert create(body(payload=None)).config["payload"] is None


def test_common_config_normalized() -> None:
    trigger = create(body(
        http_method="put",
        headers={"X-Foo": "bar", "Authorization": "Bearer x\tclean"},
        timeout_seconds=2.5,
        retry={"max_attempts": 3.0, "backoff_seconds": 0.5},
    ))
    config = trigger.config
    assert config["http_method"] == "PUT"
    assert config["headers"] == {"X-Foo": "bar", "Authorization": "Bearer x\tclean"}
    assert config["timeout_seconds"] == 2.5
    assert config["retry"] == {"max_attempts": 3, "backoff_seconds": 0.5,
                               "max_backoff_seconds": 300}
    assert isinstance(config["retry"]["max_attempts"], int)


def test_max_backoff_default_follows_a_large_backoff() -> None:
    retry = create(body(retry={"backoff_seconds": 600})).config["retry"]
    assert retry["max_backoff_seconds"] == 600


def test_inactive_status_and_long_name() -> None:
    trigger = create({"name": "n" * 255, "type": "webhook", "status": "inactive"})
    assert trigger.status == "inactive" and len(trigger.name) == 255


def test_cron_normalized() -> None:
    trigger = create(body(cron="  0   9 * * 1-5 ", timezone="Europe/Berlin"))
    assert trigger.config["cron"] == "0 9 * * 1-5"
    assert trigger.config["timezone"] == "Europe/Berlin"
    assert create(body()).config["timezone"] == "UTC"


def test_cron_with_seconds_field() -> None:
    assert create(body(cron="30 */5 * * * *")).config["cron"] == "30 */5 * * * *"


@pytest.mark.parametrize(
    ("run_in", "expected"),
    [
        ("10m", "2025-03-01T12:10:00.000Z"),
        ("90s", "2025-03-01T12:01:30.000Z"),
        ("1d", "2025-03-02T12:00:00.000Z"),
        ("500ms", "2025-03-01T12:00:00.500Z"),
        (30, "2025-03-01T12:00:30.000Z"),
        (1.25, "2025-03-01T12:00:01.250Z"),
    ],
)
def test_run_in_resolves_to_run_at(run_in: Any, expected: str) -> None:
    config = create(body("time_scheduled", run_in=run_in)).config
    assert config["run_at"] == expected
    assert "run_in" not in config
    assert config["timezone"] == "UTC"


@pytest.mark.parametrize(
    ("run_at", "tz", "expected"),
    [
        ("2025-06-01T10:00:00Z", "UTC", "2025-06-01T10:00:00.000Z"),
        ("2025-06-01T10:00:00.123456+02:00", "UTC", "2025-06-01T08:00:00.123Z"),
        ("2025-06-01T10:00:00+02:00", "America/New_York", "2025-06-01T08:00:00.000Z"),
        ("2025-06-01T10:00:00", "America/New_York", "2025-06-01T14:00:00.000Z"),
        # spring forward: 02:30 does not exist in Berlin -> the next valid instant, 03:00 CEST
        ("2025-03-30T02:30:00", "Europe/Berlin", "2025-03-30T01:00:00.000Z"),
        # fall back: 02:30 happens twice -> its first occurrence (CEST, +02:00)
        ("2025-10-26T02:30:00", "Europe/Berlin", "2025-10-26T00:30:00.000Z"),
    ],
)
def test_run_at_resolution(run_at: str, tz: str, expected: str) -> None:
    config = create(body("time_scheduled", run_in=None, run_at=run_at, timezone=tz)).config
    assert config == {**config, "run_at": expected, "timezone": tz}


def test_run_at_within_grace_is_accepted() -> None:
    config = create(body("time_scheduled", run_in=None, run_at="2025-03-01T11:59:56Z")).config
    assert config["run_at"] == "2025-03-01T11:59:56.000Z"


def test_both_run_at_and_run_in() -> None:
    data = body("time_scheduled", run_at="2030-01-01T00:00:00Z")
    assert field_of(data) == "config.run_at"


def test_interval_defaults_to_one_interval_after_now() -> None:
    config = create(body("interval_scheduled", interval_seconds=90.0)).config
    assert config["interval_seconds"] == 90 and isinstance(config["interval_seconds"], int)
    assert config["first_run_at"] == "2025-03-01T12:01:30.000Z"
    assert "start_at" not in config


def test_interval_start_at() -> None:
    config = create(body("interval_scheduled", start_at="2025-03-02T08:00:00+01:00")).config
    assert config["start_at"] == "2025-03-02T07:00:00.000Z"
    assert config["first_run_at"] == "2025-03-02T07:00:00.000Z"


def test_interval_naive_start_at_is_utc() -> None:
    config = create(body("interval_scheduled", start_at="2025-03-02T08:00:00")).config
    assert config["first_run_at"] == "2025-03-02T08:00:00.000Z"


def test_interval_fractional_seconds() -> None:
    config = create(body("interval_scheduled", interval_seconds=1.5)).config
    assert config["interval_seconds"] == 1.5
    assert config["first_run_at"] == "2025-03-01T12:00:01.500Z"


def test_first_run_at_sent_back_is_ignored() -> None:
    config = create(body("interval_scheduled", first_run_at="1999-01-01T00:00:00Z")).config
    assert config["first_run_at"] == "2025-03-01T12:01:00.000Z"


def test_normalized_config_serializes() -> None:
    for kind in TRIGGER_TYPES:
        orjson.dumps(create(body(kind, payload={"a": [1, None]})).config.stored())


# --- update ------------------------------------------------------------------------------


def test_type_cannot_change() -> None:
    current = create(body())
    assert field_of({"type": "webhook"}, current) == "type"
    assert field_of({"type": 5}, current) == "type"


def test_same_type_is_allowed() -> None:
    current = create(body())
    assert validate_update({"type": "cron_scheduled"}, current, now=NOW) == current


def test_empty_update_changes_nothing() -> None:
    current = create(body("interval_scheduled"))
    later = NOW + timedelta(hours=1)
    assert validate_update({}, current, now=later) == current


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], "body"),
        (None, "body"),
        ({"colour": 1}, "colour"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"status": "paused"}, "status"),
        ({"config": 5}, "config"),
        ({"config": {"cron": "bad"}}, "config.endpoint"),
        ({"config": {"endpoint": URL, "cron": "bad"}}, "config.cron"),
        ({"config": {"endpoint": URL, "interval_seconds": 5}}, "config.interval_seconds"),
    ],
)
def test_bad_updates(data: Any, field: str) -> None:
    assert field_of(data, create(body())) == field


def test_update_name_and_status() -> None:
    current = create(body())
    new = validate_update({"name": "renamed", "status": "inactive"}, current, now=NOW)
    assert (new.name, new.status, new.config) == ("renamed", "inactive", current.config)
    assert not schedule_changed(current, new)


def test_config_replaces_the_old_one() -> None:
    current = create(body(headers={"X-A": "1"}, payload={"p": 1}, http_method="PUT"))
    new = validate_update({"config": {"endpoint": URL, "cron": "0 * * * *"}}, current, now=NOW)
    assert "headers" not in new.config and "payload" not in new.config
    assert new.config["http_method"] == "POST"
    assert new.config["cron"] == "0 * * * *"
    assert schedule_changed(current, new)


def test_interval_update_keeps_the_anchor_when_timing_is_unchanged() -> None:
    current = create(body("interval_scheduled"))
    later = NOW + timedelta(hours=5)
    new_config = {"endpoint": "https://other.example/", "interval_seconds": 60.0}
    new = validate_update({"config": new_config}, current, now=later)
    assert new.config["first_run_at"] == current.config["first_run_at"]
    assert not schedule_changed(current, new)


def test_interval_update_reanchors_when_interval_changes() -> None:
    current = create(body("interval_scheduled"))
    later = NOW + timedelta(hours=5)
    new = validate_update({"config": {"endpoint": URL, "interval_seconds": 120}}, current,
                          now=later)
    assert new.config["first_run_at"] == "2025-03-01T17:02:00.000Z"
    assert schedule_changed(current, new)


def test_interval_round_trip_with_a_past_start_at() -> None:
    current = create(body("interval_scheduled", start_at="2025-03-01T12:30:00Z"))
    later = NOW + timedelta(days=3)
    new = validate_update({"config": dict(current.config)}, current, now=later)
    assert new.config == current.config
    moved = {**current.config, "start_at": "2025-03-01T12:45:00Z"}
    with pytest.raises(ValidationError) as caught:
        validate_update({"config": moved}, current, now=later)
    assert caught.value.field == "config.start_at"


def test_time_scheduled_round_trip_after_firing() -> None:
    current = create(body("time_scheduled"))
    later = NOW + timedelta(days=1)
    resent = {**current.config, "endpoint": "https://other.example/"}
    new = validate_update({"config": resent}, current, now=later)
    assert new.config["run_at"] == current.config["run_at"]
    assert not schedule_changed(current, new)


def test_time_scheduled_update_with_run_in() -> None:
    current = create(body("time_scheduled"))
    later = NOW + timedelta(hours=1)
    new = validate_update({"config": {"endpoint": URL, "run_in": "5m"}}, current, now=later)
    assert new.config["run_at"] == "2025-03-01T13:05:00.000Z"
    assert schedule_changed(current, new)


def test_redacted_values_sent_back_keep_the_stored_secrets() -> None:
    current = create(body("webhook", secret="s3", signing_secret="whsec_x",
                          headers={"Authorization": "Bearer real", "X-Trace": "1"}))
    shown = redact_config(current.config)
    assert shown["secret"] == REDACTED
    new = validate_update({"config": shown}, current, now=NOW)
    assert new.config == current.config
    changed = {**shown, "secret": "new-secret"}
    assert validate_update({"config": changed}, current, now=NOW).config["secret"] == "new-secret"


def test_schedule_changed_on_timezone_and_cron() -> None:
    current = create(body())
    tz = validate_update({"config": {**BASE_CONFIG["cron_scheduled"], "timezone": "Asia/Tokyo"}},
                         current, now=NOW)
    assert schedule_changed(current, tz)
    same = validate_update({"config": {**BASE_CONFIG["cron_scheduled"], "timeout_seconds": 3}},
                           current, now=NOW)
    assert not schedule_changed(current, same)


# --- robustness: any JSON value gives a ValidationError or a definition ---------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", " ", "10m", "0", "-1s", "UTC", "Europe/Berlin", "* * * * *",
                      "2025-03-30T02:30:00", "2030-01-01T00:00:00Z", URL, "GET", "\r\n",
                      "9999-12-31T23:59:59-05:00", "***", "60", "1e400"])
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
ALL_KEYS = ["endpoint", "http_method", "headers", "payload", "timeout_seconds", "retry",
            "signing_secret", "schema", "secret", "run_at", "run_in", "timezone", "cron",
            "interval_seconds", "start_at", "first_run_at", "max_attempts"]
CONFIGS = st.dictionaries(st.sampled_from(ALL_KEYS), JSON, max_size=5)
BODIES = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {"name": st.one_of(st.just("t"), JSON), "type": st.sampled_from(TRIGGER_TYPES)},
        optional={"status": JSON, "config": JSON},
    ),
    st.builds(
        lambda kind, config: {"name": "t", "type": kind,
                              "config": {**BASE_CONFIG[kind], **config}},
        st.sampled_from(TRIGGER_TYPES),
        CONFIGS,
    ),
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def only_validation_errors(data: Any, current: TriggerDefinition | None = None) -> None:
    """validate_create (or validate_update against `current`) either returns a
    definition whose config orjson can write, or raises a ValidationError naming a field."""
    try:
        if current is None:
            result = validate_create(data, now=NOW)
        else:
            result = validate_update(data, current, now=NOW)
    except ValidationError as err:
        assert isinstance(err.field, str) and err.field
        return
    assert isinstance(result, TriggerDefinition)
    orjson.dumps(result.config.stored())


@FUZZ
@given(BODIES)
def test_fuzz_create(data: Any) -> None:
    only_validation_errors(data)


@FUZZ
@given(BODIES, st.sampled_from(TRIGGER_TYPES))
def test_fuzz_update(data: Any, kind: str) -> None:
    only_validation_errors(data, create(body(kind)))


@pytest.mark.parametrize(
    "weird",
    [None, True, 0, -1, 2**63, 10**30, 1e308, -0.0, "", "x" * 10_000, [], [None], {},
     {"": None}, [[[]]], {"a": {"b": {"c": []}}}, float("nan"), float("-inf")],
)
@pytest.mark.parametrize("key", [*ALL_KEYS, "name", "type", "status", "config"])
def test_every_key_with_weird_values(key: str, weird: Any) -> None:
    for kind in TRIGGER_TYPES:
        data = body(kind)
        if key in ("name", "type", "status", "config"):
            data[key] = weird
        else:
            data["config"][key] = weird
        only_validation_errors(data)
        only_validation_errors(data, create(body(kind)))


@pytest.mark.parametrize(("macro", "expr"), [("@hourly", "0 * * * *"), ("@DAILY", "0 0 * * *"),
                                             ("@weekly", "0 0 * * 0"), ("@yearly", "0 0 1 1 *")])
def test_cron_macros_are_stored_as_their_expression(macro: str, expr: str) -> None:
    assert create(body(cron=macro)).config["cron"] == expr


@pytest.mark.parametrize("cron", ["0 0 1 * 1#5", "0 0 15 * 5#3", "0 0 L * 5", "0 0 1 * 5L"])
def test_day_fields_both_restricted_with_l_w_or_hash_are_refused(cron: str) -> None:
    """croniter ignores the day of month beside `#` (or finds no occurrence at all):
    refused rather than stored as a trigger that fires on other days, or never."""
    assert field_of(body(cron=cron), None) == "config.cron"


@pytest.mark.parametrize("cron", ["0 0 * * 5#3", "0 0 L * *", "0 0 15W * *", "0 0 1 * WED"])
def test_l_w_and_hash_alone_are_accepted(cron: str) -> None:
    assert create(body(cron=cron)).config["cron"] == cron


def test_interval_is_whole_milliseconds() -> None:
    assert field_of(body("interval_scheduled", interval_seconds=1.0005), None) == (
        "config.interval_seconds")
    assert create(body("interval_scheduled", interval_seconds=2.5)).config[
        "interval_seconds"] == 2.5


def test_a_start_at_inside_the_grace_fires_once_not_a_burst() -> None:
    """start_at 3 s ago with a 2 s interval: the latest grid point due now fires, not
    start_at and the one after it back to back."""
    start = NOW - timedelta(seconds=3)
    definition = create(body("interval_scheduled", interval_seconds=2, start_at=start.isoformat()))
    assert first_occurrence(definition, NOW) == start + timedelta(seconds=2)
    once = create(body("time_scheduled", run_at=start.isoformat(), run_in=None))
    assert first_occurrence(once, NOW) == start


@pytest.mark.parametrize("zone", ["localtime", "posixrules", "Factory", "posix/Europe/Paris",
                                  "right/UTC"])
def test_zone_files_that_are_not_iana_names_are_refused(zone: str) -> None:
    assert field_of(body(timezone=zone), None) == "config.timezone"


def test_run_at_takes_a_lower_case_z() -> None:
    run_at = (NOW + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%Sz")
    definition = create(body("time_scheduled", run_at=run_at, run_in=None))
    assert definition.config["run_at"] == (NOW + timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")


@pytest.mark.parametrize("endpoint", [
    "http://8.8.8.8/x", "http://0.0.0.1:80/", "https://8.8.8.8.example/",
    "https://a1.example./x", "http://[2001:db8::1]/", "http://\uff18.8.8.8/",
])  # fmt: skip
def test_endpoints_the_client_can_reach_are_accepted(endpoint: str) -> None:
    assert create(body(endpoint=endpoint)).config["endpoint"] == endpoint
