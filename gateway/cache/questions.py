"""What a text asks: the kind of its main question, every kind it asks, its mood, and whether it
asks about the one answering.

Kinds: who / what / where / when / why / how / "how many" (and "how much", "how long" ...) /
yes-no / difference / statement, after the paraphrases of a kind are folded together ("What is
the best way to", "What should I do to" and "Is there any way to" ask how; "What year" asks when;
"What is the difference" = "How do X and Y differ"; "How does it feel" = "What is it like"; "Can
you recommend a" asks what; "What is the number of" asks how many; "What makes" asks why). An
embedded question ("Can you tell me how ...") is the question it embeds, and the persons of its
opening are not the question's (``request_frame_end``); "where and how" asks both; "What is the
best place" may also ask where. The mood is the class of the main question's first auxiliary
(``lexicon.MOODS``; "going to" is future), "how-to" for a fact, ability or advice one after how
("How do I", "How can I", "How should I").

Read into a ``text_features.Profile`` by ``profile``; ``guards`` decides which differences refuse a
pair. Pure functions over tokens and the word lists in ``lexicon``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.cache.lexicon import (
    ANSWERER_WORDS,
    CAUSE_VERBS,
    COORDINATORS,
    COPULAS,
    COUNT_NOUNS,
    DIFFERENCE_WORDS,
    DURATION_VERBS,
    EMBEDDING_VERBS,
    HOW_TO_MOODS,
    MANNER_NOUNS,
    MEASURE_ADJECTIVES,
    MEASURE_NOUNS,
    MEASURE_VERBS,
    MOODS,
    PERSONS,
    PLACE_NOUNS,
    QUANTITY,
    REASON_NOUNS,
    RELATIVE_ANTECEDENTS,
    REQUEST_FRAMES,
    REQUEST_VERBS,
    STOPWORDS,
    SUBJECTS,
    SUBORDINATORS,
    TIME_NOUNS,
    TIME_UNITS,
    WH,
)

if TYPE_CHECKING:  # annotations only: text_features imports this module to build a Profile
    from gateway.cache.tokens import Token


_WAYS = MANNER_NOUNS | {"anyway", "anyways"}
def question_kinds(words: list[Token]) -> tuple[str, frozenset[str], int, frozenset[str]]:
    """The main question's kind (the first sentence that asks one), every kind asked (in any
    sentence, joined, or folded loosely), the main question's sentence, and the questions asked
    outright: each sentence's own, and any second question joined to it ("..., and how much
    does it cost?")."""
    kinds: set[str] = set()
    asked: set[str] = set()
    main, main_sentence = "statement", -1
    sentence: list[str] = []
    for i, t in enumerate(words):
        sentence.append(t.lower)
        if i + 1 < len(words) and words[i + 1].sentence == t.sentence:
            continue
        first, more, joined = _sentence_kinds(sentence)
        kinds |= more | joined
        if main == "statement" and first != "statement":
            main, main_sentence = first, t.sentence
        kinds.add(first)
        if first != "statement":
            asked |= {first, *joined}
        sentence = []
    return main, frozenset(kinds), main_sentence, frozenset(asked)


def _sentence_kinds(lowers: list[str]) -> tuple[str, set[str], set[str]]:
    """The kind one sentence asks, the kinds it may also ask ("What is the best place" may ask
    where), and the questions joined to it ("where and how", "..., and can anything ...")."""
    start = _question_start(lowers)
    if start is None:
        if DIFFERENCE_WORDS.intersection(lowers[:9]):
            return "difference", set(), set()
        return _yes_no_frame(lowers), set(), _joined(lowers, 1)
    for i in range(start, len(lowers)):
        wh = WH.get(lowers[i])
        if wh is None or _relative(lowers, i):
            continue
        kind, more = _fold(wh, lowers, i)
        j, joined = i + 1, set()  # "where and how", "why or how": more kinds joined to the first
        while j + 1 < len(lowers) and lowers[j] in COORDINATORS and lowers[j + 1] in WH:
            joined.add(_fold(WH[lowers[j + 1]], lowers, j + 1)[0])
            j += 2
        return kind, more, joined | _joined(lowers, j)
    return "statement", set(), set()


def _question_start(lowers: list[str]) -> int | None:
    """Where a sentence's question word may be; None for a yes/no question. "Can you tell me
    how ..." and "Could you explain in simple terms how ..." embed the question they ask; "When
    working from home, what ..." opens with a subordinate clause, not a question."""
    if lowers[0] in MOODS:
        for i, word in enumerate(lowers[1:10], start=1):
            if word in WH and EMBEDDING_VERBS.intersection(lowers[1:i]):
                return i
        return None
    if lowers[0] in SUBORDINATORS and lowers[1:2] and lowers[1] not in MOODS:
        for j in range(2, len(lowers) - 1):
            if lowers[j] in WH and (lowers[j + 1] in MOODS or lowers[j + 1] in QUANTITY):
                return j
    return 0


