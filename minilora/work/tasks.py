"""Downstream tasks, generated from templates: English-to-SQL and three-way inference.

Each example is a ``(prompt, answer)`` pair of strings. The model reads
``prompt + answer`` and is trained to produce the answer (the loss covers the
answer tokens only, see ``task_batch``); at evaluation it completes the prompt
greedily until the answer's terminator, a newline, and is scored by exact match.

* ``sql`` (WikiSQL-like, the paper's Table 4): three tables of four columns,
  questions with several English paraphrases, answers such as
  ``SELECT MAX(salary) FROM employees WHERE team = 'sales'``.
* ``nli`` (MNLI-like, the paper's GLUE rows): a premise and a hypothesis about
  who is where doing what; the answer is ``entailment``, ``neutral`` or
  ``contradiction``. Labels are balanced, and every hypothesis can take every
  label depending on the premise, so the hypothesis alone gives no cue. The
  label needs the two sentences compared (that kind of fact stated? the same
  value?), which a model of char-small's size learns by fine-tuning.

Every example, prompt plus answer, is at most ``MAX_EXAMPLE_CHARS`` = 127
characters, so it fits a context of 128 with its next-token target. That limit
and the set of characters a task can produce are established by walking every
path of the generator (``survey``), not by sampling.

The word lists and templates the generators draw from are in
``minilora.work.task_words``; this module generates, batches and scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

# The vocabulary the generators draw from; these names stay importable from here
# (``from minilora.work.tasks import TABLES, SUBJECTS`` and so on).
from minilora.work.task_words import (
    ACT_KIND_WORD,  # noqa: F401 (the first NLI's kind words; still importable from here)
    ACTS,
    NLI_BOTH,
    NLI_LABELS,
    NLI_ONLY_ACT,
    NLI_ONLY_PLACE,
    OTHER_REFS,  # noqa: F401
    PLACE_KIND_WORDS,  # noqa: F401
    PLACE_PAIRS,
    PLACES,
    SQL_AGG_WORDS,
    SQL_TEMPLATES,
    SUBJECTS,
    TABLES,
    Numeric,  # noqa: F401 (no longer used here; still importable from minilora.work.tasks)
    Table,
)

__all__ = [
    "MAX_EXAMPLE_CHARS",
    "NLI_LABELS",
    "TASKS",
    "TASK_VERSIONS",
    "TaskData",
    "accuracy",
    "exact_match",
    "generate_example",
    "make_task",
    "sample_task_batch",
    "survey",
    "task_batch",
    "task_characters",
]

TASKS = ("sql", "nli")
# Bumped whenever a task's generator changes what it draws, so that records of runs on
# an older version are never read for the new one (minilora.paper.experiments keys on it).
# nli 1: negation, hypernyms, kind words; 2: someone else's facts as neutral; 3: today's.
TASK_VERSIONS = {"sql": 1, "nli": 3}
MAX_EXAMPLE_CHARS = 127
Example = tuple[str, str]


# ---------------------------------------------------------------------------
# Choosers. The generators make every decision through one of two calls:
#   pick(options)  - a structural choice (which template, table, label...)
#   value(options) - a word or number that is only pasted into the text
# Sampling answers both from a NumPy generator. ``survey`` instead walks every
# combination of structural choices and answers each value call with its
# longest option, which gives the exact maximum length and every character.


class _Sampler:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    value = pick


def _text(option) -> str:
    return "".join(option) if isinstance(option, tuple) else str(option)


class _Walker:
    """Replays one path of structural choices and extends it with first options."""

    def __init__(self, path: list[list[int]]):
        self.path, self.depth, self.chars = path, 0, set()

    def pick(self, options):
        if self.depth == len(self.path):
            self.path.append([0, len(options)])
        index = self.path[self.depth][0]
        self.depth += 1
        return options[index]

    def value(self, options):
        for option in options:
            self.chars.update(_text(option))
        return max(options, key=lambda o: len(_text(o)))


@cache
def survey(name: str) -> tuple[int, str, int]:
    """Walk every path of a task's generator: (max example length, characters, paths).

    The characters are every one the generator can ever emit (sorted string);
    the length is the longest ``prompt + answer`` it can ever produce.
    """
    generate = _generator(name)
    path: list[list[int]] = []
    longest, chars, paths = 0, set(), 0
    while True:
        walker = _Walker(path)
        prompt, answer = generate(walker)
        longest = max(longest, len(prompt + answer))
        chars |= walker.chars | set(prompt + answer)
        paths += 1
        while path and path[-1][0] == path[-1][1] - 1:  # advance like an odometer
            path.pop()
        if not path:
            return longest, "".join(sorted(chars)), paths
        path[-1][0] += 1


def task_characters() -> str:
    """Every character any task can produce, sorted (exhaustive, see ``survey``)."""
    return "".join(sorted(set().union(*(survey(name)[1] for name in TASKS))))


# ---------------------------------------------------------------------------
# The SQL task


def _sql_filter(c, table: Table, exclude: str | None) -> tuple[str, str]:
    """A WHERE condition on a column other than ``exclude``: (English phrase, SQL)."""
    columns = [col for col in (table.group, *table.numerics) if col != exclude]
    column = c.pick(columns)
    if column == table.group:
        g = c.value(table.groups)
        return c.pick(table.group_phrases).format(g=g), f"{column} = '{g}'"
    numeric = table.numerics[column]
    op = c.pick(("=", ">", "<"))
    n = c.value(numeric.values)
    return c.pick(numeric.phrases(op)).format(n=n), f"{column} {op} {n}"


def _sql_example(c) -> Example:
    table: Table = c.pick(TABLES)
    kind = c.pick(("lookup", "where", "count", "aggregate", "all"))
    rows, one = table.name, table.singular
    if kind == "lookup":  # SELECT col FROM t WHERE name = 'x'
        column = c.pick((table.group, *table.numerics))
        w, key = c.value(table.words[column]), c.value(table.keys)
        question = c.pick(SQL_TEMPLATES["lookup"]).format(w=w, k=key)
        sql = f"SELECT {column} FROM {rows} WHERE name = '{key}'"
    elif kind == "where":  # SELECT col FROM t WHERE cond
        column = c.pick(("name", table.group, *table.numerics))
        phrase, cond = _sql_filter(c, table, exclude=column)
        if column == "name":
            question = c.pick(SQL_TEMPLATES["where_name"]).format(rows=rows, f=phrase)
        else:
            w = c.value(table.words[column])
            question = c.pick(SQL_TEMPLATES["where_col"]).format(w=w, rows=rows, f=phrase)
        sql = f"SELECT {column} FROM {rows} WHERE {cond}"
    elif kind == "count":  # SELECT COUNT(*) FROM t WHERE cond
        phrase, cond = _sql_filter(c, table, exclude=None)
        question = c.pick(SQL_TEMPLATES["count"]).format(rows=rows, f=phrase)
        sql = f"SELECT COUNT(*) FROM {rows} WHERE {cond}"
    elif kind == "aggregate":  # SELECT AGG(col) FROM t [WHERE cond]
        column = c.pick(tuple(table.numerics))
        agg = c.pick(("MAX", "MIN", "AVG"))
        a, w = c.value(SQL_AGG_WORDS[agg]), c.value(table.words[column])
        if c.pick((False, True)):
            phrase, cond = _sql_filter(c, table, exclude=column)
            template = c.pick(SQL_TEMPLATES["aggregate_where"])
            question = template.format(a=a, w=w, rows=rows, f=phrase)
            sql = f"SELECT {agg}({column}) FROM {rows} WHERE {cond}"
        else:
            question = c.pick(SQL_TEMPLATES["aggregate"]).format(a=a, w=w, rows=rows)
            sql = f"SELECT {agg}({column}) FROM {rows}"
    else:  # SELECT col FROM t
        column = c.pick(("name", table.group, *table.numerics))
        if column == "name":
            question = c.pick(SQL_TEMPLATES["all_name"]).format(rows=rows, one=one)
        else:
            w = c.value(table.words[column])
            question = c.pick(SQL_TEMPLATES["all_col"]).format(w=w, rows=rows, one=one)
        sql = f"SELECT {column} FROM {rows}"
    return f"Q: {question}\nSQL: ", f"{sql}\n"


# ---------------------------------------------------------------------------
# The NLI task (redesigned 2026-11-29 so that a model of our size can learn it:
# the first version, with negation, hypernyms, kind words and statements about
# someone else, left full fine-tuning at 50.5% after 1,200 steps; a version with
# the other subjects kept reached 72.7%). A premise states one or two facts
# about a subject: where it is and what it is doing. The hypothesis states one
# fact about the same subject. The label follows from comparing the two
# sentences, not from the hypothesis' words:
#   entailment    - the premise states that very fact
#   contradiction - the premise states an incompatible fact (another place; an
#                   activity of the other kind: sleeping and running cannot both
#                   hold, while sitting and sleeping might, so it is never used)
#   neutral       - the premise says nothing about that kind of fact
# Every hypothesis takes every label, depending on the premise.

_OTHER_KIND = {"rest": "move", "move": "rest"}


def _nli_fact(c, about: str, agree: bool) -> tuple[str, str]:
    """A hypothesis predicate about ``about`` and a premise fact that (dis)agrees with it."""
    if about == "place":
        if agree:
            place = c.value(PLACES["all"])
            return f"in the {place}", place
        here, there = c.value(PLACE_PAIRS)
        return f"in the {there}", here
    if agree:
        act = c.value(ACTS["all"])
        return act, act
    kind = c.pick(("rest", "move"))
    return c.value(ACTS[kind]), c.value(ACTS[_OTHER_KIND[kind]])


def _nli_example(c, label: str | None = None) -> Example:
    label = label if label is not None else c.pick(NLI_LABELS)
    subject = c.pick(tuple(SUBJECTS))
    about = c.pick(("place", "act"))
    other = "act" if about == "place" else "place"
    pred, fact = _nli_fact(c, about, agree=label != "contradiction")
    facts = {} if label == "neutral" else {about: fact}
    if label == "neutral" or c.pick((False, True)):
        facts[other] = c.value(PLACES["all"] if other == "place" else ACTS["all"])
    if len(facts) == 2:
        template = c.pick(NLI_BOTH)
    else:
        template = c.pick(NLI_ONLY_PLACE if "place" in facts else NLI_ONLY_ACT)
    premise = template.format(s=subject, place=facts.get("place"), act=facts.get("act"))
    return f"P: {premise}\nH: the {subject} is {pred}.\nA: ", f"{label}\n"


def _generator(name: str) -> Callable:
    if name == "sql":
        return _sql_example
    if name == "nli":
        return _nli_example
    raise ValueError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")


def generate_example(name: str, rng: np.random.Generator, label: str | None = None) -> Example:
    """One random ``(prompt, answer)`` of task ``name``; ``label`` fixes an NLI label."""
    if label is not None:
        if name != "nli" or label not in NLI_LABELS:
            raise ValueError(f"label={label!r} only applies to nli, one of {NLI_LABELS}")
        return _nli_example(_Sampler(rng), label)
    return _generator(name)(_Sampler(rng))


# ---------------------------------------------------------------------------
# Data sets, batches and scores


@dataclass
class TaskData:
    """A task's three splits; each a list of ``(prompt, answer)`` pairs."""

    name: str
    train: list[Example]
    val: list[Example]
    test: list[Example]


