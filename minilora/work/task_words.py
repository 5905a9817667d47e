"""The vocabulary of the generated tasks: word lists, templates and labels.

Every string a generator in ``minilora.work.tasks`` emits comes from here:

* SQL: ``TABLES`` (three tables of four columns, described by ``Table`` and
  ``Numeric``: their values and the English that names and filters them),
  ``SQL_AGG_WORDS`` (the English for MAX, MIN, AVG) and ``SQL_TEMPLATES`` (the
  question paraphrases of each query kind).
* NLI: ``NLI_LABELS``; ``SUBJECTS`` and their hypernyms (``OTHER_REFS``: the
  words that name someone else); ``PLACES`` and ``ACTS`` by kind, with the
  words for the kinds (``PLACE_KIND_WORDS``, ``ACT_KIND_WORD``); the premise
  templates ``NLI_BOTH``, ``NLI_ONLY_PLACE``, ``NLI_ONLY_ACT``.

Changing any string here changes the generated examples and the characters the
tasks can produce, hence ``minilora.work.data.build_vocabulary`` and every model
trained with it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ACTS",
    "ACT_KIND_WORD",
    "NLI_BOTH",
    "NLI_LABELS",
    "NLI_ONLY_ACT",
    "NLI_ONLY_PLACE",
    "OTHER_REFS",
    "PLACES",
    "PLACE_KIND_WORDS",
    "PLACE_PAIRS",
    "SQL_AGG_WORDS",
    "SQL_TEMPLATES",
    "SUBJECTS",
    "TABLES",
    "Numeric",
    "Table",
]


def _alts(text: str) -> tuple[str, ...]:
    """``"a|b|c"`` -> ``("a", "b", "c")``: alternatives, written compactly."""
    return tuple(text.split("|"))


def _numbers(lo: int, hi: int, step: int = 1) -> tuple[str, ...]:
    return tuple(str(v) for v in range(lo, hi + 1, step))


@dataclass(frozen=True)
class Numeric:
    """A numeric column: its values and the English for filters ``=``, ``>``, ``<`` on it."""

    values: tuple[str, ...]
    eq: str  # alternatives, "|"-separated, each with {n}
    gt: str
    lt: str

    def phrases(self, op: str) -> tuple[str, ...]:
        return _alts({"=": self.eq, ">": self.gt, "<": self.lt}[op])


@dataclass(frozen=True)
class Table:
    """Four columns: ``name``, a category column ``group`` and two numeric columns."""

    name: str  # the table, also its plural noun in questions
    singular: str
    keys: tuple[str, ...]  # values of the name column
    group: str
    groups: tuple[str, ...]  # values of the group column
    group_phrases: tuple[str, ...]  # English for "group = g", with {g}
    words: dict[str, tuple[str, ...]]  # column -> how questions name it
    numerics: dict[str, Numeric]


# fmt: off
TABLES = (
    Table(
        "employees", "employee",
        _alts("alice|bob|carol|dave|erin|frank|grace|heidi|ivan|judy|mallory|oscar|peggy|"
              "trent|victor|wendy"),
        "team", _alts("sales|legal|finance|support|design|admin|data"),
        _alts("in {g}|in the {g} team|working in {g}"),
        {"team": ("team",), "salary": ("salary", "pay"), "age": ("age",)},
        {"salary": Numeric(
            _numbers(1000, 9900, 100),
            eq="earning {n}|with a salary of {n}|paid {n}",
            gt="earning more than {n}|with a salary above {n}|paid over {n}|whose pay is over {n}",
            lt="earning less than {n}|with a salary below {n}|paid under {n}|"
               "whose pay is under {n}"),
         "age": Numeric(
            _numbers(18, 65),
            eq="aged {n}|who are {n} years old|whose age is {n}",
            gt="older than {n}|over {n} years old|aged over {n}",
            lt="younger than {n}|under {n} years old|aged under {n}")},
    ),
    Table(
        "products", "product",
        _alts("chair|table|lamp|desk|phone|laptop|camera|kettle|mug|clock|sofa|bike|radio|"
              "blender"),
        "category", _alts("office|home|garden|toys|books|sports|music"),
        _alts("in {g}|of type {g}|listed under {g}"),
        {"category": ("category", "type"), "price": ("price", "cost"), "stock": ("stock",)},
        {"price": Numeric(
            _numbers(1, 999),
            eq="costing {n}|priced at {n}|with a price of {n}",
            gt="costing more than {n}|priced above {n}|that cost over {n}",
            lt="costing less than {n}|priced below {n}|that cost under {n}"),
         "stock": Numeric(
            _numbers(0, 500),
            eq="with {n} in stock|with a stock of {n}",
            gt="with more than {n} in stock|with stock above {n}|whose stock is over {n}",
            lt="with fewer than {n} in stock|with stock below {n}|whose stock is under {n}")},
    ),
    Table(
        "cities", "city",
        _alts("paris|lyon|nice|berlin|munich|madrid|seville|rome|milan|oslo|bergen|lima|"
              "cusco|tokyo|osaka|cairo"),
        "country", _alts("france|germany|spain|italy|norway|peru|japan|egypt"),
        _alts("in {g}|of {g}|from {g}"),
        {"country": ("country",), "population": ("population",), "area": ("area", "size")},
        {"population": Numeric(
            _numbers(100, 9900, 100),
            eq="with a population of {n}|with {n} people|home to {n} people",
            gt="with more than {n} people|with a population above {n}|with over {n} people",
            lt="with fewer than {n} people|with a population below {n}|with under {n} people"),
         "area": Numeric(
            _numbers(10, 990, 10),
            eq="with an area of {n}|whose area is {n}",
            gt="with an area above {n}|whose area is over {n}|over {n} in area",
            lt="with an area below {n}|whose area is under {n}|under {n} in area")},
    ),
)

SQL_AGG_WORDS = {"MAX": _alts("highest|largest|maximum|top"),
                 "MIN": _alts("lowest|minimum"), "AVG": _alts("average|mean")}

# {w}: a column word, {k}: a name, {rows}: the table, {one}: its singular,
# {f}: a filter phrase, {a}: an aggregate word.
SQL_TEMPLATES = {
    "lookup": _alts("what is the {w} of {k}?|what {w} does {k} have?|tell me the {w} of {k}.|"
                    "give the {w} for {k}.|{k}: what is the {w}?"),
    "where_name": _alts("list the {rows} {f}.|show all {rows} {f}.|name the {rows} {f}.|"
                        "find {rows} {f}.|what are the names of {rows} {f}?"),
    "where_col": _alts("show the {w} of {rows} {f}.|list the {w} of {rows} {f}.|"
                       "what is the {w} of {rows} {f}?|give the {w} for {rows} {f}."),
    "count": _alts("how many {rows} are there {f}?|how many {rows} {f} are there?|"
                   "count the {rows} {f}.|what is the number of {rows} {f}?|"
                   "number of {rows} {f}?"),
    "aggregate": _alts("what is the {a} {w} of {rows}?|find the {a} {w} among {rows}.|"
                       "what is the {a} {w}?|give me the {a} {w} for {rows}.|"
                       "{a} {w} of all {rows}?"),
    "aggregate_where": _alts("what is the {a} {w} of {rows} {f}?|"
                             "find the {a} {w} of {rows} {f}.|"
                             "give the {a} {w} for {rows} {f}.|{a} {w} of {rows} {f}?"),
    "all_name": _alts("list all {rows}.|show every {one}.|list the names of all {rows}.|"
                      "what {rows} are there?|name every {one}."),
    "all_col": _alts("list the {w} of all {rows}.|show the {w} of every {one}.|"
                     "what is the {w} of each {one}?|give every {one}'s {w}."),
}

NLI_LABELS = ("entailment", "neutral", "contradiction")
SUBJECTS = {  # subject -> the hypernyms that also refer to it
    "dog": ("animal", "pet"), "cat": ("animal", "pet"), "horse": ("animal",),
    "goat": ("animal",), "boy": ("child", "person"), "girl": ("child", "person"),
    "man": ("adult", "person"), "woman": ("adult", "person"), "chef": ("cook", "person"),
    "nurse": ("person",), "farmer": ("person",),
}
PLACES = {"indoor": _alts("kitchen|library|bedroom|garage|museum|office|hallway"),
          "outdoor": _alts("park|garden|street|meadow|forest|field|yard")}
PLACE_KIND_WORDS = {"indoor": ("inside", "indoors"), "outdoor": ("outside", "outdoors")}
ACTS = {"rest": _alts("sleeping|sitting|lying down|napping"),
        "move": _alts("running|walking|jumping|dancing")}
ACT_KIND_WORD = {"rest": "resting", "move": "moving"}
NLI_BOTH = _alts("the {s} is {act} in the {place}.|a {s} is {act} in the {place}.|"
                 "in the {place}, the {s} is {act}.|there is a {s} {act} in the {place}.")
NLI_ONLY_PLACE = _alts("the {s} is in the {place}.|a {s} is in the {place}.|"
                       "there is a {s} in the {place}.")
NLI_ONLY_ACT = _alts("the {s} is {act}.|a {s} is {act}.|there is a {s} {act}.")
# fmt: on

_REFS = sorted(set(SUBJECTS).union(*SUBJECTS.values()))
OTHER_REFS = {  # subject -> the words that name someone else
    s: tuple(r for r in _REFS if r != s and r not in hypernyms) for s, hypernyms in SUBJECTS.items()
}
PLACES["all"] = PLACES["indoor"] + PLACES["outdoor"]
PLACE_PAIRS = tuple((a, b) for a in PLACES["all"] for b in PLACES["all"] if a != b)
ACTS["all"] = ACTS["rest"] + ACTS["move"]
