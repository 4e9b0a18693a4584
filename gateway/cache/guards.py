"""Guards against false hits: lexical checks a semantic candidate must pass before it is served.

Sentence embeddings score near-duplicates that differ in meaning higher than true paraphrases
("How do I reset my password?" / "How do I not reset my password?" 0.93 against "How can I change
my password?" 0.86). Meaning-changing differences are usually small and visible in the words, so
before a semantic hit is served the stored and the asked text must agree on:

- the kind of question (who / what / how / why / how many / yes-no) and, for yes/no questions,
  the auxiliary's class ("Should I" asks advice, "Can I" ability, "Did" the past);
- whom it is about (the asker, or the one answering), except in generic how-to questions;
- operator symbols (C++ vs C#), numbers in order (digits, number words, ordinals: "rs1000" and
  "1000 rs" agree), negation by count (not, n't, never, no, without, ...), units and currencies
  in order (km vs miles, Celsius vs Fahrenheit, $ vs €), comparatives (faster vs slower);
- antonyms (for/against, rise/fall, north/south, buy/sell, ...);
- named entities (capitalised or mixed-case words, acronyms, codes): none may be unmatched;
- content words: a text that only adds words to the other (a more specific question) does not
  match it; a substitution ("reset" for "change") is left to the similarity threshold;
- order: two shared words in opposite orders, unless only a list ("X and Y") separates them.

The word lists (``lexicon``) are general English, not tuned to any data set. ``compare(a, b)``
returns a ``Verdict``; ``profile(text)`` may be computed once per text and reused. Pure functions.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

from gateway.cache.lexicon import (
    ANTONYMS,
    BARE_UNITS,
    COORDINATORS,
    DEGREE_SYNONYMS,
    DEGREE_WORDS,
    DIRECTIONAL,
    HOW_TO_MOODS,
    MANNER_NOUNS,
    MOODS,
    NEGATIONS,
    NUMBER_WORDS,
    ORDINALS,
    PERSONS,
    QUANTITY,
    STOPWORDS,
    UNITS,
    WH,
)

_WORD = re.compile(r"[^\W_]+(?:[.,]\d+)*|[$€£¥₹%°]")
# Operators and the marks of names like C++ and C#: "+" and "#" change what is asked.
_SYMBOL = re.compile(r"[+#*/=<>&|^~@{}\[\]\\`]")
_ALNUM_PART = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+|[$€£¥₹%°]")
_ORDINAL_SUFFIX = re.compile(r"^(\d+)(st|nd|rd|th)$")
_CONTRACTIONS = (
    (re.compile(r"\b(what|who|where|when|why|how|it|that|there|here|he|she)[’']s\b",
                re.IGNORECASE), r"\1 is"),
    (re.compile(r"\b(can)not\b", re.IGNORECASE), r"\1 not"),
    (re.compile(r"\bcan[’']t\b", re.IGNORECASE), "can not"),
    (re.compile(r"\bwon[’']t\b", re.IGNORECASE), "will not"),
    (re.compile(r"\bshan[’']t\b", re.IGNORECASE), "shall not"),
    (re.compile(r"n[’']t\b", re.IGNORECASE), " not"),
    (re.compile(r"[’']s\b"), ""),
    (re.compile(r"[’'](re|ve|ll|d|m)\b", re.IGNORECASE), ""),
)

@dataclass(frozen=True, slots=True)
class Token:
    """One word as written (``raw``), lowercased (``lower``) and stemmed (``stem``)."""

    raw: str
    lower: str
    stem: str
    entity: bool
    number: str | None  # canonical value when the word is a number ("two" -> "2", "3rd" -> "#3")


@dataclass(frozen=True, slots=True)
class Profile:
    """What the guards compare, computed once per text."""

    words: tuple[Token, ...]
    numbers: tuple[str, ...]
    negations: int
    units: tuple[str, ...]
    degree: frozenset[str]
    content: frozenset[str]
    entities: frozenset[str]
    lowers: frozenset[str]
    question: str
    mood: str
    symbols: tuple[str, ...]
    persons: frozenset[str]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the guards let a pair through; ``substituted``: content words replaced."""

    ok: bool
    reason: str = ""
    substituted: int = 0


ACCEPT = Verdict(True)


def profile(text: str) -> Profile:
    """Tokenize ``text`` and collect what ``compare`` checks."""
    words = _tokens(text)
    numbers: list[str] = []
    units: list[str] = []
    for i, token in enumerate(words):
        if token.number is not None:
            numbers.append(token.number)
        elif (unit := _unit(token.lower, words[i - 1].lower if i else "")) is not None:
            units.append(unit)
    return Profile(
        words=tuple(words),
        numbers=tuple(numbers),
        negations=sum(1 for t in words if t.lower in NEGATIONS),
        units=tuple(units),
        degree=frozenset(DEGREE_SYNONYMS.get(t.lower, t.lower) for t in words
                         if t.lower in DEGREE_WORDS),
        content=frozenset(t.stem for t in words if _is_content(t)),
        entities=frozenset(t.stem for t in words if t.entity),
        lowers=frozenset(t.lower for t in words) | frozenset(t.stem for t in words),
        question=(question := _question(words)),
        mood=_mood(words, question),
        symbols=tuple(sorted(_SYMBOL.findall(text))),
        persons=frozenset(PERSONS[t.lower] for t in words if t.lower in PERSONS),
    )


