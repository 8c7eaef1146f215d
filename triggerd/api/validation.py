"""Pure validation of trigger definitions (SPEC §3 "Triggers"): no I/O, clock injected.

Every bad input, whatever JSON value it is, ends as one `ValidationError` naming the
field by dotted path (`name`, `config.retry.max_attempts`, `config.headers.X-Foo`).
The config that comes out is normalized: defaults filled in, `run_in` resolved to a
UTC `run_at`, interval triggers anchored by `first_run_at`, times as ISO 8601 UTC `Z`.

Choices the SPEC leaves open:
- `null` for an optional key means "not given" (except `payload`, where null is a
  payload); on update, a null `name`, `status` or `config` keeps the current value.
- A `run_at` / `start_at` already in the past is accepted on update when it is the
  stored value unchanged, so a trigger read with GET can be PUT back as is.
- `first_run_at` (server-computed) may be sent back and is ignored (on create too).
- A secret or credential header sent back as the redaction placeholder `***`
  keeps the stored value.
- Framing and hop-by-hop headers (Content-Length, Transfer-Encoding, Connection…)
  cannot be set: the HTTP client owns them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from triggerd.domain.errors import ValidationError
from triggerd.domain.payloads import check_storable, compile_schema
from triggerd.domain.redact import restore_redacted
from triggerd.domain.timeutil import parse_duration, to_iso
from triggerd.domain.timing import get_zone, next_cron, parse_run_at, validate_cron

TRIGGER_TYPES = ("webhook", "time_scheduled", "cron_scheduled", "interval_scheduled")
STATUSES = ("active", "inactive")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

PAST_GRACE = timedelta(seconds=5)
MAX_NAME_CHARS = 255
MAX_SECONDS = 10 * 365 * 86400  # interval_seconds and run_in: ten years
DEFAULT_TIMEOUT = 10
DEFAULT_RETRY = {"max_attempts": 5, "backoff_seconds": 1, "max_backoff_seconds": 300}

_TOP_KEYS = ("name", "type", "status", "config")
# What GET returns beside those: accepted and ignored on update, so a trigger read with
# GET can be edited and sent back whole (`id` must then be the trigger's own).
_READ_ONLY_KEYS = ("id", "webhook_url", "next_scheduled_run", "created_at", "updated_at")
_COMMON_KEYS = ("endpoint", "http_method", "headers", "payload", "timeout_seconds", "retry",
                "signing_secret")
_TYPE_KEYS = {
    "webhook": ("schema", "secret"),
    "time_scheduled": ("run_at", "run_in", "timezone"),
    "cron_scheduled": ("cron", "timezone"),
    "interval_scheduled": ("interval_seconds", "start_at", "first_run_at"),
}
# The standard macros, stored as the expression they stand for.
CRON_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
               "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
               "@hourly": "0 * * * *"}  # fmt: skip
_TIMING_KEYS = ("run_at", "cron", "timezone", "interval_seconds", "first_run_at")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_FORBIDDEN_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "upgrade",
                                "te", "trailer", "keep-alive", "proxy-connection"})
_MAX_HEADERS = 100


@dataclass(frozen=True)
class TriggerDefinition:
    name: str
    type: str
    status: str
    config: dict[str, Any]  # normalized


def validate_create(body: object, *, now: datetime) -> TriggerDefinition:
    """Validate a create (or ephemeral test) body; `now` is the injected clock."""
    data = _object(body, "body")
    _reject_unknown(data, _TOP_KEYS, "")
    if data.get("name") is None:
        raise ValidationError("name", "is required")
    if data.get("type") is None:
        raise ValidationError("type", "is required")
    name = _name(data["name"])
    kind = _choice(data["type"], "type", TRIGGER_TYPES)
    status = "active" if data.get("status") is None else _choice(data["status"], "status", STATUSES)
    config = _config(kind, data.get("config"), now=now, previous=None)
    return TriggerDefinition(name=name, type=kind, status=status, config=config)


def validate_update(
    body: object, current: TriggerDefinition, *, now: datetime, trigger_id: str | None = None
) -> TriggerDefinition:
    """Partial update of name, status and config; a new config replaces the old one
    and is validated as on create. `type` may be repeated but not changed; the other
    fields GET returns are ignored (`id`, when given, must be `trigger_id`)."""
    data = _object(body, "body")
    _reject_unknown(data, _TOP_KEYS + _READ_ONLY_KEYS, "")
    if data.get("id") is not None and data["id"] != trigger_id:
        raise ValidationError("id", "is not the id of the trigger being updated")
    if data.get("type") is not None and data["type"] != current.type:
        raise ValidationError("type", "cannot be changed")
    name = current.name if data.get("name") is None else _name(data["name"])
    status = current.status
    if data.get("status") is not None:
        status = _choice(data["status"], "status", STATUSES)
    config = current.config
    if data.get("config") is not None:
        config = _config(current.type, data["config"], now=now, previous=current.config)
    return TriggerDefinition(name=name, type=current.type, status=status, config=config)


def schedule_changed(old: TriggerDefinition, new: TriggerDefinition) -> bool:
    """Whether the timing keys differ, i.e. pending occurrences must be recomputed.
    Status changes are the caller's business."""
    if old.type != new.type:
        return True
    return any(old.config.get(key) != new.config.get(key) for key in _TIMING_KEYS)


