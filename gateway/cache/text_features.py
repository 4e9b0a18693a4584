"""Reading a text for the guards: tokens, lemmas and the features compared, as a ``Profile``.

``profile(text)`` normalises the text (NFKC; a topic label before the question, "Life Advice:
...", dropped; contractions expanded; dotted abbreviations joined, "U.S." -> "US"; a free-standing
"&" read as "and"), splits it into sentences and words (codes like "rs1000" or "32GB" into their
letter and digit runs; words offered as alternatives, "stay/visit", grouped) and collects:

- lemmas (``stem``, a light lemmatizer: inflections and British/US spellings meet, "organised" =
  "organized", "becoming" = "become");
- numbers in order (digits, number words and ordinals agree: "one month" = "1 month", "3rd" ->
  "#3"), units and currencies in order (a bare "m" or "h" only after a number), the count of
  negations ("whether or not", "why or why not" and "if not" are none), degree words;
- content words: function words, hedges ("ever", "actually", "currently") and light verbs
  ("make", "get", "become") carry no content;
- named entities (capitalised or mixed-case words, acronyms, codes; not the capitals of a
  headline or of a function word) and the runs of capitalised words an acronym may abbreviate;
- operator symbols (C++ vs C#), persons (I / you / one / we), and what is asked (``questions``).

A profile is computed once per text and may be reused (``semantic_cache`` keeps those of the
stored texts it compared last); ``guards.compare`` decides which differences matter. Pure
functions over the word lists in ``lexicon``: no I/O, no state but ``stem``'s memo.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from gateway.cache.lexicon import (
    BARE_UNITS,
    DEGREE,
    DIFFERENCE_WORDS,
    LIGHT_VERBS,
    LIGHT_WORDS,
    NEGATIONS,
    NUMBER_WORDS,
    ORDINALS,
    PERSONS,
    STOPWORDS,
    UNITS,
    WH,
)
from gateway.cache.questions import (
    asks_answerer,
    question_kinds,
    question_mood,
    request_frame_end,
)
from gateway.cache.tokens import Token

_WORD = re.compile(r"[^\W_]+(?:[.,]\d+)*|[$€£¥₹%°]")
# Operators and the marks of names like C++ and C#: "+" and "#" change what is asked.
_SYMBOL = re.compile(r"[+#*/=<>&|^~@{}\[\]\\`]")
_ALNUM_PART = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+|[$€£¥₹%°]")
_ORDINAL_SUFFIX = re.compile(r"^(\d+)(st|nd|rd|th)$")
_HEADING = re.compile(r"\s*((?:[^\W\d_]+\s+){0,3}[^\W\d_]+)\s*:\s+(?=[^\W\d_])")
_SENTENCE_END = re.compile(r"[?!]+|[.;:](?=\s|$)|\n")
# "U.S." -> "US", "M.D" -> "MD": dotted abbreviations are one word.
_DOTTED = re.compile(r"\b[^\W\d_](?:\.[^\W\d_])+\b\.?")
# "word/word" offers alternatives and a free-standing "&" is "and": no operators there.
_SLASH_OR = re.compile(r"(?<=[^\W\d_])\s*/\s*(?=[^\W\d_])")
_FREE_AMPERSAND = re.compile(r"\s&\s")
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
# British spellings onto American ones, applied to whole lowercase words before stemming.
_SPELLINGS = (
    (re.compile(r"(?<=[^\W\d_]{2})our(?=s?$|ed$|ing$|ite$|ites$|able$)"), "or"),  # colour
    (re.compile(r"(?<=[^\W\d_]{3})is(e|es|ed|ing|ation|ations)$"), r"iz\1"),  # organise
    (re.compile(r"(?<=[^\W\d_]{2})ys(e|es|ed|ing)$"), r"yz\1"),  # analyse
    (re.compile(r"(?<=[^\W\d_]{3})(t|b)re(s?)$"), r"\1er\2"),  # centre, fibre
    (re.compile(r"(?<=[^\W\d_]{3})ogue(s?)$"), r"og\1"),  # catalogue
    (re.compile(r"(?<=[^\W\d_]{3}[aeiou])ll(ed|ing|er|ers)$"), r"l\1"),  # travelled
)
_VOWEL = re.compile(r"[aeiouy]")
# Words that carry no content (the guards also skip them when they compare word order).
NOT_CONTENT = STOPWORDS | LIGHT_WORDS | LIGHT_VERBS


@dataclass(frozen=True, slots=True)
class Profile:
    """What the guards compare, computed once per text."""

    words: tuple[Token, ...]
    stems: tuple[str, ...]
    numbers: tuple[str, ...]
    negations: int
    units: tuple[str, ...]
    degree: frozenset[str]  # degree words as base forms ("fastest" -> "fast", "more" -> "more")
    content: frozenset[str]
    light_verbs: frozenset[str]
    entities: frozenset[str]
    lowers: frozenset[str]
    question: str  # the kind of the main question
    kinds: frozenset[str]  # every kind asked, in any sentence or joined ("where and how")
    asked: frozenset[str]  # the questions asked outright: each sentence's, and joined ones
    mood: str
    symbols: tuple[str, ...]
    persons: frozenset[str]
    acronyms: frozenset[str]  # all-capital words, lowercased
    expansions: tuple[tuple[str, frozenset[str]], ...]  # initials -> the stems they abbreviate
    answerer: bool  # asks about the one answering ("your favourite", "have you ever")


def profile(text: str) -> Profile:
    """Tokenize ``text`` and collect what ``guards.compare`` checks."""
    text = _normalize(text)
    words = _tokens(text)
    numbers: list[str] = []
    units: list[str] = []
    for i, token in enumerate(words):
        if token.number is not None:
            numbers.append(token.number)
        elif (unit := unit_of(token.lower, words[i - 1] if i else None)) is not None:
            units.append(unit)
    question, kinds, sentence, asked = question_kinds(words)
    asking = words[request_frame_end(words):]  # "Can you tell me": not the question's persons
    return Profile(
        words=tuple(words),
        stems=tuple(t.stem for t in words),
        numbers=tuple(numbers),
        negations=_negations(words),
        units=tuple(units),
        degree=frozenset(DEGREE[t.lower] for t in words if t.lower in DEGREE),
        content=frozenset(t.stem for i, t in enumerate(words)
                          if _is_content(t, words[i - 1] if i else None)),
        light_verbs=frozenset(t.stem for t in words if t.stem in _LIGHT_VERB_STEMS),
        entities=frozenset(t.stem for t in words if t.entity),
        lowers=frozenset(t.lower for t in words) | frozenset(t.stem for t in words),
        question=question,
        kinds=kinds,
        asked=asked,
        mood=question_mood(words, question, sentence),
        symbols=tuple(sorted(_SYMBOL.findall(_SLASH_OR.sub(" ", text) if "/" in text else text))),
        persons=frozenset(PERSONS[t.lower] for t in asking
                          if t.lower in PERSONS and not (len(t.raw) > 1 and t.raw.isupper())),
        acronyms=frozenset(t.lower for t in words if len(t.raw) > 1 and t.raw.isupper()),
        expansions=_expansions(words),
        answerer=asks_answerer(asking),
    )


# -- tokens ------------------------------------------------------------------------------------

def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    if ":" in text[:48]:
        text = _drop_heading(text)
    if "'" in text or "’" in text or "annot" in text:
        for pattern, replacement in _CONTRACTIONS:
            text = pattern.sub(replacement, text)
    if "." in text:
        text = _DOTTED.sub(lambda m: m.group(0).replace(".", ""), text)
    if "&" in text:
        text = _FREE_AMPERSAND.sub(" and ", text)
    return text


def _drop_heading(text: str) -> str:
    """A topic label before the question ("Life Advice: How can I ...") is not part of it."""
    match = _HEADING.match(text)
    if match is None:
        return text
    words = match.group(1).split()
    if all(w[0].isupper() or w.lower() in STOPWORDS for w in words):
        return text[match.end() :]
    return text


def _tokens(text: str) -> list[Token]:
    out: list[Token] = []
    start = 0
    sentence = 0
    spans = [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]
    for end in spans:
        part = text[start:end]
        start = end
        found = list(_WORD.finditer(part))
        raw = _split_alnum([m.group() for m in found])
        if not raw:
            continue
        alternatives = _alternatives(part, found) if "/" in part and len(raw) == len(found) else {}
        title_case = _is_title_case(raw)
        for i, word in enumerate(raw):
            lower = word.lower()
            entity = _looks_like_entity(word, lower, i == 0, title_case)
            out.append(Token(word, lower, stem(lower), entity, _number(lower, raw, i), sentence,
                             alternatives.get(i, 0)))
        sentence += 1
    return out


def _alternatives(text: str, found: list[re.Match[str]]) -> dict[int, int]:
    """Words joined by slashes ("stay/visit", "dead/dying"): index -> group number."""
    groups: dict[int, int] = {}
    for i in range(1, len(found)):
        between = text[found[i - 1].end() : found[i].start()]
        if between.strip() == "/" and found[i - 1].group().isalpha() and found[i].group().isalpha():
            groups[i] = groups.setdefault(i - 1, i)
    return groups


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


def _looks_like_entity(word: str, lower: str, sentence_start: bool, title_case: bool) -> bool:
    if word == lower or not word.isalpha() or word == "I":
        return False
    if word[1:] != lower[1:]:
        return True  # "NASA", "iPhone", "McDonald"
    if lower in NOT_CONTENT or lower in DEGREE or lower in WH:
        return False  # "Best", "Ever": a capital on a function word names nothing
    return word[0].isupper() and not sentence_start and not title_case


def _expansions(words: list[Token]) -> tuple[tuple[str, frozenset[str]], ...]:
    """Runs of two to five capitalised words by their initials ("United States" -> "us"), for
    an acronym on the other side to match."""
    out: list[tuple[str, frozenset[str]]] = []
    run: list[Token] = []
    for t in [*words, None]:
        if t is not None and t.raw[0].isupper() and t.lower not in NOT_CONTENT:
            run.append(t)
            continue
        for length in range(2, min(len(run), 5) + 1):
            for i in range(len(run) - length + 1):
                part = run[i : i + length]
                out.append(("".join(w.lower[0] for w in part), frozenset(w.stem for w in part)))
        run = []
    return tuple(out)


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light English lemmatizer: British spelling, plurals, then -ing, -ed, -ly, and a final
    -e, a doubled consonant and -y/-i folded, so inflections and spellings meet."""
    if len(word) <= 2 or not word.isalpha():
        return word
    for pattern, replacement in _SPELLINGS:
        word = pattern.sub(replacement, word)
    base = _strip(_strip(word, _PLURALS), _ENDINGS)
    if base.endswith("e") and len(base) >= 3:
        base = base[:-1]
    if len(base) > 3 and base[-1] == base[-2] and base[-1] not in "aeiouls":
        base = base[:-1]
    if base.endswith("y") and len(base) > 3:
        base = base[:-1] + "i"
    return base


