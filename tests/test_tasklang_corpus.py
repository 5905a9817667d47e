"""The tasks'-language corpus: the tasks' formats and labels, none of their examples or words.

Both sides are computed from the modules (``task_words``, ``tasks.make_task``,
``tasklang_words``), never from a list written here, so a change to either side
that broke the separation fails a test. The NLI labels are checked against the
tasks' rule by reading each premise and hypothesis back, not by re-running the
generator.
"""

import re
from collections import Counter

import numpy as np
import pytest
from test_mixed_corpus import NLI_PROMPT, SQL_PROMPT, pieces, task_content_words, whole, words

from minilora.cli import models as cli_models
from minilora.work import mixed_corpus, task_words, tasklang_words
from minilora.work.data import CharTokenizer, build_vocabulary, split_text
from minilora.work.tasks import NLI_LABELS, make_task

SQL_ITEM = re.compile(r"(Q: .+\nSQL: )(SELECT .+\n)")
NLI_ITEM = re.compile(r"(P: .+\nH: .+\nA: )(\w+\n)")


@pytest.fixture(scope="module")
def text():
    return whole("tasklang")  # its characters and determinism: tests/test_mixed_corpus.py


@pytest.fixture(scope="module")
def items(text):
    """{"sql": [(prompt, answer)], "nli": [(prompt, answer)]}: every item, parsed."""
    out = {"sql": [], "nli": []}
    for item in text.removesuffix("\n").split("\n\n"):
        sql, nli = SQL_ITEM.fullmatch(item + "\n"), NLI_ITEM.fullmatch(item + "\n")
        assert sql or nli, f"an item in neither task's format: {item!r}"
        out["sql" if sql else "nli"].append((sql or nli).groups())
    return out


@pytest.fixture(scope="module")
def task_examples():
    """The splits the experiments use (minilora.paper.experiments: 4,000/1,000/1,000, seed 0)."""
    return {name: make_task(name, 4000, 1000, 1000, seed=0) for name in ("sql", "nli")}


def test_every_item_is_in_a_task_format_with_its_answer(items):
    # the tasks' own prompt layouts (parsed by test_mixed_corpus's patterns) and answers
    assert len(items["sql"]) > 2000 and len(items["nli"]) > 2000
    for name, pattern in (("sql", SQL_PROMPT), ("nli", NLI_PROMPT)):
        for prompt, _ in items[name]:
            assert pattern.fullmatch(prompt), prompt
    labels = Counter(answer.strip() for _, answer in items["nli"])
    assert set(labels) == set(NLI_LABELS)
    assert min(labels.values()) > 0.3 * len(items["nli"]), labels  # about a third each


def test_no_task_example_occurs_in_the_generated_text(text, task_examples):
    for name, data in task_examples.items():
        for split in ("train", "val", "test"):
            examples = getattr(data, split)
            assert len(examples) >= 1000
            for prompt, answer in examples:
                found = pieces(name, prompt, answer)
                if name == "nli":  # its answer is a label: in the text by design
                    found = [found[0], *found[3:]]
                for piece in found:
                    assert piece not in text, f"{name} {split}: {piece!r} is in the corpus"


def test_no_word_of_the_text_is_a_content_word_of_the_tasks(text, task_examples):
    # why the test above cannot pass by chance: every question, query, premise and
    # hypothesis of the tasks names something of theirs, and the text names none of it
    content = task_content_words()
    for name, data in task_examples.items():
        for prompt, answer in data.test:
            for piece in pieces(name, prompt, answer)[3:] + ([answer] if name == "sql" else []):
                assert words(piece) & content, f"{piece!r} names nothing of the task's own"
    shared = words(text) & content
    assert not shared, f"the generated text uses the tasks' words {sorted(shared)[:20]}"
    assert not tasklang_words.content_words() & content


def test_no_template_is_a_task_template():
    def skeletons(templates):
        return {re.sub(r"\{\w+\}", "{}", t) for t in templates}

    task_filters = [p for t in task_words.TABLES for p in t.group_phrases] + [
        p for t in task_words.TABLES for n in t.numerics.values() for op in "=><"
        for p in n.phrases(op)
    ]  # fmt: skip
    theirs = skeletons(
        [t for group in task_words.SQL_TEMPLATES.values() for t in group]
        + task_filters
        + [*task_words.NLI_BOTH, *task_words.NLI_ONLY_PLACE, *task_words.NLI_ONLY_ACT]
        + ["the {s} is {pred}."]  # the NLI hypothesis, written by tasks.py
    )
    ours = skeletons(
        [t for group in tasklang_words.QUESTIONS.values() for t in group]
        + [t for group in tasklang_words.FILTERS.values() for t in group]
        + [*tasklang_words.PREMISE_BOTH, *tasklang_words.PREMISE_SPOT]
        + [*tasklang_words.PREMISE_DOING, *tasklang_words.HYPOTHESES]
    )
    assert len(theirs) > 80 and len(ours) > 60
    assert not ours & theirs, sorted(ours & theirs)
    # and the text has the SQL task's kinds of question: one per template kind of the task
    assert set(tasklang_words.QUESTIONS) == {
        k.replace("name", "key") for k in task_words.SQL_TEMPLATES
    }


