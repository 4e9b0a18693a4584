"""One word of a text as the guards read it (``Token``): shared by ``text_features``, which makes
tokens, and ``questions``, which reads them, so neither imports the other. Imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Token:
    """One word as written (``raw``), lowercased (``lower``) and as a lemma-like ``stem``."""

    raw: str
    lower: str
    stem: str
    entity: bool
    number: str | None  # canonical value when the word is a number ("two" -> "2", "3rd" -> "#3")
    sentence: int
    alternatives: int = 0  # words offered as alternatives ("stay/visit") share a number > 0
