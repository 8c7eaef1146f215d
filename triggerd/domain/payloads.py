"""JSON Schema for webhook payloads: compile a trigger's `config.schema`, list violations.

fastjsonschema (our one validator) implements draft-04/06/07 and runs any other
`$schema` with its draft-07 code, so a schema goes through three steps:

1. **Translate**, when `$schema` is 2020-12, 2019-09 or absent, the 2020-12 keywords
   that have a draft-07 equivalent (supported 2020-12 keywords, exactly):
   - `prefixItems: [A, B]` -> `items: [A, B]`, and `items: C` beside it -> `additionalItems: C`;
   - `dependentRequired` and `dependentSchemas` -> draft-07 `dependencies`;
   - `$anchor: "x"` -> `$id: "#x"` (the draft-07 spelling of a plain-name anchor);
   - `$defs` as is (`#/$defs/x` is a JSON Pointer like any other);
   - `$ref` beside other keywords -> `allOf: [{"$ref": ...}, ...]`, since 2019-09+
     applies the siblings (only with a 2019-09/2020-12 `$schema`: without one a
     schema keeps draft-07 `$ref` semantics, siblings ignored);
   - unchanged, meaning the same in both: `type`, `enum`, `const`, `properties`,
     `required`, `additionalProperties`, `patternProperties`, `propertyNames`,
     `items` (a schema), `contains`, `minimum`/`maximum`, `exclusiveMinimum`/
     `exclusiveMaximum` (numbers), `multipleOf`, `minLength`/`maxLength`, `pattern`,
     `minItems`/`maxItems`, `uniqueItems`, `minProperties`/`maxProperties`, `format`,
     `allOf`/`anyOf`/`oneOf`/`not`, `if`/`then`/`else`, `$id`, `$comment`, annotations.
   Refused (400) in every schema, because ignoring them would accept payloads the
   author meant to reject: `unevaluatedProperties`, `unevaluatedItems`,
   `minContains`, `maxContains`, `$dynamicRef`, `$dynamicAnchor`, `$recursiveRef`,
   `$recursiveAnchor`. Also 400: `items` as an array under a 2020-12 `$schema` (use
   `prefixItems`), a `$ref` into a renamed location (`#/prefixItems/0`), and a
   `$schema` other than draft-04/06/07, 2019-09 or 2020-12.
2. **Check** the result against the draft-07 meta-schema (plus `$defs`), so a
   mistyped keyword value is a 400 at creation, not a crash at the first webhook.
   Patterns are Python `re` syntax (close to, not exactly, ECMA 262).
3. **Compile** with fastjsonschema: remote `$ref`s are refused (nothing is fetched
   from URLs named by user input), defaults are not injected into payloads, and
   `format` is asserted (for 2020-12 too, where it is an annotation by default).
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any, NoReturn

import fastjsonschema
import orjson
import re2

from triggerd.domain.errors import ValidationError
from triggerd.domain.refcycles import endless_ref_loop

Validator = Callable[[Any], Any]

FIELD = "config.schema"
MAX_DEPTH = 64  # schema nesting (keyword levels); far beyond any real schema
MAX_VIOLATIONS = 50
MAX_JSON_DEPTH = 100  # orjson refuses to write JSON nested deeper than ~250 levels

_CLASSIC_DRAFTS = ("draft-04", "draft-06", "draft-07")
_UNSUPPORTED = (
    "unevaluatedProperties",
    "unevaluatedItems",
    "minContains",
    "maxContains",
    "$dynamicRef",
    "$dynamicAnchor",
    "$recursiveRef",
    "$recursiveAnchor",
)
_SUBSCHEMA = ("additionalItems", "additionalProperties", "contains", "else", "if", "items",
              "not", "propertyNames", "then")
_SUBSCHEMA_LIST = ("allOf", "anyOf", "oneOf", "items")
_SUBSCHEMA_MAP = ("$defs", "definitions", "dependencies", "patternProperties", "properties")
# Keywords that may sit beside `$ref` without being moved into the `allOf`.
_REF_NEIGHBOURS = frozenset({"$ref", "$id", "$schema", "$comment", "$defs", "definitions",
                             "title", "description", "examples", "default"})

# fastjsonschema >= 2.22 can collect every error (`fast_fail=False`); older versions
# (setup.cfg allows >= 2.19) stop at the first one, so a list of one is then normal.
_COLLECT_ALL: dict[str, Any] = (
    {"fast_fail": False}
    if "fast_fail" in inspect.signature(fastjsonschema.compile).parameters
    else {}
)


# The validators of the schemas compiled last, by their JSON with sorted keys: a stored
# config is validated (its schema compiled) every time its row is loaded, and ingestion
# reloads a webhook trigger's row every second.
MAX_COMPILED = 256
_compiled: OrderedDict[bytes, Validator] = OrderedDict()


def compile_schema(schema: object) -> Validator:
    """Compile a trigger's JSON Schema; ValidationError("config.schema", reason) if it is bad.

    Never mutates `schema`, fetches nothing. A schema compiled lately is not compiled
    again (validators are pure functions, safe to share).
    """
    try:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # not JSON: the checks below say why
        return _compile_new(schema)
    validator = _compiled.get(key)
    if validator is None:
        validator = _compiled[key] = _compile_new(schema)
        if len(_compiled) > MAX_COMPILED:
            _compiled.popitem(last=False)
    else:
        _compiled.move_to_end(key)
    return validator


def _compile_new(schema: object) -> Validator:
    if not isinstance(schema, (dict, bool)):
        _fail("must be a JSON Schema (an object or a boolean)")
    if isinstance(schema, bool):
        return _compile(schema)
    draft = schema.get("$schema")
    if draft is not None and not isinstance(draft, str):
        _fail("$schema must be a string", "/$schema")
    mode = _mode(draft)
    try:
        translated = copy.deepcopy(schema)
    except RecursionError:
        _fail("is nested too deeply")
    if mode in ("default", "2019-09", "2020-12"):
        translated.pop("$schema", None)
        _translate(translated, "", 0, mode=mode)
    else:
        _walk_only(translated, "", 0)
    if mode != "draft-04":
        _check_meta(translated)
    loop = endless_ref_loop(translated)
    if loop is not None:
        _fail("it refers to itself without end ($ref loop that reads none of the payload)",
              loop)  # fmt: skip
    return _compile(translated)


def violations(validator: Validator, payload: Any) -> list[dict[str, str]]:
    """[] if `payload` validates; else [{"path": JSON Pointer into the payload, "message"}].

    With fastjsonschema >= 2.22 every failing location is listed (capped at
    MAX_VIOLATIONS); older versions stop at the first error, giving one item.
    """
    try:
        validator(payload)
    except fastjsonschema.JsonSchemaException as exc:
        errors = getattr(exc, "errors", None) or [exc]
        found = [v for err in errors for v in _violations_of(payload, err)]
        return found[:MAX_VIOLATIONS] or [{"path": "", "message": str(exc)}]
    except Exception:  # e.g. RecursionError on a very deep payload
        return [{"path": "", "message": "payload could not be checked against the schema"}]
    return []


def encode_payload(payload: object, field: str = "payload") -> bytes:
    """`payload` as compact JSON, encoded once per event (the row and the Kafka job reuse
    the bytes); ValidationError(field) for JSON orjson could read but cannot write back
    (nested deeper than orjson's ~250 levels): refused with this request, rather than
    failing the whole group-commit batch it would join."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError as exc:
        raise ValidationError(field, f"cannot be stored: {exc}") from None


def check_storable(value: object, field: str) -> None:
    """ValidationError(field) for JSON that orjson could read but not write back (and
    so not store): nested deeper than MAX_JSON_DEPTH, or integers beyond 64 bits."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValidationError(field, f"is nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(node, int) and not -(2**63) <= node < 2**64:
            raise ValidationError(field, "contains an integer beyond 64 bits")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)


# --- translation ----------------------------------------------------------------------


def _mode(draft: str | None) -> str:
    if draft is None:
        return "default"
    if "draft-04" in draft:
        return "draft-04"
    if any(name in draft for name in _CLASSIC_DRAFTS):
        return "classic"
    for name in ("2019-09", "2020-12"):
        if f"draft/{name}" in draft:
            return name
    _fail(f"unsupported $schema {draft!r} (use draft-07 or 2020-12; draft-04, draft-06"
          " and 2019-09 are also read)", "/$schema")


def _children(node: dict[str, Any], pointer: str) -> Iterator[tuple[Any, str]]:
    for key in _SUBSCHEMA:
        if key in node:
            yield node[key], f"{pointer}/{key}"
    for key in _SUBSCHEMA_LIST:
        if isinstance(node.get(key), list):
            for index, item in enumerate(node[key]):
                yield item, f"{pointer}/{key}/{index}"
    for key in _SUBSCHEMA_MAP:
        if isinstance(node.get(key), dict):
            for name, item in node[key].items():
                yield item, f"{pointer}/{key}/{_escape(str(name))}"


def _walk_only(node: Any, pointer: str, depth: int) -> None:
    """Classic drafts are not translated, but the depth cap and refusals still hold."""
    if not isinstance(node, dict):
        return
    _check_node(node, pointer, depth)
    for child, where in _children(node, pointer):
        _walk_only(child, where, depth + 1)


def _translate(node: Any, pointer: str, depth: int, *, mode: str) -> None:
    """Rewrite the 2020-12 keywords of `node` (a private copy) in place, recursively."""
    if not isinstance(node, dict):
        return
    _check_node(node, pointer, depth)
    if mode == "2020-12" and isinstance(node.get("items"), list) and "prefixItems" not in node:
        _fail("items must be a schema in 2020-12; use prefixItems for tuples", f"{pointer}/items")
    if "prefixItems" in node:
        if "items" in node:
            node["additionalItems"] = node.pop("items")
        node["items"] = node.pop("prefixItems")
    _merge_dependencies(node, pointer)
    if isinstance(node.get("$anchor"), str) and "$id" not in node:
        node["$id"] = "#" + node.pop("$anchor")
    others = node.get("allOf", [])
    if (mode != "default" and isinstance(node.get("$ref"), str) and isinstance(others, list)
            and set(node) - _REF_NEIGHBOURS):
        node["allOf"] = [{"$ref": node.pop("$ref")}, *others]
    for child, where in _children(node, pointer):
        _translate(child, where, depth + 1, mode=mode)


def _check_node(node: dict[str, Any], pointer: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        _fail(f"is nested more than {MAX_DEPTH} levels deep", pointer)
    for keyword in _UNSUPPORTED:
        if keyword in node:
            _fail(f"keyword {keyword} is not supported", f"{pointer}/{_escape(keyword)}")


def _merge_dependencies(node: dict[str, Any], pointer: str) -> None:
    sources = [(key, node.pop(key)) for key in ("dependentRequired", "dependentSchemas")
               if key in node]
    if not sources:
        return
    merged = node.get("dependencies")
    merged = dict(merged) if isinstance(merged, dict) else {}
    for key, source in sources:
        if not isinstance(source, dict):
            _fail("must be an object", f"{pointer}/{key}")
        for name, rule in source.items():
            if name in merged:
                merged[name] = {"allOf": [_as_schema(merged[name]), _as_schema(rule)]}
            else:
                merged[name] = rule
    node["dependencies"] = merged


def _as_schema(rule: Any) -> Any:
    return {"required": rule} if isinstance(rule, list) else rule


# --- meta-schema check and compilation ---------------------------------------------------


def _check_meta(schema: Any) -> None:
    try:
        _meta_validator()(schema)
    except fastjsonschema.JsonSchemaException as exc:
        errors = getattr(exc, "errors", None) or [exc]
        first = _violation(schema, errors[0])
        _fail(_meta_message(errors[0], first["message"]), first["path"])
    except RecursionError:
        _fail("is nested too deeply")


def _meta_message(exc: Any, message: str) -> str:
    if getattr(exc, "rule", None) in ("anyOf", "oneOf"):
        return "is not a valid value for this keyword"
    return message


class _NoRemoteRefs(dict[str, Callable[[str], Any]]):
    """fastjsonschema handler table that claims every URI scheme and refuses it."""

    def __contains__(self, scheme: object) -> bool:
        return True

    def __missing__(self, scheme: str) -> Callable[[str], Any]:
        return _refuse_remote


def _refuse_remote(uri: str) -> NoReturn:
    raise fastjsonschema.JsonSchemaDefinitionException(
        f"remote $ref {uri!r} is not allowed; only references inside the schema are"
    )


def _compile(schema: dict[str, Any] | bool) -> Validator:
    try:
        validator: Validator = fastjsonschema.compile(
            schema, handlers=_NoRemoteRefs(), use_default=False, **_COLLECT_ALL
        )
    except RecursionError:
        _fail("is nested too deeply")
    except Exception as exc:  # fastjsonschema raises many types on bad input
        _fail(f"does not compile: {exc}")
    _linear_patterns(validator, schema)
    return validator


def _linear_patterns(validator: Validator, schema: Any) -> None:
    r"""Run the schema's `pattern`s and `patternProperties` on RE2 where it can.

    Python's engine backtracks: `^(a+)+$` against 30 characters takes seconds, and a
    webhook is validated on the event loop every role shares, so one unauthenticated
    request could stall the scheduler and the API. RE2 runs in linear time. Its syntax
    is Python's minus backreferences and lookaround; a pattern that needs those keeps
    Python's engine. RE2's `$` is the end of the text, as fastjsonschema's `\Z`, and
    its `\d` and `\w` are ASCII, as in ECMA 262."""
    patterns = getattr(validator, "__globals__", {}).get("REGEX_PATTERNS")
    if not isinstance(patterns, dict) or not patterns:
        return
    for pattern in _patterns_in(schema):
        if pattern in patterns:
            with suppress(re2.error):
                patterns[pattern] = _Linear(re2.compile(pattern, _RE2_OPTIONS))


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is expected, not news for stderr
_RE2_OPTIONS.never_capture = True  # only whether it matches is asked


class _Linear:
    """What fastjsonschema asks of a compiled pattern, `search(text)` as a truth value,
    answered by RE2's matcher itself: the wrapper's own `search` builds a match object
    with character offsets, 7 µs a call against 0.9 µs (and Python's engine's 0.2)."""

    __slots__ = ("_match",)
    # The wrapper's own names (google-re2 <2, pinned; tests/unit/test_payloads.py runs them).
    _ANYWHERE = re2._Anchor.UNANCHORED
    _NO_MATCH = re2._NULL_SPAN

    def __init__(self, compiled: Any) -> None:
        self._match = compiled._regexp.Match

    def search(self, text: str) -> bool:
        data = text.encode("utf-8", "surrogatepass")
        return bool(self._match(self._ANYWHERE, data, 0, len(data))[0] != self._NO_MATCH)


def _patterns_in(node: Any) -> Iterator[str]:
    """Every string under a `pattern` key and every `patternProperties` key in `node`."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            pattern, by_pattern = item.get("pattern"), item.get("patternProperties")
            if isinstance(pattern, str):
                yield pattern
            if isinstance(by_pattern, dict):
                yield from (key for key in by_pattern if isinstance(key, str))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


@functools.cache
def _meta_validator() -> Validator:
    """The draft-07 meta-schema, compiled once (an immutable constant, ~60 ms)."""
    ref: dict[str, Any] = {"$ref": "#"}
    count = {"type": "integer", "minimum": 0}
    schema_list = {"type": "array", "minItems": 1, "items": ref}
    names = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    schema_map = {"type": "object", "additionalProperties": ref}
    simple = {"enum": ["array", "boolean", "integer", "null", "number", "object", "string"]}
    string: dict[str, Any] = {"type": "string"}
    number: dict[str, Any] = {"type": "number"}
    meta = {
        "type": ["object", "boolean"],
        "properties": {
            "$id": {"type": "string", "format": "uri-reference"},
            "$schema": {"type": "string", "format": "uri"},
            "$ref": {"type": "string", "format": "uri-reference"},
            "$comment": string, "title": string, "description": string,
            "readOnly": {"type": "boolean"}, "writeOnly": {"type": "boolean"},
            "examples": {"type": "array"},
            "multipleOf": {"type": "number", "exclusiveMinimum": 0},
            "maximum": number, "exclusiveMaximum": number,
            "minimum": number, "exclusiveMinimum": number,
            "maxLength": count, "minLength": count,
            "pattern": {"type": "string", "format": "regex"},
            "additionalItems": ref,
            "items": {"anyOf": [ref, schema_list]},
            "maxItems": count, "minItems": count,
            "uniqueItems": {"type": "boolean"},
            "contains": ref,
            "maxProperties": count, "minProperties": count,
            "required": names,
            "additionalProperties": ref,
            "definitions": schema_map, "$defs": schema_map, "properties": schema_map,
            "patternProperties": {**schema_map, "propertyNames": {"format": "regex"}},
            "dependencies": {"type": "object", "additionalProperties": {"anyOf": [ref, names]}},
            "propertyNames": ref,
            "enum": {"type": "array"},
            "type": {"anyOf": [simple, {"type": "array", "items": simple, "minItems": 1,
                                        "uniqueItems": True}]},
            "format": string, "contentMediaType": string, "contentEncoding": string,
            "if": ref, "then": ref, "else": ref,
            "allOf": schema_list, "anyOf": schema_list, "oneOf": schema_list,
            "not": ref,
        },
    }
    compiled: Validator = fastjsonschema.compile(meta, handlers=_NoRemoteRefs(), use_default=False)
    return compiled


# --- error reporting ---------------------------------------------------------------------


def _violations_of(document: Any, exc: Any) -> list[dict[str, str]]:
    """One violation per missing or unexpected property, where fastjsonschema reports
    them all in one message (`must contain ['a', 'b'] properties`); the path stays the
    object's, as other validators (jsonschema, ajv) report it."""
    rule, value = getattr(exc, "rule", None), getattr(exc, "value", None)
    if rule in ("required", "additionalProperties") and isinstance(value, dict):
        where = _violation(document, exc)["path"]
        if rule == "required":
            wanted = getattr(exc, "rule_definition", None) or []
            names = [n for n in wanted if isinstance(n, str) and n not in value]
            text = "must have required property {!r}"
        else:
            names = sorted(_extra_properties(exc, value))
            text = "must not have additional property {!r}"
        if names:
            return [{"path": where, "message": text.format(name)} for name in names]
    return [_violation(document, exc)]


def _extra_properties(exc: Any, value: dict[str, Any]) -> set[str]:
    """The properties an additionalProperties error is about, read back from the
    message's set literal and confirmed against the object."""
    message = str(getattr(exc, "message", ""))
    return {key for key in value if isinstance(key, str) and repr(key) in message}


def _violation(document: Any, exc: Any) -> dict[str, str]:
    name = str(getattr(exc, "name", None) or "data")
    message = str(getattr(exc, "message", None) or exc)
    if message.startswith(name):
        message = message[len(name):].strip() or message
    path = _pointer(document, name, getattr(exc, "value", None), list(getattr(exc, "path", [])))
    return {"path": path, "message": message}


def _pointer(document: Any, name: str, value: Any, fallback: list[str]) -> str:
    """Turn fastjsonschema's `data.a[0].b` into the JSON Pointer `/a/0/b`.

    The name is built from raw keys, so a key containing `.` or `[` makes it
    ambiguous; the document settles which keys were meant, and when several readings
    exist the one leading to the failing value itself (by identity) wins. Falls back
    to the exception's (lossy) `.path` when no reading matches.
    """
    if not name.startswith("data"):
        return _join(fallback[1:])
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(document, len("data"), ())]
    first: tuple[str, ...] | None = None
    while stack:
        node, pos, parts = stack.pop()
        if pos == len(name):
            if node is value:
                return _join(parts)
            first = parts if first is None else first
            continue
        if (id(node), pos) in seen:
            continue
        seen.add((id(node), pos))
        if isinstance(node, list) and name[pos] == "[":
            end = name.find("]", pos)
            digits = name[pos + 1:end] if end > 0 else ""
            if digits.isdigit() and int(digits) < len(node):
                stack.append((node[int(digits)], end + 1, (*parts, digits)))
        elif isinstance(node, dict) and name[pos] == ".":
            for key in node:
                if isinstance(key, str) and name.startswith(key, pos + 1):
                    stack.append((node[key], pos + 1 + len(key), (*parts, key)))
    return _join(first if first is not None else fallback[1:])


def _join(parts: tuple[str, ...] | list[str]) -> str:
    return "".join("/" + _escape(part) for part in parts)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _fail(reason: str, schema_path: str | None = None) -> NoReturn:
    where = f" at {schema_path}" if schema_path else ""
    details = {"schema_path": schema_path} if schema_path is not None else None
    raise ValidationError(FIELD, f"invalid JSON Schema{where}: {reason}", details=details)


__all__ = ["FIELD", "Validator", "check_storable", "compile_schema", "encode_payload", "violations"]
