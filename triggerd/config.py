"""Settings: environment variables, optionally overlaid on a TOML file.

The only module that reads the environment. Every value is parsed and validated here,
once; a bad or unknown key fails start-up with a one-line ConfigError naming it.

Trace export takes OpenTelemetry's standard variables (OTEL_*, environment only), so
triggerd is pointed at a collector the way any other service is (`OtelSettings`).
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from triggerd.domain.access import ApiKey, KeyFileError, env_keys, parse_keys_file
from triggerd.domain.destinations import IPNetwork, parse_networks
from triggerd.domain.enums import Role, values
from triggerd.domain.errors import ConfigError
from triggerd.domain.timeutil import parse_duration

PREFIX = "TRIGGERD_"
ALL_ROLES = values(Role)
# Environment names that are not settings but are allowed next to them.
_ENV_NOT_SETTINGS = {"TRIGGERD_CONFIG", "TRIGGERD_SQL_DIR"}
_ENV_IGNORED_PREFIXES = ("TRIGGERD_TEST_", "TRIGGERD_BENCH_", "TRIGGERD_DEV_")


@dataclass(frozen=True)
class DatabaseUrl:
    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def parse(cls, url: str) -> DatabaseUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("mysql", "mariadb", "mysql+aiomysql"):
            raise ValueError("must look like mysql://user:password@host:port/database")
        database = parts.path.lstrip("/")
        if not parts.hostname or not database:
            raise ValueError("needs a host and a database: mysql://user:password@host:port/database")
        try:
            port = parts.port or 3306
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from None
        return cls(
            host=parts.hostname,
            port=port,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=unquote(database),
        )

    def redacted(self) -> str:
        return f"mysql://{self.user}:***@{self.host}:{self.port}/{self.database}"


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("must be an integer")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number")  # never truncated
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not an integer") from None
        if not lo <= number <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return number

    return parse


def _duration(min_seconds: float = 0.0, max_seconds: float | None = None
              ) -> Callable[[Any], float]:  # fmt: skip
    def parse(value: Any) -> float:
        seconds = parse_duration(value)
        if seconds < min_seconds:
            raise ValueError(f"must be at least {min_seconds:g}s")
        if max_seconds is not None and seconds > max_seconds:
            raise ValueError(f"must be at most {max_seconds:g}s")
        return seconds

    return parse


# The Kafka client sends its timings as 32-bit milliseconds (at most ~24.8 days); a day
# is far beyond any sensible one and well inside.
_KAFKA_MAX = 86_400.0


def _short_str(limit: int) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _str(value)
        if len(text) > limit:
            raise ValueError(f"must be at most {limit} characters")
        return text

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in options:
            raise ValueError(f"{value!r} is not one of {', '.join(options)}")
        return text

    return parse


def parse_roles(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    roles = [str(item).strip().lower() for item in items if str(item).strip()]
    if not roles:
        raise ValueError(f"name at least one of {','.join(ALL_ROLES)}")
    for role in roles:
        if role not in ALL_ROLES:
            raise ValueError(f"unknown role {role!r} (roles: {','.join(ALL_ROLES)})")
    return tuple(r for r in ALL_ROLES if r in roles)  # canonical order, no duplicates


def _bootstrap(value: Any) -> str:
    text = _str(value)
    for server in text.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{server!r} is not host:port")
    return text


def _url(value: Any) -> str:
    text = _str(value).rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL")
    return text


def _key_list(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    keys = tuple(str(k).strip() for k in items if str(k).strip())
    listed = bool(value) if isinstance(value, list) else "," in str(value)
    if listed and not keys:  # " , " is a key list gone wrong, not a wish for an open API
        raise ValueError("lists no key (leave it empty or unset for an open API)")
    return keys


def _networks(value: Any) -> tuple[IPNetwork, ...]:
    if isinstance(value, list):
        return parse_networks(str(item) for item in value)
    return parse_networks(str(value))


def _optional_str(value: Any) -> str | None:
    text = str(value).strip()
    return text or None


OTLP_HTTP_PORT = 4318
_TRACES_PATH = "/v1/traces"


@dataclass(frozen=True)
class OtelSettings:
    """Trace export: off unless OTEL_TRACES_EXPORTER=otlp (and OTEL_SDK_DISABLED is not
    true). Only OTLP over HTTP with protobuf bodies is spoken; the OpenTelemetry SDK
    reads its other standard variables itself (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT,
    _COMPRESSION, OTEL_BSP_*, OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES)."""

    exporter: str | None = None  # "otlp", or None: nothing is exported
    endpoint: str = f"http://localhost:{OTLP_HTTP_PORT}{_TRACES_PATH}"  # the full traces URL
    service_name: str = "triggerd"

    @property
    def enabled(self) -> bool:
        return self.exporter is not None


def load_otel(env: Mapping[str, str]) -> OtelSettings:
    """OtelSettings from the standard OpenTelemetry variables. Raises ConfigError."""

    def get(*names: str) -> tuple[str, str] | None:  # the first one set: (name, value)
        for name in names:
            value = env.get(name, "").strip()
            if value:
                return name, value
        return None

    disabled = get("OTEL_SDK_DISABLED")
    exporter = get("OTEL_TRACES_EXPORTER")
    if exporter is None or exporter[1].lower() == "none":
        return OtelSettings()
    if disabled is not None and disabled[1].lower() == "true":  # the spec's only "yes"
        return OtelSettings()
    if exporter[1].lower() != "otlp":
        raise ConfigError(f"{exporter[0]}: triggerd exports traces over OTLP only: otlp or none")
    protocol = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol is not None and protocol[1] != "http/protobuf":
        raise ConfigError(f"{protocol[0]}: triggerd speaks http/protobuf only")
    endpoint = f"http://localhost:{OTLP_HTTP_PORT}{_TRACES_PATH}"
    full = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base = get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if full is not None:  # the signal's own variable is the whole URL
        endpoint = _otlp_url(*full)
    elif base is not None:  # the shared one is a base: the signal's path goes after it
        endpoint = _otlp_url(*base).rstrip("/") + _TRACES_PATH
    service = get("OTEL_SERVICE_NAME")
    return OtelSettings(exporter="otlp", endpoint=endpoint,
                        service_name=service[1] if service else "triggerd")  # fmt: skip


def _otlp_url(name: str, value: str) -> str:
    try:
        return _url(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    kafka_bootstrap: str = "localhost:9092"
    kafka_topic: str = "trigger-events"
    kafka_partitions: int = 6
    kafka_idempotent: bool = False
    kafka_group: str = "triggerd-worker"
    kafka_session_timeout: float = 10.0
    kafka_heartbeat_interval: float = 3.0
    # tansu answers a fetch only as the wait runs out (a record waits ~wait/2 on average);
    # Apache Kafka answers as soon as one arrives, so there it only paces idle polling.
    kafka_fetch_wait: float = 0.01
    # Each partition hands the producer at most one batch per this (bus/producer.py):
    # 5 ms gave the lowest end-to-end p99 at 1,000 webhooks/s and a fifth less CPU per
    # webhook than none (docs/performance.md); 20 ms saved more CPU but added ~20 ms.
    kafka_linger: float = 0.010
    # The largest job (one Kafka record, as the producer sizes it) sent: aiokafka's own
    # default, and what a stock Apache Kafka broker accepts (message.max.bytes). A larger
    # one is refused at ingest (413) or ends `failed` (bus/producer.py, JobTooLarge).
    kafka_max_request_size: int = 1024 * 1024
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    roles: tuple[str, ...] = ALL_ROLES
    public_url: str = "http://localhost:8080"
    retention_archive_after: float = 2 * 3600.0
    retention_delete_after: float = 48 * 3600.0
    retention_interval: float = 60.0
    retention_batch_size: int = 5000
    audit_retention: float = 90 * 86400.0
    log_level: str = "info"
    log_format: str = "json"
    event_loop: str = "uvloop"
    api_keys: tuple[str, ...] = ()
    api_keys_file: str | None = None
    max_body: int = 1024 * 1024
    webhook_fast_lane: bool = True
    shutdown_timeout: float = 10.0
    worker_concurrency: int = 100
    delivery_fast_lane: bool = True
    # An event owed a delivery whose job shows no progress (no attempt claimed) this long
    # after it was published is published again (worker/backstop.py explains the value).
    redeliver_after: float = 120.0
    scheduler_lookahead: float = 60.0
    scheduler_lease: float = 10.0
    scheduler_reconcile_interval: float = 1.0
    scheduler_batch_size: int = 1000
    scheduler_max_held: int = 150_000
    db_pool_size: int = 10
    instance_id: str = ""
    # Delivery safety: networks beyond the public Internet that deliveries may reach,
    # and the per-endpoint circuit breaker and auto-disable.
    delivery_allow_networks: tuple[IPNetwork, ...] = ()
    circuit_failure_threshold: int = 10
    circuit_cooldown: float = 30.0
    endpoint_disable_after: float = 5 * 86400.0
    # From OpenTelemetry's own OTEL_* variables (load_otel), not a TRIGGERD_* setting.
    otel: OtelSettings = field(default=OtelSettings(), metadata={"variables": "OTEL_*"})

    @property
    def database(self) -> DatabaseUrl:
        if not self.database_url:
            raise ConfigError("TRIGGERD_DATABASE_URL: required (mysql://user:password@host:port/db)")
        return DatabaseUrl.parse(self.database_url)

    def all_api_keys(self) -> tuple[ApiKey, ...]:
        """The keys of TRIGGERD_API_KEYS (full access) and of the keys file (see
        domain.access for its format). Raises OSError when the file cannot be read,
        ValueError (KeyFileError for the file) when a key is bad or repeated."""
        keys = env_keys(self.api_keys)
        if self.api_keys_file:
            text = Path(self.api_keys_file).read_text(encoding="utf-8")
            keys += parse_keys_file(text, keys)
        return tuple(keys)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "database_url": _str,
    "kafka_bootstrap": _bootstrap,
    "kafka_topic": _str,
    "kafka_partitions": _int_range(1, 1024),
    "kafka_idempotent": _bool,
    "kafka_group": _str,
    "kafka_session_timeout": _duration(1.0, _KAFKA_MAX),
    "kafka_heartbeat_interval": _duration(0.1, _KAFKA_MAX),
    "kafka_fetch_wait": _duration(0.001, _KAFKA_MAX),
    "kafka_linger": _duration(0.0, _KAFKA_MAX),
    "kafka_max_request_size": _int_range(16 * 1024, 1024 * 1024 * 1024),
    "http_host": _str,
    "http_port": _int_range(0, 65535),
    "roles": parse_roles,
    "public_url": _url,
    "retention_archive_after": _duration(0.001),
    "retention_delete_after": _duration(0.001),
    "retention_interval": _duration(0.05),
    "retention_batch_size": _int_range(1, 100_000),
    "audit_retention": _duration(1.0),
    "log_level": _choice("debug", "info", "warning", "error", "critical"),
    "log_format": _choice("json", "text"),
    "event_loop": _choice("uvloop", "asyncio"),
    "api_keys": _key_list,
    "api_keys_file": _optional_str,
    "max_body": _int_range(1024, 1024 * 1024 * 1024),
    "webhook_fast_lane": _bool,
    "shutdown_timeout": _duration(0.0),
    "worker_concurrency": _int_range(1, 10_000),
    "delivery_fast_lane": _bool,
    "redeliver_after": _duration(0.5),
    "scheduler_lookahead": _duration(1.0),
    "scheduler_lease": _duration(1.0),
    "scheduler_reconcile_interval": _duration(0.05),
    "scheduler_batch_size": _int_range(1, 100_000),
    "scheduler_max_held": _int_range(1_000, 10_000_000),
    "db_pool_size": _int_range(1, 1000),
    "instance_id": _short_str(64),  # trigger_schedules.claimed_by
    "delivery_allow_networks": _networks,
    "circuit_failure_threshold": _int_range(1, 1_000_000),
    "circuit_cooldown": _duration(0.05),
    "endpoint_disable_after": _duration(0.0),
}
assert set(_PARSERS) | {"otel"} == {f.name for f in fields(Settings)}


def load_settings(
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from a TOML file (optional), then the environment, then explicit overrides
    (CLI flags). Raises ConfigError with a one-line message naming the key."""
    env = os.environ if environ is None else environ
    raw = _given(env, config_file)
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = (f"--{key.replace('_', '-')}", value)

    values: dict[str, Any] = {}
    for key, (origin, value) in raw.items():
        try:
            values[key] = _PARSERS[key](value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{origin}: {exc}") from None

    def where(key: str) -> str:  # the name the value was given under, as in the per-key errors
        return raw[key][0] if key in raw else PREFIX + key.upper()

    values["otel"] = load_otel(env)
    settings = Settings(**values)
    if settings.database_url:
        try:
            DatabaseUrl.parse(settings.database_url)
        except ValueError as exc:
            raise ConfigError(f"{where('database_url')}: {exc}") from None
    if settings.retention_delete_after < settings.retention_archive_after:
        archive, delete = where("retention_archive_after"), where("retention_delete_after")
        if "retention_delete_after" in raw:
            raise ConfigError(f"{delete}: must not be shorter than {archive}")
        raise ConfigError(f"{archive}: must not be longer than {delete}")
    if settings.kafka_heartbeat_interval >= settings.kafka_session_timeout:
        heartbeat, session = where("kafka_heartbeat_interval"), where("kafka_session_timeout")
        if "kafka_heartbeat_interval" not in raw and "kafka_session_timeout" in raw:
            raise ConfigError(f"{session}: must be above {heartbeat}")
        raise ConfigError(f"{heartbeat}: must be below {session}")
    try:
        keys = settings.all_api_keys()
    except OSError as exc:
        raise ConfigError(f"{where('api_keys_file')}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where('api_keys_file')}: is not UTF-8 text") from None
    except KeyFileError as exc:  # its message names the line, never the key
        raise ConfigError(f"{where('api_keys_file')}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where('api_keys')}: {exc}") from None
    if settings.api_keys_file and len(keys) == len(settings.api_keys):
        # A file of keys was meant to close the API: never open it instead.
        raise ConfigError(f"{where('api_keys_file')}: holds no key")
    if not settings.instance_id:
        instance = f"{socket.gethostname()}-{os.getpid()}"[:64]
        settings = Settings(**{**values, "instance_id": instance})
    return settings


def given_settings(environ: Mapping[str, str], config_file: str | None = None) -> set[str]:
    """The settings the file or the environment set (rather than left at their
    defaults): `triggerd dev` picks other defaults for some of them."""
    return set(_given(environ, config_file))


def _given(env: Mapping[str, str], config_file: str | None) -> dict[str, tuple[str, Any]]:
    """name -> (where it came from, raw value), the environment over the file."""
    raw: dict[str, tuple[str, Any]] = {}
    path = config_file or env.get("TRIGGERD_CONFIG")
    if path:
        source = "--config" if config_file else "TRIGGERD_CONFIG"
        for key, value in _read_toml(path, source).items():
            if key not in _PARSERS:
                raise ConfigError(f"{key}: unknown setting in {path}")
            raw[key] = (key, value)

    for name, value in env.items():
        if not name.startswith(PREFIX) or name in _ENV_NOT_SETTINGS:
            continue
        if name.startswith(_ENV_IGNORED_PREFIXES):
            continue
        key = name[len(PREFIX) :].lower()
        if key not in _PARSERS:
            raise ConfigError(f"{name}: unknown setting")
        raw[key] = (name, value)
    return raw


def _read_toml(path: str, source: str) -> dict[str, Any]:
    """`source` names where the path came from (`--config` or TRIGGERD_CONFIG)."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {path} is not valid TOML: {exc}") from None
    for key, value in data.items():
        if isinstance(value, dict):
            raise ConfigError(f"{key}: the config file takes flat keys, not tables")
    return data
