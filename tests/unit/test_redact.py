"""Redaction of secrets and credential headers (triggerd.domain.redact)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from triggerd.domain.redact import (
    REDACTED,
    is_sensitive_name,
    redact_config,
    redact_url,
    redacted_to_send,
    restore_redacted,
)


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "authorization",
        "Proxy-Authorization",
        "Cookie",
        "Set-Cookie",
        "X-Api-Key",
        "X-API-KEY",
        "apikey",
        "X-Auth-Token",
        "token",
        "X-Client-Secret",
        "Password",
        "X-Db-Passwd",
        "X-Credentials",
        "X-Auth",
        "X-Session",
        "X-Hub-Signature-256",
    ],
)
def test_sensitive_names(name: str) -> None:
    assert is_sensitive_name(name)


@pytest.mark.parametrize(
    "name", ["Content-Type", "Accept", "X-Request-ID", "User-Agent", "X-Trace", ""]
)
def test_ordinary_names(name: str) -> None:
    assert not is_sensitive_name(name)


def test_non_string_name_is_not_sensitive() -> None:
    assert not is_sensitive_name(5)  # type: ignore[arg-type]


def test_redacts_secrets_and_credential_headers() -> None:
    config: dict[str, Any] = {
        "endpoint": "https://example.com/hook",
        "secret": "s3cr3t",
        "signing_secret": "whsec_abc",
        "headers": {
            "Authorization": "Bearer abc",
            "X-Api-Key": "k",
            "Cookie": "session=1",
            "Content-Type": "application/json",
            "X-Trace": "on",
        },
        "payload": {"token": "stays", "nested": [1, {"a": 2}]},
    }
    out = redact_config(config)
    assert out["secret"] == REDACTED
    assert out["signing_secret"] == REDACTED
    assert out["headers"] == {
        "Authorization": REDACTED,
        "X-Api-Key": REDACTED,
        "Cookie": REDACTED,
        "Content-Type": "application/json",
        "X-Trace": "on",
    }
    assert out["endpoint"] == config["endpoint"]
    assert out["payload"] == {"token": "stays", "nested": [1, {"a": 2}]}  # user data


def test_input_is_not_modified_and_result_is_a_deep_copy() -> None:
    config: dict[str, Any] = {
        "secret": "s",
        "headers": {"Authorization": "Bearer abc"},
        "payload": {"list": [1, 2]},
    }
    before = copy.deepcopy(config)
    out = redact_config(config)
    assert config == before
    out["payload"]["list"].append(3)
    out["headers"]["X"] = "y"
    assert config == before


def test_absent_and_null_secrets_are_left_alone() -> None:
    assert redact_config({}) == {}
    assert redact_config({"secret": None}) == {"secret": None}
    assert "signing_secret" not in redact_config({"secret": "x"})


def test_malformed_headers_are_copied_as_they_are() -> None:
    assert redact_config({"headers": ["Authorization"]}) == {"headers": ["Authorization"]}


def test_restore_redacted_puts_stored_values_back() -> None:
    stored = {"secret": "s", "signing_secret": "w",
              "headers": {"Authorization": "Bearer real", "X-Api-Key": "k"}}
    sent = {"secret": REDACTED, "signing_secret": "new",
            "headers": {"authorization": REDACTED, "X-Api-Key": "k2", "X-New": REDACTED}}
    out = restore_redacted(sent, stored)
    assert out == {"secret": "s", "signing_secret": "new",
                   "headers": {"authorization": "Bearer real", "X-Api-Key": "k2",
                               "X-New": REDACTED}}
    assert sent["secret"] == REDACTED  # input untouched


def test_restore_redacted_without_stored_values() -> None:
    assert restore_redacted({"secret": REDACTED}, {}) == {"secret": REDACTED}
    assert restore_redacted({"headers": 5}, {"headers": {"a": "b"}}) == {"headers": 5}


@pytest.mark.parametrize("config", [
    {},
    {"secret": None, "signing_secret": "s", "endpoint": "https://x.example/h"},
    {"secret": "s", "headers": {"Authorization": "Bearer abc", "X-Trace": "on"},
     "payload": {"token": "stays", "nested": [1, {"a": 2}]}},
    {"headers": ["Authorization"]},
])  # fmt: skip
def test_redacted_to_send_redacts_as_redact_config_and_leaves_the_input(
    config: dict[str, Any],
) -> None:
    before = copy.deepcopy(config)
    out = redacted_to_send(config)
    assert out == redact_config(config)
    assert orjson.dumps(out) == orjson.dumps(redact_config(config))  # same order too
    assert config == before


@pytest.mark.parametrize(("url", "shown"), [
    ("https://u:pw@h.example/x?q=1#f", "https://u:***@h.example/x?q=1#f"),
    ("https://u:p%40w:x@h.example:8443/", "https://u:***@h.example:8443/"),
    ("https://u@h.example/", "https://u@h.example/"),  # no password
    ("https://u:@h.example/", "https://u:@h.example/"),  # an empty one
    ("https://h.example/a@b", "https://h.example/a@b"),  # an @ in the path
    ("http://[::1/x@y", "http://[::1/x@y"),  # not a URL: left as it is
])  # fmt: skip
def test_redact_url_hides_the_password_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_config({"endpoint": url})["endpoint"] == shown
    assert redacted_to_send({"endpoint": url})["endpoint"] == shown


@pytest.mark.parametrize(("sent", "kept"), [
    ("https://u:***@h.example/x", "https://u:pw@h.example/x"),
    ("https://u:***@h.example/y?z=1", "https://u:pw@h.example/y?z=1"),  # path changed
    ("https://u:***@other.example/x", "https://u:***@other.example/x"),  # another host
    ("https://v:***@h.example/x", "https://v:***@h.example/x"),  # another user
    ("https://u:new@h.example/x", "https://u:new@h.example/x"),  # a new password
])  # fmt: skip
def test_the_endpoint_placeholder_keeps_the_password_for_the_same_user_and_host(
    sent: str, kept: str
) -> None:
    stored = {"endpoint": "https://u:pw@h.example/x"}
    assert restore_redacted({"endpoint": sent}, stored)["endpoint"] == kept
    assert restore_redacted({"endpoint": sent}, {})["endpoint"] == sent
