"""Guards against false hits: lexical checks a semantic candidate must pass before it is served.

Sentence embeddings score near-duplicates that differ in meaning higher than true paraphrases
("How do I reset my password?" / "How do I not reset my password?" 0.93 against "How can I change
my password?" 0.86). Meaning-changing differences are usually small and visible in the words, so
before a semantic hit is served the stored and the asked text must agree on:

- numbers, in order (digits, number words, ordinals; "rs1000" and "1000 rs" agree);
- negation (not, n't, never, no, without, ...), by count;
- antonyms and opposite directions (for/against, rise/fall, north/south, more/less, ...);
- comparatives and superlatives (better, best, most, fewer, ...);
- units and currencies (km vs miles, Celsius vs Fahrenheit, $ vs €);
- named entities (capitalised or mixed-case words, acronyms, codes): none may be unmatched;
- content words: a text that only adds words to the other (a more specific question) does not
  match it, and a substitution must be small;
- order: two shared content words in the opposite order around a directional word
  (to, from, than, into, vs, ...) mean swapped operands.

The lists here are general English function words, antonyms and units, not tuned to any data set.
``compare(a, b)`` returns a ``Verdict``; ``profile(text)`` may be computed once per text. Pure
functions, no state.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

_WORD = re.compile(r"[^\W\d_]+|\d+(?:[.,]\d+)*|[$€£¥₹%°]")
_CONTRACTIONS = (
    (re.compile(r"\b(can)not\b", re.IGNORECASE), r"\1 not"),
    (re.compile(r"\bcan[’']t\b", re.IGNORECASE), "can not"),
    (re.compile(r"\bwon[’']t\b", re.IGNORECASE), "will not"),
    (re.compile(r"\bshan[’']t\b", re.IGNORECASE), "shall not"),
    (re.compile(r"n[’']t\b", re.IGNORECASE), " not"),
    (re.compile(r"[’']s\b"), ""),
    (re.compile(r"[’'](re|ve|ll|d|m)\b", re.IGNORECASE), ""),
)

STOPWORDS = frozenset("""
a an the this that these those there here it its it's itself i me my mine myself we us our ours
you your yours yourself yourselves he him his she her hers they them their theirs one ones
someone somebody something anyone anybody anything everyone everything people person
what which who whom whose when where why how whether if then than so as such
is are was were be been being am do does did doing done have has had having get gets got getting
can could shall should will would may might must ought need needs let lets
of in on at by for with about into onto from to up out off over under again further
and or but nor also too very just really actually exactly quite rather some any all both each
every either other another own same few many much lot lots
please kindly thanks thank hi hello hey ok okay
way ways thing things kind kinds type types sort sorts
like know tell explain mean means meaning
""".split())

NEGATIONS = frozenset("""
not no never none nobody nothing nowhere neither nor without cannot
""".split())

# Direction and degree words that are function words, so never content, yet change the answer.
_ANTONYM_PAIRS = """
for:against with:without before:after above:below over:under up:down in:out inside:outside
into:from to:from on:off more:less most:least more:fewer most:fewest increase:decrease
rise:fall raise:lower high:low higher:lower highest:lowest big:small bigger:smaller
biggest:smallest large:small larger:smaller largest:smallest long:short longer:shorter
longest:shortest old:new older:newer oldest:newest old:young older:younger best:worst
better:worse good:bad cheap:expensive cheaper:pricier cheapest:priciest buy:sell import:export
north:south east:west northern:southern eastern:western left:right first:last start:end
begin:end open:close win:lose gain:lose add:remove enable:disable include:exclude true:false
advantage:disadvantage pro:con positive:negative male:female man:woman men:women boy:girl
hot:cold warm:cool fast:slow faster:slower fastest:slowest easy:hard easy:difficult
easier:harder easiest:hardest min:max minimum:maximum push:pull input:output encrypt:decrypt
upload:download join:leave love:hate like:dislike accept:reject agree:disagree legal:illegal
possible:impossible happy:sad rich:poor strong:weak stronger:weaker light:dark light:heavy
early:late earlier:later past:future ascending:descending internal:external public:private
send:receive sender:receiver give:take lend:borrow parent:child husband:wife mother:father
son:daughter brother:sister top:bottom front:back forward:backward success:failure safe:unsafe
healthy:unhealthy always:never all:none everyone:nobody true:fake real:fake win:loss profit:loss
asset:liability credit:debit deposit:withdraw wet:dry full:empty alive:dead living:dead
love:hatred friend:enemy ally:enemy
""".split()

DEGREE_WORDS = frozenset("""
more most less least fewer fewest better best worse worst greater greatest higher highest
lower lowest larger largest smaller smallest bigger biggest faster fastest slower slowest
cheaper cheapest easier easiest harder hardest older oldest newer newest younger youngest
longer longest shorter shortest stronger strongest weaker weakest earlier earliest later latest
""".split())

# Canonical unit per spelling; a unit never matches another unit.
_UNITS = {
    **dict.fromkeys("km kms kilometer kilometers kilometre kilometres".split(), "km"),
    **dict.fromkeys("m meter meters metre metres".split(), "m"),
    **dict.fromkeys("cm centimeter centimeters centimetre centimetres".split(), "cm"),
    **dict.fromkeys("mm millimeter millimeters millimetre millimetres".split(), "mm"),
    **dict.fromkeys("mi mile miles".split(), "mile"),
    **dict.fromkeys("ft foot feet".split(), "foot"),
    **dict.fromkeys("in inch inches".split(), "inch"),
    **dict.fromkeys("yd yard yards".split(), "yard"),
    **dict.fromkeys("kg kgs kilo kilos kilogram kilograms".split(), "kg"),
    **dict.fromkeys("g gram grams gramme grammes".split(), "g"),
    **dict.fromkeys("mg milligram milligrams".split(), "mg"),
    **dict.fromkeys("lb lbs pound pounds".split(), "lb"),
    **dict.fromkeys("oz ounce ounces".split(), "oz"),
    **dict.fromkeys("l liter liters litre litres".split(), "l"),
    **dict.fromkeys("ml milliliter milliliters millilitre millilitres".split(), "ml"),
    **dict.fromkeys("gal gallon gallons".split(), "gallon"),
    **dict.fromkeys("c celsius centigrade".split(), "celsius"),
    **dict.fromkeys("f fahrenheit".split(), "fahrenheit"),
    **dict.fromkeys("k kelvin".split(), "kelvin"),
    **dict.fromkeys("mph".split(), "mph"),
    **dict.fromkeys("kph kmh".split(), "kmh"),
    **dict.fromkeys("s sec secs seconds".split(), "second"),
    **dict.fromkeys("min mins minute minutes".split(), "minute"),
    **dict.fromkeys("h hr hrs hour hours".split(), "hour"),
    **dict.fromkeys("day days".split(), "day"),
    **dict.fromkeys("week weeks".split(), "week"),
    **dict.fromkeys("month months".split(), "month"),
    **dict.fromkeys("year years yr yrs".split(), "year"),
    **dict.fromkeys("b byte bytes".split(), "byte"),
    **dict.fromkeys("kb kilobyte kilobytes".split(), "kb"),
    **dict.fromkeys("mb megabyte megabytes".split(), "mb"),
    **dict.fromkeys("gb gigabyte gigabytes".split(), "gb"),
    **dict.fromkeys("tb terabyte terabytes".split(), "tb"),
    **dict.fromkeys("$ usd dollar dollars".split(), "usd"),
    **dict.fromkeys("€ eur euro euros".split(), "eur"),
    **dict.fromkeys("£ gbp sterling".split(), "gbp"),
    **dict.fromkeys("¥ yen jpy yuan rmb cny".split(), "yen/yuan"),
    **dict.fromkeys("₹ inr rs rupee rupees".split(), "inr"),
    **dict.fromkeys("% percent percentage".split(), "percent"),
    **dict.fromkeys("° degree degrees".split(), "degree"),
    **dict.fromkeys("w watt watts".split(), "watt"),
    **dict.fromkeys("kw kilowatt kilowatts".split(), "kw"),
    **dict.fromkeys("v volt volts".split(), "volt"),
    **dict.fromkeys("hz hertz".split(), "hz"),
    **dict.fromkeys("ghz gigahertz".split(), "ghz"),
    **dict.fromkeys("mhz megahertz".split(), "mhz"),
}
# Short unit spellings that are also ordinary words count as units only right after a number.
_BARE_UNITS = frozenset("m in l c f k s h b g w v min".split())

_NUMBER_WORDS = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
    "ninety": 90, "hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9,
    "trillion": 10**12, "dozen": 12, "half": 0.5, "twice": 2, "double": 2, "triple": 3,
}
_ORDINALS = {
    "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "twentieth": 20, "hundredth": 100,
}
_ORDINAL_SUFFIX = re.compile(r"^(\d+)(st|nd|rd|th)$")

# Between two operands, these words make their order matter.
DIRECTIONAL = frozenset("""
to into from than vs versus over under by per minus plus times divided multiplied before after
against toward towards onto via
""".split())

ANTONYMS: frozenset[frozenset[str]] = frozenset(
    frozenset(pair.split(":")) for pair in _ANTONYM_PAIRS
)


@dataclass(frozen=True, slots=True)
class Token:
    """One word as written (``raw``), lowercased (``lower``) and stemmed (``stem``)."""

    raw: str
    lower: str
    stem: str
    entity: bool


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


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str = ""


ACCEPT = Verdict(True)


def profile(text: str) -> Profile:
    """Tokenize ``text`` and collect what ``compare`` checks."""
    words = _tokens(text)
    numbers: list[str] = []
    units: list[str] = []
    for i, token in enumerate(words):
        number = _number(token.lower)
        if number is not None:
            numbers.append(number)
        elif (unit := _unit(token.lower, words[i - 1].lower if i else "")) is not None:
            units.append(unit)
    return Profile(
        words=tuple(words),
        numbers=tuple(numbers),
        negations=sum(1 for t in words if t.lower in NEGATIONS),
        units=tuple(sorted(units)),
        degree=frozenset(t.lower for t in words if t.lower in DEGREE_WORDS),
        content=frozenset(t.stem for t in words if _is_content(t)),
        entities=frozenset(t.stem for t in words if t.entity),
        lowers=frozenset(t.lower for t in words) | frozenset(t.stem for t in words),
    )


def compare(a: Profile | str, b: Profile | str) -> Verdict:
    """Whether an answer to ``a`` may be served for ``b``: ``ACCEPT`` or the first reason not."""
    pa = a if isinstance(a, Profile) else profile(a)
    pb = b if isinstance(b, Profile) else profile(b)
    for check in _CHECKS:
        reason = check(pa, pb)
        if reason:
            return Verdict(False, reason)
    return ACCEPT


def _tokens(text: str) -> list[Token]:
    text = unicodedata.normalize("NFKC", text)
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    raw = _split_alnum(_WORD.findall(text))
    title_case = _is_title_case(raw)
    out = []
    for i, word in enumerate(raw):
        lower = word.lower()
        entity = _looks_like_entity(word, i == 0 or _starts_sentence(text, word), title_case)
        out.append(Token(word, lower, stem(lower), entity))
    return out


def _split_alnum(words: list[str]) -> list[str]:
    """Codes like ``rs1000`` or ``32GB``: the letter and digit runs become separate words."""
    out: list[str] = []
    for word in words:
        out.extend(re.findall(r"\d+(?:[.,]\d+)*|[^\W\d_]+|[$€£¥₹%°]", word))
    return out


def _is_title_case(words: list[str]) -> bool:
    alpha = [w for w in words if w.isalpha() and len(w) > 3]
    return len(alpha) >= 3 and sum(w[0].isupper() for w in alpha) / len(alpha) > 0.6


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
    """A light English stemmer: plurals, -ing, -ed, -ly; enough to match inflected forms."""
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, replacement, minimum in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= minimum:
            return word[: len(word) - len(suffix)] + replacement
    return word


_SUFFIXES = (
    ("ies", "y", 2), ("sses", "ss", 2), ("xes", "x", 2), ("ches", "ch", 2), ("shes", "sh", 2),
    ("ss", "ss", 2), ("us", "us", 2), ("is", "is", 2), ("s", "", 3),
    ("ingly", "", 3), ("ing", "", 3), ("edly", "", 3), ("ed", "", 3), ("ly", "", 4),
)


def _number(word: str) -> str | None:
    if word[0].isdigit():
        ordinal = _ORDINAL_SUFFIX.match(word)
        if ordinal:
            return "#" + ordinal.group(1)
        return _canonical_number(word)
    if word in _NUMBER_WORDS:
        return _canonical_number(str(_NUMBER_WORDS[word]))
    if word in _ORDINALS:
        return f"#{_ORDINALS[word]}"
    return None


def _canonical_number(digits: str) -> str:
    plain = digits.replace(",", "")
    try:
        value = float(plain)
    except ValueError:
        return plain
    return str(int(value)) if value.is_integer() else str(value)


def _unit(word: str, previous: str) -> str | None:
    unit = _UNITS.get(word)
    if unit is None:
        return None
    if word in _BARE_UNITS and not (previous and previous[0].isdigit()):
        return None
    return unit


def _is_content(token: Token) -> bool:
    lower = token.lower
    return (
        lower not in STOPWORDS
        and lower not in NEGATIONS
        and lower not in DEGREE_WORDS
        and _number(lower) is None
        and lower not in _UNITS
        and not (len(lower) == 1 and not token.entity)
    )
