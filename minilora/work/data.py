"""Text in, integer arrays out: the tokenizer, the bundled corpus and batching.

No downloads: the pretraining corpus is the English documentation that ships
with Python itself (``pydoc_data.topics``, the text behind ``help("topics")``),
and the downstream tasks are generated from templates (see ``minilora.work.tasks``).

The tokenizer works on characters, the simplest scheme that still lets a small
GPT learn something real. Its vocabulary is fixed when the base model is
pretrained and travels with the model (``CharTokenizer.to_dict``), so a
fine-tuning task can only use characters the base model knows.

Everything here returns plain NumPy ``int64`` arrays; the engine never appears.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from minilora.work.files import write_atomic
from minilora.work.tasks import task_characters

__all__ = [
    "CharTokenizer",
    "build_vocabulary",
    "pretraining_text",
    "random_batch",
    "split_text",
]


class CharTokenizer:
    """One token per character; token ``i`` is ``chars[i]``.

    >>> tok = CharTokenizer("abc")
    >>> tok.encode("cab").tolist()
    [2, 0, 1]
    >>> tok.decode([0, 1, 2])
    'abc'
    """

    def __init__(self, chars: str):
        if not isinstance(chars, str) or not chars:
            raise ValueError("CharTokenizer needs a non-empty string of characters")
        if len(set(chars)) != len(chars):
            duplicates = sorted({c for c in chars if chars.count(c) > 1})
            raise ValueError(f"the vocabulary repeats characters: {duplicates!r}")
        self.chars = chars
        self._index = {c: i for i, c in enumerate(chars)}

    @property
    def vocab_size(self) -> int:
        """How many distinct tokens there are (the model's embedding rows)."""
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """``text`` -> 1-D ``int64`` array of token ids.

        A character outside the vocabulary raises ``ValueError`` naming it and
        its position: the vocabulary cannot grow after pretraining.
        """
        index = self._index
        try:
            return np.array([index[c] for c in text], dtype=np.int64)
        except KeyError:
            pos, ch = next((i, c) for i, c in enumerate(text) if c not in index)
            raise ValueError(
                f"character {ch!r} at position {pos} is not in the tokenizer's vocabulary "
                f"({self.vocab_size} characters); the vocabulary is fixed by the pretrained "
                "model, so text must use only characters it was built with"
            ) from None

    def unknown_characters(self, text: str) -> str:
        """The characters of ``text`` outside the vocabulary, in order (empty: all encodable)."""
        index = self._index
        return "".join(c for c in text if c not in index)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Token ids (any iterable of ints, or an integer array) -> text."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = int(ids[(ids < 0) | (ids >= self.vocab_size)][0])
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.vocab_size})")
        chars = self.chars
        return "".join(chars[i] for i in ids.tolist())

    def to_dict(self) -> dict:
        """A JSON-serialisable description: ``{"type": "char", "chars": ...}``."""
        return {"type": "char", "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        """The inverse of ``to_dict``."""
        if not isinstance(d, dict) or d.get("type") != "char" or "chars" not in d:
            raise ValueError(f'expected {{"type": "char", "chars": ...}}, got {d!r:.80}')
        return cls(d["chars"])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokenizer as JSON, atomically (``minilora.work.files.write_atomic``)."""
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n"
        return write_atomic(path, text.encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharTokenizer:
        """Read a tokenizer written by ``save``."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and other.chars == self.chars

    def __hash__(self) -> int:
        return hash(self.chars)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def pretraining_text() -> str:
    """The pretraining corpus: Python's bundled English documentation topics.

    The values of ``pydoc_data.topics.topics`` joined in sorted key order with
    a blank line between them (about 465k characters on Python 3.11). The
    same Python version always gives the same text; other versions differ a
    little, which is why the vocabulary is saved with every model.
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


# Printable ASCII plus newline: always in the vocabulary, so that a prompt a
# user types (with ``$`` or a backtick, say, which the corpus happens to lack)
# can always be encoded. Tab and the other whitespace controls are left out.
ASCII = string.digits + string.ascii_letters + string.punctuation + " \n"


def build_vocabulary() -> str:
    """The sorted characters a base model is built with.

    The union of: every character of ``pretraining_text()``, every character
    the task generators can produce (computed exhaustively from their
    templates and word lists by ``minilora.work.tasks.task_characters``, not by
    sampling), and printable ASCII with newline. Deterministic for a given
    Python version; the result is baked into the pretrained model.
    """
    return "".join(sorted(set(pretraining_text()) | set(task_characters()) | set(ASCII)))


def split_text(ids: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Split a token stream into (train, validation), contiguously.

    The first ``1 - val_fraction`` of the tokens train, the rest validate: a
    contiguous split keeps validation windows from overlapping training ones.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"expected a 1-D array of token ids, got shape {ids.shape}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(len(ids) * val_fraction))
    n_train = len(ids) - n_val
    return ids[:n_train], ids[n_train:]


def random_batch(
    ids: np.ndarray, batch_size: int, block_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``batch_size`` random windows of ``block_size`` tokens: (x, y), each (B, T) int64.

    Row ``b`` is ``x[b] = ids[s : s + T]`` and ``y[b] = ids[s + 1 : s + T + 1]``
    for a start ``s`` drawn uniformly from ``rng``: the target at each position
    is the next token. The same seeded ``rng`` gives the same batch.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"expected a 1-D array of token ids, got shape {ids.shape}")
    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be >= 1, got {batch_size}, {block_size}")
    if len(ids) < block_size + 1:
        raise ValueError(
            f"the text has {len(ids)} tokens, but a window of block_size={block_size} "
            f"needs at least {block_size + 1} (inputs plus the next-token target)"
        )
    starts = rng.integers(0, len(ids) - block_size, size=batch_size)
    positions = starts[:, None] + np.arange(block_size)[None, :]
    x = ids[positions].astype(np.int64)
    y = ids[positions + 1].astype(np.int64)
    return x, y