def _facts(sentence: str) -> dict:
    """{"spot": ..., "doing": ...}: what a sentence says, read from the word lists."""
    found = words(sentence)
    spots = found & set(tasklang_words.SPOTS)
    doings = found & {d for kind in tasklang_words.DOINGS.values() for d in kind}
    assert len(spots) <= 1 and len(doings) <= 1, sentence
    return {"spot": next(iter(spots), None), "doing": next(iter(doings), None)}


def test_each_label_follows_the_tasks_rule(items):
    kind = {d: k for k, kind_ in tasklang_words.DOINGS.items() for d in kind_}
    for prompt, answer in items["nli"]:
        premise, hypothesis = NLI_PROMPT.fullmatch(prompt).groups()
        said, claim = _facts(premise), _facts(hypothesis)
        about = [k for k, v in claim.items() if v is not None]
        assert len(about) == 1 and any(said.values()), prompt
        about, stated = about[0], said[about[0]]
        if stated is None:
            expected = "neutral"  # the premise says nothing of that kind of fact
        elif stated == claim[about]:
            expected = "entailment"
        else:  # another spot; an activity of the other kind (never another of the same kind)
            assert about == "spot" or kind[stated] != kind[claim[about]], prompt
            expected = "contradiction"
        assert answer == f"{expected}\n", prompt + answer


def test_every_query_reads_one_table_and_copies_its_values_from_the_question(items):
    tables = {t.name: t for t in tasklang_words.TABLES}
    keywords = {"SELECT", "FROM", "WHERE", "COUNT", "MAX", "MIN", "AVG"}
    made_up = 0
    onset, vowel, coda = (
        "|".join(getattr(tasklang_words, n)) for n in ("ONSETS", "VOWELS", "CODAS")
    )
    made_up_word = re.compile(f"(?:(?:{onset})(?:{vowel})(?:{coda})){{1,3}}s?")
    for prompt, answer in items["sql"]:
        question, sql = SQL_PROMPT.fullmatch(prompt).group(1), answer.strip()
        strings = re.findall(r"'(\w+)'", sql)
        names = set(re.findall(r"[A-Za-z_]+", re.sub(r"'\w+'", "", sql))) - keywords
        for value in strings + re.findall(r"\b\d+(?:\.\d+)?\b", sql):
            assert value in words(question), (question, sql)  # in the question, to be copied
        assert ">=" not in sql and "<=" not in sql and " AND " not in sql  # the task's forms
        table = tables.get(re.search(r" FROM (\w+)", sql).group(1))
        if table is not None:
            assert names <= {table.key, table.group, *table.numerics, table.name}, sql
            assert set(strings) <= set(table.keys) | set(table.groups), sql
        else:  # a made-up table: every name in it made of the made-up words' syllables
            made_up += 1
            assert all(made_up_word.fullmatch(w) for w in names | set(strings)), sql
    assert 0.75 < made_up / len(items["sql"]) < 0.85  # MADE_UP_SHARE of the questions


def test_the_corpus_by_name(text):
    assert mixed_corpus.CORPORA == ("pydoc", "mixed", "tasklang") == cli_models.CORPORA
    parts = mixed_corpus.corpus_parts("tasklang")
    assert list(parts) == ["pydoc", "generated"] and parts["generated"] == text
    assert parts["pydoc"] == mixed_corpus.corpus_parts("mixed")["pydoc"]
    tokenizer = CharTokenizer(build_vocabulary())
    train, val = mixed_corpus.corpus_splits("tasklang", tokenizer)
    doc_train, doc_val = split_text(tokenizer.encode(parts["pydoc"]), 0.1)
    gen_train, gen_val = split_text(tokenizer.encode(text), 0.1)
    assert np.array_equal(train, np.concatenate([doc_train, gen_train]))
    assert np.array_equal(val, np.concatenate([doc_val, gen_val]))
    assert "tasklang_corpus.generated_text(480000, seed=0)" in mixed_corpus.describe_corpus(
        "tasklang"
    )
