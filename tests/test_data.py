"""Tokenizer, pretraining corpus, vocabulary and language-model batches (minilora.work.data)."""

import json
import string

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilora.work.data import (
    CharTokenizer,
    build_vocabulary,
    pretraining_text,
    random_batch,
    split_text,
)
from minilora.work.tasks import task_characters

VOCAB = build_vocabulary()
TOKENIZER = CharTokenizer(VOCAB)


# --- tokenizer --------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(VOCAB), max_size=300))
def test_encode_decode_round_trip(text):
    ids = TOKENIZER.encode(text)
    assert ids.dtype == np.int64
    assert ids.shape == (len(text),)
    if len(text):
        assert ids.min() >= 0 and ids.max() < TOKENIZER.vocab_size
    assert TOKENIZER.decode(ids) == text
    assert TOKENIZER.decode(ids.tolist()) == text


def test_ids_are_positions_in_the_vocabulary():
    tok = CharTokenizer("ab\nc")
    assert tok.vocab_size == 4
    assert tok.encode("cab\n").tolist() == [3, 0, 1, 2]
    assert tok.decode(np.array([[2, 3]])) == "\nc"  # any shape is flattened
    assert tok.encode("").shape == (0,) and tok.decode([]) == ""


def test_unknown_character_is_named_with_its_position():
    with pytest.raises(ValueError) as info:
        TOKENIZER.encode("select \x07 from")
    message = str(info.value)
    assert repr("\x07") in message
    assert "position 7" in message
    assert "pretrained" in message and "fixed" in message


def test_unknown_character_reports_the_first_one():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"'z' at position 2"):
        tok.encode("abzy")


def test_decode_rejects_ids_outside_the_vocabulary():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([-1])


@pytest.mark.parametrize("chars", ["", "abca"])
def test_bad_vocabularies_are_rejected(chars):
    with pytest.raises(ValueError):
        CharTokenizer(chars)


def test_dict_round_trip_is_json_serialisable():
    d = TOKENIZER.to_dict()
    assert d == {"type": "char", "chars": VOCAB}
    again = CharTokenizer.from_dict(json.loads(json.dumps(d)))
    assert again == TOKENIZER and again.chars == VOCAB


@pytest.mark.parametrize("bad", [{"type": "bpe", "chars": "ab"}, {"type": "char"}, "ab"])
def test_from_dict_rejects_other_formats(bad):
    with pytest.raises(ValueError):
        CharTokenizer.from_dict(bad)


def test_save_load_round_trip(tmp_path):
    path = tmp_path / "sub" / "tokenizer.json"
    TOKENIZER.save(path)
    assert CharTokenizer.load(path) == TOKENIZER
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == {"type": "char", "chars": VOCAB}
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokenizer.json"]  # no temp left
    CharTokenizer("xyz").save(path)  # overwrite in place
    assert CharTokenizer.load(path).chars == "xyz"
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokenizer.json"]


# --- corpus and vocabulary --------------------------------------------------


def test_pretraining_text_is_large_and_deterministic():
    text = pretraining_text()
    assert isinstance(text, str)
    assert len(text) > 300_000
    assert text == pretraining_text()
    assert "lambda" in text and "def " in text  # it really is the Python docs


def test_vocabulary_is_sorted_unique_and_deterministic():
    assert VOCAB == build_vocabulary()
    assert list(VOCAB) == sorted(set(VOCAB))


def test_vocabulary_covers_corpus_tasks_and_printable_ascii():
    vocab = set(VOCAB)
    assert set(pretraining_text()) <= vocab
    assert set(task_characters()) <= vocab
    assert set(string.printable) - set("\t\r\x0b\x0c") <= vocab
    assert (
        TOKENIZER.decode(TOKENIZER.encode(pretraining_text()[:5000])) == pretraining_text()[:5000]
    )


# --- splitting and batching -------------------------------------------------


def test_split_text_is_contiguous():
    ids = np.arange(1000)
    train, val = split_text(ids, val_fraction=0.1)
    assert len(train) == 900 and len(val) == 100
    assert np.array_equal(np.concatenate([train, val]), ids)
    assert train[-1] + 1 == val[0]
    train, val = split_text(ids, val_fraction=0.0)
    assert len(train) == 1000 and len(val) == 0


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_split_text_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError):
        split_text(np.arange(10), val_fraction=fraction)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 400),
    batch_size=st.integers(1, 8),
    block_size=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_batch_windows(n, batch_size, block_size, seed):
    ids = np.arange(1000, 1000 + n)  # token i is 1000 + its position
    if n < block_size + 1:
        with pytest.raises(ValueError, match="block_size"):
            random_batch(ids, batch_size, block_size, np.random.default_rng(seed))
        return
    x, y = random_batch(ids, batch_size, block_size, np.random.default_rng(seed))
    assert x.shape == y.shape == (batch_size, block_size)
    assert x.dtype == y.dtype == np.int64
    assert np.array_equal(y, x + 1)  # y is x shifted by one position
    assert np.array_equal(x[:, 1:], y[:, :-1])
    starts = x[:, 0] - 1000
    assert np.all(starts >= 0) and np.all(starts + block_size + 1 <= n)
    assert np.array_equal(x, 1000 + starts[:, None] + np.arange(block_size))  # contiguous


def test_random_batch_repeats_for_a_seed_and_differs_for_another():
    ids = TOKENIZER.encode(pretraining_text()[:20_000])
    a = random_batch(ids, 8, 32, np.random.default_rng(123))
    b = random_batch(ids, 8, 32, np.random.default_rng(123))
    c = random_batch(ids, 8, 32, np.random.default_rng(124))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_random_batch_error_is_clear():
    with pytest.raises(ValueError, match=r"5 tokens.*block_size=8.*at least 9"):
        random_batch(np.arange(5), 2, 8, np.random.default_rng(0))
