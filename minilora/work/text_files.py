"""Pretraining on your own text: plain-text files in, a character tokenizer and two id streams out.

``minilora pretrain --text FILE [FILE ...]`` trains on any UTF-8 text, the way
nanoGPT trains on a text file. The character tokenizer is built from the text
itself: every character it holds, plus printable ASCII and newline so that a
prompt typed later can always be encoded (``text_vocabulary``). It is saved with
the checkpoint like the bundled base's, so fine-tuning and generation later use
exactly these characters.

Each file is split on its own, as the bundled corpora are
(``minilora.work.mixed_corpus.corpus_splits``): its first 90% of characters
train and its last 10% validate, contiguously, so no validation window overlaps
a training one. The files' parts are then joined in the order given.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minilora.work.data import ASCII, CharTokenizer, split_text

__all__ = ["PretrainingText", "read_text_file", "read_pretraining_text", "text_vocabulary"]

VAL_FRACTION = 0.1


@dataclass
class PretrainingText:
    """What pretraining needs from a corpus: the tokenizer, both id streams, a description."""

    tokenizer: CharTokenizer
    train_ids: np.ndarray
    val_ids: np.ndarray
    name: str  # the checkpoint's meta "corpus_name": "text" for your files
    description: str  # its meta "corpus": which files, how long, their SHA-256
    files: list = field(default_factory=list)  # one {"path", "characters", "sha256"} per file

    def check_fits(self, block_size: int) -> None:
        """Refuse a text whose training or validation part holds no window of ``block_size``.

        A window is ``block_size`` inputs plus the next character as the last target,
        so each part needs ``block_size + 1`` characters. The message gives the counts,
        the least text that would do and the largest block size that fits.
        """
        n_train, n_val = len(self.train_ids), len(self.val_ids)
        need = block_size + 1
        if n_train >= need and n_val >= need:
            return
        total = n_train + n_val
        least = _least_text(need)
        fits = min(n_train, n_val) - 1
        advice = f"a --block-size of at most {fits}" if fits >= 1 else "more text"
        raise ValueError(
            f"{total:,d} characters split into {n_train:,d} for training and "
            f"{n_val:,d} for validation (each file's last {VAL_FRACTION:.0%}); one window of "
            f"--block-size {block_size} needs {need:,d} characters in each part. Give at least "
            f"{least:,d} characters of text, or {advice}"
        )


def _least_text(need: int) -> int:
    """The fewest characters of one file whose two parts (``split_text``) hold ``need`` each."""
    n = max(2 * need, math.floor((need - 1) / VAL_FRACTION))
    while min(len(part) for part in split_text(np.zeros(n), VAL_FRACTION)) < need:
        n += 1
    return n


def text_vocabulary(text: str) -> str:
    """The sorted characters of ``text`` together with printable ASCII and newline."""
    return "".join(sorted(set(text) | set(ASCII)))


def read_text_file(path) -> str:
    """A file's text as UTF-8 (line endings as ``\\n``); an empty or non-text file is refused.

    A byte that is not UTF-8 is named with its line and column, since the usual
    cause is a file saved in another encoding (Latin-1, UTF-16) or not text at all.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; expected a plain-text file")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise ValueError(
            f"{path}: byte 0x{raw[err.start]:02x} at line {line}, column {column} is not "
            "UTF-8; expected a plain-text file in UTF-8 (re-save it as UTF-8, or convert it "
            "with iconv)"
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ValueError(
            f"{path}: holds a NUL character (line {line}); expected plain text, not a binary file"
        )
    if not text.strip():
        raise ValueError(f"{path}: is empty (or only whitespace); expected some text")
    return text


def read_pretraining_text(paths) -> PretrainingText:
    """Read ``paths`` (text files), build their tokenizer and split each 90/10."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("expected at least one text file")
    texts = {p: read_text_file(p) for p in paths}
    tokenizer = CharTokenizer(text_vocabulary("".join(texts.values())))
    train, val, files = [], [], []
    for path, text in texts.items():
        t, v = split_text(tokenizer.encode(text), VAL_FRACTION)
        train.append(t)
        val.append(v)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        files.append({"path": str(path), "characters": len(text), "sha256": digest})
    description = "text files: " + ", ".join(
        f"{f['path']} ({f['characters']:,d} characters, sha256 {f['sha256'][:12]})" for f in files
    )
    return PretrainingText(
        tokenizer, np.concatenate(train), np.concatenate(val), "text", description, files
    )
