"""Trace export settings come from OpenTelemetry's standard variables."""

from __future__ import annotations

import pytest

from triggerd.config import OtelSettings, load_otel, load_settings
from triggerd.domain.errors import ConfigError


def test_unset_or_none_exports_nothing() -> None:
    assert load_otel({}) == OtelSettings()
    assert not load_otel({}).enabled
    assert not load_otel({"OTEL_TRACES_EXPORTER": "none"}).enabled
    assert not load_otel({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}).enabled
    # Endpoint and service name alone do not turn export on.
    assert not load_otel({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}).enabled


def test_otlp_with_a_base_endpoint_gets_the_traces_path() -> None:
    otel = load_otel({"OTEL_TRACES_EXPORTER": "otlp",
                      "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
                      "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                      "OTEL_SERVICE_NAME": "triggerd-eu"})  # fmt: skip
    assert otel == OtelSettings("otlp", "http://collector:4318/v1/traces", "triggerd-eu")


def test_the_traces_endpoint_is_taken_whole_and_wins() -> None:
    otel = load_otel({
        "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://tempo.local/otlp/v1",
    })  # fmt: skip
    assert otel.endpoint == "https://tempo.local/otlp/v1"
    assert otel.service_name == "triggerd"
    assert load_otel({"OTEL_TRACES_EXPORTER": "otlp"}).endpoint == "http://localhost:4318/v1/traces"


@pytest.mark.parametrize(("env", "named"), [
    ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
     "OTEL_EXPORTER_OTLP_ENDPOINT"),
])  # fmt: skip
def test_what_we_cannot_do_is_a_one_line_error_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_otel(env)
    assert str(caught.value).startswith(f"{named}: ")
    assert "\n" not in str(caught.value)


def test_settings_carry_them() -> None:
    settings = load_settings({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "x"})
    assert settings.otel.enabled and settings.otel.service_name == "x"
    assert not load_settings({}).otel.enabled