def _strip(word: str, suffixes: tuple[tuple[str, str, int], ...]) -> str:
    for suffix, replacement, minimum in suffixes:
        if word.endswith(suffix) and len(word) - len(suffix) >= minimum:
            rest = word[: len(word) - len(suffix)]
            if suffix in ("ing", "ed") and (not _VOWEL.search(rest) or rest.endswith("e")):
                return word  # "string", "need": not inflections
            return rest + replacement
    return word


_PLURALS = (
    ("ies", "y", 2), ("sses", "ss", 2), ("xes", "x", 2), ("ches", "ch", 2), ("shes", "sh", 2),
    ("ss", "ss", 2), ("us", "us", 2), ("is", "is", 2), ("s", "", 3),
)
_ENDINGS = (
    ("ingly", "", 3), ("ing", "", 2), ("edly", "", 3), ("ed", "", 2), ("ly", "", 5),
)


def _number(word: str, words: list[str], i: int) -> str | None:
    if word[0].isdigit():
        ordinal = _ORDINAL_SUFFIX.match(word)
        if ordinal:
            return "#" + ordinal.group(1)
        return _canonical_number(word)
    if word in NUMBER_WORDS:
        return _canonical_number(str(NUMBER_WORDS[word]))
    if word in ORDINALS:
        return f"#{ORDINALS[word]}"
    if word == "one" and i + 1 < len(words) and words[i + 1].lower() in UNITS:
        return "1"  # "one month" = "1 month"; elsewhere "one" is mostly a pronoun
    return None


