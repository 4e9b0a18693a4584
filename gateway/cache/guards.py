"""Guards against false hits: lexical checks a semantic candidate must pass before it is served.

Sentence embeddings score near-duplicates that differ in meaning higher than true paraphrases
("How do I reset my password?" / "How do I not reset my password?" 0.93 against "How can I change
my password?" 0.86). Meaning-changing differences are usually small and visible in the words, so
``compare(stored, asked)`` returns a ``Verdict``: refused outright, or allowed with a ``margin``,
the extra cosine similarity the pair needs above the threshold (``accept`` serves a candidate
when ``cosine - margin >= threshold``).

Refused (hard guards; the differences that change the answer):

- the kind of question (who / what / where / when / why / how / how many / yes-no), after the
  paraphrases of a kind are folded together ("What is the best way to" and "What should I do to"
  ask how; "What year" asks when; "What is the difference" = "How do X and Y differ");
  for yes/no questions advice ("Should I") against any other auxiliary and past against present;
  past against future always;
- a question about the one answering ("your favourite", "have you ever") against one that is not;
- operator symbols (C++ vs C#), numbers in order (digits, number words, ordinals: "rs1000" and
  "1000 rs" agree, "one month" = "1 month"), negation by count (not, n't, never, no, without ...;
  "whether or not" is no negation), units and currencies in order (km vs miles, $ vs €);
- comparatives: another degree word (faster vs slower, more vs less; bigger = larger = greater);
- antonyms (for/against, rise/fall, north/south, buy/sell, he/she, ...), also as lemmas;
- named entities (capitalised or mixed-case words, acronyms, codes): none may be unmatched
  (an acronym matches the initials of the words it stands for: "RSS" = "Rashtriya Swayamsevak
  Sangh", "U.S." = "US");
- lists: a list with a member the other side lacks ("writing and speaking skills" vs "writing
  skills");
- order: two shared words swapped around the same relation ("Did Germany invade France?" vs
  "Did France invade Germany?", "cat bigger than dog" vs "dog bigger than cat"); lists ("X and
  Y") and noun-phrase reshuffles ("India's national language" = "the national language of
  India") may be reordered.

Allowed with a margin (soft differences, each costs cosine, ``MARGINS``): a content word only one
side has (a more specific question), a substitution ("reset" for "change"), a different person
outside how-to questions (I / you / one / we, none of them the one answering), and "frame"
differences: a question kind folded from another sentence or an elliptic one ("Make money
online?"), why vs yes/no, a different auxiliary where it does not change the question, a
noun-phrase reshuffle, an intensifier ("more self-aware" vs "self-aware"). Words are compared as
lemmas: inflections, British/US spellings, contractions, number words and digits agree; words
offered as alternatives ("stay/visit") match if one does; a topic label ("Life Advice: ...") is
dropped; function words, hedges ("ever", "actually", "currently") and light verbs ("make", "get",
"become") carry no content.

The word lists (``lexicon``) are general English, not tuned to any data set; the margins are the
only fitted numbers (``MARGINS``, fitted on half of the QQP pairs, see ``bench/eval_cache.py``).
``profile(text)`` may be computed once per text and reused. Pure functions.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

from gateway.cache.lexicon import (
    ANSWERER_WORDS,
    ANTONYMS,
    BARE_UNITS,
    COORDINATORS,
    DEGREE,
    DIFFERENCE_WORDS,
    DIRECTIONAL,
    EMBEDDING_VERBS,
    HOW_TO_MOODS,
    LIGHT_VERBS,
    LIGHT_WORDS,
    MANNER_NOUNS,
    MOODS,
    NEGATIONS,
    NUMBER_WORDS,
    ORDINALS,
    PERSONS,
    PLACE_NOUNS,
    QUANTITY,
    REASON_NOUNS,
    REQUEST_VERBS,
    STOPWORDS,
    TIME_NOUNS,
    UNITS,
    WH,
)

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
_NOT_CONTENT = STOPWORDS | LIGHT_WORDS | LIGHT_VERBS
_WAYS = MANNER_NOUNS | {"anyway", "anyways"}


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
    mood: str
    symbols: tuple[str, ...]
    persons: frozenset[str]
    acronyms: frozenset[str]  # all-capital words, lowercased
    expansions: tuple[tuple[str, frozenset[str]], ...]  # initials -> the stems they abbreviate
    answerer: bool  # asks about the one answering ("your favourite", "have you ever")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the guards let a pair through, and at what cost.

    ``margin``: the cosine similarity the pair needs above the threshold for its soft
    differences (listed in ``reason`` when it passes), ``MARGINS`` weighted by ``differences``
    (how many of each kind); ``substituted``: content words unmatched on either side.
    """

    ok: bool
    reason: str = ""
    substituted: int = 0
    margin: float = 0.0
    differences: tuple[tuple[str, int], ...] = ()


