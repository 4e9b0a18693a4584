"""Configuration layers: a user's file over the embedded default, the environment over both.

Pure functions over parsed TOML (plain dicts and lists), applied before validation, so every
layer is checked by the same parser and an error names the same keys. The rules:

1. A table merges key by key: a key the upper layer gives wins; the others stay from below,
   and tables inside tables merge the same way.
2. Anything else the upper layer gives replaces the lower layer's value whole: a string, a
   number, an inline array, and an array of tables (``[[providers]]``, ``[[models]]``). To drop a
   default provider or model, give the list you want in full.
3. When a file replaces ``[[providers]]`` but not ``[[models]]``, the default models stay only
   for the providers the file still declares (a default model for a provider the file dropped
   is dropped with it).

``environment_layer(env)`` turns the ``GATEWAY_*`` variables into one more layer on top; it
receives the mapping from ``gateway.core.config`` and never reads ``os.environ`` itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from gateway.core.toml_table import ConfigError

Data = dict[str, Any]

METRICS_TOKEN_VAR = "GATEWAY_METRICS_TOKEN"


def layer(below: Mapping[str, Any], above: Mapping[str, Any]) -> Data:
    """``above`` laid over ``below`` by rules 1 and 2; neither argument is changed."""
    merged: Data = dict(below)
    for key, value in above.items():
        under = merged.get(key)
        if isinstance(value, Mapping) and isinstance(under, Mapping):
            merged[key] = layer(under, value)
        else:
            merged[key] = value
    return merged


def layer_file(default: Mapping[str, Any], user: Mapping[str, Any]) -> Data:
    """The user's file over the default, with rule 3 for the default's models."""
    merged = layer(default, user)
    if "providers" in user and "models" not in user:
        declared = {p.get("name") for p in _tables(merged.get("providers"))}
        merged["models"] = [m for m in _tables(default.get("models"))
                            if m.get("provider") in declared]
    return merged


def _tables(value: Any) -> list[Mapping[str, Any]]:
    return [t for t in value if isinstance(t, Mapping)] if isinstance(value, list) else []


def _port(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name}: expected a port number, got {text!r}") from None


def _absolute(name: str, text: str) -> str:
    # A path from the environment is relative to where the command runs, not to any file.
    return os.path.abspath(text)


def _text(name: str, text: str) -> str:
    return text


# Variable -> (table, key, conversion). The common settings only; the file holds the rest.
_VARIABLES: dict[str, tuple[str, str, Callable[[str, str], Any]]] = {
    "GATEWAY_HOST": ("server", "host", _text),
    "GATEWAY_PORT": ("server", "port", _port),
    "GATEWAY_DATA_DIR": ("server", "data_dir", _absolute),
}


def environment_layer(env: Mapping[str, str]) -> Data:
    """The layer that the ``GATEWAY_*`` variables set in ``env`` make (empty ones are unset)."""
    out: Data = {}
    for name, (table, key, convert) in _VARIABLES.items():
        text = env.get(name, "").strip()
        if text:
            out.setdefault(table, {})[key] = convert(name, text)
    if env.get(METRICS_TOKEN_VAR):
        # Only the variable's name enters the settings; its value is read where secrets are.
        out.setdefault("observability", {})["metrics_token_env"] = METRICS_TOKEN_VAR
    return out
