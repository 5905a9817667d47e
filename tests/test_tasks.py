"""The downstream task generators, their batches and scores (minilora.work.tasks)."""

import collections
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilora.work.data import CharTokenizer, build_vocabulary
from minilora.work.tasks import (
    ACTS,
    MAX_EXAMPLE_CHARS,
    NLI_LABELS,
    PLACES,
    SUBJECTS,
    TABLES,
    TASKS,
    TaskData,
    accuracy,
    exact_match,
    generate_example,
    make_task,
    sample_task_batch,
    survey,
    task_batch,
    task_characters,
)

TOKENIZER = CharTokenizer(build_vocabulary())


def sample(name, n, seed=0):
    rng = np.random.default_rng(seed)
    return [generate_example(name, rng) for _ in range(n)]


SAMPLES = {name: sample(name, 5000) for name in TASKS}


# --- generators -------------------------------------------------------------


def test_task_names():
    assert TASKS == ("sql", "nli")
    with pytest.raises(ValueError, match="sql, nli"):
        make_task("glue", 1, 1, 1, seed=0)
    with pytest.raises(ValueError, match="sql, nli"):
        generate_example("glue", np.random.default_rng(0))


@pytest.mark.parametrize("name", TASKS)
def test_every_example_fits_the_context(name):
    longest, _, paths = survey(name)  # every path of the generator, exhaustively
    assert paths > 400
    assert longest <= MAX_EXAMPLE_CHARS == 127
    sampled = max(len(p + a) for p, a in SAMPLES[name])
    assert sampled <= longest  # the walk's bound holds for what is sampled


@pytest.mark.parametrize("name", TASKS)
def test_every_sampled_character_is_in_the_vocabulary(name):
    chars = set().union(*(set(p + a) for p, a in SAMPLES[name]))
    assert chars <= set(survey(name)[1]) <= set(task_characters())
    assert chars <= set(TOKENIZER.chars)
    for prompt, answer in SAMPLES[name][:500]:
        assert TOKENIZER.decode(TOKENIZER.encode(prompt + answer)) == prompt + answer


@pytest.mark.parametrize("name", TASKS)
def test_generators_repeat_for_a_seed(name):
    assert sample(name, 50, seed=7) == sample(name, 50, seed=7)
    assert sample(name, 50, seed=7) != sample(name, 50, seed=8)


@pytest.mark.parametrize("name", TASKS)
def test_answers_end_with_the_terminator(name):
    for prompt, answer in SAMPLES[name]:
        assert answer.endswith("\n") and answer.count("\n") == 1
        assert len(answer.strip()) > 0 and len(prompt) > 0


SQL_PATTERN = re.compile(
    r"SELECT (?P<select>\w+|COUNT\(\*\)|(MAX|MIN|AVG)\((?P<agg>\w+)\)) FROM (?P<table>\w+)"
    r"( WHERE (?P<where>\w+) (?P<op>[=<>]) (?P<value>'[a-z]+'|\d+))?\n"
)


def test_sql_answers_are_well_formed():
    columns = {t.name: {"name", t.group, *t.numerics} for t in TABLES}
    kinds = collections.Counter()
    for prompt, answer in SAMPLES["sql"]:
        assert prompt.startswith("Q: ") and prompt.endswith(("?\nSQL: ", ".\nSQL: "))
        m = SQL_PATTERN.fullmatch(answer)
        assert m, answer
        table = m["table"]
        assert table in columns
        selected = m["agg"] or m["select"]
        assert selected == "COUNT(*)" or selected in columns[table]
        if m["agg"]:
            assert m["agg"] not in ("name", next(t.group for t in TABLES if t.name == table))
        if m["where"]:
            assert m["where"] in columns[table]
            quoted = m["value"].startswith("'")
            assert quoted == (m["where"] in ("name", *(t.group for t in TABLES)))
            assert quoted <= (m["op"] == "=")  # text compares by equality only
            value = m["value"].strip("'")
            assert value in prompt  # the value is copied from the question
        kinds[
            ("COUNT" if "COUNT" in answer else "AGG" if m["agg"] else "COL", bool(m["where"]))
        ] += 1
    # every kind of query appears often
    assert set(kinds) == {(k, w) for k in ("COL", "AGG") for w in (False, True)} | {("COUNT", True)}
    assert min(kinds.values()) > 250


