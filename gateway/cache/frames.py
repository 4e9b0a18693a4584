"""Words that only frame a question both sides of a pair ask, so a pair differing in them differs
in nothing asked: "reason" in "What is the reason ..." against "Why ...", the measure in "How tall"
against "the height of", "number" in "the number of" against "How many", an agent noun against its
verb ("the author of" / "wrote"), "purpose" against "What does X do".

``frame_words(a, b)`` is read by ``guards.compare``, which drops these words from the content
words each side lacks. Pure functions over two ``text_features.Profile`` and ``lexicon``'s lists.
"""

from __future__ import annotations

from gateway.cache.lexicon import (
    AGENT_NOUNS,
    COUNT_NOUNS,
    MEASURE_ADJECTIVES,
    MEASURE_NOUNS,
    MEASURE_VERBS,
    PURPOSE_NOUNS,
    REASON_NOUNS,
)
from gateway.cache.text_features import Profile, stem

# "What is the reason X?" asks why X: the noun frames the question, it adds nothing asked.
_WHY_FRAME = frozenset(stem(w) for w in REASON_NOUNS)


def frame_words(a: Profile, b: Profile) -> frozenset[str]:
    """Content words that only frame a question both sides ask: "reason" when one side asks
    why and the other's "What is the reason ..." may ("Why was my card declined?" / "What is
    the reason my card got declined?"); the words of a measure both ask ("How tall" / "the
    height of"); "number" when both ask how many; an agent noun and its verb when both ask who
    ("Who is the author of" / "Who wrote"); "purpose" when the other side asks what something
    does ("What is the purpose of the yield keyword?" / "What does the yield keyword do?")."""
    if {a.question, b.question} == {"why", "what"} and "why" in a.kinds | b.kinds:
        return _WHY_FRAME
    if a.question != b.question:
        return frozenset()
    if a.question.startswith("how:"):
        return _MEASURE_FRAMES.get(a.question[4:], frozenset())
    if a.question in _COUNT_FRAMES:
        return _COUNT_FRAMES[a.question]
    if a.question == "who":
        return _agents(a, b) | _agents(b, a)
    if a.question == "what":
        return _purposes(a, b) | _purposes(b, a)
    return frozenset()


def _measure_frames() -> dict[str, frozenset[str]]:
    words: dict[str, set[str]] = {}
    for table in (MEASURE_ADJECTIVES, MEASURE_NOUNS, MEASURE_VERBS):
        for word, measure in table.items():
            words.setdefault(measure, set()).add(stem(word))
    return {measure: frozenset(stems) for measure, stems in words.items()}


_MEASURE_FRAMES = _measure_frames()
_COUNT_FRAMES = {kind: frozenset(stem(w) for w, k in COUNT_NOUNS.items() if k == kind)
                 for kind in set(COUNT_NOUNS.values())}
_AGENT_VERBS = {stem(noun): frozenset(stem(v) for v in verbs) | frozenset(verbs)
                for noun, verbs in AGENT_NOUNS.items()}


def _agents(p: Profile, other: Profile) -> frozenset[str]:
    """An agent noun of ``p`` whose verb ``other`` asks with instead, and that verb's forms; not
    when ``p`` has the verb too ("Who wrote to the author of Dune?" / "Who wrote Dune?")."""
    found: set[str] = set()
    for noun, verbs in _AGENT_VERBS.items():
        if noun in p.content and verbs & other.lowers and not verbs & p.lowers:
            found |= verbs | {noun}
    return frozenset(found)


_PURPOSES = frozenset(stem(w) for w in PURPOSE_NOUNS)
_DOES = frozenset({"do", "does"})


def _purposes(p: Profile, other: Profile) -> frozenset[str]:
    """ "the purpose/function/role of X" in ``p`` when ``other`` asks what X does instead."""
    if _DOES & other.lowers and not _PURPOSES & other.content:
        return _PURPOSES & p.content
    return frozenset()
