"""The mixed corpus holds the tasks' languages and none of their examples, words or formats.

Both sides are computed from the modules (``task_words``, ``tasks.make_task``,
``mixed_words``), never from a list written here, so a change to either side
that broke the separation fails a test.
"""

import functools
import re

import numpy as np
import pytest

from minilora.work import mixed_words, task_words, tasklang_corpus
from minilora.work.data import CharTokenizer, build_vocabulary, pretraining_text, split_text
from minilora.work.mixed_corpus import (
    CORPORA,
    GENERATED_CHARS,
    corpus_parts,
    corpus_splits,
    describe_corpus,
    generated_text,
)
from minilora.work.tasks import NLI_LABELS, make_task

WORD = re.compile(r"[a-z]+|\d+(?:\.\d+)?")  # lower-case words and numbers (3.5 is one)
SQL_PROMPT = re.compile(r"Q: (.+)\nSQL: ", re.S)  # the tasks' prompt layouts, parsed below;
NLI_PROMPT = re.compile(r"P: (.+)\nH: (.+)\nA: ", re.S)  # a change to them fails loudly


def words(text: str) -> set[str]:
    return set(WORD.findall(text.lower()))


def task_content_words() -> set[str]:
    """Every table, column, key, category, value, subject, place and activity of the tasks."""
    texts = ["name"]  # every task table's key column (task_words.Table), written by tasks.py
    for t in task_words.TABLES:
        texts += [t.name, t.singular, *t.keys, t.group, *t.groups]
        for column, names in t.words.items():
            texts += [column, *names]
        for column, numeric in t.numerics.items():
            texts += [column, *numeric.values]
    for subject, hypernyms in task_words.SUBJECTS.items():
        texts += [subject, *hypernyms]
    texts += [*task_words.PLACES["all"], *task_words.ACTS["all"]]
    texts += [*task_words.ACT_KIND_WORD.values()]
    texts += [w for kind in task_words.PLACE_KIND_WORDS.values() for w in kind]
    return words(" ".join(texts))


@pytest.fixture(scope="module")
def text():
    return whole("mixed")


@pytest.fixture(scope="module")
def task_examples():
    """The splits the experiments use (minilora.paper.experiments: 4,000/1,000/1,000, seed 0)."""
    return {
        name: make_task(name, n_train=4000, n_val=1000, n_test=1000, seed=0)
        for name in ("sql", "nli")
    }


def pieces(name: str, prompt: str, answer: str) -> list[str]:
    """The example's strings: prompt, answer, and the sentences or query inside them."""
    pattern = SQL_PROMPT if name == "sql" else NLI_PROMPT
    match = pattern.fullmatch(prompt)
    assert match, f"the {name} prompt layout changed: {prompt!r}"
    return [prompt, answer, answer.strip(), *match.groups()]


def test_no_task_example_occurs_in_the_generated_text(text, task_examples):
    for name, data in task_examples.items():
        for split in ("train", "val", "test"):
            examples = getattr(data, split)
            assert len(examples) >= 1000
            for prompt, answer in examples:
                for piece in pieces(name, prompt, answer):
                    assert piece not in text, f"{name} {split}: {piece!r} is in the corpus"


def test_every_task_example_holds_a_content_word_that_the_text_never_uses(text, task_examples):
    # why the test above cannot fail by chance: each of the tasks' questions, queries,
    # premises and hypotheses names something from their vocabulary, and no word of the
    # generated text is in that vocabulary
    content = task_content_words()
    assert len(content) > 300  # tables, keys, values (0..999 among them), subjects, places
    for name, data in task_examples.items():
        for prompt, answer in data.train + data.val + data.test:
            for piece in pieces(name, prompt, answer)[3:] + ([answer] if name == "sql" else []):
                assert words(piece) & content, f"{piece!r} names nothing of the task's own"
    shared = words(text) & content
    assert not shared, f"the generated text uses the tasks' words {sorted(shared)[:20]}"


def test_the_two_vocabularies_share_no_content_word():
    ours = mixed_words.content_words()
    assert {"novels", "title", "everest", "sailor", "lighthouse", "1813", "3.5"} <= ours
    shared = ours & task_content_words()
    assert not shared, sorted(shared)


def test_no_template_is_a_task_template():
    def skeletons(templates):
        return {re.sub(r"\{\w+\}", "{}", t) for t in templates}

    theirs = skeletons(
        [t for group in task_words.SQL_TEMPLATES.values() for t in group]
        + [*task_words.NLI_BOTH, *task_words.NLI_ONLY_PLACE, *task_words.NLI_ONLY_ACT]
        + ["the {s} is {pred}."]  # the NLI hypothesis, written by tasks.py
    )
    ours = skeletons(
        [t for group in mixed_words.QUESTIONS.values() for t in group]
        + [t for group in mixed_words.FILTERS.values() for t in group]
        + [*mixed_words.SCENE_BOTH, *mixed_words.SCENE_SPOT, *mixed_words.SCENE_DOING]
        + [*mixed_words.CLAIM_SPOT, *mixed_words.CLAIM_DOING]
    )
    assert len(theirs) > 40 and len(ours) > 40
    assert not ours & theirs, sorted(ours & theirs)


