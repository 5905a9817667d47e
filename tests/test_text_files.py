"""`minilora pretrain --text FILE ...`: pretraining on your own text (minilora.work.text_files)."""

from __future__ import annotations

import hashlib
import string

import numpy as np
import pytest

from minilora.cli import main
from minilora.work.io import load_model
from minilora.work.text_files import read_pretraining_text, read_text_file

TINY = [
    "--steps", "4", "--batch-size", "2", "--block-size", "32", "--n-layer", "1",
    "--n-head", "2", "--d-model", "16", "--eval-every", "2", "--quiet",
]  # fmt: skip

# Two short texts of one's own: one holds characters outside ASCII.
POEM = "Über den Wolken muß die Freiheit wohl grenzenlos sein.\nÇa va, café crème?\n" * 12
NOTES = "Notes on LoRA: dW = B A, rank r, alpha / r.\n" * 20


def run(argv, capsys):
    """(exit status, stdout, stderr) of ``minilora ARGV`` in this process."""
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    (root / "poem.txt").write_text(POEM, encoding="utf-8")
    (root / "notes.txt").write_text(NOTES, encoding="utf-8")
    return root


def test_pretrain_on_text_files_writes_a_checkpoint_with_the_texts_tokenizer(texts, capsys):
    out = texts / "model"
    files = [str(texts / "poem.txt"), str(texts / "notes.txt")]
    status, printed, err = run(["pretrain", "--text", *files, "--out", str(out), *TINY], capsys)
    assert status == 0, err
    assert "validation loss" in printed
    model, tokenizer, meta = load_model(out)
    # the vocabulary: every character of the texts, and printable ASCII with newline
    expected = set(POEM) | set(NOTES) | set(string.printable[:94]) | {" ", "\n"}
    assert set(tokenizer.chars) == expected and len(tokenizer.chars) == len(expected)
    assert model.config.vocab_size == tokenizer.vocab_size and model.config.block_size == 32
    assert meta["corpus_name"] == "text" and meta["steps"] == 4
    assert [f["characters"] for f in meta["corpus_files"]] == [len(POEM), len(NOTES)]
    assert meta["corpus_files"][0]["sha256"] == hashlib.sha256(POEM.encode()).hexdigest()
    assert meta["corpus_tokens"] == len(POEM) + len(NOTES)
    assert (out / "last" / "model.safetensors").is_file()
    assert (out / "best" / "model.safetensors").is_file()
    # it generates from a prompt in the text's own characters (é is not ASCII)
    status, printed, err = run(
        ["generate", "--model", str(out), "--prompt", "café", "--length", "7"], capsys
    )
    assert status == 0, err
    assert printed.startswith("café") and len(printed.rstrip("\n")) >= len("café")


def test_each_file_validates_on_its_own_last_tenth(texts):
    text = read_pretraining_text([texts / "poem.txt", texts / "notes.txt"])
    decode = text.tokenizer.decode
    n_poem, n_notes = round(len(POEM) / 10), round(len(NOTES) / 10)
    assert decode(text.val_ids) == POEM[-n_poem:] + NOTES[-n_notes:]
    assert decode(text.train_ids) == POEM[:-n_poem] + NOTES[:-n_notes]


def test_line_endings_and_a_byte_order_mark_are_read_as_plain_newlines(tmp_path):
    path = tmp_path / "windows.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\rthree\n")
    assert read_text_file(path) == "one\ntwo\nthree\n"


def test_a_text_too_short_for_one_batch_is_refused_with_the_numbers(tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("x" * 1000)
    out = tmp_path / "never"
    status, _, err = run(["pretrain", "--text", str(short), "--out", str(out)], capsys)
    assert status == 1 and len(err.strip().splitlines()) == 1, err
    for words in ("--text", "1,000 characters", "900 for training", "100 for validation",
                  "--block-size 128 needs 129", "at least 1,286 characters",
                  "--block-size of at most 99"):  # fmt: skip
        assert words in err, err
    assert not out.exists()  # refused before any work
    # the advice is exact: 1,286 characters hold a window of 128 in both parts, 1,285 do not
    for n, fits in ((1286, True), (1285, False)):
        short.write_text("x" * n)
        if fits:
            read_pretraining_text([short]).check_fits(128)
        else:
            with pytest.raises(ValueError, match="at least 1,286"):
                read_pretraining_text([short]).check_fits(128)
    short.write_text("x" * 1000)  # and a block size of 99 does fit 1,000 characters
    read_pretraining_text([short]).check_fits(99)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"caf\xe9 au lait\n", ["byte 0xe9 at line 1, column 4 is not UTF-8"]),
        (b"line one\nline two \xff\n", ["byte 0xff at line 2, column 10"]),
        (b"", ["is empty"]),
        (b" \n\n\t\n", ["is empty"]),
        (b"text\x00with a NUL\n", ["NUL character (line 1)", "not a binary file"]),
    ],
    ids=["latin-1", "bad-byte-line-2", "empty", "whitespace", "binary"],
)
def test_a_file_that_is_not_text_is_refused_naming_it(tmp_path, capsys, content, words):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    status, _, err = run(["pretrain", "--text", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert status == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"minilora pretrain: --text {bad}: "), err
    for word in words:
        assert word in err, err


def test_missing_files_directories_and_two_sources_are_refused(tmp_path, capsys):
    out = str(tmp_path / "o")
    status, _, err = run(["pretrain", "--text", str(tmp_path / "nope.txt"), "--out", out], capsys)
    assert status == 1 and "nope.txt: no such file" in err
    status, _, err = run(["pretrain", "--text", str(tmp_path), "--out", out], capsys)
    assert status == 1 and "is a directory; expected a plain-text file" in err
    (tmp_path / "a.txt").write_text("some text\n" * 200)
    argv = ["pretrain", "--text", str(tmp_path / "a.txt"), "--corpus", "mixed", "--out", out]
    status, _, err = run(argv, capsys)
    assert status == 2 and "not allowed with argument --text" in err
    status, _, err = run(["pretrain", "--text", "--out", out], capsys)
    assert status == 2 and "--text" in err


def test_the_bundled_corpus_still_trains_with_the_base_models_vocabulary(tmp_path):
    from minilora.work.data import build_vocabulary
    from minilora.work.pretrained import bundled_text

    text = bundled_text("pydoc")
    assert text.tokenizer.chars == build_vocabulary() and text.name == "pydoc"
    assert abs(len(text.val_ids) - (len(text.train_ids) + len(text.val_ids)) / 10) <= 1
    assert np.issubdtype(text.train_ids.dtype, np.integer)
