"""A TOML table that knows its own dotted path, so every configuration error names its key.

Every settings parser (the core in ``gateway.core.config``, and the tenants, routing, cache and
observability sections) reads its table through ``Table``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration file or value that cannot be used; the message names the key."""


def read_text(path: Path, what: str = "") -> str:
    """The UTF-8 text of ``path``; a file that cannot be read, or is not text (a binary file
    passed by mistake), is a ``ConfigError`` naming it (and ``what`` it was read as)."""
    try:
        return path.read_text("utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text: byte {exc.object[exc.start]:#04x} at offset {exc.start}"
    raise ConfigError(f"{path}: cannot read{' ' + what if what else ''} ({reason})")


def text_lines(text: str) -> list[str]:
    """The lines of a line-based format (JSON lines, Prometheus's text format), split at ``\\n``
    only: ``str.splitlines`` also splits at U+0085, U+2028 and other separators, which a JSON
    string or a label value may hold raw (MMLU's prompts do), so it would cut such a line."""
    return text.split("\n")


class Table:
    """A TOML table with its dotted path, so every error names the key it is about."""

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        self.data = data
        self.path = path
        self._read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, expected: str) -> ConfigError:
        return ConfigError(f"{self.key(name)}: expected {expected}, got {self.data.get(name)!r}")

    def get(self, name: str, kind: type[T] | tuple[type, ...], default: T) -> T:
        self._read.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, int) and not -(2**63) <= value < 2**63:  # TOML's range
            raise self.fail(name, "an integer that fits in 64 bits")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(name, "a finite number")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(name, _describe(kinds))
        if not isinstance(value, kinds):
            raise self.fail(name, _describe(kinds))
        return value  # type: ignore[return-value]

    def required(self, name: str, kind: type[T]) -> T:
        if name not in self.data:
            raise ConfigError(f"{self.key(name)}: required")
        return cast(T, self.get(name, kind, None))

    def optional(self, name: str, kind: type[T]) -> T | None:
        return self.get(name, kind, None)

    def positive(self, name: str, default: float) -> float:
        value = self.get(name, float, default)
        if value <= 0:
            raise self.fail(name, "a number above 0")
        return value

    def non_negative(self, name: str, default: float) -> float:
        value = self.get(name, float, default)
        if value < 0:
            raise self.fail(name, "a number of 0 or more")
        return value

    def count(self, name: str, default: int, minimum: int = 1) -> int:
        value = self.get(name, int, default)
        if value < minimum:
            raise self.fail(name, f"an integer of {minimum} or more")
        return value

    def choice(self, name: str, options: tuple[str, ...], default: str) -> str:
        value = self.get(name, str, default)
        if value not in options:
            raise self.fail(name, "one of " + ", ".join(options))
        return value

    def table(self, name: str) -> Table:
        return Table(self.get(name, dict, {}), self.key(name))

    def tables(self, name: str) -> list[Table]:
        items = self.get(name, list, [])
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ConfigError(f"{self.key(name)}[{i}]: expected a table")
            out.append(Table(item, f"{self.key(name)}[{i}]"))
        return out

    def strings(self, name: str) -> tuple[str, ...]:
        items = self.get(name, list, [])
        if not all(isinstance(item, str) for item in items):
            raise self.fail(name, "a list of strings")
        return tuple(items)

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.data) - self._read)
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown key")


def _describe(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             dict: "a table", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
