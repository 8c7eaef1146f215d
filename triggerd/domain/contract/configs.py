"""A trigger's `config`, one model per trigger type: what the API accepts, what is stored
in `triggers.config`, and the typed object the store, scheduler and worker read.

Validated from a request, a config is normalized: defaults filled in, `run_in` resolved
to a UTC `run_at`, an interval anchored by `first_run_at`, times as ISO 8601 UTC with
`Z`, a cron macro stored as the expression it stands for. `stored()` is that form as
JSON (the column's format); `from_stored` reads it back without the rules that depend
on the clock. A config also reads as that mapping (`config["retry"]`), for the API edge.

Choices the contract makes:
- A `run_at` / `start_at` already in the past is accepted on update when it is the
  stored value unchanged, so a trigger read with GET can be PUT back as is.
- `first_run_at` (server-computed) may be sent back and is ignored.
- A secret or credential header sent back as the redaction placeholder `***` keeps
  the stored value.
"""

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Self

import pydantic
from pydantic import ConfigDict, Field, ValidationInfo, WithJsonSchema, model_validator

from triggerd.domain.contract.base import (
    STORED,
    Model,
    RequestModel,
    context_now,
    context_previous,
    is_stored,
)
from triggerd.domain.contract.fields import (
    AnyJson,
    Choice,
    Duration,
    Endpoint,
    Headers,
    Number,
    Text,
    Zone,
    invalid,
    url_credentials,
)
from triggerd.domain.enums import HttpMethod, MisfirePolicy, TriggerType, values
from triggerd.domain.misfire import DEFAULT_CATCHUP_WINDOW, MAX_CATCHUP_WINDOW
from triggerd.domain.occurrences import MAX_JITTER_SECONDS, period
from triggerd.domain.payloads import check_storable, compile_schema
from triggerd.domain.redact import restore_redacted
from triggerd.domain.timeutil import parse_iso_utc, to_iso
from triggerd.domain.timing import (
    latest_due,
    next_cron,
    next_occurrence,
    parse_run_at,
    validate_cron,
)

PAST_GRACE = timedelta(seconds=5)  # how far in the past a new run_at / start_at may be
MAX_SECONDS = 10 * 365 * 86400  # interval_seconds and run_in: ten years
MAX_SECRET_CHARS = 1024
MAX_TIME_CHARS = 64
MAX_CRON_CHARS = 255
MAX_ZONE_CHARS = 255
DEFAULT_ZONE = "UTC"
# Keys whose change moves the schedule (pending occurrences are then recomputed).
TIMING_KEYS = ("run_at", "cron", "timezone", "interval_seconds", "first_run_at",
               "jitter_seconds")

Secret = Annotated[str | None, Text(MAX_SECRET_CHARS)]
Instant = Annotated[str | None, Text(MAX_TIME_CHARS)]
TimeZone = Annotated[str, Zone(MAX_ZONE_CHARS), Field(examples=["Europe/Berlin"])]
Method = Annotated[HttpMethod, Choice(values(HttpMethod), upper=True, convert=HttpMethod)]
_ZONE_TEXT = "IANA time zone (default UTC)"


def _update(model: Model, **values: Any) -> None:
    """Set normalized values on a frozen model inside its own validator (the one place
    it is still being built); they count as given, so `stored()` writes them."""
    model.__dict__.update(values)
    model.model_fields_set.update(values)


class RetryConfig(RequestModel):
    """How often, and how far apart, a failed delivery is tried again."""

    MAX_ATTEMPTS: ClassVar[int] = 20
    MAX_BACKOFF: ClassVar[int] = 3600
    MAX_BACKOFF_CAP: ClassVar[int] = 86400
    DEFAULT_BACKOFF_CAP: ClassVar[int] = 300

    max_attempts: Annotated[int, Number(1, MAX_ATTEMPTS, integer=True)] = Field(
        5, description="Delivery attempts in all, the first included")
    backoff_seconds: Annotated[float, Number(0, MAX_BACKOFF, low_inclusive=False)] = Field(
        1, description="First retry delay; doubles each attempt, with jitter")
    max_backoff_seconds: Annotated[float, Number(0, MAX_BACKOFF_CAP, low_inclusive=False)] = (
        Field(DEFAULT_BACKOFF_CAP,
              description="Cap of the retry delay, >= backoff_seconds (default 300, or "
                          "backoff_seconds when that is larger)"))  # fmt: skip

    @model_validator(mode="after")
    def _cap_above_base(self) -> Self:
        if "max_backoff_seconds" not in self.model_fields_set:
            _update(self, max_backoff_seconds=max(self.DEFAULT_BACKOFF_CAP, self.backoff_seconds))
        elif self.max_backoff_seconds < self.backoff_seconds:
            invalid(f"must be >= {self.backoff_seconds:g} and <= {self.MAX_BACKOFF_CAP:g}",
                    "max_backoff_seconds")  # fmt: skip
        return self