ACCEPT = Verdict(True)

# The scoring rule: a pair is served when cosine - margin >= threshold, the margin being the
# sum of these costs over its soft differences. Fitted on the tuning half of the QQP pairs
# (``bench/eval_cache.py``, ``calibration.fit_margins``); the threshold is fitted separately
# (``gateway cache fit``).
MARGINS: Mapping[str, float] = MappingProxyType({
    "added": 0.05,  # per content word only one side has: a more specific question
    "substituted": 0.0,  # per content word replaced by another ("reset" for "change")
    "person": 0.04,  # I / you / one / we differ, none of them the one answering
    "frame": 0.0,  # question folded, auxiliary, word order or intensifier differ
})


def margin(differences: tuple[tuple[str, int], ...],
           margins: Mapping[str, float] = MARGINS) -> float:
    """The extra cosine ``differences`` cost under ``margins``."""
    return round(sum(margins[kind] * count for kind, count in differences), 6)


def profile(text: str) -> Profile:
    """Tokenize ``text`` and collect what ``compare`` checks."""
    text = _normalize(text)
    words = _tokens(text)
    numbers: list[str] = []
    units: list[str] = []
    for i, token in enumerate(words):
        if token.number is not None:
            numbers.append(token.number)
        elif (unit := _unit(token.lower, words[i - 1] if i else None)) is not None:
            units.append(unit)
    question, kinds, sentence = _questions(words)
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
        mood=_mood(words, question, sentence),
        symbols=tuple(sorted(_SYMBOL.findall(_SLASH_OR.sub(" ", text) if "/" in text else text))),
        persons=frozenset(PERSONS[t.lower] for t in words
                          if t.lower in PERSONS and not (len(t.raw) > 1 and t.raw.isupper())),
        acronyms=frozenset(t.lower for t in words if len(t.raw) > 1 and t.raw.isupper()),
        expansions=_expansions(words),
        answerer=_asks_answerer(words),
    )


def compare(a: Profile | str, b: Profile | str) -> Verdict:
    """Whether an answer to ``a`` may be served for ``b``: refused with the first hard reason,
    or allowed with the margin its soft differences cost."""
    pa = a if isinstance(a, Profile) else profile(a)
    pb = b if isinstance(b, Profile) else profile(b)
    soft: list[tuple[str, str]] = []
    for check in _CHECKS:
        reason = check(pa, pb, soft)
        if reason:
            return Verdict(False, reason)
    only_a, only_b = _unmatched(pa, pb)
    na, nb = len(only_a), len(only_b)
    # a light verb on the shorter side stands in for a content verb ("make" for "create")
    spare = len(pb.light_verbs - pa.light_verbs if na > nb else pa.light_verbs - pb.light_verbs)
    extra = abs(na - nb)
    counts = Counter(kind for kind, _ in soft)
    counts["substituted"] = min(na, nb) + min(spare, extra)
    counts["added"] = extra - min(spare, extra)
    if na or nb:
        soft.append(("words", f"words unmatched: {', '.join(sorted(only_a | only_b))}"))
    differences = tuple((kind, n) for kind, n in sorted(counts.items()) if n)
    return Verdict(True, "; ".join(text for _, text in soft), substituted=na + nb,
                   margin=margin(differences), differences=differences)


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
    if lower in _NOT_CONTENT or lower in DEGREE or lower in WH:
        return False  # "Best", "Ever": a capital on a function word names nothing
    return word[0].isupper() and not sentence_start and not title_case


def _expansions(words: list[Token]) -> tuple[tuple[str, frozenset[str]], ...]:
    """Runs of two to five capitalised words by their initials ("United States" -> "us"), for
    an acronym on the other side to match."""
    out: list[tuple[str, frozenset[str]]] = []
    run: list[Token] = []
    for t in [*words, None]:
        if t is not None and t.raw[0].isupper() and t.lower not in _NOT_CONTENT:
            run.append(t)
            continue
        for length in range(2, min(len(run), 5) + 1):
            for i in range(len(run) - length + 1):
                part = run[i : i + length]
                out.append(("".join(w.lower[0] for w in part), frozenset(w.stem for w in part)))
        run = []
    return tuple(out)


