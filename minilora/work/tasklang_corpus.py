"""Text in the tasks' own formats about other things: char-small-tasklang's generated text.

Issue 28's premise test (experiment 4). The paper's footnote 6 says a small r
may not suffice when the task is in a "different language" from pretraining;
testing it needs a base that knows the tasks' language, and the manipulation
check (``minilora.paper.manipulation``) found that char-small-mixed does not:
its loss on the tasks' answer tokens is barely below (SQL) or above (NLI) a
character-frequency model's. Its generated text (``minilora.work.mixed_corpus``)
wrote SQL and sentences in *other* layouts and never wrote an NLI label, so the
base had never seen what comes after ``SQL: `` or ``A: ``.

This text keeps what the tasks share with any text of their kind and changes
what makes their examples:

* the same: the prompt formats (``Q: ...\\nSQL: `` followed by the query and a
  newline; ``P: ...\\nH: ...\\nA: `` followed by the label and a newline), the
  three label words, SQL's keywords, and the tasks' kinds of example, drawn by
  the tasks' own procedure (``tasks._sql_example`` and ``tasks._nli_example``):
  a lookup by key, the key or a column of the rows under one condition
  (=, > or <), a count, MAX/MIN/AVG with or without a condition, a whole
  column; a premise stating where a being is and/or what it is doing and a
  hypothesis stating one of the two, labelled by the tasks' rule (the premise
  states that fact: entailment; states another place or an activity of the
  other kind: contradiction; says nothing of that kind of fact: neutral);
* other: every table, column, key, category, number, subject, place and
  activity (``minilora.work.tasklang_words``, disjoint from the tasks'
  vocabulary), and every question, filter, premise and hypothesis template.

Four questions in five (``MADE_UP_SHARE``) are about a table made up for that
one question (``made_up_table``): its name, columns, keys and categories are
made-up words that read like English (syllables of English onsets, vowels and
codas), its numbers fresh. The tasks' tables and values are new to any base,
so what knowing their SQL means for a base is writing the query's structure
and either copying the table, column and value it names from the question or
guessing a new word well. A base that saw a few tables only predicts their
words from memory, and grows more confident in them, and so more wrong on the
tasks' words, the longer it trains: on the characters of the SQL test answers'
words, char-small-mixed's loss is 5.5 nats per character, and 4.0 for the
same recipe on its corpus stopped at 500 steps. A made-up word can only be
copied or guessed from how words are spelt; syllables unlike English ones
(consonant-vowel pairs, half the questions) still made the base confident
in the wrong spellings: 3.9 nats per character on the tasks' words after 1,500
steps, and a failed check (trials of 2026-12-07; ``pretrained`` has the
numbers). Numbers are four-digit integers that are not multiples of 100, or
have one decimal: never one of the tasks' numbers as a word, though they share
their digits. Three items in five are questions (``SQL_SHARE``): the NLI task's
answers are three label words, far easier to know than a query.

So a base pretrained on it has read many examples *like* the tasks', and has
read none of theirs: it knows their language, in the sense the manipulation
check measures, and has to learn their tables, words and templates when it is
fine-tuned. That is as close to the task as a premise test can go without
pretraining on the task itself; the labels follow the tasks' rule, so the base
may also have learnt the NLI task's comparison on other words (the report of
the experiment must say so).

The corpus "tasklang" (``mixed_corpus.CORPORA``) is the documentation text plus
``GENERATED_CHARS`` characters of this, seed 0: the same documentation and as
many generated characters as char-small-mixed's corpus, so that the third base
differs from the second only in what its generated half is, and from char-small
as the second does. The documentation keeps it a model of English prose, not
a model of the tasks' formats alone.

Disjointness holds by construction and is tested (``tests/test_tasklang_corpus.py``,
both sides computed from the modules): no task prompt, question, query, premise
or hypothesis of thousands drawn per split occurs in the text; no word of it is
a content word of the tasks; no template is one of theirs. The text uses only
the characters of ``build_vocabulary()``, so every base shares one tokenizer.
"""

from __future__ import annotations

import numpy as np

