"""Text in the tasks' languages from other words, and the pretraining corpora by name.

Issue 17 tests the paper's footnote 6 (a small r may not suffice when the task
is in a "different language" from pretraining) under control: two base models
of one shape, pretrained by one recipe, that differ only in their corpus.

* ``"pydoc"``, char-small's corpus: the English text of Python's documentation
  (``minilora.work.data.pretraining_text``). It holds no SQL and none of the NLI
  task's kind of sentence.
* ``"mixed"``, char-small-mixed's corpus: that documentation plus
  ``GENERATED_CHARS`` = 480,000 characters generated here (seed 0), about as
  many as the documentation (465,126 characters on Python 3.11, 498,510 on
  3.12): 5,047 items, 2,244 English questions with their SQL queries (54% of
  the generated characters) and 2,803 premise/hypothesis pairs of short
  sentences (46%). Each part is split 90/10 into training and validation text.
* ``"tasklang"``, char-small-tasklang's corpus (issue 28): that documentation
  plus as many characters generated in the tasks' *own* formats, with their
  label words and their kinds of example, on other tables, words and templates
  (``minilora.work.tasklang_corpus``, which says why). Split the same way.

What the generated text shares with the tasks is their *language*: SQL's
keywords and syntax (SELECT, FROM, WHERE, AND, COUNT(*), MAX, MIN, AVG,
quoted strings, = > <), English question words (which, how many, what is, show
me) and sentences that say who is where doing what. What it does not share is
what makes a task's examples: their templates, tables, columns, key values,
categories, numbers, subjects, places and activities (this text draws on
``minilora.work.mixed_words``, every content word of which is another), their
prompt format (``Q: ...\\nSQL: `` and ``P: ...\\nH: ...\\nA: `` here become
``Question: ...\\nQuery: ...;`` or an SQL comment, and ``Premise: ... Hypothesis:``
or ``Given: ... Claim:``), and the NLI labels, which never appear: a premise
and a hypothesis are text to read here, not a question with an answer. A base
pretrained on it may learn how SQL and such sentences read, and how a question
maps to a query over *other* tables; it has never seen a task example.

Disjointness holds by construction and is tested (``tests/test_mixed_corpus.py``,
which computes both sides from the modules, never from a hard-coded list): no
prompt, answer, question, query, premise or hypothesis of thousands of task
examples drawn per split occurs in the generated text; no word of the text is a
content word of the tasks; no template is one of theirs; the tasks' prompt
scaffolds never occur. The text uses only the characters of
``build_vocabulary()``, so both bases share one tokenizer.
"""

from __future__ import annotations

import numpy as np

from minilora.work import tasklang_corpus
from minilora.work.data import pretraining_text, split_text
from minilora.work.mixed_words import (
    AGG_WORDS,
    BEINGS,
    CLAIM_DOING,
    CLAIM_SPOT,
    DOINGS,
    FILTERS,
    PAIR_LAYOUTS,
    QUESTIONS,
    RELATIONS,
    SCENE_BOTH,
    SCENE_DOING,
    SCENE_SPOT,
    SORT_WORDS,
    SPOTS,
    SQL_LAYOUTS,
    Relation,
)

__all__ = [
    "CORPORA",
    "GENERATED_CHARS",
    "GENERATED_SEED",
    "corpus_parts",
    "corpus_splits",
    "describe_corpus",
    "generated_text",
    "pair_item",
    "sql_item",
]

CORPORA = ("pydoc", "mixed", "tasklang")
GENERATED_CHARS = 480_000
GENERATED_SEED = 0
SQL_SHARE = 0.45  # the chance that an item is a question with its query (longer than a pair)


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


# ---------------------------------------------------------------------------
# Questions with their queries


def _condition(rng, rel: Relation, exclude: str | None = None) -> tuple[str, str]:
    """A WHERE condition on a column other than ``exclude``: (English phrase, SQL)."""
    column = _pick(rng, [c for c in (rel.group, *rel.numerics) if c != exclude])
    w = rel.words[column]
    if column == rel.group:
        v = _pick(rng, rel.groups)
        return _pick(rng, FILTERS["group"]).format(w=w, v=v), f"{column} = '{v}'"
    op = _pick(rng, ("=", ">", "<", ">=", "<="))
    v = _pick(rng, rel.numerics[column])
    return _pick(rng, FILTERS[op]).format(w=w, v=v), f"{column} {op} {v}"


