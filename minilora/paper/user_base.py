"""The paper on your base: Tables 4, 5 and 6 on a checkpoint you bring (``reproduce --model``).

The shipped reproductions start every run from a shipped base (``char-small``; footnote 6's
second, ``char-small-mixed``, in ``minilora.paper.bases``). ``minilora reproduce table4
--model DIR`` (also ``table5`` and ``table6``) runs the same protocol, the same tasks and the
same methods from any checkpoint directory instead: one saved by ``minilora pretrain`` (a
character tokenizer) or by ``minilora import-hf`` (a GPT-2 with its byte-level BPE,
config.json's ``"tokenizer": {"type": "bpe", ...}``). The tasks' text is encoded with the
base's own tokenizer, its context bounds the examples, and under ``--budget full`` every
learning rate is swept on the validation split for that base (``protocol.choose_rate``).

**How a base is named in a run.** ``Run.base`` is a shipped base's name ("char-small",
"char-small-mixed"), or for your checkpoint ``"<absolute path>@<digest>"``: the directory,
resolved, and the first 16 hex digits of a SHA-256 over its weights file, its model config
and its tokenizer (``digest``). The run's key hashes every field of the run, so

* a record of your base can never be read as a shipped base's, nor the other way round
  (a shipped name holds neither "/" nor "@"); the shipped bases' names, and so the keys of
  the committed records, are unchanged;
* two different models at one path never share records (the digest differs), and a model
  that changes after its runs were listed is refused when a run loads it (``load_base``);
* a model moved or copied to another path is a new name: its runs are computed again.

**Where the records go.** Runs of your base are computed into ``OUT/cache`` only
(``experiments.run_all``); the committed records (``minilora/paper/records``) are for the
shipped bases and are never written. ``check_base`` refuses, in one line and before any
training, a directory that is not a checkpoint, a model without a tokenizer, a tokenizer
that cannot encode a task's characters (naming them) and a context shorter than a task's
longest example (with both numbers).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from minilora.work.pretrained import PRETRAINED

DIGEST_CHARS = 16
MODEL_TABLES = ("table4", "table5", "table6")  # the reproductions ``--model`` applies to


def is_shipped(base: str) -> bool:
    """Whether ``base`` names a shipped base model (else it is ``"<path>@<digest>"``)."""
    return base in PRETRAINED


def digest(directory) -> str:
    """The first ``DIGEST_CHARS`` hex digits of a SHA-256 over a checkpoint's weights file,
    its model config and its tokenizer (config.json's entry and, for a BPE, its file)."""
    from minilora.work import io

    directory = Path(directory)
    info = io.read_checkpoint_config(directory)
    h = hashlib.sha256()
    with open(directory / io.WEIGHTS_NAME, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update(json.dumps([info.get("config"), info.get("tokenizer")], sort_keys=True).encode())
    tokenizer = info.get("tokenizer")
    if isinstance(tokenizer, dict) and isinstance(tokenizer.get("file"), str):
        path = directory / Path(tokenizer["file"]).name
        h.update(path.read_bytes() if path.is_file() else b"")
    return h.hexdigest()[:DIGEST_CHARS]


def name_base(directory) -> str:
    """``"<absolute path>@<digest>"``: the name of your checkpoint in a ``Run`` (see above).

    A missing directory, or one that is not a minilora checkpoint, is refused in one line.
    """
    from minilora.work import io

    path = Path(directory).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--model {directory}: no such directory")
    if not path.is_dir():
        raise ValueError(f"--model {directory}: not a directory (expected a checkpoint saved by "
                         "minilora pretrain or minilora import-hf)")  # fmt: skip
    if not (path / io.WEIGHTS_NAME).is_file() or not (path / io.CONFIG_NAME).is_file():
        raise ValueError(
            f"--model {directory}: not a checkpoint (expected {io.CONFIG_NAME} and "
            f"{io.WEIGHTS_NAME}, as minilora pretrain or minilora import-hf save them)"
        )
    try:
        return f"{path.resolve()}@{digest(path)}"
    except io.CheckpointError as err:  # e.g. another program's config.json
        raise io.CheckpointError(f"--model {directory}: {err}") from None


def split_name(base: str) -> tuple[Path, str]:
    """``"<path>@<digest>"`` -> (path, digest)."""
    path, sep, named = base.rpartition("@")
    if not sep or not path or len(named) != DIGEST_CHARS:
        raise ValueError(
            f"base {base!r}: expected a shipped base ({', '.join(PRETRAINED)}) or "
            "'<checkpoint directory>@<digest>' (user_base.name_base)"
        )
    return Path(path), named


def load_base(base: str, device: str | None = None):
    """The model a run starts from: (model, tokenizer, meta) of a shipped base by name, or of
    your checkpoint, refused if its content is no longer the one its name's digest says."""
    from minilora.work.io import load_model
    from minilora.work.pretrained import load_pretrained

    if is_shipped(base):
        return load_pretrained(base, device)
    path, named = split_name(base)
    if not path.is_dir():
        raise FileNotFoundError(f"base model {path}: the directory is gone")
    now = digest(path)
    if now != named:
        raise ValueError(
            f"base model {path} has changed (digest {now}, its runs were named for {named}); "
            "run reproduce --model again to name the model it holds now"
        )
    model, tokenizer, meta = load_model(path, device)
    if tokenizer is None:
        raise ValueError(f"--model {path}: the checkpoint has no tokenizer to encode the tasks")
    return model, tokenizer, meta


def longest_example(task: str, tokenizer, sizes: tuple) -> int:
    """The most tokens (prompt and answer) of one example of ``task`` the runs can meet.

    With a character tokenizer, tokens are characters: the longest example the task's
    generator can ever produce (``tasks.survey``, exhaustive). Otherwise, the longest of the
    examples the runs use: the fixed splits (seed 0) of ``sizes`` = (n_train, n_val, n_test).
    """
    from minilora.work.tasks import make_task, survey

    if getattr(tokenizer, "chars", None) is not None:
        return survey(task)[0]
    n_train, n_val, n_test = sizes
    data = make_task(task, n_train=n_train, n_val=n_val, n_test=n_test, seed=0)
    return max(len(tokenizer.encode(p + a)) for p, a in data.train + data.val + data.test)


def check_base(base: str, tasks, sizes: tuple) -> None:
    """Refuse, in one line each, a base that cannot run ``tasks``: a tokenizer that cannot
    encode a task's characters, or a context shorter than a task's longest example (among
    the splits of ``sizes`` = (n_train, n_val, n_test), as ``experiments.execute`` draws them).

    The context must hold the whole example, since a test question is answered by greedy
    decoding after its prompt, within the context (``finetune.complete``).
    """
    from minilora.work.tasks import survey

    model, tokenizer, _ = load_base(base)
    where = base if is_shipped(base) else str(split_name(base)[0])
    kind = "character" if getattr(tokenizer, "chars", None) is not None else "BPE"
    for task in tasks:
        missing = tokenizer.unknown_characters(survey(task)[1])
        if missing:
            raise ValueError(
                f"--model {where}: its {kind} tokenizer ({tokenizer.vocab_size} tokens) cannot "
                f"encode {''.join(dict.fromkeys(missing))!r}, which the {task} task writes"
                + ("; a character tokenizer's vocabulary is fixed when the base is pretrained: "
                   "pretrain one on text that holds them (minilora pretrain --text)"
                   if kind == "character" else "")
            )  # fmt: skip
        longest, block = longest_example(task, tokenizer, sizes), model.config.block_size
        if longest > block:
            raise ValueError(
                f"--model {where}: its context holds {block} tokens (block_size), but the "
                f"{task} task's examples reach {longest} tokens with the {kind} tokenizer; "
                f"expected block_size >= {longest}: a base with a longer context (minilora "
                "pretrain --block-size; a GPT-2's n_positions)"
            )


def title(base: str) -> str:
    """How a table's title names ``base``: a shipped name, or your checkpoint's folder name."""
    if is_shipped(base):
        return base
    path, named = split_name(base)
    return f"{path.name} (your checkpoint, digest {named})"


def describe(base: str) -> list[str]:
    """Markdown lines on your base for a table's header (nothing for a shipped base)."""
    if is_shipped(base):
        return []
    from minilora.lora import count_parameters

    path, named = split_name(base)
    model, tokenizer, meta = load_base(base)
    kind = "character" if getattr(tokenizer, "chars", None) is not None else "byte-level BPE"
    c = model.config
    made = meta.get("command") or "no command recorded"
    return [
        f"Base: your checkpoint `{path}` (digest {named}: its weights, config and tokenizer; "
        f"made by `{made}`): n_layer {c.n_layer}, n_head {c.n_head}, d_model {c.d_model}, "
        f"context {c.block_size}, {count_parameters(model).total:,} parameters, its own {kind} "
        f"tokenizer ({tokenizer.vocab_size:,} tokens). Its runs are in this folder's "
        "`cache/`, apart from the shipped bases' records, and never read as theirs; its "
        "learning rates (full budget) are swept for it, not read from the shipped `sweeps.md`.",
        "",
    ]


__all__ = [
    "MODEL_TABLES", "check_base", "describe", "digest", "is_shipped", "load_base", "name_base",
    "split_name", "title",
]  # fmt: skip
