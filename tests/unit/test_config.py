"""Settings: env over TOML, durations parsed once, one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from triggerd.config import ALL_ROLES, DatabaseUrl, load_settings
from triggerd.domain.errors import ConfigError
from triggerd.domain.timeutil import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("42", 42),
     (7, 7.0), ("1.5s", 1.5)],
)  # fmt: skip
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10 minutes", "-5s", "5w", "1h30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_defaults_match_the_spec() -> None:
    s = load_settings({})
    assert s.kafka_bootstrap == "localhost:9092"
    assert s.kafka_topic == "trigger-events"
    assert (s.http_host, s.http_port) == ("0.0.0.0", 8080)
    assert s.roles == ALL_ROLES
    assert s.public_url == "http://localhost:8080"
    assert s.retention_archive_after == 7200
    assert s.retention_delete_after == 48 * 3600
    assert s.retention_interval == 60
    assert (s.log_level, s.log_format) == ("info", "json")
    assert s.kafka_idempotent is False
    assert s.max_body == 1024 * 1024
    assert s.redeliver_after == 120


def test_redeliver_after_from_the_file_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text('redeliver_after = "5m"\n')
    assert load_settings({}, config_file=str(config)).redeliver_after == 300
    assert load_settings({"TRIGGERD_REDELIVER_AFTER": "90s"},
                         config_file=str(config)).redeliver_after == 90  # fmt: skip
    config.write_text('redeliver_after = "0s"\n')
    with pytest.raises(ConfigError, match=r"^redeliver_after: must be at least 0.5s"):
        load_settings({}, config_file=str(config))


@pytest.mark.parametrize(("name", "value", "message"), [
    ("TRIGGERD_INSTANCE_ID", "a" * 65, "must be at most 64 characters"),
    ("TRIGGERD_KAFKA_SESSION_TIMEOUT", "30d", "must be at most 86400s"),
    ("TRIGGERD_KAFKA_FETCH_WAIT", "25d", "must be at most 86400s"),
    ("TRIGGERD_KAFKA_LINGER", "2d", "must be at most 86400s"),
])  # fmt: skip
def test_values_the_database_or_the_kafka_client_cannot_take_fail_at_start(
    name: str, value: str, message: str
) -> None:
    """Each would pass start-up and then break its role (a claim too long for its column,
    a timing beyond the Kafka client's 32-bit milliseconds)."""
    environ = {"TRIGGERD_DATABASE_URL": "mysql://u@h/db", name: value}
    with pytest.raises(ConfigError, match=f"^{name}: {message}"):
        load_settings(environ)
    assert load_settings({**environ, name: value[:64] if "ID" in name else "1d"})


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text('http_port = 9000\nretention_archive_after = "15m"\nroles = "api"\n')
    s = load_settings({"TRIGGERD_HTTP_PORT": "9100"}, config_file=str(config))
    assert s.http_port == 9100
    assert s.retention_archive_after == 900
    assert s.roles == ("api",)


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text('kafka_topic = "jobs"\n')
    assert load_settings({"TRIGGERD_CONFIG": str(config)}).kafka_topic == "jobs"


def test_roles_are_canonical_and_checked() -> None:
    assert load_settings({"TRIGGERD_ROLES": "worker, api,worker"}).roles == ("api", "worker")
    with pytest.raises(ConfigError, match="TRIGGERD_ROLES"):
        load_settings({"TRIGGERD_ROLES": ""})


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"TRIGGERD_HTTP_PORT": "70000"}, "TRIGGERD_HTTP_PORT"),
        ({"TRIGGERD_LOG_FORMAT": "xml"}, "TRIGGERD_LOG_FORMAT"),
        ({"TRIGGERD_KAFKA_BOOTSTRAP": "nohostport"}, "TRIGGERD_KAFKA_BOOTSTRAP"),
        ({"TRIGGERD_PUBLIC_URL": "ftp://x"}, "TRIGGERD_PUBLIC_URL"),
        ({"TRIGGERD_KAFKA_IDEMPOTENT": "maybe"}, "TRIGGERD_KAFKA_IDEMPOTENT"),
        ({"TRIGGERD_UNKNOWN": "1"}, "TRIGGERD_UNKNOWN"),
        ({"TRIGGERD_DATABASE_URL": "mysql://host-only"}, "TRIGGERD_DATABASE_URL"),
        ({"TRIGGERD_RETENTION_DELETE_AFTER": "1h"}, "TRIGGERD_RETENTION_DELETE_AFTER"),
        ({"TRIGGERD_API_KEYS_FILE": "/nonexistent/keys"}, "TRIGGERD_API_KEYS_FILE"),
        ({"TRIGGERD_DELIVERY_ALLOW_NETWORKS": "10.0.0.0/8,intranet"},
         "TRIGGERD_DELIVERY_ALLOW_NETWORKS"),
        ({"TRIGGERD_CIRCUIT_FAILURE_THRESHOLD": "0"}, "TRIGGERD_CIRCUIT_FAILURE_THRESHOLD"),
        ({"TRIGGERD_CIRCUIT_COOLDOWN": "soon"}, "TRIGGERD_CIRCUIT_COOLDOWN"),
        ({"TRIGGERD_ENDPOINT_DISABLE_AFTER": "-1"}, "TRIGGERD_ENDPOINT_DISABLE_AFTER"),
        ({"TRIGGERD_REDELIVER_AFTER": "soon"}, "TRIGGERD_REDELIVER_AFTER"),
        ({"TRIGGERD_REDELIVER_AFTER": "100ms"}, "TRIGGERD_REDELIVER_AFTER"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert message.startswith(key)
    assert "\n" not in message


def test_delivery_allow_networks_from_env_and_file(tmp_path: Path) -> None:
    assert load_settings({}).delivery_allow_networks == ()
    env = load_settings({"TRIGGERD_DELIVERY_ALLOW_NETWORKS": "127.0.0.0/8, ::1"})
    assert [str(n) for n in env.delivery_allow_networks] == ["127.0.0.0/8", "::1/128"]
    config = tmp_path / "t.toml"
    config.write_text('delivery_allow_networks = ["10.0.0.0/8"]\n')
    from_file = load_settings({}, config_file=str(config))
    assert [str(n) for n in from_file.delivery_allow_networks] == ["10.0.0.0/8"]


def test_unknown_and_nested_file_keys(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text("bogus = 1\n")
    with pytest.raises(ConfigError, match=r"^bogus"):
        load_settings({}, config_file=str(config))
    config.write_text("[server]\nport = 1\n")
    with pytest.raises(ConfigError, match=r"^server"):
        load_settings({}, config_file=str(config))


def test_database_url_parsing() -> None:
    url = DatabaseUrl.parse("mysql://app:p%40ss@db.local:3307/triggerd")
    assert (url.user, url.password, url.host, url.port, url.database) == (
        "app", "p@ss", "db.local", 3307, "triggerd"
    )
    assert "p@ss" not in url.redacted()
    assert DatabaseUrl.parse("mysql://root@127.0.0.1/x").port == 3306


def test_api_keys_from_env_and_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# comment\nkey-b\n\nkey-c  # trailing\n")
    s = load_settings({"TRIGGERD_API_KEYS": "key-a, ", "TRIGGERD_API_KEYS_FILE": str(keys)})
    assert [(k.name, k.scope, k.secret) for k in s.all_api_keys()] == [
        ("env-key-1", "write", "key-a"), ("key-2", "write", "key-b"), ("key-4", "write", "key-c")
    ]


def test_scoped_keys_from_the_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("dashboard read k-dash-0001\nci  write\tk-ci-0002 # deploys\n")
    s = load_settings({"TRIGGERD_API_KEYS_FILE": str(keys)})
    assert [(k.name, k.scope) for k in s.all_api_keys()] == [("dashboard", "read"),
                                                             ("ci", "write")]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "line"),
    [("ok-key\n\nname admin SeCrEt-9\n", 3), ("# c\nname SeCrEt-9\n", 2),
     ("a read SeCrEt-9 extra\n", 1), ("-bad read SeCrEt-9\n", 1),
     ("system write SeCrEt-9\n", 1), ("SeCrEt-9\nx read SeCrEt-9\n", 2)],
)  # fmt: skip
def test_a_bad_keys_file_line_fails_naming_the_line_not_the_key(
    tmp_path: Path, text: str, line: int
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings({"TRIGGERD_API_KEYS_FILE": str(keys)})
    message = str(caught.value)
    assert message.startswith(f"TRIGGERD_API_KEYS_FILE: line {line}: "), message
    assert "SeCrEt" not in message and "\n" not in message


def test_a_file_key_repeating_an_env_key_fails(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("ops read SeCrEt-9\n")
    with pytest.raises(ConfigError, match=r"^TRIGGERD_API_KEYS_FILE: line 1: the same key as "
                                          r"env-key-2$"):  # fmt: skip
        load_settings({"TRIGGERD_API_KEYS": "other, SeCrEt-9", "TRIGGERD_API_KEYS_FILE": str(keys)})
    with pytest.raises(ConfigError, match=r"^TRIGGERD_API_KEYS: keys 1 and 2 are the same key$"):
        load_settings({"TRIGGERD_API_KEYS": "SeCrEt-9,SeCrEt-9"})


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_api_keys_leave_the_api_open(value: str) -> None:
    assert load_settings({"TRIGGERD_API_KEYS": value}).all_api_keys() == ()


def test_a_key_list_without_keys_fails_instead_of_opening_the_api(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^TRIGGERD_API_KEYS: lists no key"):
        load_settings({"TRIGGERD_API_KEYS": " , "})
    empty = tmp_path / "keys"
    empty.write_text("# every key commented out\n\n")
    with pytest.raises(ConfigError, match=r"^TRIGGERD_API_KEYS_FILE: holds no key"):
        load_settings({"TRIGGERD_API_KEYS_FILE": str(empty)})


def test_test_variables_are_not_settings() -> None:
    load_settings({"TRIGGERD_TEST_DATABASE_URL": "x", "TRIGGERD_SQL_DIR": "/tmp"})


def test_event_loop_setting() -> None:
    import asyncio

    import uvloop

    from triggerd.eventloop import loop_factory, run

    assert load_settings({}).event_loop == "uvloop"
    assert load_settings({"TRIGGERD_EVENT_LOOP": "AsyncIO"}).event_loop == "asyncio"
    with pytest.raises(ConfigError, match="TRIGGERD_EVENT_LOOP"):
        load_settings({"TRIGGERD_EVENT_LOOP": "trio"})
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None

    async def loop_type() -> type:
        return type(asyncio.get_running_loop())

    assert run(loop_type(), "uvloop") is uvloop.Loop
    assert not issubclass(run(loop_type(), "asyncio"), uvloop.Loop)


@pytest.mark.parametrize("value", ["8080.5", "true", '"80.5"', "inf", "nan"])
def test_file_integers_are_not_truncated(tmp_path: Path, value: str) -> None:
    config = tmp_path / "t.toml"
    config.write_text(f"http_port = {value}\n")
    with pytest.raises(ConfigError, match=r"^http_port: ") as info:
        load_settings({}, config_file=str(config))
    assert "\n" not in str(info.value)


def test_whole_float_in_the_file_is_the_integer(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text("http_port = 8081.0\n")
    assert load_settings({}, config_file=str(config)).http_port == 8081


def test_cross_field_errors_name_where_the_value_came_from(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text('retention_archive_after = "2h"\nretention_delete_after = "1h"\n')
    with pytest.raises(ConfigError, match=r"^retention_delete_after: .*retention_archive_after"):
        load_settings({}, config_file=str(config))
    # Only the archive age set, above the default delete age: that is the key to fix.
    with pytest.raises(ConfigError, match=r"^TRIGGERD_RETENTION_ARCHIVE_AFTER: "):
        load_settings({"TRIGGERD_RETENTION_ARCHIVE_AFTER": "72h"})
    config.write_text('kafka_heartbeat_interval = "20s"\n')
    with pytest.raises(ConfigError, match=r"^kafka_heartbeat_interval: "):
        load_settings({}, config_file=str(config))
    with pytest.raises(ConfigError, match=r"^TRIGGERD_KAFKA_SESSION_TIMEOUT: "):
        load_settings({"TRIGGERD_KAFKA_SESSION_TIMEOUT": "2s"})


def test_config_file_errors_name_the_flag_or_the_variable(tmp_path: Path) -> None:
    missing = str(tmp_path / "nonexistent.toml")
    with pytest.raises(ConfigError, match=r"^--config: cannot read "):
        load_settings({}, config_file=missing)
    with pytest.raises(ConfigError, match=r"^TRIGGERD_CONFIG: cannot read "):
        load_settings({"TRIGGERD_CONFIG": missing})
    bad = tmp_path / "bad.toml"
    bad.write_text("http_port = \n")
    with pytest.raises(ConfigError, match=r"^--config: .* is not valid TOML"):
        load_settings({}, config_file=str(bad))