def make_task(name: str, n_train: int, n_val: int, n_test: int, seed: int = 0) -> TaskData:
    """Generate a task's splits, repeatable for ``seed``, with no prompt in two splits.

    Examples are drawn one after another and a prompt already drawn is skipped,
    so every prompt is unique across all splits. The test split is drawn first
    and validation next, so for a given seed they do not depend on ``n_train``.
    NLI labels cycle while drawing: each split has (almost exactly) a third of
    each label. Each split is shuffled.
    """
    _generator(name)  # validates the name
    sizes = {"test": n_test, "val": n_val, "train": n_train}
    for split, n in sizes.items():
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n_{split} must be a non-negative integer, got {n!r}")
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    splits: dict[str, list[Example]] = {}
    for split, n in sizes.items():
        examples: list[Example] = []
        tries = 0
        while len(examples) < n:
            tries += 1
            if tries > 100 * n + 1000:
                raise ValueError(f"could not draw {n} new distinct {name} prompts for {split}")
            label = NLI_LABELS[len(examples) % 3] if name == "nli" else None
            prompt, answer = generate_example(name, rng, label=label)
            if prompt not in seen:
                seen.add(prompt)
                examples.append((prompt, answer))
        splits[split] = [examples[i] for i in rng.permutation(len(examples))]
    return TaskData(name, splits["train"], splits["val"], splits["test"])