def _abbreviated(p: Profile, other: Profile) -> frozenset[str]:
    """The stems of ``p`` that an acronym of ``other`` stands for, and the acronyms' stems."""
    if not other.acronyms or not p.expansions:
        return frozenset()
    covered: set[str] = set()
    for initials, stems in p.expansions:
        if initials in other.acronyms:
            covered |= stems
            covered.add(initials)
    return frozenset(covered)


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


_LIGHT_STEMS = frozenset(stem(w) for w in LIGHT_WORDS | LIGHT_VERBS)
_LIGHT_VERB_STEMS = frozenset(stem(w) for w in LIGHT_VERBS)
# antonyms as written and as stems ("advantages" / "disadvantages")
_OPPOSITES = ANTONYMS | frozenset(
    frozenset(stem(w) for w in pair) for pair in ANTONYMS if len({stem(w) for w in pair}) == 2
)


def _canonical_number(digits: str) -> str:
    plain = digits.replace(",", "")
    try:
        value = float(plain)
    except ValueError:
        return plain
    return str(int(value)) if value.is_integer() else str(value)


def _unit(word: str, previous: Token | None) -> str | None:
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
        and lower not in _NOT_CONTENT
        and token.stem not in _LIGHT_STEMS
        and lower not in NEGATIONS
        and lower not in DEGREE
        and lower not in DIFFERENCE_WORDS
        and token.number is None
        and lower not in UNITS
        and not (len(lower) == 1 and not token.entity)
    )


# -- what is asked -----------------------------------------------------------------------------

def _questions(words: list[Token]) -> tuple[str, frozenset[str], int]:
    """The main question's kind (the first sentence that asks one), every kind asked (in any
    sentence, joined, or folded loosely), and the main question's sentence."""
    kinds: set[str] = set()
    main, main_sentence = "statement", -1
    sentence: list[str] = []
    for i, t in enumerate(words):
        sentence.append(t.lower)
        if i + 1 < len(words) and words[i + 1].sentence == t.sentence:
            continue
        first, more = _sentence_kinds(sentence)
        kinds |= more
        if main == "statement" and first != "statement":
            main, main_sentence = first, t.sentence
        kinds.add(first)
        sentence = []
    return main, frozenset(kinds), main_sentence


def _sentence_kinds(lowers: list[str]) -> tuple[str, set[str]]:
    """The kind one sentence asks, and the kinds it also asks ("where and how") or may ask
    ("What is the best place" may ask where)."""
    start = 0
    if lowers[0] in MOODS:
        # "Can you tell me how ...": an embedded question; otherwise a yes/no question.
        for i, word in enumerate(lowers[1:8], start=1):
            if word in WH and lowers[i - 1] in EMBEDDING_VERBS:
                start = i
                break
        else:
            if DIFFERENCE_WORDS.intersection(lowers[:9]):
                return "difference", set()
            return _yes_no_frame(lowers), set()
    for i in range(start, len(lowers)):
        wh = WH.get(lowers[i])
        if wh is None:
            continue
        kind, more = _fold(wh, lowers, i)
        j = i + 1  # "where and how", "why or how": more kinds joined to the first
        while j + 1 < len(lowers) and lowers[j] in COORDINATORS and lowers[j + 1] in WH:
            more.add(_fold(WH[lowers[j + 1]], lowers, j + 1)[0])
            j += 2
        return kind, more
    return "statement", set()


def _yes_no_frame(lowers: list[str]) -> str:
    """Yes/no questions that ask something else: "Is there any way to ..." asks how, "Can you
    recommend a ..." asks what."""
    if lowers[1:2] == ["there"]:
        for j in range(2, 5):
            if lowers[j : j + 2] and lowers[j] in _WAYS and lowers[j + 1 : j + 2] == ["to"]:
                return "how"
    if lowers[1:2] == ["you"] and lowers[2:3] and lowers[2] in REQUEST_VERBS:
        return "what"
    return "yes/no"


def _fold(kind: str, lowers: list[str], i: int) -> tuple[str, set[str]]:
    """Paraphrases of a kind onto one ("what is the best way to" -> how, "what year" -> when),
    and the kinds it may also be ("what is the best place" -> where)."""
    following = lowers[i + 1 : i + 7]
    if DIFFERENCE_WORDS.intersection(lowers[i : i + 9]):
        return "difference", set()
    nxt = following[0] if following else ""
    if kind == "how":
        if nxt in QUANTITY:
            return f"how {nxt}", set()
        if nxt in MOODS and "feel" in following[:3]:
            return "what", set()  # "How does it feel to be ..." = "What is it like to be ..."
        return kind, set()
    if kind == "what":
        return _fold_what(following)
    return kind, set()


