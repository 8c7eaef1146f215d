"""Finding `$ref` loops that never consume any of the payload.

`{"definitions": {"a": {"$ref": "#/definitions/a"}}, "$ref": "#/definitions/a"}` compiles,
but validating anything with it recurses until Python gives up: every webhook would be a
400 "could not be checked". A loop is harmless when it passes through a keyword that moves
into the payload (`properties`, `items`…): the payload's depth ends it. It is endless when
it only passes through keywords that apply at the same place in the payload (`$ref`,
`allOf`/`anyOf`/`oneOf`, `not`, `if`/`then`/`else`, `dependencies`), so such a loop makes
the schema a 400 at creation.

Works on the draft-07 form compile_schema produces (a `$ref` stands alone); only local
JSON Pointer references (`#`, `#/…`) are followed, which is all the compiler resolves
without fetching.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

_SAME_PLACE_ONE = ("not", "if", "then", "else")
_SAME_PLACE_LIST = ("allOf", "anyOf", "oneOf")


def _resolve(root: Any, ref: str) -> tuple[str, Any] | None:
    """(pointer, subschema) of a local reference, None when it is not one or dangles."""
    if ref == "#":
        return "", root
    if not ref.startswith("#/"):
        return None
    node = root
    for raw in ref[2:].split("/"):
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return ref[1:], node


def _same_place(root: Any, pointer: str, node: Any) -> list[tuple[str, Any]]:
    """The subschemas `node` applies at the same place in the payload."""
    if not isinstance(node, dict):
        return []
    ref = node.get("$ref")
    if isinstance(ref, str):  # draft-07: the siblings of a $ref are ignored
        target = _resolve(root, ref)
        return [target] if target is not None else []
    found = [(f"{pointer}/{key}", node[key]) for key in _SAME_PLACE_ONE if key in node]
    for key in _SAME_PLACE_LIST:
        if isinstance(node.get(key), list):
            found += [(f"{pointer}/{key}/{i}", sub) for i, sub in enumerate(node[key])]
    dependencies = node.get("dependencies")
    if isinstance(dependencies, dict):
        found += [(f"{pointer}/dependencies/{name}", sub)
                  for name, sub in dependencies.items() if isinstance(sub, dict)]  # fmt: skip
    return found


def endless_ref_loop(root: Any) -> str | None:
    """The pointer of a schema that refers back to itself without consuming any of the
    payload, or None. Every subschema is a start, so loops reached only through
    `properties` are found too."""
    done: set[str] = set()

    def starts(pointer: str, node: Any) -> list[tuple[str, Any]]:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        return [(f"{pointer}/{k}", v) for k, v in items if isinstance(v, (dict, list))]

    def loops_from(pointer: str, node: Any) -> str | None:
        # Iterative depth-first search over same-place edges, with an on-path set.
        path: set[str] = set()
        stack: list[tuple[str, Any, bool]] = [(pointer, node, False)]
        while stack:
            at, here, leaving = stack.pop()
            if leaving:
                path.discard(at)
                done.add(at)
                continue
            if at in path:
                return at
            if at in done:
                continue
            path.add(at)
            stack.append((at, here, True))
            stack += [(p, n, False) for p, n in _same_place(root, at, here)]
        return None

    todo: list[tuple[str, Any]] = [("", root)]
    while todo:
        pointer, node = todo.pop()
        if isinstance(node, dict) and pointer not in done:
            loop = loops_from(pointer, node)
            if loop is not None:
                return loop
        todo += starts(pointer, node)
    return None


__all__ = ["endless_ref_loop"]
