"""Typo folding for the semantic cache's lookup key: "how do I chnage my pasword" asks what
"how do I change my password" asks, but the embedding model scores such pairs far apart
("leaky fauset" / "leaky faucet" 0.74), so a misspelt word is replaced before the text is embedded
and compared by the guards.

A word is folded only when it is unknown and exactly one edit (a letter deleted, inserted,
replaced, or two neighbours swapped) after its first letter away from a common word; among several
such words the most frequent is taken. The first letter stays because typos rarely hit it and a
changed first letter is how real words differ from their jargon ("async" / "sync", "numpy" /
"lumpy"). Never folded either: a regular form of a known word ("memes" of "meme", "podcasts",
"influencers" of "influence", "vaping" of "vape"; the frequency list lacks many such forms, and
"memes" -> "memos" turned two questions into one), unless the correction is the form it meant (its
last consonant doubled, "occured" -> "occurred", or a plural in -es, "potatos" -> "potatoes"); a
known word behind the prefix "e" ("esports", "ebikes"); and a correction into a word the hard
guards read (a negation, a number or ordinal, a unit, a degree word, a person, a word that asks
about the one answering): a fold must never make the guards see what the writer did not type
("fourty" -> "fourth" would read a number). Known: the English word-frequency list that ships with
``pyspellchecker`` (MIT), ``words.txt`` beside this module (the embedding model's whole-word
vocabulary and words of public question sets; their sources and licences are in
``bench/cache_sets/build_words.py``, which builds it) and Python's keywords, built-ins and
standard modules ("dict", "json"). Only lowercase words of five letters or more in prose are
corrected, and the capitalised first word of the text (elsewhere a capitalised
word is a name to the guards; a word inside ``a.b``, ``a_b``, ``a/b`` or a call is code);
contractions typed without their apostrophe ("whats", "dont") get it back. Under the ``exact``
cache policy the text is kept as sent. The folded text keys the semantic step (its vector and the
guards' reading) and a typo step beside the exact one (the loose key of the folded text); the exact
key and the stored entry keep the text as sent, so a typo of a stored prompt is a semantic hit,
never an exact one (``semantic_cache``). ``KeyFolder`` remembers the last texts folded, so the
cache's lookup reuses the fold the pipeline made to embed the text.

Reads its two word lists once per process (``load``, ~0.3 s) and then hands the pages the
reading freed back to the system (``malloc_trim``); otherwise pure.
"""

from __future__ import annotations

import builtins
import functools
import keyword
import re
import sys
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embedder_worker.allocator import release_free_memory
from gateway.cache.lexicon import (
    ANSWERER_WORDS,
    DEGREE,
    NEGATIONS,
    NUMBER_WORDS,
    ORDINALS,
    PERSONS,
    UNITS,
)

WORDS = Path(__file__).with_name("words.txt")
# a correction must be a common word: rare entries of a frequency list include misspellings
MIN_TARGET_COUNT = 100
MIN_LENGTH = 5
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Words a hard guard compares by presence: a fold into one of them would make the guards agree
# on something the writer did not type (antonyms are left out: a fold can only add a refusal).
GUARDED = frozenset({*NEGATIONS, *NUMBER_WORDS, *ORDINALS, *UNITS, *DEGREE, *PERSONS,
                     *ANSWERER_WORDS})