def sql_item(rng: np.random.Generator) -> str:
    """One English question and its SQL query, in one of ``SQL_LAYOUTS``."""
    rel: Relation = _pick(rng, RELATIONS)
    t, key, one = rel.name, rel.key, rel.one
    kind = _pick(rng, tuple(QUESTIONS))
    template = _pick(rng, QUESTIONS[kind])
    column = _pick(rng, (rel.group, *rel.numerics))  # the column most kinds ask about
    fill = {"rows": t, "one": one, "w": rel.words[column]}
    if kind == "lookup":
        k = _pick(rng, rel.keys)
        q, sql = template.format(k=k, **fill), f"SELECT {column} FROM {t} WHERE {key} = '{k}'"
    elif kind in ("where_key", "where_col", "count", "pair"):
        phrase, cond = _condition(rng, rel, exclude=column if kind != "where_key" else None)
        selected = {"where_key": key, "where_col": column, "count": "COUNT(*)"}.get(
            kind, f"{key}, {column}"
        )
        q, sql = template.format(f=phrase, **fill), f"SELECT {selected} FROM {t} WHERE {cond}"
    elif kind == "count_and":
        phrase, cond = _condition(rng, rel)
        column_used = cond.split()[0]
        phrase2, cond2 = _condition(rng, rel, exclude=column_used)
        q = template.format(f=phrase, g=phrase2, **fill)
        sql = f"SELECT COUNT(*) FROM {t} WHERE {cond} AND {cond2}"
    elif kind in ("aggregate", "aggregate_where"):
        column = _pick(rng, tuple(rel.numerics))
        agg = _pick(rng, tuple(AGG_WORDS))
        fill.update(w=rel.words[column], a=_pick(rng, AGG_WORDS[agg]))
        sql = f"SELECT {agg}({column}) FROM {t}"
        if kind == "aggregate_where":
            phrase, cond = _condition(rng, rel, exclude=column)
            fill["f"], sql = phrase, f"{sql} WHERE {cond}"
        q = template.format(**fill)
    elif kind == "all_key":
        q, sql = template.format(**fill), f"SELECT {key} FROM {t}"
    elif kind == "all_col":
        q, sql = template.format(**fill), f"SELECT {column} FROM {t}"
    else:  # order
        column = _pick(rng, tuple(rel.numerics))
        direction = _pick(rng, tuple(SORT_WORDS))
        fill.update(w=rel.words[column], d=_pick(rng, SORT_WORDS[direction]))
        q, sql = template.format(**fill), f"SELECT {key} FROM {t} ORDER BY {column}{direction}"
    return _pick(rng, SQL_LAYOUTS).format(q=q, sql=sql)


# ---------------------------------------------------------------------------
# Premise/hypothesis pairs


def pair_item(rng: np.random.Generator) -> str:
    """A scene and a claim about the same being, in one of ``PAIR_LAYOUTS``.

    The scene states where the being is, what it is doing, or both; the claim
    states one of the two, with the scene's value or another, so that a claim
    may follow from the scene, conflict with it or be about something it does
    not say. Which one is not written anywhere: no label is generated.
    """
    s, p, d = _pick(rng, BEINGS), _pick(rng, SPOTS), _pick(rng, DOINGS)
    says = _pick(rng, ("both", "spot", "doing"))
    templates = {"both": SCENE_BOTH, "spot": SCENE_SPOT, "doing": SCENE_DOING}[says]
    scene = _pick(rng, templates).format(s=s, p=p, d=d)
    same = bool(rng.integers(2))
    if _pick(rng, ("spot", "doing")) == "spot":
        claim = _pick(rng, CLAIM_SPOT).format(s=s, p=p if same else _pick(rng, SPOTS))
    else:
        claim = _pick(rng, CLAIM_DOING).format(s=s, d=d if same else _pick(rng, DOINGS))
    return _pick(rng, PAIR_LAYOUTS).format(scene=scene, claim=claim)


def generated_text(n_chars: int = GENERATED_CHARS, seed: int = GENERATED_SEED) -> str:
    """Items drawn with ``seed`` until there are at least ``n_chars`` characters.

    Each item (a question with its query, or a scene with a claim) ends with a
    newline, and a blank line separates items. Deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    items, total = [], 0
    while total < n_chars:
        item = sql_item(rng) if rng.random() < SQL_SHARE else pair_item(rng)
        items.append(item)
        total += len(item) + 1
    return "\n".join(items)


# ---------------------------------------------------------------------------
# The corpora by name


def corpus_parts(name: str) -> dict[str, str]:
    """The texts a named corpus is made of: {"pydoc": ...} or {"pydoc": ..., "generated": ...}."""
    if name == "pydoc":
        return {"pydoc": pretraining_text()}
    if name == "mixed":
        return {"pydoc": pretraining_text(), "generated": generated_text()}
    if name == "tasklang":
        return {"pydoc": pretraining_text(), "generated": tasklang_corpus.generated_text()}
    raise ValueError(f"unknown corpus {name!r}; the corpora are {', '.join(CORPORA)}")


def corpus_splits(name: str, tokenizer, val_fraction: float = 0.1):
    """(train ids, validation ids) of a named corpus.

    Each part is split on its own (``split_text``: the first 90% trains, the
    last 10% validates) and the parts' train and validation ids are joined in
    order. So the documentation's validation text is the same in every corpus,
    and the "pydoc" corpus splits exactly as char-small was trained.
    """
    splits = [
        split_text(tokenizer.encode(text), val_fraction) for text in corpus_parts(name).values()
    ]
    return np.concatenate([t for t, _ in splits]), np.concatenate([v for _, v in splits])


def describe_corpus(name: str) -> str:
    """The corpus as a checkpoint's meta records it."""
    if name == "pydoc":
        return "pydoc_data.topics"
    corpus_parts(name)  # validates the name
    if name == "tasklang":
        t = tasklang_corpus
        return (
            f"pydoc_data.topics + minilora.work.tasklang_corpus.generated_text("
            f"{t.GENERATED_CHARS}, seed={t.GENERATED_SEED})"
        )
    return (
        f"pydoc_data.topics + minilora.work.mixed_corpus.generated_text("
        f"{GENERATED_CHARS}, seed={GENERATED_SEED})"
    )
