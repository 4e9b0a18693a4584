"""What a text asks: the kind of its main question, every kind it asks, its mood, and whether it
asks about the one answering.

Kinds: who / what / where / when / why / how / "how many" (and "how much", "how long" ...) /
yes-no / difference / statement, after the paraphrases of a kind are folded together ("What is
the best way to", "What should I do to" and "Is there any way to" ask how; "What year" asks when;
"What is the difference" = "How do X and Y differ"; "How does it feel" = "What is it like"; "Can
you recommend a" asks what). An embedded question ("Can you tell me how ...") is the question it
embeds; "where and how" asks both; "What is the best place" may also ask where. The mood is the
class of the main question's first auxiliary (``lexicon.MOODS``; "going to" is future), "how-to"
for a fact, ability or advice one after how ("How do I", "How can I", "How should I").

Read into a ``text_features.Profile`` by ``profile``; ``guards`` decides which differences refuse a
pair. Pure functions over tokens and the word lists in ``lexicon``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.cache.lexicon import (
    ANSWERER_WORDS,
    COORDINATORS,
    DIFFERENCE_WORDS,
    EMBEDDING_VERBS,
    HOW_TO_MOODS,
    MANNER_NOUNS,
    MOODS,
    PERSONS,
    PLACE_NOUNS,
    QUANTITY,
    REASON_NOUNS,
    REQUEST_VERBS,
    TIME_NOUNS,
    WH,
)

if TYPE_CHECKING:  # annotations only: text_features imports this module to build a Profile
    from gateway.cache.tokens import Token


_WAYS = MANNER_NOUNS | {"anyway", "anyways"}


def question_kinds(words: list[Token]) -> tuple[str, frozenset[str], int]:
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


def asks_answerer(words: list[Token]) -> bool:
    """Whether the text asks about the one answering: "your favourite", "have you ever"."""
    for i, t in enumerate(words):
        if PERSONS.get(t.lower) == "second" and any(
            w.lower in ANSWERER_WORDS for w in words[max(i - 3, 0) : i + 4]
        ):
            return True
    return False
