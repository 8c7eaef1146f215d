"""JSON Schema compilation and payload violations (triggerd.domain.payloads)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from triggerd.domain import payloads
from triggerd.domain.errors import ValidationError
from triggerd.domain.payloads import compile_schema, violations

D07 = "http://json-schema.org/draft-07/schema#"
D2020 = "https://json-schema.org/draft/2020-12/schema"


def check(schema: Any, payload: Any) -> list[dict[str, str]]:
    return violations(compile_schema(schema), payload)


def paths(schema: Any, payload: Any) -> list[str]:
    return [item["path"] for item in check(schema, payload)]


def compile_error(schema: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        compile_schema(schema)
    assert caught.value.field == "config.schema"
    return caught.value


# --- compile errors ----------------------------------------------------------------------


@pytest.mark.parametrize("schema", [None, [], [{"type": "object"}], "object", 5, 1.5])
def test_schema_must_be_object_or_bool(schema: Any) -> None:
    compile_error(schema)


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"type": "strnig"}, "/type"),
        ({"type": 5}, "/type"),
        ({"type": ["string", "string"]}, "/type"),
        ({"properties": []}, "/properties"),
        ({"properties": {"a": {"type": "intger"}}}, "/properties/a/type"),
        ({"pattern": "("}, "/pattern"),
        ({"patternProperties": {"(": {}}}, "/patternProperties"),
        ({"multipleOf": 0}, "/multipleOf"),
        ({"maxLength": -1}, "/maxLength"),
        ({"minimum": "1"}, "/minimum"),
        ({"required": "a"}, "/required"),
        ({"required": ["a", "a"]}, "/required"),
        ({"enum": 5}, "/enum"),
        ({"allOf": []}, "/allOf"),
        ({"items": [{"type": 3}]}, "/items"),
        ({"$schema": 7}, "/$schema"),
        ({"$schema": "http://example.com/my-meta"}, "/$schema"),
        ({"$defs": {"x": {"type": "nope"}}}, "/$defs/x/type"),
    ],
)
def test_bad_schemas_are_rejected_with_a_pointer(schema: dict[str, Any], where: str) -> None:
    err = compile_error(schema)
    assert err.details["schema_path"] == where


def test_unresolvable_ref_is_rejected() -> None:
    err = compile_error({"properties": {"a": {"$ref": "#/definitions/missing"}}})
    assert "compile" in err.message


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "http://127.0.0.1:9/schema.json"},
        {"$ref": "file:///etc/passwd"},
        {"$id": "http://127.0.0.1:9/root.json", "properties": {"a": {"$ref": "other.json"}}},
        {"$ref": "other.json"},
    ],
)
def test_remote_refs_are_refused_without_fetching(schema: dict[str, Any]) -> None:
    err = compile_error(schema)
    assert "remote $ref" in err.message


@pytest.mark.parametrize(
    "keyword",
    ["unevaluatedProperties", "unevaluatedItems", "minContains", "maxContains",
     "$dynamicRef", "$recursiveRef"],
)
def test_unsupported_keywords_are_refused(keyword: str) -> None:
    err = compile_error({"$schema": D2020, "properties": {"a": {keyword: False}}})
    assert err.details["schema_path"] == f"/properties/a/{keyword}"
    compile_error({keyword: False})  # also without $schema


def test_items_array_is_an_error_under_2020_12() -> None:
    err = compile_error({"$schema": D2020, "items": [{"type": "integer"}]})
    assert err.details["schema_path"] == "/items"


def test_items_array_is_a_tuple_in_2019_09_and_without_schema_uri() -> None:
    d2019 = "https://json-schema.org/draft/2019-09/schema"
    for schema in ({"$schema": d2019, "items": [{"type": "integer"}]},
                   {"items": [{"type": "integer"}]}):
        assert paths(schema, ["x", "y"]) == ["/0"]


def test_too_deep_schema_is_rejected() -> None:
    schema: dict[str, Any] = {}
    node = schema
    for _ in range(payloads.MAX_DEPTH + 5):
        node["not"] = {}
        node = node["not"]
    compile_error(schema)


def test_compile_does_not_mutate_the_schema() -> None:
    schema = {
        "$schema": D2020,
        "prefixItems": [{"$ref": "#/$defs/n"}],
        "items": False,
        "dependentRequired": {"a": ["b"]},
        "$defs": {"n": {"$anchor": "num", "type": "integer", "default": 1}},
    }
    before = copy.deepcopy(schema)
    compile_schema(schema)
    assert schema == before


def test_validators_are_independent() -> None:
    ints = compile_schema({"type": "integer"})
    strings = compile_schema({"type": "string"})
    assert violations(ints, 1) == [] and violations(strings, "a") == []
    assert violations(ints, "a") and violations(strings, 1)


# --- violations --------------------------------------------------------------------------


def test_valid_payload_has_no_violations() -> None:
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    assert check(schema, {"a": 1}) == []


def test_root_violation_has_empty_pointer() -> None:
    found = check({"type": "object"}, [1])
    assert found == [{"path": "", "message": "must be object"}]


def test_nested_violation_pointer() -> None:
    schema = {"properties": {"a": {"properties": {"b": {"items": {"type": "integer"}}}}}}
    assert paths(schema, {"a": {"b": [1, "x"]}}) == ["/a/b/1"]


def test_pointer_escapes_tilde_and_slash() -> None:
    schema = {"properties": {"a/b~c": {"type": "integer"}}}
    assert paths(schema, {"a/b~c": "x"}) == ["/a~1b~0c"]


def test_pointer_for_keys_with_dots_and_brackets() -> None:
    schema = {
        "properties": {
            "a.b": {"type": "integer"},
            "a": {"properties": {"b": {"type": "string"}}},
            "c[0]": {"type": "integer"},
        }
    }
    found = set(paths(schema, {"a.b": "x", "a": {"b": 1}, "c[0]": "y"}))
    assert "/a.b" in found and "/c[0]" in found
    assert paths(schema, {"a.b": 1, "a": {"b": 2}}) == ["/a/b"]


def test_empty_key_pointer() -> None:
    assert paths({"properties": {"": {"type": "integer"}}}, {"": "x"}) == ["/"]


def test_required_and_additional_properties_point_at_the_object() -> None:
    schema = {"properties": {"o": {"required": ["z"], "properties": {"z": {}},
                                   "additionalProperties": False}}}
    found = check(schema, {"o": {}})
    assert found[0]["path"] == "/o" and "z" in found[0]["message"]
    assert paths(schema, {"o": {"z": 1, "q": 2}}) == ["/o"]


def test_messages_do_not_repeat_the_internal_name() -> None:
    (item,) = check({"properties": {"a": {"maximum": 3}}}, {"a": 9})
    assert not item["message"].startswith("data")
    assert "3" in item["message"]


def test_collects_several_violations_when_supported() -> None:
    schema = {"properties": {"a": {"type": "integer"}, "b": {"type": "string"}}}
    found = paths(schema, {"a": "x", "b": 1})
    if payloads._COLLECT_ALL:
        assert sorted(found) == ["/a", "/b"]
    else:  # older fastjsonschema stops at the first error
        assert len(found) == 1


def test_violations_are_capped() -> None:
    found = check({"items": {"type": "integer"}}, ["x"] * 500)
    assert 1 <= len(found) <= payloads.MAX_VIOLATIONS


def test_defaults_are_not_injected_into_the_payload() -> None:
    payload: dict[str, Any] = {}
    assert check({"properties": {"a": {"default": 1}}}, payload) == []
    assert payload == {}


def test_very_deep_payload_gives_a_violation_not_a_crash() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    found = check({"items": {"$ref": "#"}, "type": "array"}, deep)
    assert isinstance(found, list)


def test_boolean_schemas() -> None:
    assert check(True, {"anything": [1]}) == []
    assert check(False, 1) == [{"path": "", "message": "must not be there"}]


# --- drafts ------------------------------------------------------------------------------


def test_draft07_keywords() -> None:
    schema = {
        "$schema": D07,
        "definitions": {"pos": {"type": "integer", "minimum": 1}},
        "properties": {
            "n": {"$ref": "#/definitions/pos"},
            "kind": {"enum": ["a", "b"]},
            "tags": {"items": [{"type": "string"}], "additionalItems": False},
        },
        "dependencies": {"x": ["y"]},
        "if": {"properties": {"kind": {"const": "a"}}},
        "then": {"required": ["n"]},
    }
    assert check(schema, {"kind": "a", "n": 2, "tags": ["t"]}) == []
    assert paths(schema, {"n": 0}) == ["/n"]
    assert paths(schema, {"kind": "c"}) == ["/kind"]
    assert paths(schema, {"kind": "b", "tags": ["t", "u"]}) == ["/tags"]
    assert paths(schema, {"kind": "b", "x": 1}) == [""]
    assert paths(schema, {"kind": "a"}) == [""]


def test_draft07_ref_siblings_are_ignored() -> None:
    schema = {"$schema": D07, "definitions": {"i": {"type": "integer"}},
              "properties": {"n": {"$ref": "#/definitions/i", "maximum": 5}}}
    assert check(schema, {"n": 9}) == []


def test_draft04_is_passed_through() -> None:
    schema = {"$schema": "http://json-schema.org/draft-04/schema#",
              "minimum": 3, "exclusiveMinimum": True}
    assert paths(schema, 3) == [""]


def test_2020_12_defs_and_ref_siblings() -> None:
    schema = {
        "$schema": D2020,
        "$defs": {"pos": {"type": "integer", "minimum": 1}},
        "properties": {"n": {"$ref": "#/$defs/pos", "maximum": 5}},
    }
    assert check(schema, {"n": 3}) == []
    assert paths(schema, {"n": 0}) == ["/n"]
    assert paths(schema, {"n": 9}) == ["/n"]  # the sibling applies in 2020-12


def test_2020_12_prefix_items() -> None:
    schema = {"$schema": D2020, "type": "array",
              "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False}
    assert check(schema, [1, "a"]) == []
    assert paths(schema, [1, 2]) == ["/1"]
    assert paths(schema, [1, "a", None]) == [""]


def test_2020_12_items_schema_without_prefix() -> None:
    schema = {"$schema": D2020, "items": {"type": "integer"}}
    assert paths(schema, [1, "x"]) == ["/1"]


def test_2020_12_dependent_required_and_schemas() -> None:
    schema = {
        "$schema": D2020,
        "dependentRequired": {"card": ["billing"]},
        "dependentSchemas": {"card": {"properties": {"cvc": {"type": "string"}}}},
    }
    assert check(schema, {"card": 1, "billing": 2, "cvc": "123"}) == []
    assert paths(schema, {"card": 1, "cvc": "123"}) == [""]
    assert paths(schema, {"card": 1, "billing": 2, "cvc": 123}) == ["/cvc"]


def test_2020_12_anchor() -> None:
    schema = {"$schema": D2020, "properties": {"x": {"$ref": "#num"}},
              "$defs": {"n": {"$anchor": "num", "type": "integer"}}}
    assert paths(schema, {"x": "s"}) == ["/x"]
    assert check(schema, {"x": 1}) == []


def test_2020_12_common_keywords() -> None:
    schema = {
        "$schema": D2020,
        "type": "object",
        "required": ["email", "qty"],
        "properties": {
            "email": {"type": "string", "format": "email"},
            "qty": {"type": "integer", "exclusiveMinimum": 0},
            "id": {"type": "string", "format": "uuid"},
            "tags": {"type": "array", "contains": {"const": "x"}, "uniqueItems": True},
        },
        "additionalProperties": False,
        "propertyNames": {"maxLength": 8},
    }
    good = {"email": "a@b.io", "qty": 1, "id": "123e4567-e89b-12d3-a456-426614174000",
            "tags": ["x"]}
    assert check(schema, good) == []
    assert paths(schema, {**good, "email": "nope"}) == ["/email"]
    assert paths(schema, {**good, "qty": 0}) == ["/qty"]
    assert paths(schema, {**good, "id": "not-a-uuid"}) == ["/id"]
    assert paths(schema, {**good, "tags": ["y"]}) == ["/tags"]
    assert paths(schema, {**good, "extra": 1}) == [""]


def test_no_schema_uri_translates_2020_only_keywords() -> None:
    schema = {"prefixItems": [{"type": "integer"}], "items": False}
    assert paths(schema, ["a"]) == ["/0"]
    assert paths(schema, [1, 2]) == [""]


def test_ref_into_renamed_location_fails_at_compile() -> None:
    compile_error({"$schema": D2020, "prefixItems": [{"type": "integer"}],
                   "properties": {"a": {"$ref": "#/prefixItems/0"}}})


ENDLESS = {
    "itself": {"$ref": "#/definitions/a", "definitions": {"a": {"$ref": "#/definitions/a"}}},
    "two steps": {"$ref": "#/definitions/a", "definitions": {
        "a": {"$ref": "#/definitions/b"}, "b": {"allOf": [{"$ref": "#/definitions/a"}]}}},
    "the root": {"anyOf": [{"$ref": "#"}]},
    "behind properties": {"properties": {"x": {"$ref": "#/definitions/a"}},
                          "definitions": {"a": {"not": {"$ref": "#/definitions/a"}}}},
    "2020-12": {"$schema": "https://json-schema.org/draft/2020-12/schema",
                "$defs": {"a": {"$ref": "#/$defs/a", "type": "object"}}, "$ref": "#/$defs/a"},
}  # fmt: skip


@pytest.mark.parametrize("name", list(ENDLESS))
def test_a_ref_loop_that_reads_none_of_the_payload_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="refers to itself without end"):
        compile_schema(ENDLESS[name])


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}},
    {"$ref": "#/definitions/node", "definitions": {"node": {
        "type": "object", "properties": {"next": {"$ref": "#/definitions/node"}}}}},
])  # fmt: skip
def test_recursive_schemas_that_descend_into_the_payload_work(schema: dict[str, Any]) -> None:
    validator = compile_schema(schema)
    payload = {"children": [{"children": []}], "next": {"next": {}}}
    assert violations(validator, payload) == []


def test_each_missing_or_unexpected_property_is_its_own_violation() -> None:
    validator = compile_schema({
        "type": "object", "required": ["a", "b"], "additionalProperties": False,
        "properties": {"a": {}, "b": {}, "n": {"type": "object", "required": ["z"]}},
    })  # fmt: skip
    found = violations(validator, {"x": 1, "y": 2, "n": {}})
    assert sorted((v["path"], v["message"]) for v in found) == [
        ("", "must have required property 'a'"),
        ("", "must have required property 'b'"),
        ("", "must not have additional property 'x'"),
        ("", "must not have additional property 'y'"),
        ("/n", "must have required property 'z'"),
    ]


def test_a_schema_compiled_lately_is_not_compiled_again() -> None:
    # A stored config is validated each time its row loads (ingestion: every second).
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    same = {"properties": {"a": {"type": "integer"}}, "required": ["a"], "type": "object"}
    first = compile_schema(schema)
    assert compile_schema(same) is first  # the same schema, keys in another order
    other = compile_schema({**schema, "required": ["b"]})
    assert other is not first
    assert violations(first, {"a": 1}) == [] and violations(other, {"a": 1}) != []
    for _ in range(2):  # a bad schema is refused every time, not remembered
        with pytest.raises(ValidationError):
            compile_schema({"type": "no-such-type"})


def test_patterns_run_in_linear_time() -> None:
    """A pattern that backtracks for ages on Python's engine answers at once: one webhook
    must not stall the event loop every role shares."""
    import time

    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}},
              "patternProperties": {"^k(a|aa)+$": {"type": "integer"}}}  # fmt: skip
    started = time.process_time()
    found = check(schema, {"s": "a" * 40 + "!", "k" + "a" * 40 + "!": "x"})
    assert time.process_time() - started < 0.5  # Python's engine: years
    assert paths(schema, {"s": "a" * 40 + "!"}) == ["/s"]
    assert found == [{"path": "/s", "message": "must match pattern ^(a+)+$"}]
    assert check(schema, {"s": "aaa", "kaaa": 1}) == []
    assert paths(schema, {"kaaa": "x"}) == ["/kaaa"]


@pytest.mark.parametrize(("pattern", "good", "bad"), [
    ("^(a)\\1$", "aa", "ab"),  # a backreference: Python's engine, as before
    ("^(?=.*\\d)\\w+$", "ab1", "abc"),  # lookahead: likewise
    ("^\\d+$", "12", "\u0661\u0662"),  # \d is ASCII, as in ECMA 262
    ("^a$", "a", "a\n"),  # $ is the end of the text
])  # fmt: skip
def test_patterns_keep_their_meaning(pattern: str, good: str, bad: str) -> None:
    schema = {"type": "string", "pattern": pattern}
    assert check(schema, good) == []
    assert paths(schema, bad) == [""]
