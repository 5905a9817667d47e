"""The vocabulary of the tasks'-language corpus: other tables, sentences and templates.

Every string ``minilora.work.tasklang_corpus`` generates comes from here or
from ``minilora.work.mixed_words`` (its four tables, beings and spots). None of
the content words (tables, columns, key values, categories, numbers, subjects,
places, activities) is a word of the tasks' vocabulary in
``minilora.work.task_words``, and no template here is one of theirs;
``tests/test_tasklang_corpus.py`` computes both sides from the modules.

What is *the tasks'* here is the language only: SQL's keywords, the aggregate
words (highest, lowest, average...: the English for MAX, MIN, AVG, like SELECT
the words of the language and not of a table), the kinds of question the SQL
task asks (a lookup by key, rows or a column under one condition, a count, an
aggregate with or without a condition, a whole column) and the kinds of
premise and hypothesis the NLI task compares (who is where, doing what).

* SQL: ``TABLES`` (ten, each with a key column that is never called ``name``,
  a category column and two numeric columns; the first four are
  ``mixed_words.RELATIONS``), the question templates ``QUESTIONS``, the filter
  phrases ``FILTERS``, ``AGG_WORDS``; and the parts of made-up words
  (``ONSETS``, ``VOWELS``, ``CODAS``) that name the made-up tables of
  ``tasklang_corpus.made_up_table``, none of them one of ``TASK_WORDS``.
* NLI: ``BEINGS``, ``SPOTS``, the activities by kind ``DOINGS`` (``still`` and
  ``moving``: an activity of one kind contradicts one of the other, as resting
  and moving do in the task), the premise templates ``PREMISE_BOTH``,
  ``PREMISE_SPOT``, ``PREMISE_DOING`` and the hypothesis templates
  ``HYPOTHESES``.

The numbers avoid the tasks' values (every integer from 0 to 999 and the
multiples of 100 up to 9,900): four-digit integers that are not multiples of
100, and numbers with one decimal.
"""

from __future__ import annotations

from dataclasses import dataclass

from minilora.work import mixed_words, task_words

__all__ = [
    "AGG_WORDS",
    "BEINGS",
    "CODAS",
    "DOINGS",
    "FILTERS",
    "HYPOTHESES",
    "ONSETS",
    "PREMISE_BOTH",
    "PREMISE_DOING",
    "PREMISE_SPOT",
    "QUESTIONS",
    "SPOTS",
    "TABLES",
    "TASK_WORDS",
    "VOWELS",
    "Table",
    "content_words",
]


def _alts(text: str) -> tuple[str, ...]:
    """``"a|b|c"`` -> ``("a", "b", "c")``."""
    return tuple(text.split("|"))


def _counts(lo: int, hi: int, step: int) -> tuple[str, ...]:
    """Integers from ``lo`` to ``hi`` by ``step``, skipping multiples of 100."""
    return tuple(str(v) for v in range(lo, hi + 1, step) if v % 100)


def _tenths(lo: int, hi: int, step: int = 1) -> tuple[str, ...]:
    """Numbers with one decimal from ``lo / 10`` to ``hi / 10``, never a whole number."""
    return tuple(f"{v / 10:.1f}" for v in range(lo, hi + 1, step) if v % 10)


@dataclass(frozen=True)
class Table:
    """A table: a key column, a category column and two numeric columns.

    ``words`` gives, per column, the phrases a question may name it by (the
    first is the column's own name where that reads as English); the SQL always
    uses the column's name.
    """

    name: str  # the table, also its plural noun in questions
    one: str  # its singular
    key: str
    keys: tuple[str, ...]
    group: str
    groups: tuple[str, ...]
    numerics: dict[str, tuple[str, ...]]  # column -> values
    words: dict[str, tuple[str, ...]]  # column -> phrases naming it


def _from_mixed(r: mixed_words.Relation) -> Table:
    """One of char-small-mixed's tables, each column named by that corpus's one phrase."""
    words = {column: (phrase,) for column, phrase in r.words.items()}
    return Table(r.name, r.one, r.key, r.keys, r.group, r.groups, r.numerics, words)


# Made-up words that read like English: one to three syllables, each an onset (or none), a
# vowel sound and a coda (or none). Never one of TASK_WORDS, the tasks' content words, which
# tasklang_corpus.made_up_word skips.
ONSETS = ("",) + _alts(
    "b|bl|br|c|ch|cl|cr|d|dr|f|fl|fr|g|gl|gr|h|j|k|l|m|n|p|ph|pl|pr|qu|r|s|sc|sh|sk|sl|sm|sn|"
    "sp|st|str|sw|t|th|tr|v|w|wh|wr|y|z"
)
VOWELS = _alts("a|e|i|o|u|ai|ea|ee|ie|oa|oo|ou|ay|ey|oy")
CODAS = ("", "") + _alts(
    "b|ck|d|ff|g|k|l|ld|ll|lt|m|mp|n|nd|ng|nk|nt|p|r|rd|rk|rm|rn|rt|s|sh|ss|st|t|tch|th|x"
)


