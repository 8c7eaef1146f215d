"""The `changes` of an audit entry: each changed top-level field and config key as
[old, new], secrets and credential headers masked as the API masks them."""

from __future__ import annotations

from typing import Any

from triggerd.domain.audit import changes

SECRET, OTHER = "s3cr3t-one", "s3cr3t-two"


def trigger(**fields: Any) -> dict[str, Any]:
    config = {"endpoint": "https://a.example/hook", "secret": SECRET, "timeout_seconds": 10,
              "headers": {"Authorization": "Bearer t1", "X-Team": "a"}, "retry": {"max": 5}}
    base = {"name": "orders", "type": "webhook", "status": "active", "config": config}
    return {**base, **fields}


def test_only_what_changed_is_listed() -> None:
    old = trigger()
    new = trigger(name="orders-v2", config={**old["config"], "timeout_seconds": 3,
                                            "retry": {"max": 2}})  # fmt: skip
    assert changes(old, new) == {"name": ["orders", "orders-v2"],
                                 "config.timeout_seconds": [10, 3],
                                 "config.retry": [{"max": 5}, {"max": 2}]}  # fmt: skip
    assert changes(old, trigger()) == {}


def test_secrets_are_masked_but_their_change_is_seen() -> None:
    old = trigger()
    new = trigger(config={**old["config"], "secret": OTHER,
                          "headers": {"Authorization": "Bearer t2", "X-Team": "a"}})  # fmt: skip
    diff = changes(old, new)
    assert diff == {"config.secret": ["***", "***"],
                    "config.headers": [{"Authorization": "***", "X-Team": "a"},
                                       {"Authorization": "***", "X-Team": "a"}]}  # fmt: skip
    assert SECRET not in repr(diff) and OTHER not in repr(diff) and "t2" not in repr(diff)


def test_keys_added_or_removed_and_null_as_absent() -> None:
    old = trigger()
    config = {key: value for key, value in old["config"].items() if key != "secret"}
    new = trigger(config={**config, "signing_secret": OTHER, "payload": None})
    assert changes(old, new) == {"config.secret": ["***", None],
                                 "config.signing_secret": [None, "***"]}  # fmt: skip


def test_creation_and_deletion_list_every_field() -> None:
    created = changes(None, trigger())
    assert created["name"] == [None, "orders"] and created["type"] == [None, "webhook"]
    assert created["config.secret"] == [None, "***"]
    assert list(created)[:3] == ["name", "type", "status"]  # the API's field order
    deleted = changes(trigger(), None)
    assert deleted["config.endpoint"] == ["https://a.example/hook", None]
    assert deleted["config.headers"] == [{"Authorization": "***", "X-Team": "a"}, None]
    assert SECRET not in repr(created) + repr(deleted)


def test_new_top_level_fields_are_compared_whole() -> None:
    assert changes(trigger(labels={"team": "a"}), trigger(labels={"team": "b"})) == {
        "labels": [{"team": "a"}, {"team": "b"}]}
