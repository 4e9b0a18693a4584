"""JSON Schema checks for escalation, through the maintained ``jsonschema`` library.

``validate(instance, schema)`` returns the most relevant way ``instance`` breaks ``schema`` as a
message with its JSON path (``$.items[2].name: 'x' is too short``), or None when it conforms.
The schema's own ``$schema`` picks the draft (2020-12 when it names none); ``$defs``/``$ref``
inside the schema resolve, formats the library can check are checked, and nothing is ever fetched
over the network.

"Never reject a good answer for a feature we skip": a schema that is itself invalid, or whose
``$ref`` points outside it, passes every value, and the reason is logged once per schema.
Compiled validators are cached per schema (an LRU keyed by its canonical JSON), so a client that
sends the same schema on every request pays the compilation once. Touches nothing but the log.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from jsonschema import FormatChecker, validators
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.protocols import Validator
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import SchemaRegistry

log = logging.getLogger(__name__)

_CACHE_SIZE = 256
_MAX_MESSAGE_CHARS = 300
# The library's default registry would fetch an unknown $ref over HTTP (with a warning); an
# empty one resolves only references inside the schema itself and never leaves the process.
_OFFLINE: SchemaRegistry = Registry()


def validate(instance: Any, schema: Any) -> str | None:
    """The most relevant way ``instance`` breaks ``schema``, or None when it conforms."""
    if isinstance(schema, bool):
        return None if schema else "$: no value is allowed here"
    key = _canonical(schema)
    validator = _compiled(key) if key is not None else None
    if validator is None:
        return None
    try:
        error = best_match(validator.iter_errors(instance))
    except Unresolvable as exc:
        _skip_once(key or "", f"a $ref does not resolve ({exc})")
        return None
    if error is None:
        return None
    return f"{error.json_path}: {error.message}"[:_MAX_MESSAGE_CHARS]


def _canonical(schema: Any) -> str | None:
    try:
        return json.dumps(schema, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compiled(key: str) -> Validator | None:
    """The validator for one schema, or None (logged once) when the schema is not valid."""
    schema = json.loads(key)
    if not isinstance(schema, dict):
        log.info("JSON Schema check skipped: the schema is not an object")
        return None
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        log.info("JSON Schema check skipped: the schema is invalid at %s: %s",
                 exc.json_path, exc.message[:_MAX_MESSAGE_CHARS])
        return None
    return cls(schema, registry=_OFFLINE, format_checker=FormatChecker())


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _skip_once(key: str, reason: str) -> None:
    log.info("JSON Schema check skipped: %s", reason[:_MAX_MESSAGE_CHARS])