def test_sql_question_determines_the_query():
    answers = collections.defaultdict(set)
    for prompt, answer in sample("sql", 20000, seed=3):
        answers[prompt].add(answer)
    assert all(len(a) == 1 for a in answers.values())


def test_nli_format_and_labels():
    for prompt, answer in SAMPLES["nli"]:
        assert re.fullmatch(r"P: [a-z ,]+\.\nH: the [a-z ]+\.\nA: ", prompt), prompt
        assert answer.strip() in NLI_LABELS


def test_nli_labels_are_balanced():
    counts = collections.Counter(a.strip() for _, a in sample("nli", 3000, seed=11))
    assert set(counts) == set(NLI_LABELS)
    for label in NLI_LABELS:
        assert abs(counts[label] / 3000 - 1 / 3) < 0.03
    task = make_task("nli", 3000, 300, 300, seed=0)
    for split in (task.train, task.val, task.test):
        counts = collections.Counter(a.strip() for _, a in split)
        assert max(counts.values()) - min(counts.values()) <= 1


def _hypothesis(prompt):
    return prompt.split("\nH: ")[1].split("\nA: ")[0]


def test_nli_hypothesis_alone_does_not_give_the_label():
    examples = sample("nli", 40000, seed=5)
    by_hypothesis = collections.defaultdict(collections.Counter)
    for prompt, answer in examples:
        by_hypothesis[_hypothesis(prompt)][answer.strip()] += 1
    common = [c for c in by_hypothesis.values() if sum(c.values()) >= 40]
    assert len(common) > 50
    assert all(set(c) == set(NLI_LABELS) for c in common)  # each takes every label
    # a hypothesis-only "model" (majority label per hypothesis) is near chance
    test = sample("nli", 5000, seed=6)
    guess = {h: c.most_common(1)[0][0] for h, c in by_hypothesis.items()}
    hits = [guess.get(_hypothesis(p), "neutral") == a.strip() for p, a in test]
    assert np.mean(hits) < 0.42


def nli_oracle(prompt):
    """The label by an independent reading of the premise and hypothesis."""
    premise, hypothesis = prompt[3:].split("\nH: ")
    hypothesis = hypothesis.removesuffix(".\nA: ")
    subject = next(s for s in SUBJECTS if re.search(rf"\b(a|the) {s}\b", premise))
    place = re.search(r"in the (\w+)", premise)
    place = place and place[1]
    act = next((a for a in ACTS["all"] if a in premise), None)
    ref, pred = re.fullmatch(r"the (\w+) is (.+)", hypothesis).groups()
    negated = pred.startswith("not ")
    pred = pred.removeprefix("not ")
    if ref != subject and ref not in SUBJECTS[subject]:
        return "neutral"  # about someone else
    group_of = {a: g for g in ("rest", "move") for a in ACTS[g]}
    if pred.startswith("in the "):
        truth = None if place is None else place == pred[7:]
    elif pred in ("inside", "indoors", "outside", "outdoors"):
        indoors = pred in ("inside", "indoors")
        truth = None if place is None else (place in PLACES["indoor"]) == indoors
    elif pred in ("resting", "moving"):
        truth = None if act is None else group_of[act] == ("rest" if pred == "resting" else "move")
    else:
        assert pred in group_of, pred
        assert act is None or act == pred or group_of[act] != group_of[pred], prompt
        truth = None if act is None else act == pred
    if truth is None:
        return "neutral"
    return "entailment" if truth != negated else "contradiction"


def test_nli_labels_follow_from_the_sentences():
    for prompt, answer in SAMPLES["nli"]:
        assert nli_oracle(prompt) == answer.strip(), prompt


# --- make_task ----------------------------------------------------------------


