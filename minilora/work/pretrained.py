"""The shipped base models: how they were made (``pretrain``) and loaded (``load_pretrained``).

LoRA adapts a *pretrained* model. minilora ships three of one shape (a
character-level GPT: 4 layers, 4 heads, d_model 128, context 128, the same
105-character tokenizer) and a fourth twice as wide, all of one recipe
(``minilora pretrain --steps 3000 --eval-every 500``, seed 0), so a learner can
adapt a real (tiny) pretrained model seconds after installing. Each
config.json records the command, the time and the losses.

* "char-small": the English text of Python's own documentation
  (``pydoc_data.topics``, corpus "pydoc"). It has never seen SQL.
* "char-small-mixed": that text plus as many characters again of English
  questions with SQL queries and premise/hypothesis sentences, generated from
  other tables and words than the tasks' (corpus "mixed",
  ``minilora.work.mixed_corpus``). It exists for issue 17's controlled
  comparison of the paper's premise: footnote 6 warns that a small r may not
  suffice for a task in a "different language" from pretraining, and
  char-small's tasks are exactly that case; on this base they are not.
* "char-small-tasklang" (issue 28): that text plus as many characters of text in the tasks'
  own formats and label words, about other tables and things (corpus
  "tasklang", ``minilora.work.tasklang_corpus``). char-small-mixed failed the
  manipulation check (``minilora.paper.manipulation``); this base is the one
  meant to pass it, and does. ``pretrain_command`` gives its command, the same recipe.
* "char-medium" (issue 28's larger base): char-small's corpus and recipe at
  d_model 256 (3,219,200 parameters, four times char-small's 823,168): does
  FT's lead shrink as the base grows (``minilora.paper.scale``)? Made on
  2026-12-07 on a 2-core AMD EPYC CPU (1,828 s, one BLAS thread). It is wider,
  not better: its final losses (train 0.823, validation 1.187) are char-small's
  (0.833, 1.187), and on the same validation text (below) it is no lower.

Trials of the third base's corpus before it is made (2026-12-07, a shared
2-core AMD EPYC CPU; ``manipulation.check`` on each checkpoint directory). The
loss on the tasks' test answers, nats per character; a base passes at most
half the character-frequency model's, 3.50 (sql) and 2.44 (nli):

=============================================  =====  =========  =========
corpus (``--corpus``)                          steps  sql        nli
=============================================  =====  =========  =========
mixed                                          500    2.22 no    3.37 no
mixed: char-small-mixed (the committed check)  3000   2.81 no    4.13 no
tasklang with its ten fixed tables only        500    1.59 yes   0.17 yes
tasklang, half the SQL on consonant-vowel      500    1.50 yes   0.17 yes
made-up words                                  1500   1.82 no    0.10 yes
tasklang as it is                              1500   1.46 yes   0.10 yes
tasklang as it is: ``pretrain_command``        3000   1.56 yes   0.10 yes
=============================================  =====  =========  =========

The last row is the recipe itself (1,369 s on that busy CPU; validation loss
0.987 on its own corpus). Its sql loss rose from 1,500 to 3,000 steps (on the
characters of the answers' words, which it never saw, from 3.0 to 3.2 nats).
It writes the queries' structure but has not learnt to copy a word from the
question: on a word the question holds its loss is about what it is on one
the question does not hold (3.11 against 3.33 on the sql test answers, 2.24
against 2.18 on its own corpus's made-up tables).

Validation losses in nats per character (``corpus_losses`` and ``text_loss``,
every window, no sampling; 2026-11-30, AMD EPYC, 2 cores, CPU, Python 3.11.7):

==================  ==========  ==============  ==============  ==============
base                pydoc val   generated val   sql test text   nli test text
==================  ==========  ==============  ==============  ==============
char-small          1.195       3.397           3.661           3.464
char-small-mixed    1.265       0.281           3.205           3.241
char-medium         1.206       3.775
==================  ==========  ==============  ==============  ==============

The task columns are the 1,000 test examples (prompt and answer) of each task,
seed 0, which neither base saw; their words are new to both, so the second
base knows how they read, not what they name. char-small-mixed took 701 s on
that CPU (final train loss 0.638, validation loss 0.763 on its own corpus).
One difference is not by design: the documentation varies a little between
Python versions, and char-small read Python 3.12.3's (498,510 characters),
char-small-mixed Python 3.11.7's (465,126), the text measured above; up to
about 3,000 of its 46,513 validation characters may lie in char-small's
training split. char-medium, which also read Python 3.11.7's text, was
measured on 2026-12-07. Its loss on the tasks' answer tokens, the
manipulation check's measure (``minilora.paper.manipulation``), is 4.75 (sql)
and 4.13 (nli) nats per character, against char-small's 4.02 and 4.37 and a
character-frequency model's 3.50 and 2.44: it knows the tasks' language no
better than char-small does.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import numpy as np

from minilora import backend
from minilora.tensor import no_grad
from minilora.transformer import GPT, GPTConfig
from minilora.work.data import CharTokenizer, build_vocabulary, random_batch, split_text
from minilora.work.io import load_model, save_model
from minilora.work.mixed_corpus import corpus_parts, corpus_splits, describe_corpus
from minilora.work.text_files import PretrainingText
from minilora.work.train import TrainConfig, train

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
# Every base by name and its corpus (minilora.work.mixed_corpus.CORPORA); one shape, one recipe
BASE_CORPORA = {
    "char-small": "pydoc",
    "char-small-mixed": "mixed",
    "char-small-tasklang": "tasklang",
    "char-medium": "pydoc",
}
BASE_SHAPES = {"char-medium": "--d-model 256"}  # the others have the defaults' shape (SMALL)
PRETRAINED = tuple(BASE_CORPORA)
RECIPE_ARGS = "--steps 3000 --eval-every 500"  # seed 0, the defaults' shape (SMALL)

# The recipe of the shipped model (also `minilora pretrain`'s defaults).
SMALL = GPTConfig(vocab_size=1, block_size=128, n_layer=4, n_head=4, d_model=128, dropout=0.0)
SMALL_TRAINING = TrainConfig(
    steps=2000,
    batch_size=16,
    lr=3e-3,
    warmup=100,
    weight_decay=0.1,
    grad_clip=1.0,
    eval_every=250,
    eval_batches=16,
    seed=0,
)


def pretrain(
    model_config: GPTConfig,
    train_config: TrainConfig,
    out_dir,
    command: str = "",
    device=None,
    corpus: str = "pydoc",
    text: PretrainingText | None = None,
):
    """Pretrain a GPT on a named corpus or on your text; write checkpoints under ``out_dir``.

    ``corpus`` is one of ``minilora.work.mixed_corpus.CORPORA``: "pydoc" (the
    default, char-small's), "mixed" (char-small-mixed's) or "tasklang"
    (char-small-tasklang's). ``text``, read from
    your files by ``minilora.work.text_files.read_pretraining_text``, replaces it:
    its own tokenizer and splits. Returns (model, tokenizer, TrainResult).
    ``out_dir`` gets ``last/``, ``best/`` and, at the end, the final model itself
    (config.json and model.safetensors) with the run's figures in its meta.
    """
    if text is None:
        text = bundled_text(corpus)
    text.check_fits(model_config.block_size)
    tokenizer, train_ids, val_ids = text.tokenizer, text.train_ids, text.val_ids
    config = GPTConfig(**{**model_config.to_dict(), "vocab_size": tokenizer.vocab_size})
    model = GPT(config, generator=np.random.default_rng(train_config.seed))
    if device is not None:
        model.to(device)

    def get_batch(split, rng):
        source = train_ids if split == "train" else val_ids
        return random_batch(source, train_config.batch_size, config.block_size, rng)

    meta = {
        "command": command,
        "corpus": text.description,
        "corpus_name": text.name,
        **({"corpus_files": text.files} if text.files else {}),
        "corpus_tokens": int(len(train_ids) + len(val_ids)),
        "device": f"{model.wte.weight.device}: {backend.describe(model.wte.weight.device)}",
    }

    def save(m, directory):
        save_model(m, directory, tokenizer, meta)

    started = time.strftime("%Y-%m-%d")
    result = train(model, get_batch, train_config, out_dir=out_dir, save=save)
    meta.update(
        {
            "date": started,
            "steps": train_config.steps,
            "train_config": train_config.__dict__,
            "seconds": round(result.seconds, 1),
            "final_train_loss": round(result.final_train_loss, 4),
            "final_val_loss": round(result.history[-1]["val_loss"], 4),
            "history": result.history,
            "machine": (
                f"{platform.machine()}, Python {sys.version.split()[0]}, numpy {np.__version__}"
            ),
        }
    )
    save_model(model, out_dir, tokenizer, meta)
    return model, tokenizer, result


def bundled_text(corpus: str) -> PretrainingText:
    """A bundled corpus by name, with the base models' tokenizer (``build_vocabulary``)."""
    tokenizer = CharTokenizer(build_vocabulary())
    train_ids, val_ids = corpus_splits(corpus, tokenizer, val_fraction=0.1)
    return PretrainingText(tokenizer, train_ids, val_ids, corpus, describe_corpus(corpus))


@no_grad()
def text_loss(model, ids: np.ndarray, batch_size: int = 16) -> float:
    """Mean next-character loss (nats) over every whole, non-overlapping window of ``ids``.

    No sampling: the windows tile the text from its start, so the figure is the
    same on every call and for every model of the same context length.
    """
    ids = np.asarray(ids)
    T = model.config.block_size
    n = (len(ids) - 1) // T
    if n < 1:
        raise ValueError(f"{len(ids)} tokens hold no window of {T} plus its target")
    was_training = model.training
    model.eval()
    total = 0.0
    for first in range(0, n, batch_size):
        starts = np.arange(first, min(first + batch_size, n)) * T
        positions = starts[:, None] + np.arange(T)[None, :]
        total += model(ids[positions], ids[positions + 1])[1].item() * len(starts)
    model.train(was_training)
    return total / n


def corpus_losses(model, tokenizer) -> dict[str, float]:
    """A base model's loss on the validation text of each part of the "mixed" corpus.

    {"pydoc": the documentation's last 10% (the validation split of both
    bases), "generated": the generated text's last 10% (char-small-mixed's
    validation split; text char-small has never seen in any form)}. Neither
    base trained on either.
    """
    return {
        part: text_loss(model, split_text(tokenizer.encode(text), 0.1)[1])
        for part, text in corpus_parts("mixed").items()
    }


def pretrain_command(name: str, out_dir) -> str:
    """The command that makes base ``name`` into ``out_dir`` (its recipe, its corpus)."""
    if name not in BASE_CORPORA:
        raise ValueError(f"no pretrained model {name!r}; available: {list(PRETRAINED)}")
    corpus, shape = BASE_CORPORA[name], BASE_SHAPES.get(name)
    parts = [f"minilora pretrain --out {out_dir}", RECIPE_ARGS]
    parts += [f"--corpus {corpus}"] if corpus != "pydoc" else []
    return " ".join(parts + ([shape] if shape else []))


def load_pretrained(name: str = "char-small", device: str | None = None):
    """The shipped base model: returns (model, tokenizer, meta)."""
    if name not in PRETRAINED:
        raise ValueError(f"no pretrained model {name!r}; available: {list(PRETRAINED)}")
    directory = PRETRAINED_DIR / name
    if not (directory / "model.safetensors").is_file():
        made = f"/tmp/{name}"
        raise FileNotFoundError(
            f"the pretrained model {name!r} is missing from {directory}; reinstall minilora, "
            f"or make it with `{pretrain_command(name, made)}` and copy {made}/config.json "
            f"and {made}/model.safetensors into {directory}/"
        )
    return load_model(directory, device=device)


def resolve_model(spec: str, device: str | None = None):
    """A shipped model's name or a checkpoint directory -> (model, tokenizer, meta)."""
    if spec in PRETRAINED:
        return load_pretrained(spec, device)
    return load_model(spec, device)
