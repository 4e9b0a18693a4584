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
lemmas (``text_features``): inflections, British/US spellings, contractions, number words and
digits agree; words offered as alternatives ("stay/visit") match if one does; a topic label ("Life
Advice: ...") is dropped; function words, hedges ("ever", "actually", "currently") and light verbs
("make", "get", "become") carry no content; words that only frame a question both sides ask
("the height of" / "How tall", "the number of" / "How many") are not counted (``frames``).

Texts are read once into a ``text_features.Profile`` (what is asked: ``questions``); ``compare``
takes profiles or texts. The word lists (``lexicon``) are general English, not tuned to any data
set; the margins are the only fitted numbers (``MARGINS``, fitted on half of the QQP pairs, see
``bench/eval_cache.py``). Pure functions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gateway.cache.frames import frame_words
from gateway.cache.lexicon import ANTONYMS, COORDINATORS, DIRECTIONAL
from gateway.cache.text_features import LIGHT_STEMS, NOT_CONTENT, Profile, profile, stem, unit_of
from gateway.cache.tokens import Token


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the guards let a pair through, and at what cost.

    ``margin``: the cosine similarity the pair needs above the threshold for its soft
    differences (listed in ``reason`` when it passes), ``MARGINS`` weighted by ``differences``
    (how many of each kind); ``substituted``: content words unmatched on either side;
    ``score``: what the serving rule compared with its threshold (``rule.Rule.judge``).
    """

    ok: bool
    reason: str = ""
    substituted: int = 0
    margin: float = 0.0
    differences: tuple[tuple[str, int], ...] = ()
    score: float = 0.0


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
    frame = frame_words(pa, pb)
    only_a, only_b = only_a - frame, only_b - frame
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


# antonyms as written and as stems ("advantages" / "disadvantages")
_OPPOSITES = ANTONYMS | frozenset(
    frozenset(stem(w) for w in pair) for pair in ANTONYMS if len({stem(w) for w in pair}) == 2
)


# Opposites that carry content (not "to"/"from", "in"/"out": the order guard reads those).
_POLAR_PAIRS = frozenset(pair for pair in ANTONYMS
                         if not any(w in DIRECTIONAL or w in NOT_CONTENT - {"best"} for w in pair))


# -- the checks --------------------------------------------------------------------------------

def _question_kind(a: Profile, b: Profile, soft: list[tuple[str, str]]) -> str:
    if a.asked and b.asked and a.asked != b.asked and max(len(a.asked), len(b.asked)) > 1:
        return "a second question is asked on one side"
    if a.question != b.question:
        if a.question == "statement" or b.question == "statement":
            soft.append(("frame", "one question is elliptic"))
        elif a.asked == b.asked:
            soft.append(("frame", "the same questions in another order"))
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


def _first_of(p: Profile, x: str, y: str) -> str:
    """Which of two opposites ``p`` says first."""
    for t in p.words:
        if t.lower in (x, y):
            return t.lower
    return ""


def _antonyms(a: Profile, b: Profile, soft: list[tuple[str, str]]) -> str:
    only_a, only_b = a.lowers - b.lowers, b.lowers - a.lowers
    for x in only_a:
        for y in only_b:
            if frozenset((x, y)) in _OPPOSITES:
                return f"opposites: {x!r} and {y!r}"
    # Both opposites on both sides, in the other order: "the best for beginners and the worst
    # for experts" is not "the worst for beginners and the best for experts".
    for pair in _POLAR_PAIRS:
        x, y = sorted(pair)
        if {x, y} <= a.lowers and {x, y} <= b.lowers and _first_of(a, x, y) != _first_of(b, x, y):
            return f"opposites swapped: {x!r} and {y!r}"
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
    (noun-phrase reshuffles) are a soft difference. "Who influenced Beethoven?" asks for the
    subject, "Who did Beethoven influence?" for the object: refused too."""
    if a.question in _SUBJECT_KINDS and a.question == b.question and _roles_swapped(a, b):
        return "subject and object of the question swapped"
    if _pronoun_case_swapped(a, b):
        return "a person is the subject on one side and the object on the other"
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
            if _swapped(a, b, gap_a, gap_b):
                return f"order of {x!r} and {y!r} swapped"
            reordered = reordered or f"{x!r} and {y!r} reordered"
    if reordered:
        soft.append(("frame", reordered))
    return ""


_SUBJECT_KINDS = frozenset({"who", "what"})
_DO_SUPPORT = frozenset({"do", "does", "did"})


def _after_question_word(p: Profile) -> Token | None:
    for i, t in enumerate(p.words[:-1]):
        if t.lower in ("who", "whom", "what"):
            return p.words[i + 1]
    return None


def _roles_swapped(a: Profile, b: Profile) -> bool:
    """ "Who influenced Beethoven?" asks the subject of "influence", "Who did Beethoven
    influence?" its object: one side's verb follows the question word, the other's takes
    do-support, and the verb is the same ("What does X mean?" / "What is the meaning of X?" is
    no swap)."""
    for direct, other in ((a, b), (b, a)):
        verb, aux = _after_question_word(direct), _after_question_word(other)
        if verb is not None and aux is not None and aux.lower in _DO_SUPPORT \
                and verb.stem in direct.content and verb.stem in other.content:
            return True
    return False


# a person's subject and object forms ("her" is left out: it is also a possessive)
_CASES = (("i", "me"), ("we", "us"), ("he", "him"), ("they", "them"))
_ONE_CLAUSE_WORDS = 12


def _pronoun_case_swapped(a: Profile, b: Profile) -> bool:
    """ "Does my landlord owe me money?" / "Do I owe my landlord money?": the same content words,
    and a person is only the object on one side and only the subject on the other. Only in
    short questions: in a longer one the pronouns may belong to different clauses ("photos ...
    so that they are not lost" / "back them up")."""
    if a.content != b.content or max(len(a.words), len(b.words)) > _ONE_CLAUSE_WORDS:
        return False
    wa, wb = a.lowers, b.lowers
    return any((obj in wa and subj not in wa and subj in wb and obj not in wb)
               or (subj in wa and obj not in wa and obj in wb and subj not in wb)
               for subj, obj in _CASES)


def _swapped(a: Profile, b: Profile, gap_a: list[Token], gap_b: list[Token]) -> bool:
    """Whether two words changed places around one relation: close together on both sides, or
    far apart with mostly the same words between (a clause moved to the other end of a long
    question reorders words, not roles), joined by
    the same content word, by directional words that do not mirror each other ("Earth to the
    Moon" = "the Moon from Earth"), or, in a yes/no question, by the same words ("Is a square a
    rectangle?")."""
    rel_a, rel_b = _relation(gap_a), _relation(gap_b)
    if max(len(gap_a), len(gap_b)) > _NEAR:
        # Far apart: the same relation only when the words between are mostly the same
        # ("conservatives sympathize with Israel" / "liberals sympathize with Palestine");
        # a clause moved to the other end puts other words between them.
        return len(rel_a & rel_b) * 2 > len(rel_a | rel_b)
    if rel_a & rel_b:
        return True
    dir_a = DIRECTIONAL & {t.lower for t in gap_a}
    dir_b = DIRECTIONAL & {t.lower for t in gap_b}
    if dir_a and dir_b:
        return {frozenset(dir_a), frozenset(dir_b)} != _MIRRORED
    same = [t.lower for t in gap_a] == [t.lower for t in gap_b]
    return same and a.question == b.question == "yes/no"


_NEAR = 4  # words between two that hold one relation ("Mac connect to a Windows")
_MIRRORED = {frozenset({"to"}), frozenset({"from"})}


def _relation(gap: list[Token]) -> set[str]:
    return {t.stem for t in gap if t.lower not in NOT_CONTENT and t.stem not in LIGHT_STEMS
            and t.number is None}


def _sequence(p: Profile) -> list[str]:
    """Content words, numbers and units in order of first appearance."""
    seen: dict[str, None] = {}
    for i, t in enumerate(p.words):
        if t.stem in p.content or t.number is not None or _unit_at(p, i) is not None:
            seen.setdefault(t.stem, None)
    return list(seen)


def _unit_at(p: Profile, i: int) -> str | None:
    return unit_of(p.words[i].lower, p.words[i - 1] if i else None)


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