@pytest.mark.parametrize("name", TASKS)
def test_make_task_sizes_disjoint_and_repeatable(name):
    task = make_task(name, 400, 100, 150, seed=1)
    assert isinstance(task, TaskData) and task.name == name
    assert (len(task.train), len(task.val), len(task.test)) == (400, 100, 150)
    prompts = [{p for p, _ in split} for split in (task.train, task.val, task.test)]
    assert sum(len(s) for s in prompts) == 650  # unique within and across splits
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])
    assert make_task(name, 400, 100, 150, seed=1) == task
    assert make_task(name, 400, 100, 150, seed=2).test != task.test


@pytest.mark.parametrize("name", TASKS)
def test_test_split_does_not_depend_on_train_size(name):
    small = make_task(name, 10, 50, 80, seed=4)
    large = make_task(name, 500, 50, 80, seed=4)
    assert small.test == large.test and small.val == large.val


def test_make_task_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_train"):
        make_task("sql", -1, 1, 1)


# --- batching -----------------------------------------------------------------


def check_batch(examples, x, y, ignore_index=-100):
    lengths = [len(p) + len(a) for p, a in examples]
    assert x.shape == y.shape == (len(examples), max(lengths) - 1)
    assert x.dtype == y.dtype == np.int64
    for i, (prompt, answer) in enumerate(examples):
        ids = TOKENIZER.encode(prompt + answer)
        n = len(ids) - 1
        assert np.array_equal(x[i, :n], ids[:-1])
        assert np.all(x[i, n:] == 0)
        kept = y[i] != ignore_index
        assert TOKENIZER.decode(y[i][kept]) == answer  # the loss sees exactly the answer
        assert np.flatnonzero(kept).tolist() == list(range(len(prompt) - 1, n))
        # each kept target is the token after the input at that position
        assert np.array_equal(y[i, kept], ids[1:][kept[:n]])


@pytest.mark.parametrize("name", TASKS)
def test_task_batch_targets_only_the_answer(name):
    examples = SAMPLES[name][:64]
    x, y = task_batch(examples, TOKENIZER, block_size=128)
    check_batch(examples, x, y)
    assert x.shape[1] <= 126


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text("abc ?", min_size=1, max_size=20), st.text("xyz\n", min_size=1, max_size=9)
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([-100, -1]),
)
def test_task_batch_any_examples(examples, ignore_index):
    x, y = task_batch(examples, TOKENIZER, block_size=64, ignore_index=ignore_index)
    check_batch(examples, x, y, ignore_index)


def test_task_batch_errors():
    with pytest.raises(ValueError, match="block_size=4"):
        task_batch([("abc", "def")], TOKENIZER, block_size=4)  # 6 tokens need block 5
    task_batch([("abc", "de")], TOKENIZER, block_size=4)  # 5 tokens fit
    with pytest.raises(ValueError, match="non-empty"):
        task_batch([("", "abc")], TOKENIZER, block_size=8)
    with pytest.raises(ValueError):
        task_batch([], TOKENIZER, block_size=8)


def test_sample_task_batch_repeats_for_a_seed():
    examples = SAMPLES["sql"][:200]
    a = sample_task_batch(examples, 16, np.random.default_rng(0), TOKENIZER, 128)
    b = sample_task_batch(examples, 16, np.random.default_rng(0), TOKENIZER, 128)
    c = sample_task_batch(examples, 16, np.random.default_rng(1), TOKENIZER, 128)
    assert a[0].shape[0] == 16
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0][:, :20], c[0][:, :20])


# --- scores -------------------------------------------------------------------


def test_exact_match_and_accuracy():
    answers = ["SELECT name FROM cities\n", "SELECT area FROM cities\n"]
    assert exact_match(["SELECT name FROM cities", " SELECT area FROM cities \n"], answers) == 1.0
    assert exact_match(["SELECT name FROM cities", "SELECT"], answers) == 0.5
    assert exact_match(["x", "y"], answers) == 0.0
    assert accuracy(["entailment", "neutral\n", "neutral"], ["entailment\n"] * 3) == pytest.approx(
        1 / 3
    )
    with pytest.raises(ValueError):
        exact_match(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        exact_match([], [])