# --- the config ------------------------------------------------------------------------


def _config(
    kind: str, raw: object, *, now: datetime, previous: Mapping[str, Any] | None
) -> dict[str, Any]:
    if raw is None:
        if kind != "webhook":
            raise ValidationError("config", f"is required for {kind} triggers")
        raw = {}
    config = _object(raw, "config")
    _reject_unknown(config, _COMMON_KEYS + _TYPE_KEYS[kind], "config.")
    for key in ("payload", "schema"):  # free-form JSON; every other key is typed
        check_storable(config.get(key), f"config.{key}")
    if previous is not None:
        config = restore_redacted(config, previous)
    out = _common(config, scheduled=kind != "webhook")
    out.update(_TYPE_RULES[kind](config, now, previous))
    return out


def _common(config: Mapping[str, Any], *, scheduled: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    endpoint = config.get("endpoint")
    if endpoint is not None:
        out["endpoint"] = _endpoint(endpoint)
    elif scheduled:
        raise ValidationError("config.endpoint", "is required for scheduled triggers")
    method = config.get("http_method")
    out["http_method"] = "POST" if method is None else _method(method)
    if config.get("headers") is not None:
        out["headers"] = _headers(config["headers"])
    if "payload" in config:
        out["payload"] = config["payload"]
    timeout = config.get("timeout_seconds")
    out["timeout_seconds"] = DEFAULT_TIMEOUT if timeout is None else _number(
        timeout, "config.timeout_seconds", low=0, low_inclusive=False, high=300)
    out["retry"] = _retry(config.get("retry"))
    if config.get("signing_secret") is not None:
        out["signing_secret"] = _secret(config["signing_secret"], "config.signing_secret")
    return out


def _webhook(config: Mapping[str, Any], now: datetime, previous: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if config.get("schema") is not None:
        compile_schema(config["schema"])
        out["schema"] = config["schema"]
    if config.get("secret") is not None:
        out["secret"] = _secret(config["secret"], "config.secret")
    return out


def _time_scheduled(
    config: Mapping[str, Any], now: datetime, previous: Mapping[str, Any] | None
) -> dict[str, Any]:
    tz = _timezone(config)
    run_at, run_in = config.get("run_at"), config.get("run_in")
    if run_at is not None and run_in is not None:
        raise ValidationError("config.run_at", "give run_at or run_in, not both")
    if run_in is not None:
        resolved = now + timedelta(seconds=_duration(run_in, "config.run_in"))
    elif run_at is not None:
        resolved = _instant(run_at, tz, "config.run_at")
        unchanged = previous is not None and previous.get("run_at") == to_iso(resolved)
        if not unchanged and resolved < now - PAST_GRACE:
            raise ValidationError("config.run_at", f"is in the past ({to_iso(resolved)})")
    else:
        raise ValidationError("config.run_at", "is required (or give run_in)")
    return {"run_at": to_iso(resolved), "timezone": tz}


def _cron_scheduled(config: Mapping[str, Any], now: datetime, previous: Any) -> dict[str, Any]:
    tz = _timezone(config)
    raw = config.get("cron")
    if raw is None:
        raise ValidationError("config.cron", "is required")
    expr = " ".join(_string(raw, "config.cron", max_chars=255).split())
    expr = CRON_MACROS.get(expr.lower(), expr)
    try:
        validate_cron(expr)
        next_cron(expr, tz, now)  # a valid expression can still never fire (`1 * 1#5`…)
    except Exception as exc:  # croniter's parser raises several types on garbage
        raise ValidationError("config.cron", str(exc) or "invalid cron expression") from None
    return {"cron": expr, "timezone": tz}


def _interval_scheduled(
    config: Mapping[str, Any], now: datetime, previous: Mapping[str, Any] | None
) -> dict[str, Any]:
    raw = config.get("interval_seconds")
    if raw is None:
        raise ValidationError("config.interval_seconds", "is required")
    interval = _number(raw, "config.interval_seconds", low=1, high=MAX_SECONDS)
    if abs(interval * 1000 - round(interval * 1000)) > 1e-6:  # the grid is in whole ms
        raise ValidationError("config.interval_seconds", "must be a whole number of milliseconds")
    out: dict[str, Any] = {"interval_seconds": interval}
    start = None
    if config.get("start_at") is not None:
        start = _instant(config["start_at"], "UTC", "config.start_at")
        out["start_at"] = to_iso(start)
        unchanged = previous is not None and previous.get("start_at") == out["start_at"]
        if not unchanged and start < now - PAST_GRACE:
            raise ValidationError("config.start_at", f"is in the past ({out['start_at']})")
    anchor = None
    if previous is not None and (
        previous.get("interval_seconds") == interval
        and previous.get("start_at") == out.get("start_at")
    ):
        anchor = previous.get("first_run_at")  # unchanged timing: no re-anchoring
    if not isinstance(anchor, str):
        anchor = to_iso(start or now + timedelta(seconds=interval))
    out["first_run_at"] = anchor
    return out


_TYPE_RULES: dict[str, Callable[[Mapping[str, Any], datetime, Any], dict[str, Any]]] = {
    "webhook": _webhook,
    "time_scheduled": _time_scheduled,
    "cron_scheduled": _cron_scheduled,
    "interval_scheduled": _interval_scheduled,
}


# --- fields ----------------------------------------------------------------------------


def _object(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(field, "must be a JSON object")
    return value


def _reject_unknown(data: Mapping[Any, Any], allowed: Iterable[str], prefix: str) -> None:
    known = set(allowed)
    for key in data:
        if key not in known:
            if key == "":  # name the enclosing object rather than an empty field
                raise ValidationError(prefix.rstrip(".") or "body", "has an empty key")
            raise ValidationError(f"{prefix}{key}", "is not a known field")


def _string(value: object, field: str, *, max_chars: int) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    if not value.strip():
        raise ValidationError(field, "must not be empty")
    if len(value) > max_chars:
        raise ValidationError(field, f"must be at most {max_chars} characters")
    return value


def _name(value: object) -> str:
    return _string(value, "name", max_chars=MAX_NAME_CHARS)


def _secret(value: object, field: str) -> str:
    return _string(value, field, max_chars=1024)


def _choice(value: object, field: str, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValidationError(field, f"must be one of {', '.join(options)}")
    return value


def _method(value: object) -> str:
    if not isinstance(value, str) or value.upper() not in HTTP_METHODS:
        raise ValidationError("config.http_method", f"must be one of {', '.join(HTTP_METHODS)}")
    return value.upper()


def _number(
    value: object, field: str, *, low: float, high: float, low_inclusive: bool = True
) -> int | float:
    """A JSON number in range; integral floats come back as int (60.0 -> 60)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(field, "must be a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(field, "must be a finite number")
        if value.is_integer():
            value = int(value)
    too_low = value < low if low_inclusive else value <= low
    if too_low or value > high:
        bound = ">=" if low_inclusive else ">"
        raise ValidationError(field, f"must be {bound} {low:g} and <= {high:g}")
    return value


def _integer(value: object, field: str, *, low: int, high: int) -> int:
    number = _number(value, field, low=low, high=high)
    if not isinstance(number, int):
        raise ValidationError(field, "must be an integer")
    return number


def _duration(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValidationError(field, "must be a duration like 10m or a number of seconds")
    try:
        seconds = parse_duration(value)
    except (ValueError, OverflowError) as exc:
        raise ValidationError(field, str(exc)) from None
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_SECONDS:
        raise ValidationError(field, f"must be > 0 and at most {MAX_SECONDS:g} seconds")
    return seconds


def _timezone(config: Mapping[str, Any]) -> str:
    raw = config.get("timezone")
    if raw is None:
        return "UTC"
    tz = _string(raw, "config.timezone", max_chars=255)
    try:
        get_zone(tz)
    except ValueError as exc:
        raise ValidationError("config.timezone", str(exc)) from None
    return tz


def _instant(value: object, tz: str, field: str) -> datetime:
    """ISO 8601 -> aware UTC; an offset in the value wins, else it is read in `tz`."""
    text = _string(value, field, max_chars=64)
    try:
        return parse_run_at(text, tz)
    except OverflowError:
        raise ValidationError(field, f"{text!r} is out of range") from None
    except ValueError:
        raise ValidationError(field, f"{text!r} is not an ISO 8601 timestamp") from None


def _endpoint(value: object) -> str:
    url = _string(value, "config.endpoint", max_chars=2048)
    if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        raise ValidationError("config.endpoint", "must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        raise ValidationError("config.endpoint", f"is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValidationError("config.endpoint", "must be an absolute http or https URL")
    if not host:
        raise ValidationError("config.endpoint", "must name a host")
    return url


def _headers(value: object) -> dict[str, str]:
    headers = _object(value, "config.headers")
    if len(headers) > _MAX_HEADERS:
        raise ValidationError("config.headers", f"at most {_MAX_HEADERS} headers")
    seen: set[str] = set()
    for name, header_value in headers.items():
        field = f"config.headers.{name}"
        if not isinstance(name, str) or len(name) > 256 or not _HEADER_NAME.match(name):
            raise ValidationError(field, "is not a valid header name")
        if name.lower() in _FORBIDDEN_HEADERS:
            raise ValidationError(field, "is set by the HTTP client and cannot be configured")
        if name.lower() in seen:
            raise ValidationError(field, "is given twice (header names ignore case)")
        seen.add(name.lower())
        if not isinstance(header_value, str):
            raise ValidationError(field, "must be a string")
        if len(header_value) > 8192:
            raise ValidationError(field, "must be at most 8192 characters")
        if _HEADER_VALUE_BAD.search(header_value):
            raise ValidationError(field, "must not contain CR, LF or other control characters")
    return dict(headers)


def _retry(value: object) -> dict[str, Any]:
    if value is None:
        return dict(DEFAULT_RETRY)
    retry = _object(value, "config.retry")
    _reject_unknown(retry, DEFAULT_RETRY, "config.retry.")
    attempts = retry.get("max_attempts")
    backoff = retry.get("backoff_seconds")
    cap = retry.get("max_backoff_seconds")
    out: dict[str, Any] = {
        "max_attempts": DEFAULT_RETRY["max_attempts"] if attempts is None else _integer(
            attempts, "config.retry.max_attempts", low=1, high=20),
        "backoff_seconds": DEFAULT_RETRY["backoff_seconds"] if backoff is None else _number(
            backoff, "config.retry.backoff_seconds", low=0, low_inclusive=False, high=3600),
    }
    floor = out["backoff_seconds"]
    out["max_backoff_seconds"] = (
        max(DEFAULT_RETRY["max_backoff_seconds"], floor) if cap is None
        else _number(cap, "config.retry.max_backoff_seconds", low=floor, high=86400)
    )
    return out


__all__ = ["HTTP_METHODS", "STATUSES", "TRIGGER_TYPES", "TriggerDefinition",
           "schedule_changed", "validate_create", "validate_update"]