from minilora.work.task_words import NLI_LABELS
from minilora.work.tasklang_words import (
    AGG_WORDS,
    BEINGS,
    CODAS,
    DOINGS,
    FILTERS,
    HYPOTHESES,
    ONSETS,
    PREMISE_BOTH,
    PREMISE_DOING,
    PREMISE_SPOT,
    QUESTIONS,
    SPOTS,
    TABLES,
    TASK_WORDS,
    VOWELS,
    Table,
)

__all__ = [
    "GENERATED_CHARS",
    "GENERATED_SEED",
    "generated_text",
    "made_up_table",
    "made_up_word",
    "nli_item",
    "sql_item",
]

GENERATED_CHARS = 480_000  # as many as char-small-mixed's generated text
GENERATED_SEED = 0
SQL_SHARE = 0.6  # the chance that an item is a question with its query
MADE_UP_SHARE = 0.8  # the chance that a question is about a made-up table


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def made_up_word(rng: np.random.Generator) -> str:
    """One to three syllables (onset, vowel, coda), 3 to 10 letters; never a task word."""
    while True:
        syllables = [_pick(rng, ONSETS) + _pick(rng, VOWELS) + _pick(rng, CODAS)
                     for _ in range(int(rng.integers(1, 4)))]  # fmt: skip
        word = "".join(syllables)
        if 3 <= len(word) <= 10 and word not in TASK_WORDS and word + "s" not in TASK_WORDS:
            return word


def _made_up_number(rng: np.random.Generator) -> str:
    """A four-digit integer that is not a multiple of 100, or a number with one decimal."""
    whole = bool(rng.integers(2))
    low, high, skip = (1001, 10_000, 100) if whole else (11, 10_000, 10)
    v = skip
    while v % skip == 0:  # never a multiple of 100 (whole) or a whole number (tenths)
        v = int(rng.integers(low, high))
    return str(v) if whole else f"{v / 10:.1f}"


def made_up_table(rng: np.random.Generator) -> Table:
    """A table whose name, columns, keys and categories are made-up words (3 values each).

    A question about it can only be answered by copying its words and values
    into the query: no list of them can be learnt, as the tasks' own cannot."""
    words: list[str] = []
    while len(words) < 11:  # distinct: the table, 4 columns, 3 keys, 3 categories
        if (word := made_up_word(rng)) not in words:
            words.append(word)
    one, key, group, x, y, *values = words
    numerics = {c: tuple(_made_up_number(rng) for _ in range(3)) for c in (x, y)}
    columns = {c: (c,) for c in (key, group, x, y)}
    keys, groups = tuple(values[:3]), tuple(values[3:])
    return Table(one + "s", one, key, keys, group, groups, numerics, columns)


def _condition(rng, table: Table, exclude: str | None) -> tuple[str, str]:
    """A WHERE condition on a column other than ``exclude``: (English phrase, SQL)."""
    column = _pick(rng, [c for c in (table.group, *table.numerics) if c != exclude])
    w = _pick(rng, table.words[column])
    if column == table.group:
        v = _pick(rng, table.groups)
        return _pick(rng, FILTERS["group"]).format(w=w, v=v), f"{column} = '{v}'"
    op = _pick(rng, ("=", ">", "<"))
    v = _pick(rng, table.numerics[column])
    return _pick(rng, FILTERS[op]).format(w=w, v=v), f"{column} {op} {v}"