def compare(a: Profile | str, b: Profile | str) -> Verdict:
    """Whether an answer to ``a`` may be served for ``b``: ``ACCEPT`` or the first reason not."""
    pa = a if isinstance(a, Profile) else profile(a)
    pb = b if isinstance(b, Profile) else profile(b)
    for check in _CHECKS:
        reason = check(pa, pb)
        if reason:
            return Verdict(False, reason)
    only_a, only_b = _unmatched(pa, pb)
    return Verdict(True, substituted=only_a.total() + only_b.total())


def _tokens(text: str) -> list[Token]:
    text = unicodedata.normalize("NFKC", text)
    if "'" in text or "’" in text or "annot" in text:
        for pattern, replacement in _CONTRACTIONS:
            text = pattern.sub(replacement, text)
    raw = _split_alnum(_WORD.findall(text))
    title_case = _is_title_case(raw)
    out = []
    for i, word in enumerate(raw):
        lower = word.lower()
        starts = i == 0 or (word[0].isupper() and _starts_sentence(text, word))
        entity = _looks_like_entity(word, starts, title_case)
        out.append(Token(word, lower, stem(lower), entity, _number(lower)))
    return out


def _split_alnum(words: list[str]) -> list[str]:
    """Codes like ``rs1000`` or ``32GB``: the letter and digit runs become separate words."""
    out: list[str] = []
    for word in words:
        if word.isalpha() or word.isdigit() or _ORDINAL_SUFFIX.match(word.lower()):
            out.append(word)
            continue
        out.extend(_ALNUM_PART.findall(word))
    return out


def _is_title_case(words: list[str]) -> bool:
    """Headline style ("How Do I Find The Best..."): capitals say nothing about names there."""
    small = [w for w in words[1:] if w.lower() in STOPWORDS and w.isalpha() and w != "I"]
    return len(small) >= 2 and sum(w[0].isupper() for w in small) / len(small) > 0.5


def _starts_sentence(text: str, word: str) -> bool:
    return re.search(r"(?:^|[.?!:\n]\s*)" + re.escape(word) + r"\b", text) is not None


def _looks_like_entity(word: str, sentence_start: bool, title_case: bool) -> bool:
    if not word.isalpha() or word == "I":
        return False
    if len(word) > 1 and word.isupper():
        return True
    if any(c.isupper() for c in word[1:]):
        return True
    return word[0].isupper() and not sentence_start and not title_case


def stem(word: str) -> str:
    """A light English stemmer: plurals, then -ing, -ed, -ly; enough to match inflections."""
    return _strip(_strip(word, _PLURALS), _ENDINGS)


def _strip(word: str, suffixes: tuple[tuple[str, str, int], ...]) -> str:
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, replacement, minimum in suffixes:
        if word.endswith(suffix) and len(word) - len(suffix) >= minimum:
            return word[: len(word) - len(suffix)] + replacement
    return word


_PLURALS = (
    ("ies", "y", 2), ("sses", "ss", 2), ("xes", "x", 2), ("ches", "ch", 2), ("shes", "sh", 2),
    ("ss", "ss", 2), ("us", "us", 2), ("is", "is", 2), ("s", "", 3),
)
_ENDINGS = (
    ("ingly", "", 3), ("ing", "", 3), ("edly", "", 3), ("ed", "", 3), ("ly", "", 4),
)


def _number(word: str) -> str | None:
    if word[0].isdigit():
        ordinal = _ORDINAL_SUFFIX.match(word)
        if ordinal:
            return "#" + ordinal.group(1)
        return _canonical_number(word)
    if word in NUMBER_WORDS:
        return _canonical_number(str(NUMBER_WORDS[word]))
    if word in ORDINALS:
        return f"#{ORDINALS[word]}"
    return None


def _canonical_number(digits: str) -> str:
    plain = digits.replace(",", "")
    try:
        value = float(plain)
    except ValueError:
        return plain
    return str(int(value)) if value.is_integer() else str(value)


def _unit(word: str, previous: str) -> str | None:
    unit = UNITS.get(word)
    if unit is None:
        return None
    if word in BARE_UNITS and not (previous and _number(previous) is not None):
        return None
    return unit


def _question(words: list[Token]) -> str:
    """What kind of answer is asked for: a wh-word's kind, "how-many", or "yes/no"."""
    lowers = [t.lower for t in words]
    for i, word in enumerate(lowers):
        kind = WH.get(word)
        if kind is None:
            continue
        following = lowers[i + 1] if i + 1 < len(lowers) else ""
        if kind == "how" and following in QUANTITY:
            return f"how {following}"
        if kind == "what" and MANNER_NOUNS & set(lowers[i + 1 : i + 6]):
            return "how"
        return kind
    return "yes/no" if lowers and lowers[0] in MOODS else "statement"