def _fold_what(following: list[str]) -> tuple[str, set[str]]:
    if following and following[0] in TIME_NOUNS:
        return "when", set()  # "What year did ..."
    for j, word in enumerate(following[:5]):
        if word in MANNER_NOUNS and following[j + 1 : j + 2] in (["to"], ["for"], ["of"]):
            return "how", set()  # "What is the best way to ...", "What are some tips for ..."
    if " do to " in " " + " ".join(following) + " ":
        return "how", set()  # "What should I do to ...", "What can one do to ..."
    more = set()
    if PLACE_NOUNS.intersection(following[:5]):
        more.add("where")
    if REASON_NOUNS.intersection(following[:4]):
        more.add("why")
    return "what", more


def _mood(words: list[Token], question: str, sentence: int) -> str:
    """The class of the main question's first auxiliary; "how-to" for do/can/should after how."""
    for i, token in enumerate(words):
        if token.sentence != sentence:
            continue
        mood = MOODS.get(token.lower)
        if mood is None:
            continue
        after = " ".join(t.lower for t in words[i + 1 : i + 4])
        if after.startswith("going to") or " going to" in after:
            mood = "future"  # "Is it going to rain?" = "Will it rain?"
        return "how-to" if question == "how" and mood in HOW_TO_MOODS else mood
    return ""


def _asks_answerer(words: list[Token]) -> bool:
    """Whether the text asks about the one answering: "your favourite", "have you ever"."""
    for i, t in enumerate(words):
        if PERSONS.get(t.lower) == "second" and any(
            w.lower in ANSWERER_WORDS for w in words[max(i - 3, 0) : i + 4]
        ):
            return True
    return False


# -- the checks --------------------------------------------------------------------------------

def _question_kind(a: Profile, b: Profile, soft: list[tuple[str, str]]) -> str:
    if a.question != b.question:
        if a.question == "statement" or b.question == "statement":
            soft.append(("frame", "one question is elliptic"))
        elif (a.question in b.kinds or b.question in a.kinds
              or {a.question, b.question} == {"why", "yes/no"}):
            soft.append(("frame", f"question kinds overlap: {a.question} and {b.question}"))
        else:
            return f"question kinds differ: {a.question} and {b.question}"
    elif a.kinds != b.kinds:
        soft.append(("frame", "more is asked on one side"))
    if not (a.mood and b.mood) or a.mood == b.mood:
        return ""
    if a.question == b.question == "yes/no" and "advice" in (a.mood, b.mood):
        return f"moods differ: {a.mood} and {b.mood}"
    if "past" in (a.mood, b.mood) and (
            a.question == b.question == "yes/no" or "future" in (a.mood, b.mood)):
        return f"moods differ: {a.mood} and {b.mood}"
    soft.append(("frame", f"moods differ: {a.mood} and {b.mood}"))
    return ""


def _persons(a: Profile, b: Profile, soft: list[tuple[str, str]]) -> str:
    if a.answerer != b.answerer:
        return "asked about someone else"
    if a.persons != b.persons and not (_generic(a) and _generic(b)):
        soft.append(("person", "persons differ"))
    return ""


def _generic(p: Profile) -> bool:
    """ "How do I ...", "How can one ...", "how to ...": the person is anyone."""
    return p.question == "how" and p.mood in ("how-to", "")


def _symbols(a: Profile, b: Profile, soft: list[tuple[str, str]]) -> str:
    return "" if a.symbols == b.symbols else "symbols differ"


def _numbers(a: Profile, b: Profile, soft: list[tuple[str, str]]) -> str:
    return "" if a.numbers == b.numbers else "numbers differ"


def _negation(a: Profile, b: Profile, soft: list[tuple[str, str]]) -> str:
    return "" if a.negations == b.negations else "negation differs"


def _units(a: Profile, b: Profile, soft: list[tuple[str, str]]) -> str:
    return "" if a.units == b.units else "units differ"


def _degree(a: Profile, b: Profile, soft: list[tuple[str, str]]) -> str:
    """Another degree word refuses; "more"/"most" added, or a superlative whose plain form the
    other side has ("the easiest way" / "an easy way"), is a soft difference."""
    if a.degree == b.degree:
        return ""
    for mine, other in ((a, b), (b, a)):
        for base in mine.degree - other.degree:
            if base != "more" and base not in other.lowers:
                return "comparatives differ"
    soft.append(("frame", "degree differs"))
    return ""


def _antonyms(a: Profile, b: Profile, soft: list[tuple[str, str]]) -> str:
    only_a, only_b = a.lowers - b.lowers, b.lowers - a.lowers
    for x in only_a:
        for y in only_b:
            if frozenset((x, y)) in _OPPOSITES:
                return f"opposites: {x!r} and {y!r}"
    return ""


