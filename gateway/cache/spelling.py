"""Typo folding for the semantic cache's lookup key: "how do I chnage my pasword" asks what
"how do I change my password" asks, but the embedding model scores such pairs far apart
("leaky fauset" / "leaky faucet" 0.74), so a misspelt word is replaced before the text is embedded
and compared by the guards.

A word is folded only when it is unknown and exactly one edit (a letter deleted, inserted,
replaced, or two neighbours swapped) after its first letter away from a common word; among
several such words the most frequent is taken. The first letter stays because typos rarely hit
it and a changed first letter is how real words differ from their jargon ("async" / "sync",
"numpy" / "lumpy"). Known: the English word-frequency list that ships with ``pyspellchecker``
(MIT), ``words.txt`` beside this module (the embedding model's whole-word vocabulary and words
of public question sets, ``bench/cache_sets/build_words.py``) and Python's keywords, built-ins
and standard modules ("dict", "json"). Only lowercase words of five letters or more in prose are
corrected, and the capitalised first word of the text (elsewhere a capitalised word is a name to
the guards; a word inside ``a.b``, ``a_b``, ``a/b`` or a call is code); contractions typed
without their apostrophe ("whats", "dont") get it back. The exact tier keeps the text as sent.

Reads its two word lists once per process (``load``, ~0.3 s); otherwise pure.
"""

from __future__ import annotations

import builtins
import functools
import keyword
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

WORDS = Path(__file__).with_name("words.txt")
# a correction must be a common word: rare entries of a frequency list include misspellings
MIN_TARGET_COUNT = 100
MIN_LENGTH = 5
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_PROSE_WORD = re.compile(r"(?<![\w./\\`@#$-])[A-Za-z][a-z]+(?![\w/\\`(@#$-]|\.\w)")
# contractions typed without their apostrophe (frequent words themselves, so never "unknown")
_BARE_CONTRACTIONS: Mapping[str, str] = {
    "whats": "what's", "thats": "that's", "hows": "how's", "wheres": "where's", "whos": "who's",
    "dont": "don't", "doesnt": "doesn't", "didnt": "didn't", "isnt": "isn't", "arent": "aren't",
    "wasnt": "wasn't", "werent": "weren't", "cant": "can't", "couldnt": "couldn't",
    "shouldnt": "shouldn't", "wouldnt": "wouldn't", "hasnt": "hasn't", "havent": "haven't",
    "youre": "you're", "theyre": "they're", "ive": "I've", "im": "I'm",
}


@dataclass(frozen=True, slots=True)
class Speller:
    counts: Mapping[str, int]  # word -> frequency; every key is a known word
    extra: frozenset[str]  # known words with no frequency (never a correction)

    def known(self, word: str) -> bool:
        return word in self.counts or word in self.extra

    def correction(self, word: str) -> str | None:
        """The common word one edit from ``word`` (the most frequent of several), or None when
        ``word`` is known, short, or has no such neighbour."""
        if len(word) < MIN_LENGTH or self.known(word):
            return None
        best, best_count = None, MIN_TARGET_COUNT - 1
        for candidate in _edits(word):
            count = self.counts.get(candidate, 0)
            if count > best_count:
                best, best_count = candidate, count
        return best

    def fold(self, text: str) -> str:
        """``text`` with every misspelt prose word replaced by its correction, and contractions
        typed without an apostrophe given one. A capitalised word is folded only where it
        starts the text (elsewhere it is a name)."""
        return _PROSE_WORD.sub(lambda m: self._fold_word(m.group(), m.start() == 0), text)

    def _fold_word(self, word: str, first: bool) -> str:
        capital = word[0].isupper()
        if capital and not first:
            return word
        lower = word.lower()
        folded = _BARE_CONTRACTIONS.get(lower) or self.correction(lower)
        if folded is None:
            return word
        return folded[0].upper() + folded[1:] if capital else folded


def _edits(word: str) -> set[str]:
    splits = [(word[:i], word[i:]) for i in range(1, len(word) + 1)]
    deletes = {a + b[1:] for a, b in splits if b}
    swaps = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    replaces = {a + c + b[1:] for a, b in splits if b for c in _LETTERS if c != b[0]}
    inserts = {a + c + b for a, b in splits for c in _LETTERS}
    return deletes | swaps | replaces | inserts


@functools.cache
def load() -> Speller:
    """The process's speller (read once; callers on an event loop run it in a thread)."""
    from spellchecker import SpellChecker  # the list is read here, not at import

    counts = dict(SpellChecker(language="en", distance=1).word_frequency.dictionary)
    python = {*keyword.kwlist, *dir(builtins), *sys.stdlib_module_names}
    extra = frozenset({*WORDS.read_text("utf-8").split(), *(w.lower() for w in python)})
    return Speller(counts, extra)