def _mood(words: list[Token], question: str) -> str:
    """The class of the first auxiliary verb; "how-to" for any of do/can/should after "how"."""
    for token in words:
        mood = MOODS.get(token.lower)
        if mood is not None:
            return "how-to" if question == "how" and mood in HOW_TO_MOODS else mood
    return ""


def _is_content(token: Token) -> bool:
    lower = token.lower
    return (
        lower not in STOPWORDS
        and lower not in NEGATIONS
        and lower not in DEGREE_WORDS
        and token.number is None
        and lower not in UNITS
        and not (len(lower) == 1 and not token.entity)
    )


def _question_kind(a: Profile, b: Profile) -> str:
    if a.question != b.question:
        return f"question kinds differ: {a.question} and {b.question}"
    if a.mood and b.mood and a.mood != b.mood:
        return f"moods differ: {a.mood or 'none'} and {b.mood or 'none'}"
    return ""


def _persons(a: Profile, b: Profile) -> str:
    if a.persons == b.persons or (_generic_how_to(a) and _generic_how_to(b)):
        return ""
    return "asked about someone else"


def _generic_how_to(p: Profile) -> bool:
    """ "How do I ...", "How do you ...", "how to ...": the person is anyone; it does not matter."""
    return p.question == "how" and p.mood in ("how-to", "") and "first plural" not in p.persons


def _symbols(a: Profile, b: Profile) -> str:
    return "" if a.symbols == b.symbols else "symbols differ"


def _numbers(a: Profile, b: Profile) -> str:
    return "" if a.numbers == b.numbers else "numbers differ"


def _negation(a: Profile, b: Profile) -> str:
    return "" if a.negations == b.negations else "negation differs"


def _units(a: Profile, b: Profile) -> str:
    return "" if a.units == b.units else "units differ"


def _degree(a: Profile, b: Profile) -> str:
    return "" if a.degree == b.degree else "comparatives differ"


def _antonyms(a: Profile, b: Profile) -> str:
    only_a, only_b = a.lowers - b.lowers, b.lowers - a.lowers
    for x in only_a:
        for y in only_b:
            if frozenset((x, y)) in ANTONYMS:
                return f"opposites: {x!r} and {y!r}"
    return ""


def _entities(a: Profile, b: Profile) -> str:
    for mine, other in ((a, b), (b, a)):
        for entity in mine.entities:
            if entity not in other.lowers:
                return f"entity {entity!r} unmatched"
    return ""


def _unmatched(a: Profile, b: Profile) -> tuple[Counter[str], Counter[str]]:
    """Content words (with repeats) of each side that the other side lacks."""
    ca = Counter(t.stem for t in a.words if t.stem in a.content)
    cb = Counter(t.stem for t in b.words if t.stem in b.content)
    return ca - cb, cb - ca


def _content(a: Profile, b: Profile) -> str:
    only_a, only_b = _unmatched(a, b)
    if bool(only_a) != bool(only_b):
        extra = sorted(only_a or only_b)
        return f"words only on one side: {', '.join(extra)}"
    return ""


def _order(a: Profile, b: Profile) -> str:
    """Two shared words in opposite orders, with words between them that are not a list."""
    seq_a, seq_b = _sequence(a), _sequence(b)
    position_b = {w: i for i, w in enumerate(seq_b)}
    shared = [w for w in seq_a if w in position_b]
    for i, x in enumerate(shared):
        for y in shared[i + 1 :]:
            if position_b[x] < position_b[y]:
                continue
            gap_a, gap_b = _gap(a, x, y), _gap(b, y, x)
            if gap_a and gap_b and not (_is_list(gap_a) and _is_list(gap_b)):
                return f"order of {x!r} and {y!r} swapped"
    return ""


def _sequence(p: Profile) -> list[str]:
    """Content words, numbers and units in order of first appearance."""
    seen: dict[str, None] = {}
    for i, t in enumerate(p.words):
        if t.stem in p.content or t.number is not None or _unit_at(p, i) is not None:
            seen.setdefault(t.stem, None)
    return list(seen)


def _unit_at(p: Profile, i: int) -> str | None:
    return _unit(p.words[i].lower, p.words[i - 1].lower if i else "")


def _gap(p: Profile, first: str, second: str) -> list[str]:
    """The words between the first ``first`` and the next ``second`` after it."""
    stems = [t.stem for t in p.words]
    start = stems.index(first)
    if second not in stems[start + 1 :]:
        return []
    end = stems.index(second, start + 1)
    return [t.lower for t in p.words[start + 1 : end]]


def _is_list(gap: list[str]) -> bool:
    """Words joined as a list ("X and Y", "X or Y", "X vs Y"), where order does not matter."""
    return bool(COORDINATORS & set(gap)) and not (DIRECTIONAL & set(gap))


_CHECKS = (
    _question_kind, _persons, _symbols, _numbers, _negation, _units, _degree, _antonyms,
    _entities, _content, _order,
)