def _task_words() -> frozenset[str]:
    """Every content word of the tasks (``task_words``): tables, columns and their words,
    keys, categories, subjects and their hypernyms, places, activities, kind words."""
    texts = ["name"]  # the key column of every task table (written by tasks.py)
    for t in task_words.TABLES:
        texts += [t.name, t.singular, *t.keys, t.group, *t.groups]
        texts += [w for column, names in t.words.items() for w in (column, *names)]
    texts += [w for s, hypernyms in task_words.SUBJECTS.items() for w in (s, *hypernyms)]
    texts += [*task_words.PLACES["all"], *task_words.ACTS["all"]]
    texts += [*task_words.ACT_KIND_WORD.values(), *sum(task_words.PLACE_KIND_WORDS.values(), ())]
    return frozenset(w for text in texts for w in text.split())


TASK_WORDS = _task_words()

# fmt: off
TABLES = tuple(_from_mixed(r) for r in mixed_words.RELATIONS) + (
    Table(
        "singers", "singer", "surname",
        _alts("adams|barker|clarke|dixon|evans|fisher|gordon|harper|irving|jensen|keller|"
              "lambert|moreno|nolan|owens|porter|quinn|reyes|sutton|turner"),
        "label", _alts("atlantic|capitol|motown|decca|verve|sire|arista|elektra"),
        {"followers": _counts(1001, 9999, 19), "debut": _counts(1901, 1999, 1)},
        {"surname": ("surname",), "label": ("label", "record label"),
         "followers": ("followers", "fan count"), "debut": ("debut", "debut year")},
    ),
    Table(
        "comets", "comet", "comet",
        _alts("halley|encke|biela|tempel|tuttle|holmes|borrelly|hartley|kohoutek|lovejoy|"
              "hyakutake|ikeya|arend|faye|brorsen|westphal|pons|giacobini"),
        "orbit", _alts("short|long|hyperbolic|parabolic|retrograde|elliptic"),
        {"period": _tenths(33, 999, 7), "sighted": _counts(1601, 1999, 1)},
        {"comet": ("comet",), "orbit": ("orbit", "orbit class"),
         "period": ("period", "orbital period"), "sighted": ("year sighted", "sighting year")},
    ),
    Table(
        "dishes", "dish", "dish",
        _alts("risotto|paella|goulash|lasagna|ramen|curry|falafel|tagine|pierogi|gumbo|"
              "chowder|moussaka|biryani|ceviche|kimchi|fondue|borscht|gazpacho"),
        "cuisine", _alts("greek|thai|korean|mexican|indian|polish|swiss|moroccan|cajun"),
        {"kilojoules": _counts(1003, 4999, 7), "spiciness": _tenths(11, 99)},
        {"dish": ("dish",), "cuisine": ("cuisine", "style of cooking"),
         "kilojoules": ("kilojoules", "energy"), "spiciness": ("spiciness", "heat level")},
    ),
    Table(
        "islands", "island", "isle",
        _alts("crete|malta|corsica|sicily|sardinia|rhodes|capri|ibiza|madeira|tenerife|skye|"
              "jersey|guernsey|bali|java|tahiti|fiji|samoa"),
        "ocean", _alts("atlantic|pacific|arctic|southern|mediterranean|caribbean"),
        {"coastline": _counts(1001, 9999, 23), "rainfall": _tenths(105, 995, 5)},
        {"isle": ("isle", "island"), "ocean": ("ocean", "sea"),
         "coastline": ("coastline", "length of coast"), "rainfall": ("rainfall", "yearly rain")},
    ),
    Table(
        "telescopes", "telescope", "scope",
        _alts("hubble|kepler|spitzer|chandra|herschel|planck|gaia|subaru|keck|gemini|arecibo|"
              "lovell|parkes|effelsberg|yerkes|palomar"),
        "band", _alts("infrared|ultraviolet|optical|microwave|gamma|xray"),
        {"aperture": _tenths(15, 395, 2), "opened": _counts(1897, 1999, 1)},
        {"scope": ("scope", "telescope"), "band": ("band", "waveband"),
         "aperture": ("aperture", "mirror width"), "opened": ("opening year", "year opened")},
    ),
    Table(
        "volcanoes", "volcano", "volcano",
        _alts("vesuvius|krakatoa|pinatubo|tambora|stromboli|hekla|katla|merapi|sakurajima|"
              "kilauea|popocatepetl|cotopaxi|erebus|surtsey|lassen|shasta"),
        "status", _alts("active|dormant|extinct|restless|smoking"),
        {"height": _counts(1001, 6999, 11), "erupted": _counts(1601, 1999, 1)},
        {"volcano": ("volcano",), "status": ("status", "state"),
         "height": ("height", "altitude"), "erupted": ("last eruption", "year it erupted")},
    ),
)

# The English for the task's three aggregates, and more
AGG_WORDS = {"MAX": _alts("highest|largest|maximum|greatest|biggest"),
             "MIN": _alts("lowest|minimum|smallest|least"), "AVG": _alts("average|mean")}