def test_the_task_prompt_formats_and_labels_never_occur(text, task_examples):
    scaffolds = {"sql": ("Q: ", "\nSQL: "), "nli": ("P: ", "\nH: ", "\nA: ")}
    for name, marks in scaffolds.items():
        prompts = [p for p, _ in task_examples[name].train]
        assert all(mark in p for p in prompts for mark in marks)  # they are the tasks' format
        for mark in marks:
            assert mark not in text, f"the task scaffold {mark!r} is in the corpus"
    assert not words(text) & set(NLI_LABELS)


GENERATORS = {"mixed": generated_text, "tasklang": tasklang_corpus.generated_text}


@functools.cache
def whole(corpus: str) -> str:
    """The generated half of a corpus at its shipped length and seed."""
    return GENERATORS[corpus]()


@pytest.mark.parametrize("corpus", GENERATORS)
def test_text_uses_only_the_tokenizer_characters(corpus):
    text = whole(corpus)
    assert set(text) <= set(build_vocabulary())
    tokenizer = CharTokenizer(build_vocabulary())
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.parametrize("corpus", GENERATORS)
def test_deterministic_for_a_seed_and_different_for_another(corpus):
    generate, text = GENERATORS[corpus], whole(corpus)
    assert generate(20_000, seed=3) == generate(20_000, seed=3)
    assert generate(20_000, seed=3) != generate(20_000, seed=4)
    assert text.startswith(generate(20_000))
    assert GENERATED_CHARS <= len(text) < GENERATED_CHARS + 200  # as much text in both


def test_text_holds_both_languages(text):
    items = text.split("\n\n")
    sql = [i for i in items if i.startswith(("Question: ", "-- "))]
    pairs = [i for i in items if i.startswith(("Premise: ", "Given: "))]
    assert len(sql) + len(pairs) == len(items) and len(sql) > 1000 and len(pairs) > 1000
    share = sum(map(len, sql)) / sum(map(len, items))
    assert 0.4 < share < 0.7, share
    for keyword in ("SELECT ", " FROM ", " WHERE ", " AND ", "COUNT(*)", "MAX(", "MIN(", "AVG("):
        assert keyword in text, keyword


def test_every_query_names_one_table_and_only_its_columns(text):
    tables = {r.name: r for r in mixed_words.RELATIONS}
    queries = [line.rstrip(";") for line in text.splitlines() if "SELECT " in line]
    assert len(queries) > 1000
    for query in queries:
        sql = query.removeprefix("Query: ")
        table = tables[re.search(r" FROM (\w+)", sql).group(1)]
        columns = {table.key, table.group, *table.numerics}
        keywords = {"SELECT", "FROM", "WHERE", "AND", "ORDER", "BY", "DESC", "COUNT"}
        keywords |= set(mixed_words.AGG_WORDS)
        strings = set(re.findall(r"'(\w+)'", sql))
        names = set(re.findall(r"[A-Za-z_]+", re.sub(r"'\w+'", "", sql)))
        assert names <= columns | keywords | {table.name}, query
        assert strings <= set(table.keys) | set(table.groups), query


def test_the_corpora_by_name():
    tokenizer = CharTokenizer(build_vocabulary())
    assert CORPORA[:2] == ("pydoc", "mixed")  # and "tasklang": tests/test_tasklang_corpus.py
    # char-small's recipe is unchanged: the "pydoc" corpus splits as before
    train, val = corpus_splits("pydoc", tokenizer)
    old_train, old_val = split_text(tokenizer.encode(pretraining_text()), val_fraction=0.1)
    assert np.array_equal(train, old_train) and np.array_equal(val, old_val)
    # "mixed" splits each part on its own: the documentation validates in both corpora
    parts = corpus_parts("mixed")
    assert list(parts) == ["pydoc", "generated"]
    train, val = corpus_splits("mixed", tokenizer)
    gen_train, gen_val = split_text(tokenizer.encode(parts["generated"]), val_fraction=0.1)
    assert np.array_equal(val, np.concatenate([old_val, gen_val]))
    assert np.array_equal(train, np.concatenate([old_train, gen_train]))
    assert describe_corpus("pydoc") == "pydoc_data.topics"
    with pytest.raises(ValueError, match="pydoc, mixed, tasklang"):
        corpus_parts("wiki")
