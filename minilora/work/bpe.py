"""A BPE tokenizer (GPT-2's kind), run by Hugging Face's ``tokenizers`` library: an optional extra.

The character tokenizer (``minilora.work.data.CharTokenizer``) stays the default
and needs nothing. A model imported from a GPT-2 checkpoint keeps that
checkpoint's own tokenizer instead: byte-level BPE, where text is first written
as bytes, each byte shown as one of 256 printable characters, and then the
learnt merges join frequent neighbours into one token (Radford et al. 2019,
section 2.2; Sennrich et al. 2016). Any text can be encoded, since every byte
has a token. ``tokenizers`` (``pip install "minilora[bpe]"``) does the work;
this class gives it the character tokenizer's interface (``encode`` to an
``int64`` array, ``decode``, ``vocab_size``, ``unknown_characters``,
``to_dict``), so training, fine-tuning and generation need no other change.

In a checkpoint the tokenizer is the file ``tokenizer.json`` (the library's own
format, which ``transformers`` reads as well), named in config.json's
``"tokenizer": {"type": "bpe", "file": "tokenizer.json"}``. Reading it runs no
code: it is JSON. ``minilora.interop.hf_tokenizer`` reads a GPT-2 checkpoint's
files (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``) into this class.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["BPETokenizer", "FILE_NAME", "require_tokenizers"]

FILE_NAME = "tokenizer.json"
END_OF_TEXT = "<|endoftext|>"  # GPT-2's one special token, where the vocabulary has it


def require_tokenizers():
    """The ``tokenizers`` module, or an ImportError that says how to install it."""
    try:
        import tokenizers
    except ImportError:
        raise ImportError(
            "this model's tokenizer is a BPE (GPT-2's kind), which needs Hugging Face's "
            'tokenizers library: pip install "minilora[bpe]" (or pip install tokenizers)'
        ) from None
    return tokenizers


class BPETokenizer:
    """A ``tokenizers.Tokenizer`` with minilora's tokenizer interface.

    Built from the library's JSON (``from_json``, ``load``) or from a live
    ``tokenizers.Tokenizer`` (``BPETokenizer(tok)``).
    """

    def __init__(self, tokenizer):
        self._tok = tokenizer

    @classmethod
    def from_json(cls, text: str, source="tokenizer.json") -> BPETokenizer:
        """From the text of a ``tokenizer.json``; a file the library cannot read is refused."""
        tokenizers = require_tokenizers()
        try:
            return cls(tokenizers.Tokenizer.from_str(text))
        except Exception as err:  # the library raises its own Exception for a bad file
            raise ValueError(
                f"{source}: not a tokenizers file the library can read: {err}"
            ) from None

    @classmethod
    def load(cls, path) -> BPETokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the tokenizer file is missing")
        return cls.from_json(path.read_text(encoding="utf-8"), path)

    @property
    def vocab_size(self) -> int:
        """Every token id the tokenizer can produce (its added special tokens included)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def end_of_text(self) -> int | None:
        """The id of ``<|endoftext|>`` (GPT-2's bos and eos), or None without one."""
        return self._tok.token_to_id(END_OF_TEXT)

    def encode(self, text: str) -> np.ndarray:
        """``text`` -> 1-D ``int64`` array of token ids (no special tokens added)."""
        return np.array(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Token ids -> text. Bytes cut mid-character show as U+FFFD, as in ``transformers``."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = int(ids[(ids < 0) | (ids >= self.vocab_size)][0])
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.vocab_size})")
        return self._tok.decode(ids.tolist(), skip_special_tokens=False)

    def unknown_characters(self, text: str) -> str:
        """The characters of ``text`` that do not come back from encode and decode.

        None for a byte-level BPE, which has a token for every byte; a BPE with an
        unknown token (not GPT-2's kind) loses the characters it never saw.
        """
        if self.decode(self.encode(text)) == text:
            return ""
        return "".join(c for c in dict.fromkeys(text) if self.decode(self.encode(c)) != c)

    def to_json(self) -> str:
        """The library's JSON of this tokenizer (the text of ``tokenizer.json``)."""
        return self._tok.to_str()

    def to_dict(self) -> dict:
        """What config.json records: the kind, and the file beside it that holds it."""
        return {"type": "bpe", "file": FILE_NAME, "vocab_size": self.vocab_size}

    def files(self) -> dict[str, bytes]:
        """The files a checkpoint holds for this tokenizer: {name: content}."""
        return {FILE_NAME: self.to_json().encode("utf-8")}

    @classmethod
    def from_dict(cls, d: dict, directory) -> BPETokenizer:
        """The inverse of ``to_dict`` and ``files``: the file ``d`` names, in ``directory``."""
        name = d.get("file", FILE_NAME)
        if not isinstance(name, str) or Path(name).name != name:
            raise ValueError(f"tokenizer file {name!r}: expected a plain file name")
        path = Path(directory) / name
        if not path.is_file():
            raise ValueError(f"the tokenizer is a BPE in {path}, which is missing")
        tokenizer = cls.load(path)
        if "vocab_size" in d and d["vocab_size"] != tokenizer.vocab_size:
            raise ValueError(
                f"{Path(directory) / name}: {tokenizer.vocab_size} tokens, but config.json "
                f"recorded {d['vocab_size']} (is it another model's tokenizer?)"
            )
        return tokenizer

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BPETokenizer) and json.loads(other.to_json()) == json.loads(
            self.to_json()
        )

    __hash__ = None  # mutable library object: no hashing

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"