class TriggerConfig(RequestModel):
    """The keys every trigger type takes: how the worker delivers an event."""

    MAX_URL_CHARS: ClassVar[int] = 2048
    MAX_TIMEOUT: ClassVar[int] = 300
    DEFAULT_TIMEOUT: ClassVar[int] = 10
    MAX_HEADERS: ClassVar[int] = 100
    MAX_HEADER_NAME_CHARS: ClassVar[int] = 256
    MAX_HEADER_VALUE_CHARS: ClassVar[int] = 8192
    MAX_RATE: ClassVar[int] = 10_000
    NULL_IS_VALUE = frozenset({"payload"})
    # Kept in `stored()` even when None: null is a payload.
    _KEEP_NONE: ClassVar[frozenset[str]] = frozenset({"payload"})
    # Keys the worker needs to deliver, snapshotted into each event so a later edit of
    # the trigger does not change an event in flight.
    DELIVERY_KEYS: ClassVar[tuple[str, ...]] = (
        "endpoint", "http_method", "headers", "timeout_seconds", "retry", "signing_secret",
        "rate_limit_per_second")
    TYPE: ClassVar[TriggerType]

    endpoint: Annotated[str | None, Endpoint(MAX_URL_CHARS)] = Field(
        None, description="Absolute http or https URL the event is delivered to")
    http_method: Method = Field(HttpMethod.POST, description="Method of the delivery request")
    headers: Annotated[dict[str, str] | None, Headers(
        MAX_HEADERS, MAX_HEADER_NAME_CHARS, MAX_HEADER_VALUE_CHARS)] = Field(
        None, description="Extra request headers. Values of credential-like names "
                          "(Authorization, *token*, *secret*, *key*...) are returned as `***`; "
                          "sending `***` back keeps the stored value")  # fmt: skip
    payload: Annotated[Any, AnyJson()] = Field(
        None, description="Body of scheduled deliveries: any JSON (scheduled types)")
    timeout_seconds: Annotated[float, Number(0, MAX_TIMEOUT, low_inclusive=False)] = Field(
        DEFAULT_TIMEOUT, description="Delivery timeout in seconds")
    retry: RetryConfig = RetryConfig()  # frozen: one shared default is safe
    signing_secret: Secret = Field(
        None, description="When set, deliveries carry an HMAC-SHA256 signature of the body "
                          "(returned as `***`)")  # fmt: skip
    rate_limit_per_second: Annotated[
        float | None, Number(0, MAX_RATE, low_inclusive=False)] = Field(
        None, description="At most this many deliveries of the trigger start per second, "
                          "evenly spaced (1/rate apart); the others wait, none is dropped "
                          "and waiting uses up no attempt. Unset: no limit")  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _before_rules(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        for key in ("payload", "schema"):  # free-form JSON: it must be storable as it is
            if key in data:
                check_storable(data[key], f"config.{key}")
        previous = context_previous(info)
        if isinstance(previous, TriggerConfig):
            data = restore_redacted(data, previous.stored())
        return data

    @model_validator(mode="after")
    def _one_authorization(self) -> Self:
        # The worker's HTTP client refuses both at once (every delivery would fail).
        # getattr: a stored row read key by key (from_stored) may lack a required one.
        endpoint, headers = getattr(self, "endpoint", None), getattr(self, "headers", None)
        if (endpoint and headers
                and any(name.lower() == "authorization" for name in headers)
                and url_credentials(endpoint) != (None, None)):  # fmt: skip
            invalid("carries a user name or password, which is sent as an Authorization"
                    " header, and headers has one too: give one of them", "endpoint")  # fmt: skip
        return self

    # --- the stored form, and the mapping view of it -------------------------------------

    def stored(self) -> dict[str, Any]:
        """The JSON of the `triggers.config` column: every set value, defaults included;
        an optional key that is not set is left out."""
        data = self.model_dump(mode="json", by_alias=True)
        given = self.model_fields_set
        return {key: value for key, value in data.items()
                if value is not None or (key in self._KEEP_NONE and key in given)}  # fmt: skip

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> Self:
        """A config read from the database: trusted, so the rules that depend on the
        clock are off. A row the API did not write (by hand, a restore) may not fit the
        model: then each key that fits is kept, the others read as not set (None), so
        the row can still be read, shown and fixed with a PUT."""
        try:
            return cls.model_validate(data, context=STORED)
        except pydantic.ValidationError:
            pass
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key not in data:
                if field.is_required():
                    values[name] = None
                continue
            try:
                values[name] = cls.__pydantic_validator__.validate_assignment(
                    cls.model_construct(), name, data[key], context=STORED).__dict__[name]
            except (pydantic.ValidationError, TypeError, ValueError):
                values[name] = None if field.is_required() else field.get_default(
                    call_default_factory=True)
        return cls.model_construct(**values)  # type: ignore[return-value]

    def delivery(self) -> dict[str, Any]:
        """The delivery keys of `stored()`: what an event snapshots."""
        stored = self.stored()
        return {key: stored[key] for key in self.DELIVERY_KEYS if key in stored}

    @property
    def has_payload(self) -> bool:
        return "payload" in self.model_fields_set

    def __getitem__(self, key: str) -> Any:
        return self.stored()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.stored().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.stored()

    def keys(self) -> Iterator[str]:
        return iter(self.stored())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TriggerConfig):
            return type(self) is type(other) and self.stored() == other.stored()
        if isinstance(other, Mapping):
            return self.stored() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # payloads are mutable JSON

    # --- the schedule --------------------------------------------------------------------

    def timing(self) -> dict[str, Any]:
        """The keys that say when the trigger fires (compared to see a schedule change)."""
        return {key: getattr(self, key) for key in TIMING_KEYS if key in type(self).model_fields}

    def next_occurrence(self, after: datetime) -> datetime | None:
        """The next firing strictly after `after`; None when there is none (a webhook, a
        one-shot already past, a dead cron)."""
        return next_occurrence(self.TYPE, self.timing(), after)

    def latest_due(self, at_or_before: datetime) -> datetime | None:
        """The latest firing <= `at_or_before` (the one missed occurrence to fire on
        recovery), or None."""
        return latest_due(self.TYPE, self.timing(), at_or_before)

    def anchor(self) -> datetime | None:
        """The stored instant the schedule starts from (run_at, first_run_at), if any."""
        return None