def _entities(a: Profile, b: Profile, soft: list[tuple[str, str]]) -> str:
    for mine, other in ((a, b), (b, a)):
        covered = _abbreviated(mine, other) | _abbreviated(other, mine)
        for entity in mine.entities:
            if entity not in other.lowers and entity not in covered:
                return f"entity {entity!r} unmatched"
    return ""


def _lists(a: Profile, b: Profile, soft: list[tuple[str, str]]) -> str:
    """A list on one side with a member the other side lacks: "writing and speaking skills"
    vs "writing skills", "weed and alcohol" vs "weed"."""
    for mine, other in ((a, b), (b, a)):
        words = mine.words
        for i in range(1, len(words) - 1):
            if words[i].lower not in COORDINATORS:
                continue
            x, y = words[i - 1], words[i + 1]
            if x.stem not in mine.content or y.stem not in mine.content:
                continue
            has_x, has_y = x.stem in other.lowers, y.stem in other.lowers
            if has_x != has_y:
                return f"list differs: {(y if has_x else x).stem!r} only on one side"
    return ""


def _unmatched(a: Profile, b: Profile) -> tuple[set[str], set[str]]:
    """Content words of each side that the other side lacks; an acronym and the words it
    stands for match, and of words offered as alternatives ("stay/visit") one match is enough."""
    covered = _abbreviated(a, b) | _abbreviated(b, a)
    return _lacking(a, b, covered), _lacking(b, a, covered)


def _lacking(p: Profile, other: Profile, covered: frozenset[str]) -> set[str]:
    lacking = {t.stem for t in p.words if t.stem in p.content and t.stem not in other.content
               and t.stem not in covered}
    if lacking and any(t.alternatives for t in p.words):
        for t in p.words:
            if t.alternatives and t.stem in other.content:
                lacking -= {w.stem for w in p.words if w.alternatives == t.alternatives}
    return lacking


def _order(a: Profile, b: Profile, soft: list[tuple[str, str]]) -> str:
    """Two shared words swapped around the same relation: a content word both gaps share, or a
    directional word (to, from, than, by, ...) in both. Lists may be reordered; other swaps
    (noun-phrase reshuffles) are a soft difference."""
    seq_a, seq_b = _sequence(a), _sequence(b)
    position_b = {w: i for i, w in enumerate(seq_b)}
    shared = [w for w in seq_a if w in position_b]
    reordered = ""
    for i, x in enumerate(shared):
        for y in shared[i + 1 :]:
            if position_b[x] < position_b[y]:
                continue
            gap_a, gap_b = _gap(a, x, y), _gap(b, y, x)
            if not (gap_a and gap_b) or (_is_list(gap_a) and _is_list(gap_b)):
                continue
            if _relation(gap_a) & _relation(gap_b) or (
                DIRECTIONAL & {t.lower for t in gap_a} and DIRECTIONAL & {t.lower for t in gap_b}
            ):
                return f"order of {x!r} and {y!r} swapped"
            reordered = reordered or f"{x!r} and {y!r} reordered"
    if reordered:
        soft.append(("frame", reordered))
    return ""


def _relation(gap: list[Token]) -> set[str]:
    return {t.stem for t in gap if t.lower not in _NOT_CONTENT and t.stem not in _LIGHT_STEMS
            and t.number is None}


def _sequence(p: Profile) -> list[str]:
    """Content words, numbers and units in order of first appearance."""
    seen: dict[str, None] = {}
    for i, t in enumerate(p.words):
        if t.stem in p.content or t.number is not None or _unit_at(p, i) is not None:
            seen.setdefault(t.stem, None)
    return list(seen)


def _unit_at(p: Profile, i: int) -> str | None:
    return _unit(p.words[i].lower, p.words[i - 1] if i else None)


def _gap(p: Profile, first: str, second: str) -> list[Token]:
    """The words between the first ``first`` and the next ``second`` after it."""
    stems = p.stems
    start = stems.index(first)
    try:
        end = stems.index(second, start + 1)
    except ValueError:
        return []
    return list(p.words[start + 1 : end])


def _is_list(gap: list[Token]) -> bool:
    """Words joined as a list ("X and Y", "X or Y", "X vs Y"), where order does not matter."""
    lowers = {t.lower for t in gap}
    return bool(COORDINATORS & lowers) and not (DIRECTIONAL & lowers)


_CHECKS = (
    _question_kind, _persons, _symbols, _numbers, _negation, _units, _degree, _antonyms,
    _entities, _lists, _order,
)
