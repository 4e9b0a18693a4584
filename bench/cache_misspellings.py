"""How many of 50 common English misspellings typo folding corrects, and into what.

    PYTHONPATH=$PWD .venv/bin/python bench/cache_misspellings.py

The words are commonly listed misspellings (each paired with the word meant), lowercase, in a
sentence of their own so that only the folding rules (``cache/spelling.py``) decide: a word is
corrected only when exactly one edit away from a common word and not a guarded or regular form.
Prints each miss with what folding made of it, then the count. Reads the word lists; writes
nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.cache.spelling import load  # noqa: E402

MISSPELT = {
    "accomodate": "accommodate", "acheive": "achieve", "accross": "across",
    "agressive": "aggressive", "apparantly": "apparently", "appearence": "appearance",
    "arguement": "argument", "basicly": "basically", "begining": "beginning",
    "beleive": "believe", "bizzare": "bizarre", "buisness": "business", "calender": "calendar",
    "cemetary": "cemetery", "collegue": "colleague", "comming": "coming",
    "commitee": "committee", "completly": "completely", "concious": "conscious",
    "curiousity": "curiosity", "definately": "definitely", "dilemna": "dilemma",
    "dissapoint": "disappoint", "enviroment": "environment", "existance": "existence",
    "familar": "familiar", "finaly": "finally", "foriegn": "foreign", "freind": "friend",
    "goverment": "government", "happend": "happened", "harrass": "harass",
    "immediatly": "immediately", "independant": "independent", "knowlege": "knowledge",
    "liason": "liaison", "libary": "library", "maintainance": "maintenance",
    "neccessary": "necessary", "noticable": "noticeable", "occassion": "occasion",
    "occured": "occurred", "persistant": "persistent", "potatos": "potatoes",
    "publically": "publicly", "recieve": "receive", "seperate": "separate",
    "succesful": "successful", "tommorow": "tomorrow", "wierd": "weird",
}


def main() -> int:
    speller = load()
    right = 0
    for word, meant in MISSPELT.items():
        folded = speller.fold(word)
        right += folded == meant
        if folded != meant:
            print(f"  {word}: {folded}" + ("" if folded != word else " (left as typed)"))
    print(f"{right} of {len(MISSPELT)} corrected to the word meant")
    return 0


if __name__ == "__main__":
    sys.exit(main())