# {w}: a column's words, {v}: a value. The task's operators only: =, >, <.
FILTERS = {
    "group": _alts("whose {w} is {v}|with {v} as {w}|filed under {v}|with {w} {v}"),
    "=": _alts("whose {w} is {v}|with the {w} {v}|with {w} equal to {v}"),
    ">": _alts("whose {w} is above {v}|with {w} over {v}|with {w} greater than {v}|"
               "with {w} more than {v}"),
    "<": _alts("whose {w} is below {v}|with {w} under {v}|with {w} less than {v}|"
               "with {w} smaller than {v}"),
}

# The task's kinds of question, in other words. {w}: a column's words, {k}: a key value,
# {rows}/{one}: the table's plural/singular, {f}: a filter phrase, {a}: an aggregate word.
QUESTIONS = {
    "lookup": _alts("what is the {w} for {k}?|which {w} has {k}?|find the {w} of {k}.|"
                    "show the {w} of {k}.|{k}: which {w}?|tell me {k}'s {w}.|"
                    "what {w} is listed for {k}?|look up the {w} of {k}."),
    "where_key": _alts("list every {one} {f}.|show the {rows} {f}.|which {rows} are there {f}?|"
                       "find all {rows} {f}.|give the {rows} {f}.|get each {one} {f}."),
    "where_col": _alts("show the {w} of the {rows} {f}.|list each {w} of {rows} {f}.|"
                       "give me the {w} of {rows} {f}.|find the {w} of every {one} {f}.|"
                       "which {w} do {rows} {f} have?"),
    "count": _alts("how many {rows} are listed {f}?|count all {rows} {f}.|"
                   "what is the count of {rows} {f}?|how many {rows} {f} exist?|"
                   "count of {rows} {f}?|tally the {rows} {f}."),
    "aggregate": _alts("what is the {a} {w} among {rows}?|show the {a} {w} of all {rows}.|"
                       "what is the {a} {w} of the {rows}?|give the {a} {w}.|"
                       "{a} {w} of every {one}?|find the {a} {w}.|which is the {a} {w}?"),
    "aggregate_where": _alts("what is the {a} {w} among {rows} {f}?|"
                             "show the {a} {w} of {rows} {f}.|find the {a} {w} for {rows} {f}.|"
                             "{a} {w} for {rows} {f}?|compute the {a} {w} of {rows} {f}."),
    "all_key": _alts("list every {one}.|show all the {rows}.|which {rows} are there?|"
                     "give all {rows}.|list the {rows}.|enumerate the {rows}."),
    "all_col": _alts("list the {w} of every {one}.|show the {w} of all {rows}.|"
                     "what is each {one}'s {w}?|give the {w} of each {one}.|"
                     "for all {rows}, get the {w}."),
}

BEINGS = mixed_words.BEINGS + _alts(
    "potter|drummer|jester|knight|squire|hermit|pirate|wizard|lion|tiger|panda|otter|badger|"
    "beaver|camel|zebra|penguin|walrus")
SPOTS = mixed_words.SPOTS + _alts(
    "pantry|studio|lobby|stable|cabin|quarry|vineyard|lagoon|canyon|valley|cottage|castle|"
    "tavern|temple|greenhouse|workshop")
DOINGS = {  # two kinds: one of each cannot both hold (as the task's resting and moving)
    "still": _alts("dozing|snoozing|kneeling|reclining|slumbering|lounging|squatting|"
                   "idling|daydreaming|meditating"),
    "moving": _alts("sprinting|jogging|skipping|hopping|swimming|climbing|cycling|skating|"
                    "rowing|marching|galloping|wrestling"),
}
# {s}: a being, {p}: a spot, {d}: a doing
PREMISE_BOTH = _alts("the {s} was {d} in the {p}.|one {s} is {d} in the {p}.|"
                     "in the {p}, a {s} was {d}.|a {s} was {d} in the {p}.|"
                     "this {s} is {d} in the {p}.|in the {p} there is a {s} {d}.")
PREMISE_SPOT = _alts("the {s} was in the {p}.|one {s} is in the {p}.|"
                     "in the {p} there is a {s}.|this {s} is in the {p}.")
PREMISE_DOING = _alts("the {s} was {d}.|one {s} is {d}.|this {s} is {d}.|a {s} was {d}.")
# {s}: the premise's being, {pred}: "in the {p}" or a doing
HYPOTHESES = _alts("the {s} was {pred}.|that {s} is {pred}.|this {s} is {pred}.")
# fmt: on


def content_words() -> set[str]:
    """Every content word and value of this vocabulary, lower case (what must not be the tasks')."""
    texts: list[str] = [*BEINGS, *SPOTS, *DOINGS["still"], *DOINGS["moving"]]
    for t in TABLES:
        texts += [t.name, t.one, t.key, *t.keys, t.group, *t.groups]
        for column, names in t.words.items():
            texts += [column, *names]
        for column, values in t.numerics.items():
            texts += [column, *values]
    return {word for text in texts for word in text.lower().split()}