class WebhookConfig(TriggerConfig):
    TYPE = TriggerType.WEBHOOK

    model_config = ConfigDict(populate_by_name=True)

    endpoint: Annotated[str | None, Endpoint(TriggerConfig.MAX_URL_CHARS)] = Field(
        None, description="Absolute http or https URL the event is delivered to; optional "
                          "for webhook triggers: without it the event is only published to "
                          "Kafka")  # fmt: skip
    json_schema: Annotated[Any, AnyJson(), WithJsonSchema(
        {"description": "JSON Schema (draft-07 or 2020-12) incoming payloads must match; an "
                        "invalid schema is a 400. Without it any JSON body is accepted"})] = (
        Field(None, alias="schema"))  # fmt: skip
    secret: Secret = Field(
        None, description="When set, ingestion requires `X-Signature: sha256=<hex HMAC-SHA256 "
                          "of the body>` (returned as `***`)")  # fmt: skip

    @model_validator(mode="after")
    def _schema_compiles(self) -> Self:
        if self.json_schema is not None:
            compile_schema(self.json_schema)  # ValidationError("config.schema", ...) as it is
        return self


class ScheduledConfig(TriggerConfig):
    endpoint: Annotated[str, Endpoint(TriggerConfig.MAX_URL_CHARS)] = Field(
        description="Absolute http or https URL the event is delivered to")


