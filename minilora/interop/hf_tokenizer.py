"""A GPT-2 checkpoint's tokenizer files, in and out: ours (char_tokenizer.json) or GPT-2's BPE.

Reading a Hugging Face checkpoint directory (``read_tokenizer``), the first that is there:

* ``char_tokenizer.json``: minilora's character vocabulary, as ``export-hf`` writes it;
* ``tokenizer.json``: the ``tokenizers`` library's file, which
  ``GPT2TokenizerFast.save_pretrained`` writes (transformers 5 writes only this one);
* ``vocab.json`` + ``merges.txt``: GPT-2's original files (OpenAI's release, older
  ``transformers``), made into the byte-level BPE that GPT-2 uses: byte-level
  pre-tokenization without a leading space (unless tokenizer_config.json's
  ``add_prefix_space`` says otherwise), the merges in order, and ``<|endoftext|>``
  as a special token where the vocabulary has it.

Both BPE routes need the optional ``tokenizers`` library (``minilora.work.bpe``).
Writing (``write_tokenizer``) puts back what was read: ``char_tokenizer.json``,
or ``tokenizer.json`` with a ``tokenizer_config.json`` that names GPT-2's
tokenizer class, so that ``transformers.AutoTokenizer.from_pretrained`` loads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from minilora.work import io
from minilora.work.bpe import END_OF_TEXT, BPETokenizer, require_tokenizers
from minilora.work.data import CharTokenizer

CHAR_NAME = "char_tokenizer.json"  # our character vocabulary, plain JSON
BPE_NAME = "tokenizer.json"
VOCAB_NAME, MERGES_NAME = "vocab.json", "merges.txt"
CONFIG_NAME = "tokenizer_config.json"

__all__ = ["read_tokenizer", "special_token_ids", "write_tokenizer"]


def _from_vocab_and_merges(directory: Path) -> BPETokenizer:
    """GPT-2's byte-level BPE from its vocab.json and merges.txt."""
    require_tokenizers()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab_path, merges_path = directory / VOCAB_NAME, directory / MERGES_NAME
    vocab = io.read_json(vocab_path)
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise io.CheckpointError(f"{vocab_path}: expected a JSON object of token -> id")
    options = io.read_json(directory / CONFIG_NAME) if (directory / CONFIG_NAME).is_file() else {}
    prefix_space = bool(options.get("add_prefix_space", False))
    try:
        tokenizer = Tokenizer(models.BPE.from_file(str(vocab_path), str(merges_path)))
    except Exception as err:  # the library's own error for a damaged file
        raise io.CheckpointError(f"{merges_path}: not GPT-2's merges file: {err}") from None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    if END_OF_TEXT in vocab:
        tokenizer.add_special_tokens([END_OF_TEXT])
    return BPETokenizer(tokenizer)


def read_tokenizer(directory, vocab_size: int):
    """The tokenizer of a Hugging Face checkpoint directory, or None if it holds none.

    Its ids must fit the model: a tokenizer with more tokens than ``vocab_size``
    (the model's embedding rows) is refused.
    """
    directory = Path(directory)
    if (directory / CHAR_NAME).is_file():
        path = directory / CHAR_NAME
        try:
            tokenizer = CharTokenizer.from_dict(io.read_json(path))
        except ValueError as err:
            raise io.CheckpointError(f"{path}: {err}") from None
    elif (directory / BPE_NAME).is_file():
        path = directory / BPE_NAME
        tokenizer = BPETokenizer.load(path)
    elif (directory / VOCAB_NAME).is_file() and (directory / MERGES_NAME).is_file():
        path = directory / VOCAB_NAME
        tokenizer = _from_vocab_and_merges(directory)
    else:
        return None
    if tokenizer.vocab_size > vocab_size:
        raise io.CheckpointError(
            f"{path}: {tokenizer.vocab_size} tokens, but the model has vocab_size={vocab_size} "
            "(is it another model's tokenizer?)"
        )
    return tokenizer


def special_token_ids(tokenizer) -> tuple[int | None, int | None]:
    """(bos, eos) for config.json: GPT-2's ``<|endoftext|>`` for both, where there is one."""
    token = getattr(tokenizer, "end_of_text", None)
    return token, token


def write_tokenizer(tokenizer, directory, n_positions: int) -> None:
    """Write ``tokenizer``'s files into a Hugging Face checkpoint directory (see the module)."""
    directory = Path(directory)
    if isinstance(tokenizer, CharTokenizer):
        vocab = {c: i for i, c in enumerate(tokenizer.chars)}
        io.write_json(directory / CHAR_NAME, {**tokenizer.to_dict(), "vocab": vocab})
        return
    io.write_atomic(directory / BPE_NAME, tokenizer.to_json().encode("utf-8"))
    special = END_OF_TEXT if tokenizer.end_of_text is not None else None
    pre = json.loads(tokenizer.to_json()).get("pre_tokenizer") or {}
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": bool(pre.get("add_prefix_space", False)),
        "bos_token": special,
        "eos_token": special,
        "unk_token": special,
        "model_max_length": n_positions,
    }
    io.write_json(directory / CONFIG_NAME, config)
