"""OpenAPI 3.0 schemas from the contract's models.

pydantic writes JSON Schema 2020-12; OpenAPI 3.0 speaks an older dialect, so each
schema is translated: `anyOf [X, null]` -> X with `nullable`, `const` -> a one-value
`enum`, numeric `exclusiveMinimum` -> `minimum` + `exclusiveMinimum: true`, `examples`
-> `example`, a `$ref` with siblings -> `allOf [$ref]` beside them, and a nullable
`enum` lists null. Titles are dropped (the component's name says it), so are
`propertyNames` and `patternProperties`, which OpenAPI 3.0 lacks (the document then
says less about a mapping's keys than the validator checks), and `required` is sorted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import TypeAdapter

from triggerd.domain.contract import QueryModel

Schema = dict[str, Any]
REF = "#/components/schemas/"
_TEMPLATE = REF + "{model}"
_MAPS = ("properties", "$defs")
_ONE = ("items", "additionalProperties", "not", "contains")
_DROPPED = ("title", "propertyNames")  # names say it; OpenAPI 3.0 has no propertyNames
_MANY = ("anyOf", "oneOf", "allOf", "prefixItems")


def components(named: Mapping[str, Any]) -> dict[str, Schema]:
    """The component schemas of the types in `named` (name -> model class or annotated
    type) and of every model they contain, each named by its class."""
    inputs = [(name, "validation", TypeAdapter(kind)) for name, kind in named.items()]
    tops, defs = TypeAdapter.json_schemas(inputs, ref_template=_TEMPLATE)  # type: ignore[arg-type]
    out = {name: convert(schema) for name, schema in defs.get("$defs", {}).items()}
    for (name, _mode), schema in tops.items():
        if "$ref" not in schema:  # a union or other type without a class of its own
            out[name] = convert(schema)
    return dict(sorted(out.items()))


def convert(schema: Any) -> Any:
    """One JSON Schema 2020-12 schema in OpenAPI 3.0's dialect (a new object)."""
    if not isinstance(schema, dict):
        return schema
    schema = dict(schema)
    _nulls(schema)
    out: Schema = {}
    for key, value in schema.items():
        if key in _DROPPED:
            continue
        if key == "patternProperties":  # OpenAPI 3.0 has none: any key, values as given
            if "additionalProperties" not in schema and len(value) == 1:
                out["additionalProperties"] = convert(next(iter(value.values())))
        elif key in _MAPS:
            out[key] = {name: convert(sub) for name, sub in value.items()}
        elif key in _ONE:
            out[key] = convert(value)
        elif key in _MANY:
            out[key] = [convert(sub) for sub in value]
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "examples" and isinstance(value, list):
            if value:
                out["example"] = value[0]
        elif key == "required":
            out[key] = sorted(value)
        else:
            out[key] = value
    if out.get("nullable") and "enum" in out and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]  # OpenAPI 3.0: an enum must list null to allow it
    if "$ref" in out and len(out) > 1:
        out["allOf"] = [{"$ref": out.pop("$ref")}]
    return out


def _nulls(out: Schema) -> None:
    """`anyOf: [X, {"type": "null"}]` -> X, nullable (in place, before translation)."""
    options = out.get("anyOf")
    if not options or {"type": "null"} not in options:
        if out.get("type") == "null":
            del out["type"]
            out["nullable"] = True
        return
    rest = [option for option in options if option != {"type": "null"}]
    del out["anyOf"]
    out["nullable"] = True
    if len(rest) == 1 and "$ref" not in rest[0]:
        out.update({key: value for key, value in rest[0].items() if key not in out})
    elif len(rest) == 1:
        out["allOf"] = rest
    else:
        out["anyOf"] = rest


def query_parameters(model: type[QueryModel]) -> list[Schema]:
    """OpenAPI query parameters, one per field of `model`."""
    schema = convert(model.model_json_schema())
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        prop = {key: value for key, value in prop.items() if key != "nullable"}
        if "enum" in prop:  # an empty value is no filter; null is no query value
            prop["enum"] = [value for value in prop["enum"] if value is not None]
        if prop.get("default", "") is None:
            del prop["default"]
        description = prop.pop("description", name)
        if name in model.lists():
            prop = {"type": "array", "items": prop}
        parameter: Schema = {"in": "query", "name": name, "required": False, "schema": prop,
                             "description": description}  # fmt: skip
        if name not in model.PAGING:
            parameter["description"] = f"{description}; empty: no filter"
            parameter["allowEmptyValue"] = True
        parameters.append(parameter)
    return parameters


def refs(schemas: Iterable[Schema]) -> set[str]:
    """The component names the schemas refer to."""
    found: set[str] = set()
    stack: list[Any] = list(schemas)
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith(REF):
                found.add(ref[len(REF):])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found
