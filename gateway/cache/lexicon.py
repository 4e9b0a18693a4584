"""The general English word lists the guards read: function words, hedges and light verbs,
negations, antonyms, degree words, units and currencies, number words, question words and the
words that fold one kind of question onto another, auxiliaries, persons.

General language, not tuned to any data set; extend a list when a new kind of meaning change
needs it. Values only: frozen sets and plain dictionaries built once at import, never changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


def _split(words: str) -> list[str]:
    return words.split()


STOPWORDS = frozenset(_split("""
a an the this that these those there here it its it's itself i me my mine myself we us our ours
you your yours yourself yourselves he him his she her hers they them their theirs one ones
someone somebody something anyone anybody anything everyone everything people person
what which who whom whose when where why how whether if then than so as such
is are was were be been being am do does did doing done have has had having get gets got getting
can could shall should will would may might must ought need needs let lets
of in on at by for with about into onto from to up out off over under again further
and or but nor vs versus also too very just really actually exactly quite rather some any all
both each every either other another own same few many much lot lots
please kindly thanks thank hi hello hey ok okay
way ways thing things kind kinds type types sort sorts
like know tell explain mean means meant meaning
best good great greatest top finest nice ideal excellent awesome right
during within throughout across through around among between near behind beside beyond despite
upon along since until while because though although unless whereas
"""))

NEGATIONS = frozenset(_split("""
not no never none nobody nothing nowhere neither nor without cannot
"""))

# Direction and degree words that are function words, so never content, yet change the answer.
_ANTONYM_PAIRS = _split("""
for:against with:without before:after above:below over:under up:down in:out inside:outside
into:from to:from on:off more:less most:least more:fewer most:fewest increase:decrease
rise:fall raise:lower high:low higher:lower highest:lowest big:small bigger:smaller
biggest:smallest large:small larger:smaller largest:smallest long:short longer:shorter
longest:shortest old:new older:newer oldest:newest old:young older:younger best:worst
better:worse good:bad cheap:expensive cheaper:pricier cheapest:priciest buy:sell import:export
north:south east:west northern:southern eastern:western left:right first:last start:end
begin:end open:close win:lose gain:lose add:remove enable:disable include:exclude true:false
advantage:disadvantage pro:con positive:negative male:female man:woman men:women boy:girl
hot:cold warm:cold warm:cool fast:slow faster:slower fastest:slowest easy:hard easy:difficult
easier:harder easiest:hardest min:max minimum:maximum push:pull input:output encrypt:decrypt
upload:download join:leave love:hate like:dislike accept:reject agree:disagree legal:illegal
possible:impossible happy:sad rich:poor strong:weak stronger:weaker light:dark light:heavy
early:late earlier:later past:future ascending:descending internal:external public:private
send:receive sender:receiver give:take lend:borrow parent:child husband:wife mother:father
son:daughter brother:sister top:bottom front:back forward:backward success:failure safe:unsafe
healthy:unhealthy always:never all:none everyone:nobody true:fake real:fake win:loss profit:loss
asset:liability credit:debit deposit:withdraw wet:dry full:empty alive:dead living:dead
love:hatred friend:enemy ally:enemy fully:partially completely:partially complete:partial
total:partial whole:part always:sometimes often:rarely he:she his:her him:her himself:herself
""")

# Degree words onto their plain form: "fastest" and "faster" -> "fast", "most" -> "more";
# synonyms share one ("larger" = "bigger" = "greater").
_DEGREE_FORMS = _split("""
more:more most:more less:less least:less fewer:less fewest:less
better:good worse:bad worst:bad greater:big higher:high highest:high lower:low lowest:low
larger:big largest:big smaller:small smallest:small bigger:big biggest:big faster:fast
fastest:fast slower:slow slowest:slow cheaper:cheap cheapest:cheap easier:easy easiest:easy
harder:hard hardest:hard older:old oldest:old newer:new newest:new younger:young
youngest:young longer:long longest:long shorter:short shortest:short stronger:strong
strongest:strong weaker:weak weakest:weak earlier:early earliest:early later:late latest:late
""")
DEGREE: Mapping[str, str] = MappingProxyType(
    {word: base for word, base in (pair.split(":") for pair in _DEGREE_FORMS)}
)

# Canonical unit per spelling; a unit never matches another unit.
UNITS: Mapping[str, str] = MappingProxyType({
    **dict.fromkeys(_split("km kms kilometer kilometers kilometre kilometres"), "km"),
    **dict.fromkeys(_split("m meter meters metre metres"), "m"),
    **dict.fromkeys(_split("cm centimeter centimeters centimetre centimetres"), "cm"),
    **dict.fromkeys(_split("mm millimeter millimeters millimetre millimetres"), "mm"),
    **dict.fromkeys(_split("mi mile miles"), "mile"),
    **dict.fromkeys(_split("ft foot feet"), "foot"),
    **dict.fromkeys(_split("inch inches"), "inch"),
    **dict.fromkeys(_split("yd yard yards"), "yard"),
    **dict.fromkeys(_split("kg kgs kilo kilos kilogram kilograms"), "kg"),
    **dict.fromkeys(_split("g gram grams gramme grammes"), "g"),
    **dict.fromkeys(_split("mg milligram milligrams"), "mg"),
    **dict.fromkeys(_split("lb lbs pound pounds"), "lb"),
    **dict.fromkeys(_split("oz ounce ounces"), "oz"),
    **dict.fromkeys(_split("l liter liters litre litres"), "l"),
    **dict.fromkeys(_split("ml milliliter milliliters millilitre millilitres"), "ml"),
    **dict.fromkeys(_split("gal gallon gallons"), "gallon"),
    **dict.fromkeys(_split("c celsius centigrade"), "celsius"),
    **dict.fromkeys(_split("f fahrenheit"), "fahrenheit"),
    **dict.fromkeys(_split("k kelvin"), "kelvin"),
    **dict.fromkeys(_split("mph"), "mph"),
    **dict.fromkeys(_split("kph kmh"), "kmh"),
    **dict.fromkeys(_split("s sec secs seconds"), "second"),
    **dict.fromkeys(_split("min mins minute minutes"), "minute"),
    **dict.fromkeys(_split("h hr hrs hour hours"), "hour"),
    **dict.fromkeys(_split("day days"), "day"),
    **dict.fromkeys(_split("week weeks"), "week"),
    **dict.fromkeys(_split("month months"), "month"),
    **dict.fromkeys(_split("year years yr yrs"), "year"),
    **dict.fromkeys(_split("b byte bytes"), "byte"),
    **dict.fromkeys(_split("kb kilobyte kilobytes"), "kb"),
    **dict.fromkeys(_split("mb megabyte megabytes"), "mb"),
    **dict.fromkeys(_split("gb gigabyte gigabytes"), "gb"),
    **dict.fromkeys(_split("tb terabyte terabytes"), "tb"),
    **dict.fromkeys(_split("$ usd dollar dollars"), "usd"),
    **dict.fromkeys(_split("€ eur euro euros"), "eur"),
    **dict.fromkeys(_split("£ gbp sterling"), "gbp"),
    **dict.fromkeys(_split("¥ yen jpy yuan rmb cny"), "yen/yuan"),
    **dict.fromkeys(_split("₹ inr rs rupee rupees"), "inr"),
    **dict.fromkeys(_split("% percent percentage"), "percent"),
    **dict.fromkeys(_split("° degree degrees"), "degree"),
    **dict.fromkeys(_split("w watt watts"), "watt"),
    **dict.fromkeys(_split("kw kilowatt kilowatts"), "kw"),
    **dict.fromkeys(_split("v volt volts"), "volt"),
    **dict.fromkeys(_split("hz hertz"), "hz"),
    **dict.fromkeys(_split("ghz gigahertz"), "ghz"),
    **dict.fromkeys(_split("mhz megahertz"), "mhz"),
})
# Unit spellings that are also ordinary words ("in", "the year 1969") are units only right
# after a number.
BARE_UNITS = frozenset(_split("""
m l c f k s h b g w v min sec secs hour hours day days week weeks month months year years
yr yrs degree degrees
"""))

NUMBER_WORDS: Mapping[str, float] = MappingProxyType({
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
    "ninety": 90, "hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9,
    "trillion": 10**12, "dozen": 12, "half": 0.5, "twice": 2, "double": 2, "triple": 3,
})
ORDINALS: Mapping[str, int] = MappingProxyType({
    "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "twentieth": 20, "hundredth": 100,
})

# Between two operands, these words make their order matter.
DIRECTIONAL = frozenset(_split("""
to into from than over under by per minus plus times divided multiplied before after
against toward towards onto via
"""))

WH: Mapping[str, str] = MappingProxyType({
    "what": "what", "which": "what", "who": "who", "whom": "who", "whose": "who",
    "where": "where", "when": "when", "why": "why", "how": "how",
})
# "What is the best way/method to ..." asks how.
MANNER_NOUNS = frozenset(_split("""
way ways method methods step steps tip tips technique techniques procedure procedures
approach approaches treatment treatments cure cures remedy remedies
"""))
# "What year/date ..." asks when; "What place/city ..." and "What is the reason ..." may ask
# where and why.
TIME_NOUNS = frozenset(_split("year years date dates time day days month century decade"))
PLACE_NOUNS = frozenset(_split("place places city cities country countries location locations"))
REASON_NOUNS = frozenset(_split("reason reasons"))
# A question about telling things apart, however it is worded.
DIFFERENCE_WORDS = frozenset(_split("""
difference differences differ differs different differentiate distinguish compare compared
comparison
"""))
# "Can you tell me how ...": a wh-word after these is the question asked.
EMBEDDING_VERBS = frozenset(_split("""
tell know explain describe show suggest wonder understand me us
"""))
# "Can you recommend a ...": a request for a thing, asked as a yes/no question.
REQUEST_VERBS = frozenset(_split("recommend suggest name list give"))
QUANTITY = frozenset(_split("many much long often far old big"))
# One measure asked two ways: "How tall is X?" = "What is the height of X?", "How much does X
# cost?" = "What is the price of X?", "How many days does X last?" = "How long does X last?".
MEASURE_ADJECTIVES: Mapping[str, str] = MappingProxyType({
    "tall": "height", "high": "height", "long": "length", "far": "distance", "old": "age",
    "big": "size", "large": "size", "heavy": "weight", "fast": "speed", "quick": "speed",
    "deep": "depth", "wide": "width", "often": "frequency", "frequently": "frequency",
    "hot": "temperature", "cold": "temperature", "warm": "temperature",
})
MEASURE_NOUNS: Mapping[str, str] = MappingProxyType({
    "height": "height", "length": "length", "distance": "distance", "age": "age",
    "size": "size", "area": "size", "weight": "weight", "speed": "speed", "velocity": "speed",
    "depth": "depth", "width": "width", "frequency": "frequency", "duration": "duration",
    "price": "price", "cost": "price", "population": "population",
    "temperature": "temperature",
})
# "What is the number of moons of Jupiter?" = "How many moons does Jupiter have?": a count or an
# amount asked as a noun after "the".
COUNT_NOUNS: Mapping[str, str] = MappingProxyType({
    "number": "how many", "amount": "how much", "quantity": "how much",
})
# "What is the purpose of X?" asks what X does.
PURPOSE_NOUNS = frozenset(_split("purpose purposes function functions role"))
# "What makes the sky blue?" asks why it is blue (and may ask what).
CAUSE_VERBS = frozenset(_split("makes made"))
# The one who made a work, named by a noun or asked by the verb: "Who is the author of Dune?" =
# "Who wrote Dune?". Irregular forms are listed; the others meet as lemmas.
AGENT_NOUNS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "author": ("write", "wrote", "written"), "writer": ("write", "wrote", "written"),
    "composer": ("compose",), "inventor": ("invent",), "founder": ("found",),
    "director": ("direct",), "painter": ("paint",), "discoverer": ("discover",),
    "creator": ("create",), "designer": ("design",), "builder": ("build", "built"),
    "developer": ("develop",), "publisher": ("publish",), "sculptor": ("sculpt",),
    "singer": ("sing", "sang", "sung"),
})
# Openings that only ask to be told what follows: "Can you tell me how ...", "I would like to
# know what ...". The persons in them are the asker and the one answering, not the question's.
REQUEST_FRAMES: tuple[tuple[str, ...], ...] = tuple(tuple(_split(frame)) for frame in (
    "can you tell me", "could you tell me", "would you tell me", "can you explain",
    "could you explain", "can you explain to me", "could you explain to me", "please tell me",
    "please explain", "tell me", "explain to me", "i would like to know", "i want to know",
    "i wonder", "i was wondering", "i am wondering", "do you know", "does anyone know",
    "can anyone tell me", "can someone tell me", "can someone explain",
))
# "How long does it last/take" asks a duration, "How long is it" a length; "How much does it
# cost/weigh" a price/weight; "How many people live in" a population.
DURATION_VERBS = frozenset(_split("""
last lasts take takes took stay stays keep keeps live lives survive wait run runs
"""))
MEASURE_VERBS: Mapping[str, str] = MappingProxyType({
    "cost": "price", "costs": "price", "weigh": "weight", "weighs": "weight",
})
TIME_UNITS = frozenset(_split("seconds minutes hours days weeks months years"))
# Words a relative "who/which/where/when" follows ("someone who", "the place where"): no question.
RELATIVE_ANTECEDENTS = frozenset(_split("""
someone somebody anyone anybody everyone people person those one ones thing things place places
time times
"""))
COPULAS = frozenset(_split("is are was were am"))
# Subjects that open a second yes/no question after "and": "..., and are there any ...".
SUBJECTS = frozenset(_split("there it i you we they he she this that anything something anyone"))
# A subordinate clause opening a sentence ("When working from home, what ..."), not a question.
SUBORDINATORS = frozenset(_split("when if while whenever once after before since as"))
# Auxiliaries grouped by what they ask: a fact, a past fact, an ability, advice, a prediction.
MOODS: Mapping[str, str] = MappingProxyType({
    **dict.fromkeys(_split("do does is are am has have"), "fact"),
    **dict.fromkeys(_split("did was were had"), "past"),
    **dict.fromkeys(_split("can could may might"), "ability"),
    **dict.fromkeys(_split("should shall must ought"), "advice"),
    **dict.fromkeys(_split("will would"), "future"),
})
# In "how do/can/should I ..." the auxiliary does not change what is asked.
HOW_TO_MOODS = frozenset({"fact", "ability", "advice"})

# Persons; a question with "you" followed closely by one of ANSWERER_WORDS asks about the one
# answering ("your favourite", "have you ever", "would you like") rather than about anyone.
PERSONS: Mapping[str, str] = MappingProxyType({
    **dict.fromkeys(_split("i me my mine myself"), "first"),
    **dict.fromkeys(_split("we us our ours ourselves"), "first plural"),
    **dict.fromkeys(_split("you your yours yourself yourselves"), "second"),
})
ANSWERER_WORDS = frozenset(_split("""
ever favourite favorite favourites favorites experience experiences experienced personally
prefer like love hate enjoy want wish regret think believe feel opinion opinions thoughts
interpretation definition review done had got seen heard met visited tried eaten
watched learnt learned
"""))

# Words that carry no content of their own in a question: hedges, intensifiers, quantifiers
# and the question's frame ("What are some tips for ..."). Differences in them cost nothing.
LIGHT_WORDS = frozenset(_split("""
ever even still already yet anyhow anyway perhaps maybe possibly probably basically simply
truly generally usually typically normally currently nowadays now today presently certain
certainly particular particularly available possible real actual true main major overall
entire significant specific exact proper correct whatever whichever however several various
numerous multiple yes
idea ideas suggestion suggestions option options tip tips method methods step steps
technique techniques
"""))
# Light verbs: their object carries the meaning ("make money" = "earn money", "make a world" =
# "create a world"). They cost nothing when missing, and stand in for a verb the other side has.
LIGHT_VERBS = frozenset(_split("""
become becomes became becoming make makes made making take takes took taken taking give gives
gave given giving go goes went gone going come comes came coming keep keeps kept keeping put
puts putting try tries tried trying start starts started starting begin begins began begun
beginning want wants wanted wanting feel feels felt feeling seem seems seemed find finds found
finding see sees saw seen seeing help helps helped helping provide provides provided providing
consider considers considered considering look looks looked appear appears appeared
"""))

COORDINATORS = frozenset(_split("and or vs versus nor"))

ANTONYMS: frozenset[frozenset[str]] = frozenset(
    frozenset(pair.split(":")) for pair in _ANTONYM_PAIRS
)
