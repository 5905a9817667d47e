"""Fine-tuning on your own pairs: JSON Lines of ``{"prompt": ..., "completion": ...}``.

One JSON object per line, with a string ``prompt`` and a string ``completion``:

    {"prompt": "Q: how many cities are there?\\nSQL: ", "completion": "SELECT COUNT(*) FROM cities"}

These are the keys of OpenAI's legacy fine-tuning files, which litgpt's JSON
loader and many hosted services and tutorials also read, so a data set made for
them needs no change here. The model is trained to write the completion after the
prompt, with the loss on the completion only (the paper's conditional language
modelling, as for the bundled tasks: ``minilora.work.tasks.task_batch``). Other
keys on a line are ignored.

Each completion is followed by a stop sequence (a newline unless chosen), added
when it does not already end with it, so that the model learns where an answer
ends; greedy generation stops there and exact match compares the text before it.

Everything that would silently change what is learnt is refused with its file
and line: a line that is not JSON or not an object, a missing or non-string key,
an empty prompt or completion, a completion that holds the stop sequence before
its end, a character the tokenizer cannot encode (unless ``skip_unencodable``,
which drops the example and counts it), an example longer than the model's
context (unless ``truncate``, which cuts the prompt's start and counts it), and a
file with fewer than two examples.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minilora.work.files import write_atomic

__all__ = ["Pairs", "held_out_split", "read_pairs", "write_pairs"]

KEYS = ("prompt", "completion")
FORMAT_HINT = 'expected one JSON object per line, like {"prompt": "...", "completion": "..."}'


@dataclass
class Pairs:
    """The examples of one file, with what was dropped or cut to read them."""

    path: str
    examples: list  # (prompt, completion + stop) pairs, in file order
    lines: list  # the line number of each example
    skipped: list = field(default_factory=list)  # (line, character) of each example dropped
    truncated: int = 0  # prompts cut at the start to fit the context

    def report(self) -> list[str]:
        """One line for each thing the reading did besides reading: skipped, truncated."""
        out = []
        if self.skipped:
            line, char = self.skipped[0]
            out.append(
                f"{self.path}: skipped {len(self.skipped)} example(s) holding characters the "
                f"tokenizer cannot encode (the first: line {line}, {char!r})"
            )
        if self.truncated:
            out.append(
                f"{self.path}: cut the start of {self.truncated} prompt(s) to fit the context"
            )
        return out


def _json_type(value) -> str:
    """JSON's name for the type of a parsed value."""
    names = {list: "array", dict: "object", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _unknown(tokenizer, text: str) -> str:
    """The characters of ``text`` that ``tokenizer`` cannot encode, in order of appearance."""
    return "".join(dict.fromkeys(tokenizer.unknown_characters(text)))


def _vocabulary_hint(tokenizer) -> str:
    if getattr(tokenizer, "chars", None) is None:
        return f"the tokenizer ({tokenizer!r}) cannot encode them"
    return (
        f"the model's character tokenizer has a fixed vocabulary of {tokenizer.vocab_size} "
        "characters, chosen when its base was pretrained (a new character would need an "
        "embedding row the model never learnt); replace those characters, pretrain a base on "
        "text that holds them (minilora pretrain --text), or pass --skip-unencodable to drop "
        "such examples (they are counted)"
    )


def _fit(prompt: str, completion: str, tokenizer, block_size: int, truncate: bool, where: str):
    """(prompt, was cut): the example fits ``block_size + 1`` tokens, or is refused.

    A sequence of n tokens trains n - 1 predictions, so it fits a context of
    ``block_size`` when n <= block_size + 1. ``truncate`` keeps the prompt's end,
    the part nearest the completion; the completion itself is never cut.
    """
    limit = block_size + 1
    n_prompt, n_completion = len(tokenizer.encode(prompt)), len(tokenizer.encode(completion))
    if n_prompt + n_completion <= limit:
        return prompt, False
    if not truncate or n_completion + 1 > limit:
        why = (
            "the completion alone leaves no room for the prompt, so --truncate cannot help"
            if n_completion + 1 > limit
            else "shorten it, or pass --truncate to cut the start of prompts that are too long"
        )
        raise ValueError(
            f"{where}: the example is {n_prompt + n_completion} tokens (prompt {n_prompt}, "
            f"completion {n_completion} with its stop sequence), but the model's context holds "
            f"{limit} (block size {block_size}, plus the last target); {why}"
        )
    ids = tokenizer.encode(prompt)
    keep = limit - n_completion
    while keep > 0:
        cut = tokenizer.decode(ids[-keep:])
        if cut and len(tokenizer.encode(cut)) + n_completion <= limit:
            return cut, True
        keep -= 1  # a byte-level BPE may re-encode a cut differently: try one token less
    raise ValueError(f"{where}: could not cut the prompt to fit the context")


def read_pairs(
    path,
    tokenizer,
    block_size: int,
    stop: str = "\n",
    skip_unencodable: bool = False,
    truncate: bool = False,
) -> Pairs:
    """Read a JSON Lines file of prompt/completion pairs, checking every line (see the module).

    Blank lines are skipped. ``stop`` is appended to every completion that does not
    already end with it.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; expected a JSON Lines file")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not stop:
        raise ValueError("the stop sequence must not be empty")
    if _unknown(tokenizer, stop):
        raise ValueError(f"the stop sequence {stop!r} holds characters the tokenizer lacks")
    pairs = Pairs(str(path), [], [])
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        where = f"{path}, line {number}"
        try:
            line = raw.decode("utf-8").removeprefix("\ufeff").rstrip("\r")
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{where}: byte 0x{raw[err.start]:02x} at column {err.start + 1} is not "
                "UTF-8; expected a UTF-8 text file"
            ) from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{where}: not JSON ({err.msg} at column {err.colno}); {FORMAT_HINT}"
            ) from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: a JSON {_json_type(record)}, not an object; {FORMAT_HINT}")
        for key in KEYS:
            if key not in record:
                raise ValueError(
                    f"{where}: no {key!r} key (the line has {sorted(record)}); {FORMAT_HINT}"
                )
            if not isinstance(record[key], str):
                raise ValueError(
                    f"{where}: {key!r} is a JSON {_json_type(record[key])} "
                    f"{json.dumps(record[key])[:40]}; expected a string"
                )
            if not record[key]:
                raise ValueError(
                    f"{where}: the {key} is empty; expected at least one character (the model "
                    "learns to write the completion after the prompt, so neither can be empty)"
                )
        prompt, completion = record["prompt"], record["completion"]
        inside = completion[: -len(stop)] if completion.endswith(stop) else completion
        if stop in inside:
            raise ValueError(
                f"{where}: the completion holds the stop sequence {stop!r} before its end, so "
                "generation would stop there; pass --stop with a sequence that no completion "
                "holds (for example --stop '<END>')"
            )
        completion = inside + stop
        unknown = _unknown(tokenizer, prompt + completion)
        if unknown:
            if skip_unencodable:
                pairs.skipped.append((number, unknown[0]))
                continue
            part = "prompt" if _unknown(tokenizer, prompt) else "completion"
            raise ValueError(
                f"{where}: the {part} holds {', '.join(map(repr, unknown))}, which the "
                f"tokenizer cannot encode: {_vocabulary_hint(tokenizer)}"
            )
        prompt, cut = _fit(prompt, completion, tokenizer, block_size, truncate, where)
        pairs.truncated += cut
        pairs.examples.append((prompt, completion))
        pairs.lines.append(number)
    n = len(pairs.examples)
    if n < 2:
        dropped = f" after skipping {len(pairs.skipped)}" if pairs.skipped else ""
        raise ValueError(
            f"{path}: holds {n} example(s){dropped}; expected at least 2 (fine-tuning needs "
            "examples to learn from and others to measure on)"
        )
    return pairs


def held_out_split(examples: list, seed: int, fraction: float = 0.1) -> tuple[list, list]:
    """(train, held out): a seeded random ``fraction`` of the examples held out (at least 1)."""
    if len(examples) < 2:
        raise ValueError(f"{len(examples)} example(s) cannot be split; expected at least 2")
    order = np.random.default_rng(seed).permutation(len(examples))
    n_val = min(len(examples) - 1, max(1, round(fraction * len(examples))))
    held = sorted(order[:n_val].tolist())
    rest = sorted(order[n_val:].tolist())
    return [examples[i] for i in rest], [examples[i] for i in held]


def write_pairs(path, examples) -> Path:
    """Write (prompt, completion) pairs as JSON Lines, atomically."""
    lines = [
        json.dumps({"prompt": p, "completion": c}, ensure_ascii=False) + "\n" for p, c in examples
    ]
    return write_atomic(path, "".join(lines).encode("utf-8"))
