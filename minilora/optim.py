"""Optimizers (SGD with momentum, AdamW), gradient clipping, and the learning-rate schedule.

An optimizer keeps state only for parameters that require a gradient. With
LoRA that is A and B alone: no Adam moments for the frozen W0, which is most
of LoRA's memory saving (paper, section 4.2: "we do not need to calculate the
gradients or maintain the optimizer states for most parameters").

Updates are written in place into the parameters' arrays (the engine owns
them), so a step allocates little. Hyperparameters are checked when the
optimizer is made (and lr at every ``set_lr``): lr and weight decay finite and
>= 0 (lr 0 is allowed: the end of a cosine schedule decaying to 0), betas and
momentum in [0, 1), eps finite and > 0.

A group may carry ``lr_scale``: its rate is the optimizer's rate times that, at every
``set_lr`` too (LoRA+, Hayou et al. 2024: B's rate a multiple of A's).
"""

from __future__ import annotations

import math

from minilora import backend, checks


def _param_groups(params, defaults: dict) -> list[dict]:
    """A list of groups {"params": [...], **hyperparameters}, keeping trainable params only."""
    params = list(params)
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    out = []
    for group in groups:
        trainable = [p for p in group["params"] if p.requires_grad]
        out.append({**defaults, **group, "params": trainable})
    if not any(g["params"] for g in out):
        raise ValueError("optimizer got no parameter that requires a gradient: nothing to train")
    return out


class Optimizer:
    def __init__(self, params, defaults: dict):
        self.param_groups = _param_groups(params, defaults)
        several = len(self.param_groups) > 1
        for i, group in enumerate(self.param_groups):
            owner = type(self).__name__ + (f" (param group {i})" if several else "")
            scaled = ["lr_scale"] if "lr_scale" in group else []
            checks.param_group(owner, group, [*defaults, *scaled])
            group["lr"] *= group.get("lr_scale", 1.0)
        self.state: dict[int, dict] = {}  # id(param) -> its state arrays
        self.step_count = 0

    @property
    def params(self) -> list:
        return [p for g in self.param_groups for p in g["params"]]

    def set_lr(self, lr: float) -> None:
        checks.hyperparameter(f"{type(self).__name__}.set_lr", "lr", lr)
        for group in self.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_bytes(self) -> int:
        """Bytes held in optimizer state (moments, momentum buffers)."""
        return sum(a.nbytes for s in self.state.values() for a in s.values())


class SGD(Optimizer):
    """p <- p - lr (g + wd p), with heavy-ball momentum: buf <- mu buf + g; p <- p - lr buf."""

    def __init__(self, params, lr=1e-2, momentum=0.0, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def step(self) -> None:
        self.step_count += 1
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + wd * p.data if wd else p.grad
                if mu:
                    state = self.state.setdefault(id(p), {})
                    if "momentum" not in state:
                        state["momentum"] = g.copy()
                    else:
                        state["momentum"] *= mu
                        state["momentum"] += g
                    g = state["momentum"]
                p.data -= lr * g


class AdamW(Optimizer):
    """Adam with bias correction and decoupled weight decay (Loshchilov & Hutter), as PyTorch's.

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p (1 - lr wd) - (lr / (1 - b1^t)) m / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    def step(self) -> None:
        self.step_count += 1
        t = self.step_count
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            step_size = lr / (1 - b1**t)
            root_correction = math.sqrt(1 - b2**t)
            for p in group["params"]:
                if p.grad is None:
                    continue
                xp = backend.get_array_module(p.data)
                state = self.state.setdefault(id(p), {})
                if not state:
                    state["m"], state["v"] = xp.zeros_like(p.data), xp.zeros_like(p.data)
                m, v, g = state["m"], state["v"], p.grad
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * (g * g)
                if wd:
                    p.data *= 1 - lr * wd
                denom = xp.sqrt(v)
                denom /= root_correction
                denom += eps
                p.data -= step_size * (m / denom)


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients so that their joint L2 norm is at most ``max_norm``; return the norm."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = math.sqrt(sum(float((g * g).sum()) for g in grads))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total


def cosine_lr(step: int, max_lr: float, warmup: int, total: int, min_lr: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps to ``max_lr``, then cosine decay to ``min_lr``."""
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))