class SteeredConfig(ScheduledConfig):
    """The keys that steer a recurring schedule (cron and interval triggers)."""

    jitter_seconds: Annotated[float, Number(0, MAX_JITTER_SECONDS)] = Field(
        0, description="Each occurrence fires up to this much after its scheduled time, by "
                       "an offset fixed per trigger and occurrence (the same in `upcoming`, "
                       "across restarts and schedulers). Whole milliseconds, less than the "
                       "schedule's period: interval_seconds, or the shortest gap between the "
                       "cron's next 100 occurrences")  # fmt: skip
    misfire_policy: Annotated[MisfirePolicy, Choice(values(MisfirePolicy),
                                                    convert=MisfirePolicy)] = Field(
        MisfirePolicy.LATEST,
        description="What fires of the occurrences missed while no scheduler ran: `latest` "
                    "the most recent, once; `skip` none; `all` each within "
                    "catchup_window_seconds, oldest first")  # fmt: skip
    catchup_window_seconds: Annotated[float, Number(0, MAX_CATCHUP_WINDOW,
                                                    low_inclusive=False)] = Field(
        DEFAULT_CATCHUP_WINDOW, description="How far back misfire_policy `all` catches up")

    def _jitter_fits(self, now: datetime) -> None:
        """Jitter below the period keeps successive occurrences in order."""
        jitter = self.jitter_seconds
        if abs(jitter * 1000 - round(jitter * 1000)) > 1e-6:
            invalid("must be a whole number of milliseconds", "jitter_seconds")
        bound = period(self.TYPE, self.timing(), now) if jitter else None
        if bound is not None and jitter >= bound[0]:
            invalid(f"must be less than the schedule's period ({bound[1]}: {bound[0]:g} s)",
                    "jitter_seconds")  # fmt: skip


class TimeScheduledConfig(ScheduledConfig):
    TYPE = TriggerType.TIME_SCHEDULED

    run_at: Instant = Field(
        None, examples=["2030-01-01T09:00:00+01:00"],
        description="ISO 8601 instant; without an offset it is read in `timezone` (a time "
                    "skipped by DST moves forward, a repeated one means its first pass). Not "
                    "more than 5 s in the past. Give `run_at` or `run_in`, not both")  # fmt: skip
    run_in: Annotated[float | None, Duration(MAX_SECONDS)] = Field(
        None, exclude=True,
        description="Instead of run_at: a duration from now (`90s`, `10m`, `2h`, `1d`, or "
                    "seconds), resolved to run_at at creation")  # fmt: skip
    timezone: TimeZone = Field(DEFAULT_ZONE, description=_ZONE_TEXT)

    @model_validator(mode="after")
    def _resolve_run_at(self, info: ValidationInfo) -> Self:
        if is_stored(info):
            return self
        now = context_now(info)
        if self.run_at is not None and self.run_in is not None:
            invalid("give run_at or run_in, not both", "run_at")
        if self.run_in is not None:
            resolved = now + timedelta(seconds=self.run_in)
        elif self.run_at is not None:
            resolved = _instant(self.run_at, self.timezone, "run_at")
            previous = context_previous(info)
            unchanged = isinstance(previous, TimeScheduledConfig) and (
                previous.run_at == to_iso(resolved))
            if not unchanged and resolved < now - PAST_GRACE:
                invalid(f"is in the past ({to_iso(resolved)})", "run_at")
        else:
            invalid("is required (or give run_in)", "run_at")
        _update(self, run_at=to_iso(resolved), run_in=None)
        return self

    def anchor(self) -> datetime | None:
        return None if self.run_at is None else parse_iso_utc(self.run_at)


# The standard macros, stored as the expression they stand for.
CRON_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
               "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
               "@hourly": "0 * * * *"}  # fmt: skip


class CronScheduledConfig(SteeredConfig):
    TYPE = TriggerType.CRON_SCHEDULED

    cron: Annotated[str, Text(MAX_CRON_CHARS)] = Field(
        examples=["*/5 * * * *"],
        description="Cron expression: 5 fields, or 6 with a leading seconds field. In a DST "
                    "gap it fires once at the next valid instant; a repeated hour fires "
                    "once")  # fmt: skip
    timezone: TimeZone = Field(DEFAULT_ZONE, description=_ZONE_TEXT)

    @model_validator(mode="after")
    def _cron_fires(self, info: ValidationInfo) -> Self:
        if is_stored(info):
            return self
        expr = " ".join(self.cron.split())
        expr = CRON_MACROS.get(expr.lower(), expr)
        try:
            validate_cron(expr)
            # A valid expression can still never fire (`1 * 1#5`...).
            next_cron(expr, self.timezone, context_now(info))
        except Exception as exc:  # croniter's parser raises several types on garbage
            invalid(str(exc) or "invalid cron expression", "cron")
        _update(self, cron=expr)
        self._jitter_fits(context_now(info))
        return self