# Regular endings, each with what the base may end in instead ("influencers" -> "influence",
# "vaping" -> "vape", "carries" -> "carry"), longest first.
_ENDINGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ies", ("y",)), ("ers", ("", "e")), ("ing", ("", "e")), ("est", ("", "e")),
    ("es", ("",)), ("ed", ("", "e")), ("er", ("", "e")), ("rs", ("e",)), ("s", ("",)),
)
# "e" + "sports", "e" + "bikes": an electronic something, named by a known word
_LETTER_PREFIXES = ("e",)
_PREFIXED_MIN = 5
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
    """Known words and common words' frequencies, held as sorted ``hash()`` values: ~160,000
    words only need a yes or no, and ~47,000 a frequency; as strings in a set and a dict they
    held ~25 MiB of the gateway's idle memory, as arrays ~2 MiB. ``hash()`` is this process's
    (the arrays are never stored); a collision makes one unknown word "known" (not folded)."""

    known_hashes: npt.NDArray[np.int64]
    target_hashes: npt.NDArray[np.int64]  # common words: the only corrections there are
    target_counts: npt.NDArray[np.int64]  # their frequencies, aligned

    @classmethod
    def of(cls, counts: Mapping[str, int], extra: Iterable[str]) -> Speller:
        """From word frequencies (every key a known word) and known words with no frequency."""
        codes = np.fromiter(map(hash, counts), dtype=np.int64, count=len(counts))
        frequencies = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))
        common = frequencies >= MIN_TARGET_COUNT
        order = np.argsort(codes[common])
        known = np.unique(np.concatenate([codes, np.fromiter(map(hash, extra), dtype=np.int64)]))
        return cls(known, codes[common][order], frequencies[common][order])

    def known(self, word: str) -> bool:
        return bool(_lookup(self.known_hashes, np.array([hash(word)], dtype=np.int64))[1][0])

    def correction(self, word: str) -> str | None:
        """The common word one edit from ``word`` (the most frequent of several), or None when
        ``word`` is known, short, or has no such neighbour. For a regular form of a known word
        the only corrections are the forms it meant (``_meant``)."""
        if len(word) < MIN_LENGTH or self.known(word) or self._prefixed(word):
            return None
        base = self.known_form(word)
        candidates = list(_edits(word)) if base is None else _meant(base, word)
        codes = np.fromiter(map(hash, candidates), dtype=np.int64, count=len(candidates))
        at, found = _lookup(self.target_hashes, codes)
        if not found.any():
            return None
        counts = np.where(found, self.target_counts[at], 0)
        best = int(np.argmax(counts))
        if counts[best] < MIN_TARGET_COUNT or candidates[best] in GUARDED:
            return None  # a guarded best guess is not traded for the next one ("gramms")
        return candidates[best]

    def known_form(self, word: str) -> str | None:
        """The known word ``word`` is a regular form of ("memes" -> "meme"), or None."""
        for ending, restores in _ENDINGS:
            if word.endswith(ending) and len(word) > len(ending) + 2:
                stem = word[: -len(ending)]
                for restore in restores:
                    if self.known(stem + restore):
                        return stem + restore
        return None

    def _prefixed(self, word: str) -> bool:
        """A known word behind a letter prefix ("esports", "ebikes")."""
        return word[0] in _LETTER_PREFIXES and len(word) > _PREFIXED_MIN \
            and self.known(word[1:])

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


def _lookup(sorted_codes: npt.NDArray[np.int64], codes: npt.NDArray[np.int64]
            ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """Where each of ``codes`` is in ``sorted_codes``, and whether it is there at all."""
    if not len(sorted_codes):
        return np.zeros(len(codes), dtype=np.intp), np.zeros(len(codes), dtype=np.bool_)
    at = np.minimum(np.searchsorted(sorted_codes, codes), len(sorted_codes) - 1)
    return at, np.asarray(sorted_codes[at] == codes)


def _meant(base: str, word: str) -> list[str]:
    """The forms of ``base`` that ``word`` misspells: its last consonant doubled before the
    ending ("occured" -> "occurred", "begining" -> "beginning") or the plural in -es ("potatos"
    -> "potatoes"). Any other correction would make it another word ("memes" -> "memos")."""
    cut = len(base.rstrip("e"))
    doubled = word[:cut] + word[cut - 1] + word[cut:]
    return [doubled, word[:-1] + "es"] if word.endswith("s") else [doubled]


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

    counts = SpellChecker(language="en", distance=1).word_frequency.dictionary
    python = (*keyword.kwlist, *dir(builtins), *sys.stdlib_module_names)
    extra = (*WORDS.read_text("utf-8").split(), *(w.lower() for w in python))
    speller = Speller.of(counts, extra)
    del counts
    release_free_memory()  # the reader's ~35 MiB high-water mark, otherwise kept
    return speller


class KeyFolder:
    """``speller.fold`` with a memo of the last texts folded: the pipeline folds the asked text
    to embed it and the cache folds it again to look it up (``semantic_cache.key_text``)."""

    def __init__(self, speller: Speller | None, size: int = 1024) -> None:
        self.speller = speller
        self._size = size
        self._memo: OrderedDict[str, str] = OrderedDict()

    def remembered(self, text: str) -> str | None:
        """``text``'s fold if it is still in the memo (or folding is off), without folding."""
        return text if self.speller is None else self._memo.get(text)

    def __call__(self, text: str) -> str:
        if self.speller is None:
            return text
        folded = self._memo.get(text)
        if folded is None:
            folded = self._memo[text] = self.speller.fold(text)
            if len(self._memo) > self._size:
                self._memo.popitem(last=False)
        return folded
