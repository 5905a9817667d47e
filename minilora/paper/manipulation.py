"""The manipulation check of the two-base test (footnote 6): does a base know the tasks' language?

The premise test (``minilora.paper.bases``) compares FT and LoRA on a base that never saw the
tasks' languages (``char-small``) and on bases pretrained with text like theirs
(``char-small-mixed``, and ``char-small-tasklang`` in the tasks' own formats). It can only
say something about the footnote if such a base does know the language better, by more than
a trivial model would. This measures, for every base and task, on the 1,000 test questions
that every run is scored on (no training):

* the base's loss on the **answer tokens** given the prompt (nats per character; the tokens
  fine-tuning trains on, ``tasks.task_batch``), and on the whole example text;
* the same for a **character-frequency model** (unigram, add-one smoothing) fitted on the
  task's own 4,000 training examples: answers for the answer tokens, whole examples for the
  whole text. It knows nothing but which characters the task uses, and how often.

The rule, fixed before any number was seen: a base **passes** when its answer-token loss is at
most ``PASS_RATIO`` times the character-frequency model's (it has removed at least half of
what a model that knows only the task's alphabet is left with). A base that fails does not
know the task's language well enough for the premise test to say anything about it.
"""

from __future__ import annotations

import numpy as np

from minilora.paper.experiments import N_TEST, N_VAL
from minilora.paper.protocol import N_TRAIN

PASS_RATIO = 0.5
BATCH = 50


def unigram(ids: list[np.ndarray], vocab_size: int) -> np.ndarray:
    """Log-probabilities of each token id: counts + 1 over the total (add-one smoothing)."""
    counts = np.ones(vocab_size)
    for row in ids:
        np.add.at(counts, row, 1)
    return np.log(counts / counts.sum())


def _model_loss(model, pairs, tokenizer, block_size: int, answers_only: bool) -> float:
    """Mean negative log-likelihood per predicted token: answer tokens, or every token after
    the first of prompt + answer."""
    from minilora.tensor import no_grad
    from minilora.work.tasks import task_batch

    total, count = 0.0, 0
    model.eval()
    with no_grad():
        for i in range(0, len(pairs), BATCH):
            chunk = pairs[i : i + BATCH]
            if not answers_only:  # every next character: the whole text as the "answer"
                chunk = [(p[:1], p[1:] + a) for p, a in chunk]
            x, y = task_batch(chunk, tokenizer, block_size)
            n = int((y != -100).sum())
            _, loss = model(x, y)
            total += loss.item() * n
            count += n
    return total / count


def check(base: str, task_name: str) -> dict:
    """{answer / text: (base's loss, character-frequency loss)} and whether the base passes.

    ``base``: a shipped base's name or a checkpoint directory (a base pretrained elsewhere,
    checked before it is shipped)."""
    from minilora.work.pretrained import resolve_model
    from minilora.work.tasks import make_task

    model, tokenizer, _ = resolve_model(base)
    task = make_task(task_name, n_train=N_TRAIN, n_val=N_VAL, n_test=N_TEST, seed=0)
    test, train = list(task.test), list(task.train)
    v = model.config.vocab_size
    answers = unigram([tokenizer.encode(a) for _, a in train], v)
    texts = unigram([tokenizer.encode(p + a) for p, a in train], v)
    answer_ids = np.concatenate([tokenizer.encode(a) for _, a in test])
    text_ids = np.concatenate([tokenizer.encode(p + a)[1:] for p, a in test])
    size = model.config.block_size
    out = {
        "answer": (_model_loss(model, test, tokenizer, size, True), -answers[answer_ids].mean()),
        "text": (_model_loss(model, test, tokenizer, size, False), -texts[text_ids].mean()),
    }
    out["passes"] = bool(out["answer"][0] <= PASS_RATIO * out["answer"][1])
    return {k: [float(x) for x in v] if isinstance(v, tuple) else v for k, v in out.items()}


def record_path():
    """Where the measured check is committed (read by ``minilora reproduce bases``)."""
    from minilora.paper import experiments

    return experiments.RECORDS / "manipulation" / "manipulation.json"  # looked up late: tests


def measure(bases, tasks) -> dict:
    """Run the check for every base and task and write it, with where and when, to
    ``record_path()`` (a few minutes of forward passes on one core)."""
    from minilora.paper.experiments import where_and_when
    from minilora.work import io

    checks = [{"base": b, "task": t, **check(b, t)} for b in bases for t in tasks]
    record = {"pass_ratio": PASS_RATIO, "n_test": N_TEST, "checks": checks, **where_and_when()}
    record_path().parent.mkdir(parents=True, exist_ok=True)
    io.write_json(record_path(), record)
    return record


def recorded() -> dict | None:
    from minilora.work import io

    return io.read_json(record_path()) if record_path().is_file() else None


def table(record: dict, bases=(), tasks=()) -> list[str]:
    """The check as Markdown rows, one per base and task: the record's, then a "not yet
    measured" row for each pair of ``bases`` x ``tasks`` the record lacks."""
    lines = [
        "| base | task | answer tokens: base | answer tokens: character frequencies | "
        "whole text: base | whole text: character frequencies | passes |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for c in record["checks"]:
        lines.append(
            f"| {c['base']} | {c['task']} | {c['answer'][0]:.2f} | {c['answer'][1]:.2f} | "
            f"{c['text'][0]:.2f} | {c['text'][1]:.2f} | {'yes' if c['passes'] else 'no'} |"
        )
    measured = {(c["base"], c["task"]) for c in record["checks"]}
    for base in bases:
        for task in tasks:
            if (base, task) not in measured:
                lines.append(f"| {base} | {task} |" + " not yet measured |" * 5)
    return lines + [
        "",
        f"Measured on {record['date'][:10]} ({record['cpu']}, {record['device']}); "
        "`python -m minilora.paper.manipulation` measures it again.",
    ]


__all__ = ["PASS_RATIO", "check", "measure", "recorded", "table", "unigram"]

if __name__ == "__main__":  # pragma: no cover - the committed record's command
    from minilora.paper.budgets import TASKS
    from minilora.work.pretrained import PRETRAINED  # every shipped base

    print("\n".join(table(measure(PRETRAINED, TASKS))))