def sql_item(rng: np.random.Generator) -> str:
    """``"Q: {question}\\nSQL: {query}\\n"``: one of the SQL task's kinds, on another table."""
    t: Table = made_up_table(rng) if rng.random() < MADE_UP_SHARE else _pick(rng, TABLES)
    kind = _pick(rng, ("lookup", "where", "count", "aggregate", "all"))
    rows, one = t.name, t.one

    def ask(template_kind: str, **fill) -> str:
        return _pick(rng, QUESTIONS[template_kind]).format(rows=rows, one=one, **fill)

    if kind == "lookup":
        column = _pick(rng, (t.group, *t.numerics))
        w, k = _pick(rng, t.words[column]), _pick(rng, t.keys)
        q, sql = ask("lookup", w=w, k=k), f"SELECT {column} FROM {rows} WHERE {t.key} = '{k}'"
    elif kind == "where":
        column = _pick(rng, (t.key, t.group, *t.numerics))
        phrase, cond = _condition(rng, t, exclude=column)
        if column == t.key:
            q = ask("where_key", f=phrase)
        else:
            q = ask("where_col", w=_pick(rng, t.words[column]), f=phrase)
        sql = f"SELECT {column} FROM {rows} WHERE {cond}"
    elif kind == "count":
        phrase, cond = _condition(rng, t, exclude=None)
        q, sql = ask("count", f=phrase), f"SELECT COUNT(*) FROM {rows} WHERE {cond}"
    elif kind == "aggregate":
        column = _pick(rng, tuple(t.numerics))
        agg = _pick(rng, ("MAX", "MIN", "AVG"))
        fill = {"a": _pick(rng, AGG_WORDS[agg]), "w": _pick(rng, t.words[column])}
        sql = f"SELECT {agg}({column}) FROM {rows}"
        if rng.integers(2):
            phrase, cond = _condition(rng, t, exclude=column)
            q, sql = ask("aggregate_where", f=phrase, **fill), f"{sql} WHERE {cond}"
        else:
            q = ask("aggregate", **fill)
    else:
        column = _pick(rng, (t.key, t.group, *t.numerics))
        if column == t.key:
            q = ask("all_key")
        else:
            q = ask("all_col", w=_pick(rng, t.words[column]))
        sql = f"SELECT {column} FROM {rows}"
    return f"Q: {q}\nSQL: {sql}\n"


_OTHER = {"spot": "doing", "doing": "spot", "still": "moving", "moving": "still"}
_ALL_DOINGS = DOINGS["still"] + DOINGS["moving"]


def nli_item(rng: np.random.Generator) -> str:
    """``"P: {premise}\\nH: {hypothesis}\\nA: {label}\\n"``, labelled by the NLI task's rule.

    The hypothesis states one fact about the premise's being (where it is, or
    what it is doing). entailment: the premise states that fact; contradiction:
    it states another spot, or an activity of the other kind; neutral: it
    states only the other kind of fact. Every hypothesis can take every label.
    """
    label = _pick(rng, NLI_LABELS)
    s, about = _pick(rng, BEINGS), _pick(rng, ("spot", "doing"))
    agree = label != "contradiction"
    if about == "spot":
        here = _pick(rng, SPOTS)
        there = here if agree else _pick(rng, [p for p in SPOTS if p != here])
        pred, fact = f"in the {there}", here
    elif agree:
        pred = fact = _pick(rng, _ALL_DOINGS)
    else:
        kind = _pick(rng, ("still", "moving"))
        pred, fact = _pick(rng, DOINGS[kind]), _pick(rng, DOINGS[_OTHER[kind]])
    facts = {} if label == "neutral" else {about: fact}
    if label == "neutral" or rng.integers(2):
        other = _OTHER[about]
        facts[other] = _pick(rng, SPOTS if other == "spot" else _ALL_DOINGS)
    if len(facts) == 2:
        templates = PREMISE_BOTH
    else:
        templates = PREMISE_SPOT if "spot" in facts else PREMISE_DOING
    premise = _pick(rng, templates).format(s=s, p=facts.get("spot"), d=facts.get("doing"))
    hypothesis = _pick(rng, HYPOTHESES).format(s=s, pred=pred)
    return f"P: {premise}\nH: {hypothesis}\nA: {label}\n"


def generated_text(n_chars: int = GENERATED_CHARS, seed: int = GENERATED_SEED) -> str:
    """Items drawn with ``seed`` until there are at least ``n_chars`` characters.

    Each item (a question with its query, or a premise, hypothesis and label)
    ends with a newline, and a blank line separates items. Deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    items, total = [], 0
    while total < n_chars:
        item = sql_item(rng) if rng.random() < SQL_SHARE else nli_item(rng)
        items.append(item)
        total += len(item) + 1
    return "\n".join(items)