def task_batch(
    examples: Sequence[Example], tokenizer, block_size: int, ignore_index: int = -100
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and answer-only targets for a list of examples: (x, y), each (B, L) int64.

    For example ``i`` let ``ids = encode(prompt) + encode(answer)`` (length
    ``n``) and ``p = len(encode(prompt))``. Then ``L = max(n) - 1`` and

    * ``x[i, t] = ids[t]`` for ``t < n - 1``; the rest of the row is padding
      (token 0, which never matters: padding comes after every real token,
      so causal attention never lets a real position see it);
    * ``y[i, t] = ids[t + 1]`` for ``p - 1 <= t <= n - 2``, the positions whose
      next token is an answer token; ``y`` is ``ignore_index`` everywhere else,
      so the loss covers exactly the answer, terminator included.
    """
    if len(examples) == 0:
        raise ValueError("task_batch needs at least one example")
    encoded = []
    for prompt, answer in examples:
        p, a = tokenizer.encode(prompt), tokenizer.encode(answer)
        if len(p) == 0 or len(a) == 0:
            raise ValueError(f"prompt and answer must both be non-empty: {(prompt, answer)!r}")
        if len(p) + len(a) - 1 > block_size:
            raise ValueError(
                f"example of {len(p) + len(a)} tokens does not fit block_size={block_size} "
                f"(at most {block_size + 1} tokens): {prompt + answer!r}"
            )
        encoded.append((np.concatenate([p, a]).astype(np.int64), len(p)))
    width = max(len(ids) for ids, _ in encoded) - 1
    x = np.zeros((len(encoded), width), dtype=np.int64)
    y = np.full((len(encoded), width), ignore_index, dtype=np.int64)
    for i, (ids, p) in enumerate(encoded):
        # BEGIN STUDENT: answer_mask
        x[i, : len(ids) - 1] = ids[:-1]
        y[i, p - 1 : len(ids) - 1] = ids[p:]
        # END STUDENT: answer_mask
    return x, y


def sample_task_batch(
    examples: Sequence[Example],
    batch_size: int,
    rng: np.random.Generator,
    tokenizer,
    block_size: int,
    ignore_index: int = -100,
) -> tuple[np.ndarray, np.ndarray]:
    """``task_batch`` of ``batch_size`` examples drawn with replacement by ``rng``."""
    if len(examples) == 0:
        raise ValueError("sample_task_batch needs at least one example")
    chosen = rng.integers(len(examples), size=batch_size)
    return task_batch([examples[i] for i in chosen], tokenizer, block_size, ignore_index)


def exact_match(predictions: Sequence[str], answers: Sequence[str]) -> float:
    """Fraction of predictions equal to their answer, both stripped of surrounding space."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    if len(answers) == 0:
        raise ValueError("exact_match needs at least one answer")
    hits = sum(p.strip() == a.strip() for p, a in zip(predictions, answers, strict=True))
    return hits / len(answers)


def accuracy(predictions: Sequence[str], labels: Sequence[str]) -> float:
    """NLI accuracy: the fraction of predicted label texts equal to the true label."""
    return exact_match(predictions, labels)
