"""One training loop, for pretraining and for fine-tuning (full, LoRA or any baseline).

It trains whatever parameters of the model require a gradient, with AdamW,
linear warm-up and cosine decay, and gradient clipping. It shows a tqdm bar
with the loss and tokens per second, measures the validation loss now and
then, keeps the last and the best checkpoint (each directory replaced as a
whole, so an interruption never leaves half of one), and stops with a clear
message if the loss stops being finite (the last good checkpoint stays on disk).

Seeded runs repeat bit for bit on the CPU: batches come from a Generator
seeded with ``seed`` and dropout from the global generator, reseeded too.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from minilora.creation import manual_seed
from minilora.optim import AdamW, clip_grad_norm, cosine_lr
from minilora.tensor import no_grad
from minilora.work.memory import tune_malloc


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup: int = 100
    weight_decay: float = 0.1  # applied to matrices only, never to biases or LayerNorms
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_batches: int = 8
    seed: int = 0
    progress: bool = True
    # keep the trainable weights of the best validation loss in memory and put them back
    # at the end, so the model returned is the best checkpoint, not the last step
    restore_best: bool = False
    # LoRA+ (Hayou et al. 2024): every lora_B trains at this times the rate of the rest
    # (1: one rate for all, the paper's recipe)
    b_lr_ratio: float = 1.0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"TrainConfig: steps={self.steps} and batch_size={self.batch_size} must be >= 1"
            )
        if self.lr <= 0:
            raise ValueError(f"TrainConfig: lr={self.lr} must be > 0")
        if not self.b_lr_ratio > 0:
            raise ValueError(f"TrainConfig: b_lr_ratio={self.b_lr_ratio} must be > 0")


@dataclass
class TrainResult:
    history: list = field(default_factory=list)  # one dict per evaluation
    best_val_loss: float = math.inf
    final_train_loss: float = math.nan
    seconds: float = 0.0
    step_seconds: float = 0.0  # median time of a training step
    best_step: int = 0  # the step of the best validation loss (the weights kept, restore_best)
    diverged: str | None = None  # with restore_best: why training stopped early (best kept)

    def to_dict(self) -> dict:
        return asdict(self)


def make_optimizer(model, config: TrainConfig) -> AdamW:
    """AdamW with weight decay on trainable matrices only (biases, norms and vectors excluded).

    With ``config.b_lr_ratio`` != 1 the lora_B matrices form a group of their own, at that
    multiple of the rate (LoRA+); the first group keeps the base rate.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    faster = [p for n, p in named if config.b_lr_ratio != 1 and ".lora_B" in n]
    decay = [p for n, p in named if p.ndim >= 2 and not any(p is q for q in faster)]
    rest = [p for n, p in named if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    if faster:
        groups.append(
            {"params": faster, "weight_decay": config.weight_decay, "lr_scale": config.b_lr_ratio}
        )
    return AdamW(groups, lr=config.lr)


@no_grad()
def estimate_loss(model, get_batch, batches: int, seed: int) -> float:
    """Mean loss over ``batches`` batches drawn with a fixed seed (the same every call)."""
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    losses = [model(*get_batch("val", rng))[1].item() for _ in range(batches)]
    model.train(was_training)
    return float(np.mean(losses))


def train_step(model, optimizer, x, y, grad_clip: float = 1.0) -> float:
    """One step on the batch (x, y): the loss, its gradient, one optimizer update.

    ``model(x, y)`` returns (logits, loss), the loss averaged over the targets of ``y``
    that are not -100 (only the answer tokens when fine-tuning, ``tasks.task_batch``).
    Gradients accumulate in ``.grad``, so they are cleared before ``backward``; with
    ``grad_clip`` > 0 their global norm is clipped to it. Returns the loss as a float;
    a loss that is not finite changes nothing (the caller stops the training).
    """
    # BEGIN STUDENT: train_step
    _, loss = model(x, y)
    value = loss.item()
    if not math.isfinite(value):
        return value
    optimizer.zero_grad()
    loss.backward()
    if grad_clip:
        clip_grad_norm(optimizer.params, grad_clip)
    optimizer.step()
    return value
    # END STUDENT: train_step


def train(model, get_batch, config: TrainConfig, out_dir=None, save=None) -> TrainResult:
    """Train ``model`` on batches from ``get_batch(split, rng) -> (x, y)``.

    Args:
        out_dir: where ``last/`` and ``best/`` checkpoints go (None: no checkpoints).
        save: ``save(model, directory)`` writes a checkpoint; default
            ``minilora.work.io.save_model``. Fine-tuning passes one that saves the adapter.
            It should replace ``directory`` as a whole, as both of those do (with
            ``minilora.work.io.atomic_directory``).
    """
    from tqdm.auto import tqdm

    if save is None:
        from minilora.work.io import save_model as save
    tune_malloc()  # long work starts here (see minilora.work.memory)
    manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    optimizer = make_optimizer(model, config)
    result = TrainResult()
    model.train()
    start = time.perf_counter()
    step_times, recent = [], []
    saved = False  # whether out_dir/last holds a checkpoint of this run
    trainable = [p for p in model.parameters() if p.requires_grad]
    best_weights = None  # copies of the trainable weights at the best validation loss

    def diverged(what: str, value: float, step: int) -> TrainingDiverged:
        where = f"; the last good checkpoint is in {Path(out_dir) / 'last'}" if saved else ""
        return TrainingDiverged(
            f"the {what} became {value} at step {step} of {config.steps} "
            f"(lr {optimizer.param_groups[0]['lr']:.3g}); try a lower learning rate "
            f"or stronger gradient clipping{where}"
        )

    bar = tqdm(range(config.steps), disable=not config.progress, desc="train", unit="step")
    for step in bar:
        t0 = time.perf_counter()
        optimizer.set_lr(
            cosine_lr(step, config.lr, config.warmup, config.steps, config.lr * config.min_lr_ratio)
        )
        x, y = get_batch("train", rng)
        value = train_step(model, optimizer, x, y, config.grad_clip)
        if not math.isfinite(value):
            if config.restore_best and best_weights is not None:
                result.diverged = str(diverged("training loss", value, step + 1))
                break  # a learning-rate sweep keeps the best weights and goes on
            raise diverged("training loss", value, step + 1)
        step_times.append(time.perf_counter() - t0)
        recent = (recent + [value])[-20:]
        tokens = int(np.prod(x.shape))
        bar.set_postfix(loss=f"{np.mean(recent):.3f}", tok_s=f"{tokens / step_times[-1]:.0f}")
        last = step == config.steps - 1
        if (config.eval_every and (step + 1) % config.eval_every == 0) or last:
            val = estimate_loss(model, get_batch, config.eval_batches, config.seed + 1)
            if not math.isfinite(val):  # never overwrite the last good checkpoint with this
                if config.restore_best and best_weights is not None:
                    result.diverged = str(diverged("validation loss", val, step + 1))
                    break
                raise diverged("validation loss", val, step + 1)
            record = {
                "step": step + 1,
                "train_loss": float(np.mean(recent)),
                "val_loss": val,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - start,
            }
            result.history.append(record)
            if config.progress:
                bar.write(f"step {step + 1}: train {record['train_loss']:.4f}  val {val:.4f}")
            if out_dir is not None:
                save(model, Path(out_dir) / "last")
                saved = True
                if val < result.best_val_loss:
                    save(model, Path(out_dir) / "best")
            if val < result.best_val_loss:
                result.best_step = step + 1
                if config.restore_best:
                    best_weights = [p.data.copy() for p in trainable]
            result.best_val_loss = min(result.best_val_loss, val)
    bar.close()
    if best_weights is not None:
        for p, w in zip(trainable, best_weights):
            p.data[...] = w
    result.final_train_loss = float(np.mean(recent)) if recent else math.nan
    result.seconds = time.perf_counter() - start
    result.step_seconds = float(np.median(step_times))
    return result
