"""The vocabulary of the mixed corpus: its own tables, sentences and templates.

Every string ``minilora.work.mixed_corpus`` generates comes from here. None of
the content words (tables, columns, key values, categories, numbers, subjects,
places, activities) is a word of the tasks' vocabulary in
``minilora.work.task_words``, and no template here is one of theirs;
``tests/test_mixed_corpus.py`` computes both sides from the modules and checks.

* SQL: ``RELATIONS`` (four tables, each with a key column that is never called
  ``name``, a category column and two numeric columns), ``AGG_WORDS`` and the
  question templates ``QUESTIONS``, filter phrases ``FILTERS``, the sort
  directions ``SORT_WORDS`` and the two layouts of a question with its query,
  ``SQL_LAYOUTS``.
* Sentences: ``BEINGS``, ``SPOTS`` and ``DOINGS`` (who, where, doing what), the
  premise templates ``SCENE_BOTH``, ``SCENE_SPOT``, ``SCENE_DOING``, the
  statement templates ``CLAIM_SPOT``, ``CLAIM_DOING``, and the two layouts of a
  pair, ``PAIR_LAYOUTS``.

The numbers avoid the tasks' values: the tasks use every integer from 0 to 999
and the multiples of 100 up to 9,900, so the numbers here are years and counts
of four digits that are not multiples of 100, and ratings with one decimal.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AGG_WORDS",
    "BEINGS",
    "CLAIM_DOING",
    "CLAIM_SPOT",
    "DOINGS",
    "FILTERS",
    "PAIR_LAYOUTS",
    "QUESTIONS",
    "RELATIONS",
    "SCENE_BOTH",
    "SCENE_DOING",
    "SCENE_SPOT",
    "SORT_WORDS",
    "SPOTS",
    "SQL_LAYOUTS",
    "Relation",
    "content_words",
]


def _alts(text: str) -> tuple[str, ...]:
    """``"a|b|c"`` -> ``("a", "b", "c")``."""
    return tuple(text.split("|"))


def _counts(lo: int, hi: int, step: int) -> tuple[str, ...]:
    """Integers from ``lo`` to ``hi`` by ``step``, skipping multiples of 100."""
    return tuple(str(v) for v in range(lo, hi + 1, step) if v % 100)


def _ratings() -> tuple[str, ...]:
    """1.1 to 4.9 in tenths, without the whole numbers (so never "3.0")."""
    return tuple(f"{v / 10:.1f}" for v in range(11, 50) if v % 10)


@dataclass(frozen=True)
class Relation:
    """A table: a key column, a category column and two numeric columns.

    ``words`` says how a question names each column (a noun phrase); the SQL
    always uses the column's own name.
    """

    name: str  # the table, also its plural noun in questions
    one: str  # its singular
    key: str  # the key column
    keys: tuple[str, ...]
    group: str  # the category column
    groups: tuple[str, ...]
    numerics: dict[str, tuple[str, ...]]  # column -> values
    words: dict[str, str]  # column -> how questions name it


# fmt: off
RELATIONS = (
    Relation(
        "novels", "novel", "title",
        _alts("dune|emma|beloved|rebecca|dracula|ivanhoe|persuasion|middlemarch|walden|"
              "candide|ulysses|kidnapped|ragtime|atonement|possession|hyperion"),
        "genre", _alts("romance|mystery|satire|gothic|fable|epic|thriller"),
        {"published": _counts(1605, 1999, 7), "rating": _ratings()},
        {"title": "title", "genre": "genre", "published": "year of publication",
         "rating": "rating"},
    ),
    Relation(
        "rivers", "river", "river",
        _alts("amazon|danube|rhine|volga|thames|ganges|mekong|yukon|congo|zambezi|indus|"
              "tigris|orinoco|murray"),
        "continent", _alts("asia|africa|europe|america|oceania"),
        {"length": _counts(1003, 6997, 11), "discharge": _counts(1001, 9999, 13)},
        {"river": "river", "continent": "continent", "length": "length",
         "discharge": "discharge"},
    ),
    Relation(
        "ships", "ship", "vessel",
        _alts("arrow|falcon|mariner|neptune|orion|pelican|seagull|tempest|voyager|albatross|"
              "corsair|kestrel|heron|puffin"),
        "port", _alts("hull|genoa|lisbon|boston|dublin|porto|tangier|valletta|antwerp"),
        {"tonnage": _counts(1009, 9991, 17), "launched": _counts(1801, 1999, 1)},
        {"vessel": "vessel", "port": "port", "tonnage": "tonnage", "launched": "launch year"},
    ),
    Relation(
        "mountains", "mountain", "summit",
        _alts("everest|denali|elbrus|aconcagua|vinson|olympus|matterhorn|eiger|fuji|etna|"
              "rainier|ararat|logan|kenya"),
        "chain", _alts("alps|andes|himalaya|rockies|caucasus|pyrenees|urals|cascades"),
        {"elevation": _counts(1013, 8848, 7), "climbed": _counts(1786, 1999, 1)},
        {"summit": "summit", "chain": "mountain chain", "elevation": "elevation",
         "climbed": "year of first ascent"},
    ),
)

AGG_WORDS = {"MAX": _alts("greatest|biggest"), "MIN": _alts("smallest|least"),
             "AVG": _alts("average"), "SUM": _alts("total|combined")}

# {w}: a column's words, {v}: a value. SQL operators -> English.
FILTERS = {
    "group": _alts("whose {w} is {v}|with {v} as their {w}|listed with {w} {v}"),
    "=": _alts("whose {w} is exactly {v}|with a {w} of {v}"),
    ">": _alts("whose {w} exceeds {v}|with a {w} above {v}|with {w} greater than {v}"),
    "<": _alts("whose {w} is below {v}|with a {w} beneath {v}|with {w} smaller than {v}"),
    ">=": _alts("with a {w} of at least {v}|whose {w} is {v} or more"),
    "<=": _alts("with a {w} of at most {v}|whose {w} is {v} or less"),
}

# {w}: a column's words, {k}: a key value, {one}/{rows}: the table's singular/plural,
# {f}, {g}: filter phrases, {a}: an aggregate word, {d}: a sort direction.
QUESTIONS = {
    "lookup": _alts("which {w} does the {one} {k} have?|look up the {w} of {k}.|"
                    "for the {one} {k}, what is its {w}?|i want the {w} recorded for {k}."),
    "where_key": _alts("get each {one} {f}.|{rows} {f}: which are they?|"
                       "show me the {rows} {f}.|pull up every {one} {f}."),
    "where_col": _alts("get the {w} of each {one} {f}.|for {rows} {f}, show their {w}.|"
                       "the {w} of every {one} {f}, please."),
    "count": _alts("how many {rows} {f}?|in total, how many {rows} are listed {f}?|"
                   "tally the {rows} {f}.|how many of the {rows} {f}?"),
    "count_and": _alts("how many {rows} {f} and {g}?|tally the {rows} {f} and {g}.|"
                       "how many {rows} are there, {f} and {g}?"),
    "aggregate": _alts("which is the {a} {w} among the {rows}?|the {a} {w} across every {one}?|"
                       "compute the {a} {w} over all {rows}."),
    "aggregate_where": _alts("compute the {a} {w} of {rows} {f}.|"
                             "among {rows} {f}, which is the {a} {w}?|"
                             "over {rows} {f}, the {a} {w}?"),
    "all_key": _alts("enumerate the {rows}.|every {one}, please.|show me each {one} on record."),
    "all_col": _alts("show me each {one}'s {w}.|the {w} of every {one} on record?|"
                     "for all {rows}, get the {w}."),
    "order": _alts("sort the {rows} by {w}, {d}.|rank every {one} by {w}, {d}.|"
                   "order the {rows} by their {w}, {d}."),
    "pair": _alts("show each {one} with its {w} {f}.|for {rows} {f}, pair each with its {w}."),
}
SORT_WORDS = {"": _alts("smallest first|lowest first"),
              " DESC": _alts("largest first|highest first")}

# A question and its query: {q}, {sql}. Not the task's "Q: ...\nSQL: " prompt.
SQL_LAYOUTS = ("Question: {q}\nQuery: {sql};\n", "-- {q}\n{sql};\n")

BEINGS = _alts("sailor|baker|pilot|tailor|poet|monk|miner|fox|owl|parrot|rabbit|donkey|clerk|"
               "judge|captain|mayor|weaver|shepherd")
SPOTS = _alts("attic|cellar|bakery|station|harbor|pier|bridge|beach|hill|market|chapel|barn|"
              "tunnel|lighthouse|orchard|square|platform|balcony|rooftop|dock")
DOINGS = _alts("whistling|reading|painting|singing|knitting|swimming|climbing|fishing|writing|"
               "sweeping|waiting|eating|laughing|yawning|kneeling|humming|shouting|stretching|"
               "sketching|praying")
# {s}: a being, {p}: a spot, {d}: a doing.
SCENE_BOTH = _alts("a {s} was {d} at the {p}.|the {s} is {d} near the {p}.|"
                   "at the {p}, a {s} is {d}.|one {s} stood by the {p}, {d}.|"
                   "the {s} at the {p} kept {d}.")
SCENE_SPOT = _alts("a {s} was at the {p}.|the {s} stayed near the {p}.|"
                   "you could see a {s} by the {p}.")
SCENE_DOING = _alts("the {s} was {d}.|a {s} kept {d} all day.|someone saw a {s} {d}.")
CLAIM_SPOT = _alts("the {s} is at the {p}.|a {s} is near the {p}.|the {s} was by the {p}.|"
                   "the {s} is not at the {p}.")
CLAIM_DOING = _alts("the {s} is {d} now.|the {s} was {d}.|a {s} is busy {d}.|"
                    "the {s} is not {d}.")
# A scene and a claim about it: {scene}, {claim}. Not the task's "P: ...\nH: ...\nA: "
# prompt, and never a label: the pair is text to read, not a question to answer.
PAIR_LAYOUTS = ("Premise: {scene}\nHypothesis: {claim}\n", "Given: {scene}\nClaim: {claim}\n")
# fmt: on


def content_words() -> set[str]:
    """Every content word and value of this vocabulary, lower case (what must not be the tasks')."""
    texts: list[str] = [*BEINGS, *SPOTS, *DOINGS]
    for r in RELATIONS:
        texts += [r.name, r.one, r.key, *r.keys, r.group, *r.groups, *r.words.values()]
        for column, values in r.numerics.items():
            texts += [column, *values]
    return {word for text in texts for word in text.lower().split()}
