"""Trigger labels: what a create or update accepts, and the list filter's parameter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from multidict import MultiDict

from triggerd.domain.contract import TriggerListQuery, validate_create, validate_update
from triggerd.domain.errors import ValidationError

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def hook(**extra: Any) -> dict[str, Any]:
    return {"name": "t", "type": "webhook", **extra}


def test_labels_are_kept_and_default_to_none() -> None:
    labels = {"team": "payments", "env": "", "k8s.io/app-name_1": "x" * 255, "9": "é"}
    assert validate_create(hook(labels=labels), now=NOW).labels == labels
    assert validate_create(hook(), now=NOW).labels == {}
    assert validate_create(hook(labels=None), now=NOW).labels == {}
    assert validate_create(hook(labels={f"k{i}": "v" for i in range(20)}), now=NOW).labels


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ([], "labels"),
        ("team=payments", "labels"),
        ({f"k{i}": "v" for i in range(21)}, "labels"),
        ({"": "x"}, "labels."),
        ({"Team": "x"}, "labels.Team"),
        ({"-team": "x"}, "labels.-team"),
        ({".team": "x"}, "labels..team"),
        ({"team space": "x"}, "labels.team space"),
        ({"a" * 64: "x"}, "labels." + "a" * 64),
        ({"team": 1}, "labels.team"),
        ({"team": None}, "labels.team"),
        ({"team": ["x"]}, "labels.team"),
        ({"team": "x" * 256}, "labels.team"),
    ],
)
def test_bad_labels_name_the_label(labels: Any, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_create(hook(labels=labels), now=NOW)
    assert caught.value.field == field


def test_an_update_replaces_the_whole_set_or_keeps_it() -> None:
    current = validate_create(hook(labels={"team": "a", "env": "prod"}), now=NOW)
    assert validate_update({"labels": {"team": "b"}}, current, now=NOW).labels == {"team": "b"}
    assert validate_update({"labels": {}}, current, now=NOW).labels == {}
    assert validate_update({"labels": None}, current, now=NOW).labels == current.labels
    assert validate_update({"name": "x"}, current, now=NOW).labels == current.labels
    with pytest.raises(ValidationError) as caught:
        validate_update({"labels": {"Bad": "x"}}, current, now=NOW)
    assert caught.value.field == "labels.Bad"


def test_the_label_filter() -> None:
    query = TriggerListQuery.parse({"label": ["team:payments", "env:", "a:b:c"]})
    assert query.label == [("team", "payments"), ("env", None), ("a", "b:c")]
    assert TriggerListQuery.parse({}).label is None
    assert TriggerListQuery.parse({"label": [""]}).label is None


@pytest.mark.parametrize("selector", ["team", ":payments", "Team:x", "-a:x", "a" * 64 + ":x",
                                      "team:" + "x" * 256])
def test_a_bad_label_filter_names_label(selector: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TriggerListQuery.parse({"label": ["ok:1", selector]})
    assert caught.value.field == "label"


def test_more_label_filters_than_a_trigger_can_carry_is_a_400_naming_label() -> None:
    assert len(TriggerListQuery.parse(MultiDict(
        [("label", f"k{i}:v") for i in range(20)])).label or ()) == 20
    with pytest.raises(ValidationError) as caught:
        TriggerListQuery.parse(MultiDict([("label", f"k{i}:v") for i in range(21)]))
    assert caught.value.field == "label"
    assert "at most 20" in caught.value.message
