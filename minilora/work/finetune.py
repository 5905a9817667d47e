"""Fine-tuning on a downstream task and scoring it by generation.

``complete`` runs greedy generation for many prompts at once: prompts are
left-padded to one length, padding is hidden from attention, positions count
from each prompt's first real token, and a key/value cache makes each new
token cost one position. ``evaluate`` scores the completions by exact match.
``finetune`` trains LoRA (or anything else left trainable) with the loss on
the answer tokens only (conditional language modelling, as the paper trains
GPT-3 on WikiSQL and MNLI).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from minilora import backend
from minilora.lora import LoRAConfig, count_parameters, inject_lora
from minilora.tensor import no_grad
from minilora.transformer import KVCache, sample_next
from minilora.work.tasks import exact_match, sample_task_batch, task_batch
from minilora.work.train import TrainConfig, train


def finetune_recipe(
    steps: int,
    lr: float,
    batch_size: int,
    seed: int = 0,
    eval_batches: int = 4,
    progress: bool = True,
    eval_every: int = 0,
    b_lr_ratio: float = 1.0,
) -> TrainConfig:
    """The project's one fine-tuning recipe (demo, CLI, Tables 4-6, section 7).

    AdamW at ``lr`` with a linear warm-up over the first 5% of the steps and
    cosine decay after it, no weight decay (the adapters start at B = 0 and
    decay would pull them back to it). With ``eval_every`` = 0 (the default), no
    evaluation during training and the last step is what is kept; otherwise the
    validation loss is measured every ``eval_every`` steps and the weights of the
    best one are put back at the end (the protocol of minilora.paper.protocol).
    ``b_lr_ratio`` trains every lora_B at that multiple of ``lr`` (LoRA+; 1: the paper).
    """
    return TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=max(1, steps // 20),
        weight_decay=0.0,
        eval_every=eval_every,
        eval_batches=eval_batches,
        seed=seed,
        progress=progress,
        restore_best=eval_every > 0,
        b_lr_ratio=b_lr_ratio,
    )


@no_grad()
def complete(
    model, tokenizer, prompts, max_new_tokens: int = 80, stop: str = "\n", batch_size: int = 128
) -> list[str]:
    """Greedy completions of ``prompts`` (without the prompt), cut after ``stop``.

    A row stops once its decoded text holds ``stop``. With a character tokenizer and
    a one-character stop that is the moment it writes that token; with a BPE the stop
    may be part of a longer token (two newlines), so the row's text is decoded and searched.
    """
    was_training = model.training
    model.eval()
    stop_ids = tokenizer.encode(stop)
    one_token = getattr(tokenizer, "chars", None) is not None and len(stop_ids) == 1
    xp = backend.get_array_module(model.wte.weight.data)
    results = []
    for start in range(0, len(prompts), batch_size):
        encoded = [tokenizer.encode(p) for p in prompts[start : start + batch_size]]
        B, L = len(encoded), max(len(e) for e in encoded)
        pad = np.array([L - len(e) for e in encoded])
        ids = np.zeros((B, L), dtype=np.int64)
        for row, e in enumerate(encoded):
            ids[row, pad[row] :] = e  # right-aligned: the next token follows every prompt
        padding = np.arange(L)[None, :] < pad[:, None]  # (B, L) True at padding
        positions = np.maximum(np.arange(L)[None, :] - pad[:, None], 0)
        steps = min(max_new_tokens, model.config.block_size - L)
        cache = KVCache(model.config.n_layer)
        out = np.zeros((B, steps), dtype=np.int64)
        done = np.zeros(B, dtype=bool)
        step_ids = ids
        for t in range(steps):
            logits, _ = model(
                step_ids,
                cache=cache,
                positions=xp.asarray(positions),
                key_padding=xp.asarray(padding),
            )
            next_ids = sample_next(backend.to_numpy(logits.data[:, -1, :]), 0.0, None, None)
            out[:, t] = next_ids
            if one_token:
                done |= next_ids == stop_ids[0]
            else:
                for row in np.flatnonzero(~done):
                    done[row] = stop in tokenizer.decode(out[row, : t + 1])
            if done.all():
                break
            step_ids = next_ids[:, None]
            positions = positions[:, -1:] + 1
            padding = np.concatenate([padding, np.zeros((B, 1), dtype=bool)], axis=1)
        for row in out:
            text = tokenizer.decode(row)
            results.append(text.split(stop)[0] + stop if stop in text else text)
    model.train(was_training)
    return results


def evaluate(
    model, tokenizer, examples, batch_size: int = 128, stop: str = "\n", max_new_tokens: int = 80
) -> float:
    """Exact match of greedy completions against the answers (both stripped)."""
    prompts = [p for p, _ in examples]
    predictions = complete(model, tokenizer, prompts, max_new_tokens, stop, batch_size)
    return exact_match(predictions, [a for _, a in examples])


@no_grad()
def answer_loss(model, tokenizer, examples, batch_size: int = 32) -> float:
    """Mean loss per answer token over all ``examples`` (no sampling: every token counts once)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        x, y = task_batch(examples[start : start + batch_size], tokenizer, model.config.block_size)
        n = int((y != -100).sum())
        total += model(x, y)[1].item() * n
        count += n
    model.train(was_training)
    return total / count


@dataclass
class FinetuneResult:
    steps: int
    seconds: float
    step_seconds: float
    trainable: int
    total: int
    final_train_loss: float
    best_val_loss: float
    history: list = field(default_factory=list)


def task_batcher(task, tokenizer, batch_size: int, block_size: int):
    """``get_batch(split, rng)`` for the training loop over a TaskData."""
    splits = {"train": task.train, "val": task.val}

    def get_batch(split, rng):
        return sample_task_batch(splits[split], batch_size, rng, tokenizer, block_size)

    return get_batch


def finetune(
    model,
    tokenizer,
    task,
    train_config: TrainConfig,
    lora: LoRAConfig | None = None,
    out_dir=None,
    save=None,
) -> FinetuneResult:
    """Train ``model`` on ``task``; with ``lora`` given, inject it first (and train A, B only)."""
    if lora is not None:
        inject_lora(model, lora)
    counts = count_parameters(model)
    get_batch = task_batcher(task, tokenizer, train_config.batch_size, model.config.block_size)
    start = time.perf_counter()
    result = train(model, get_batch, train_config, out_dir=out_dir, save=save)
    return FinetuneResult(
        steps=train_config.steps,
        seconds=time.perf_counter() - start,
        step_seconds=result.step_seconds,
        trainable=counts.trainable,
        total=counts.total,
        final_train_loss=result.final_train_loss,
        best_val_loss=result.best_val_loss,
        history=result.history,
    )


__all__ = ["answer_loss", "complete", "evaluate", "finetune", "task_batch", "FinetuneResult"]