class IntervalScheduledConfig(SteeredConfig):
    TYPE = TriggerType.INTERVAL_SCHEDULED

    interval_seconds: Annotated[float, Number(1, MAX_SECONDS)] = Field(
        examples=[60], description="Seconds between firings (whole milliseconds)")
    start_at: Instant = Field(
        None, description="First firing (ISO 8601; no offset: UTC; not in the past); default: "
                          "one interval after creation. The n-th firing is at first + n x "
                          "interval")  # fmt: skip
    first_run_at: Annotated[str | None, AnyJson(), WithJsonSchema(
        {"description": "Server-computed anchor of the schedule (ISO 8601); ignored on input, "
                        "so a trigger read with GET can be sent back as is"})] = None  # fmt: skip

    @model_validator(mode="after")
    def _anchor(self, info: ValidationInfo) -> Self:
        if is_stored(info):
            return self
        now, previous = context_now(info), context_previous(info)
        interval = self.interval_seconds
        if abs(interval * 1000 - round(interval * 1000)) > 1e-6:  # the grid is in whole ms
            invalid("must be a whole number of milliseconds", "interval_seconds")
        start = start_at = None
        if self.start_at is not None:
            start = _instant(self.start_at, DEFAULT_ZONE, "start_at")
            start_at = to_iso(start)
            unchanged = isinstance(previous, IntervalScheduledConfig) and (
                previous.start_at == start_at)
            if not unchanged and start < now - PAST_GRACE:
                invalid(f"is in the past ({start_at})", "start_at")
        anchor = None
        if isinstance(previous, IntervalScheduledConfig) and (
            previous.interval_seconds == interval and previous.start_at == start_at
        ):
            anchor = previous.first_run_at  # unchanged timing: no re-anchoring
        if not isinstance(anchor, str):
            anchor = to_iso(start or now + timedelta(seconds=interval))
        _update(self, start_at=start_at, first_run_at=anchor)
        self._jitter_fits(now)
        return self

    def anchor(self) -> datetime | None:
        return None if self.first_run_at is None else parse_iso_utc(self.first_run_at)


# The latest run_at / start_at accepted: a day short of what a datetime can hold, so
# adding jitter (at most an hour) or showing it in any zone (at most +14 h) stays in range.
LATEST_INSTANT = datetime(9999, 12, 30, tzinfo=UTC)


def _instant(value: str, tz: str, field: str) -> datetime:
    """ISO 8601 -> aware UTC; an offset in the value wins, else it is read in `tz`."""
    try:
        instant = parse_run_at(value, tz)
    except OverflowError:
        invalid(f"{value!r} is out of range", field)
    except ValueError:
        invalid(f"{value!r} is not an ISO 8601 timestamp", field)
    if instant > LATEST_INSTANT:  # jitter, or the wall time in a zone east of UTC, would overflow
        invalid(f"{value!r} is out of range (at most {to_iso(LATEST_INSTANT)})", field)
    return instant


CONFIG_MODELS: dict[TriggerType, type[TriggerConfig]] = {
    cls.TYPE: cls
    for cls in (WebhookConfig, TimeScheduledConfig, CronScheduledConfig, IntervalScheduledConfig)
}


def stored_config(trigger_type: str, data: Mapping[str, Any]) -> TriggerConfig:
    """The typed config of a stored trigger of `trigger_type`."""
    return CONFIG_MODELS[TriggerType(trigger_type)].from_stored(data)


__all__ = ["CONFIG_MODELS", "CRON_MACROS", "MAX_SECONDS", "PAST_GRACE", "TIMING_KEYS",
           "CronScheduledConfig", "IntervalScheduledConfig", "RetryConfig", "ScheduledConfig",
           "TimeScheduledConfig", "TriggerConfig", "WebhookConfig", "stored_config"]
