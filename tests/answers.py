"""Correct answers to the exercises, in plain NumPy (the formulas of the paper and of any textbook).

Written independently of minilora's engine: tests/test_exercises.py holds the checkers to them
(and to wrong variants), tests/test_golden.py the golden vectors.
"""

from __future__ import annotations

import numpy as np


def matmul_backward(a, b, g):
    return g @ b.T, a.T @ g


def unbroadcast(grad, shape):
    g = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    for i, n in enumerate(shape):
        if n == 1:
            g = g.sum(axis=i, keepdims=True)
    return g.reshape(shape)


def softmax_backward(x, g):
    s = np.exp(x - x.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    return s * (g - (g * s).sum(-1, keepdims=True))


def layer_norm_backward(x, g, eps):
    rstd = 1 / np.sqrt(x.var(-1, keepdims=True) + eps)
    xhat = (x - x.mean(-1, keepdims=True)) * rstd
    return (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)) * rstd


def lora_forward(x, W0, b, A, B, alpha, r):
    return x @ W0.T + b + (alpha / r) * (x @ A.T) @ B.T


def lora_backward(x, W0, A, B, G, alpha, r):
    s = alpha / r
    return G @ W0 + s * (G @ B) @ A, s * (G @ B).T @ x, s * G.T @ (x @ A.T)


def merge_weight(W0, A, B, alpha, r):
    return W0 + (alpha / r) * B @ A


def unmerge_weight(W, A, B, alpha, r):
    return W - (alpha / r) * B @ A


def subspace_similarity(A1, A2, i, j):
    u1 = np.linalg.svd(A1, full_matrices=False)[2][:i]
    u2 = np.linalg.svd(A2, full_matrices=False)[2][:j]
    return np.sum((u1 @ u2.T) ** 2) / min(i, j)


def adamw_state_bytes(model):
    return 2 * sum(p.data.nbytes for p in model.parameters() if p.requires_grad)


def exact_match(predictions, answers):
    return sum(p.strip() == a.strip() for p, a in zip(predictions, answers)) / len(answers)


def init_lora(d_in, d_out, r, rng):
    bound = 1 / np.sqrt(d_in)
    return rng.uniform(-bound, bound, (r, d_in)), np.zeros((d_out, r))


def greedy_decode(model, prompt_ids, max_new_tokens):
    ids, block = list(prompt_ids), model.config.block_size
    for _ in range(max_new_tokens):
        logits, _ = model(np.array(ids[-block:])[None, :])
        ids.append(int(np.argmax(logits.data[0, -1])))
    return np.array(ids[len(prompt_ids) :])


def add_lora(model, targets, r, alpha, rng):
    from minilora.lora import LoRAConfig, LoRALinear
    from minilora.nn import Linear

    for path, module in list(model.named_modules()):
        if isinstance(module, Linear) and path.split(".")[-1] in targets:
            layer = LoRALinear(module)
            layer.add_adapter("default", LoRAConfig(r=r, alpha=alpha), generator=rng)
            model.set_submodule(path, layer)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model


def answer_targets(prompt_ids, answer_ids):
    ids = np.concatenate([prompt_ids, answer_ids])
    x, y = ids[:-1], ids[1:].copy()
    y[: len(prompt_ids) - 1] = -100
    return x, y


def train_step(model, optimizer, x, y):
    optimizer.zero_grad()
    _, loss = model(x, y)
    loss.backward()
    optimizer.step()
    return loss.item()