# The same as stems, so inflected forms ("making", "got") carry none either.
LIGHT_STEMS = frozenset(stem(w) for w in LIGHT_WORDS | LIGHT_VERBS)
_LIGHT_VERB_STEMS = frozenset(stem(w) for w in LIGHT_VERBS)


def _canonical_number(digits: str) -> str:
    plain = digits.replace(",", "")
    try:
        value = float(plain)
    except ValueError:
        return plain
    return str(int(value)) if value.is_integer() else str(value)


def unit_of(word: str, previous: Token | None) -> str | None:
    """The unit or currency ``word`` names; a bare one ("m", "h", "days") only after a number."""
    unit = UNITS.get(word)
    if unit is None:
        return None
    if word in BARE_UNITS and (previous is None or previous.number is None):
        return None
    return unit


def _negations(words: list[Token]) -> int:
    """Negation words, except "or not" ("whether or not"), "why not" after "or" ("Why or why
    not?") and "if not": they add the other alternative, they do not negate the question."""
    count = 0
    for i, t in enumerate(words):
        if t.lower not in NEGATIONS:
            continue
        before = words[i - 1].lower if i else ""
        if t.lower == "not" and (before in ("or", "if") or (
                before == "why" and i > 1 and words[i - 2].lower == "or")):
            continue
        count += 1
    return count


def _is_content(token: Token, previous: Token | None) -> bool:
    lower = token.lower
    if lower == "time" and previous is not None and previous.lower == "all":
        return False  # "of all time", "all the time": a hedge like "ever"
    return (
        lower not in STOPWORDS
        and lower not in NOT_CONTENT
        and token.stem not in LIGHT_STEMS
        and lower not in NEGATIONS
        and lower not in DEGREE
        and lower not in DIFFERENCE_WORDS
        and token.number is None
        and lower not in UNITS
        and not (len(lower) == 1 and not token.entity)
    )