def _relative(lowers: list[str], i: int) -> bool:
    """Whether the question word at ``i`` opens a relative clause ("someone who has ...")."""
    if i == 0:
        return False
    before = lowers[i - 1]
    if lowers[i] in ("who", "whom", "whose"):
        return before in RELATIVE_ANTECEDENTS or (before not in STOPWORDS
                                          and before not in EMBEDDING_VERBS)
    return lowers[i] in ("which", "where", "when") and before in RELATIVE_ANTECEDENTS


def _joined(lowers: list[str], start: int) -> set[str]:
    """Second questions joined further on: "and how much does it cost", "and can anything
    escape from it"."""
    joined = set()
    for k in range(start, len(lowers) - 2):
        if lowers[k] not in COORDINATORS:
            continue
        word, after = lowers[k + 1], lowers[k + 2]
        if word in WH and (after in MOODS or after in QUANTITY or after in MEASURE_ADJECTIVES
                           or WH[word] not in ("what", "who")):
            joined.add(_fold(WH[word], lowers, k + 1)[0])
        elif word in MOODS and after in SUBJECTS:
            joined.add("yes/no")
    return joined


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
        if measure := _measure(nxt, following):
            return measure, set()
        if nxt in QUANTITY:
            return f"how {nxt}", set()
        if nxt in MOODS and "feel" in following[:3]:
            return "what", set()  # "How does it feel to be ..." = "What is it like to be ..."
        return kind, set()
    if kind == "what":
        return _fold_what(following)
    return kind, set()


def _measure(nxt: str, following: list[str]) -> str:
    """The measure "how ..." asks, as "what is the ... of" would: "how tall" and "the height"
    are "how:height"; "how long ... last" and "how many days ... last" are "how:duration"."""
    rest = following[1:7]
    if nxt == "long":
        # "How long does it take/should it rise" asks a duration, "How long is the Nile" a length.
        timed = rest[:1] and rest[0] in MOODS and rest[0] not in COPULAS
        return "how:duration" if timed or DURATION_VERBS.intersection(rest) else "how:length"
    if nxt == "many" and rest[:1] and rest[0] in TIME_UNITS:
        return "how:duration" if DURATION_VERBS.intersection(rest) else ""
    if nxt == "much" and (verb := MEASURE_VERBS.keys() & set(rest)):
        return "how:" + MEASURE_VERBS[min(verb)]
    if nxt == "many" and rest[:1] == ["people"] and "live" in rest:
        return "how:population"
    return "how:" + MEASURE_ADJECTIVES[nxt] if nxt in MEASURE_ADJECTIVES else ""


def _fold_what(following: list[str]) -> tuple[str, set[str]]:
    if opened := _fold_what_opening(following):
        return opened
    for j, word in enumerate(following[:4]):
        if word in MEASURE_NOUNS and following[j + 1 : j + 2] == ["of"]:
            return "how:" + MEASURE_NOUNS[word], set()  # "What is the height of ..."
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


def _fold_what_opening(following: list[str]) -> tuple[str, set[str]] | None:
    """ "What year" asks when, "What makes" why (and may ask what), "What is the number of" how
    many; None for any other opening."""
    first = following[0] if following else ""
    if first in TIME_NOUNS:
        return "when", set()
    if first in CAUSE_VERBS:
        return "why", {"what"}
    for j, word in enumerate(following[1:4], start=1):
        if word in COUNT_NOUNS and following[j - 1] == "the" \
                and following[j + 1 : j + 2] == ["of"]:
            return COUNT_NOUNS[word], set()
    return None


def question_mood(words: list[Token], question: str, sentence: int) -> str:
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


def request_frame_end(words: list[Token] | tuple[Token, ...]) -> int:
    """Where the question starts after an opening that only asks to be told it ("Can you tell
    me how ...", "I would like to know what ..."); 0 when there is none."""
    lowers = [t.lower for t in words[:8]]
    for frame in REQUEST_FRAMES:
        end = len(frame)
        if tuple(lowers[:end]) == frame and lowers[end : end + 1] \
                and lowers[end] in WH and words[end].sentence == words[0].sentence:
            return end
    return 0


def asks_answerer(words: list[Token]) -> bool:
    """Whether the text asks about the one answering: "your favourite", "have you ever"."""
    for i, t in enumerate(words):
        if PERSONS.get(t.lower) == "second" and any(
            w.lower in ANSWERER_WORDS for w in words[max(i - 3, 0) : i + 4]
        ):
            return True
    return False
