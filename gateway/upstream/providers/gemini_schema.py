"""JSON Schema cut down to the OpenAPI subset that Gemini's ``Schema`` accepts.

Used by the Gemini adapter for ``response_format.json_schema`` and tool parameters. Keys
Gemini does not know (``additionalProperties``, ``$schema``, most ``format`` values...) are
dropped, since an unknown key makes Gemini refuse the whole call; types are upper-cased;
``const`` becomes a one-value ``enum``; ``anyOf [X, null]`` and ``type: [X, "null"]`` become
``nullable``; local ``$ref`` (and the lone ``allOf`` pydantic writes) are inlined.

What Gemini cannot express at all, a recursive schema or a reference outside the document,
is ``UpstreamFailure(UNSUPPORTED)`` so that failover may try another provider; a reference
that points nowhere is malformed for everyone (``InvalidRequest``). Pure functions only.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.core.answer import Json
from gateway.core.errors import FailureKind, InvalidRequest, UpstreamFailure

# Copied as they are; type, properties, items and anyOf are translated, not copied.
_KEYS = frozenset({
    "title", "description", "nullable", "enum", "required", "default", "example",
    "minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength",
    "pattern", "minimum", "maximum", "propertyOrdering",
})
_FORMATS = frozenset({"enum", "date-time", "float", "double", "int32", "int64"})


def gemini_schema(schema: Json, param: str) -> Json:
    """``schema`` in Gemini's subset; ``param`` names it in errors.

    Raises ``UpstreamFailure(UNSUPPORTED)`` for what Gemini cannot take and ``InvalidRequest``
    for a reference that resolves to nothing.
    """
    return _schema(schema, schema, param, frozenset())


def _schema(node: Any, root: Json, param: str, seen: frozenset[str]) -> Json:
    if not isinstance(node, dict):
        return {}
    node, seen = _resolved(node, root, param, seen)
    out: Json = {k: v for k, v in node.items() if k in _KEYS}
    if node.get("format") in _FORMATS:
        out["format"] = node["format"]
    if "const" in node and "enum" not in out:
        out["enum"] = [node["const"]]
    if "enum" in out:
        # Gemini's enum values are strings, whatever the type they constrain.
        out["enum"] = [v if isinstance(v, str) else orjson.dumps(v).decode() for v in out["enum"]]
    if isinstance(node.get("properties"), dict):
        out["properties"] = {
            k: _schema(v, root, param, seen) for k, v in node["properties"].items()
        }
    if "items" in node:
        out["items"] = _schema(node["items"], root, param, seen)
    variants = node.get("anyOf") or node.get("oneOf")
    if isinstance(variants, list):
        _merge_variants(out, [_schema(v, root, param, seen) for v in variants])
    _set_type(out, node.get("type"))
    return out


def _resolved(
    node: Json, root: Json, param: str, seen: frozenset[str]
) -> tuple[Json, frozenset[str]]:
    """``node`` with a local ``$ref`` (or a lone ``allOf``, as pydantic writes) inlined.

    ``seen`` holds the references being expanded on the way down: meeting one again means
    the schema is recursive, which an inlining translation cannot express.
    """
    while True:
        all_of = node.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
            node = {**all_of[0], **{k: v for k, v in node.items() if k != "allOf"}}
            continue
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node, seen
        if ref in seen:
            raise UpstreamFailure(
                FailureKind.UNSUPPORTED, f"Gemini cannot take a recursive schema ({param}: {ref})."
            )
        node = {**_target(root, ref, param), **{k: v for k, v in node.items() if k != "$ref"}}
        seen = seen | {ref}


def _target(root: Json, ref: str, param: str) -> Json:
    if not ref.startswith("#"):
        raise UpstreamFailure(
            FailureKind.UNSUPPORTED,
            f"Gemini cannot follow schema references outside the schema ({param}: {ref}).",
        )
    node: Any = root
    for token in filter(None, ref[1:].split("/")):
        key = token.replace("~1", "/").replace("~0", "~")
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        raise InvalidRequest(f"The schema reference {ref} cannot be resolved.", param=param)
    return node


def _merge_variants(out: Json, variants: list[Json]) -> None:
    # ``Optional[X]`` arrives as anyOf [X, null]: Gemini says that with ``nullable``.
    kept = [v for v in variants if v.get("type") != "NULL"]
    if len(kept) < len(variants):
        out["nullable"] = True
    if len(kept) == 1:
        out.update({k: v for k, v in kept[0].items() if k not in out})
    elif kept:
        out["anyOf"] = kept


def _set_type(out: Json, kind: Any) -> None:
    kinds = [k for k in (kind if isinstance(kind, list) else [kind]) if isinstance(k, str)]
    named = [k for k in kinds if k != "null"]
    if len(named) < len(kinds):
        out["nullable"] = True
    if len(named) == 1:
        out["type"] = named[0].upper()
    elif named:
        out["anyOf"] = [{"type": k.upper()} for k in named]
    elif kinds:
        out["type"] = "NULL"
