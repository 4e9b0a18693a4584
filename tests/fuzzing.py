"""Seeded random damage for the fuzz tests: JSON values changed at random places.

``FUZZ_SEED`` in the environment (0 unless set) shifts every test's generator, so a search past
the default seed is one variable away, and a failure comes back on every run with the same seed.
"""

from __future__ import annotations

import copy
import os
import random
from typing import Any

ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**63, -(2**63), 1e308, -1e-308, 0.5, "", "x", "auto", "\u0000",
    "é" * 3, "\U0001f600", "a" * 5000, [], [None], [[[]]], {}, {"": {}}, {"role": "user"},
    [{"type": "text"}], [{"type": "image_url", "image_url": {}}], {"type": "function"},
]


def fuzz_rng(offset: int) -> random.Random:
    """One test's generator: ``FUZZ_SEED`` (0 unless set) plus the test's own offset."""
    return random.Random(int(os.environ.get("FUZZ_SEED", "0")) + offset)


def paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value: keys of objects and indices of lists, at any depth."""
    found = [at]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += paths(inner, (*at, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += paths(inner, (*at, i))
    return found


def damaged(body: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A copy of ``body`` with one to three changes at random places: a value swapped for an
    odd one, a field or item dropped, an unknown field or an extra item added."""
    out = copy.deepcopy(body)
    for _ in range(rng.randint(1, 3)):
        places = [p for p in paths(out) if p]
        if not places:
            break
        place = rng.choice(places)
        parent = out
        for step in place[:-1]:
            parent = parent[step]
        last = place[-1]
        action = rng.random()
        if action < 0.6:
            parent[last] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif action < 0.8:
            del parent[last]
        elif isinstance(parent, dict):
            parent[f"unknown_{rng.randint(0, 9)}"] = copy.deepcopy(rng.choice(ODD_VALUES))
        else:
            parent.append(copy.deepcopy(rng.choice(ODD_VALUES)))
    return out
