"""Fused neural-network ops: linear, softmax, cross-entropy, layer norm, GELU, attention, ...

Each could be composed from the primitives in ``ops.py``; written as one op,
its backward is a short closed-form expression a learner can derive on paper,
and it allocates a few arrays instead of a dozen. Each is gradchecked in the
tests like any primitive.

Three of them carry ``@fast_twin``: ``layer_norm``, ``gelu`` and ``attention``
have faster twins in minilora/fast/ (in-place buffers, fewer passes), which run
unless ``minilora.fast_paths(False)``. What you read here is the formula; the
tests hold each twin equal to it.
"""

from __future__ import annotations

import math

import numpy as np

from minilora import backend, checks, ops
from minilora.backend import fast_twin
from minilora.broadcasting import operands
from minilora.creation import dropout_mask
from minilora.ops import mm
from minilora.tensor import Tensor, make_result


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, with W of shape (out_features, in_features) as in PyTorch.

    Backward, with G = dL/dy flattened to rows: dL/dx = G W, dL/dW = G^T x,
    dL/db = sum of G's rows. A frozen W (requires_grad False) skips the
    G^T x product entirely: this is where adapter training saves its time.
    """
    x, weight = operands(x, weight, "linear")
    check_params(x, (bias,), "linear")
    checks.linear_shapes(x, weight)
    x_rows = x.data.reshape(-1, x.shape[-1])  # (N, in): every leading dim is a row
    out = mm(x_rows, weight.data.T)  # (N, out)
    if bias is not None:
        out += bias.data
    out = out.reshape(*x.shape[:-1], weight.shape[0])
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(g):
        rows = g.reshape(-1, g.shape[-1])  # G, (N, out)
        gx = mm(rows, weight.data).reshape(x.shape) if x.requires_grad else None
        gw = mm(rows.T, x_rows) if weight.requires_grad else None
        if bias is None:
            return gx, gw
        return gx, gw, rows.sum(axis=0) if bias.requires_grad else None

    return make_result(out, parents, backward, "linear")


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """s = exp(x - max) / sum exp(x - max); dL/dx = s * (g - sum(g * s))."""
    # BEGIN STUDENT: softmax
    xp = backend.get_array_module(x.data)
    e = xp.exp(x.data - x.data.max(axis=axis, keepdims=True))
    out = e / e.sum(axis=axis, keepdims=True)

    def backward(g):
        return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)

    return make_result(out, (x,), backward, "softmax")
    # END STUDENT: softmax


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """x - logsumexp(x); dL/dx = g - softmax(x) * sum(g)."""
    xp = backend.get_array_module(x.data)
    shifted = x.data - x.data.max(axis=axis, keepdims=True)
    out = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))

    def backward(g):
        return (g - xp.exp(out) * g.sum(axis=axis, keepdims=True),)

    return make_result(out, (x,), backward, "log_softmax")


def cross_entropy(logits: Tensor, targets, ignore_index: int = -100) -> Tensor:
    """Mean of -log softmax(logits)[target] over positions whose target is not ``ignore_index``.

    logits: (..., C); targets: integer class indices of shape (...). Fused with
    log-softmax, the gradient is (softmax(logits) - onehot(target)) / count.
    When every target is ignored the loss is 0 and so is the gradient.
    """
    xp = backend.get_array_module(logits.data)
    t = checks.class_targets(logits, targets, ignore_index).reshape(-1)
    z = logits.data.reshape(-1, logits.shape[-1])  # (N, C)
    valid = t != ignore_index
    safe_t = xp.where(valid, t, 0)
    shifted = z - z.max(axis=1, keepdims=True)
    log_norm = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    picked = (shifted[xp.arange(len(t)), safe_t] - log_norm[:, 0]) * valid
    count = max(int(valid.sum()), 1)
    out = xp.asarray(-picked.sum() / count, dtype=logits.dtype)

    def backward(g):
        grad = xp.exp(shifted - log_norm)  # softmax
        grad[xp.arange(len(t)), safe_t] -= 1.0
        grad *= (valid * (g / count))[:, None].astype(grad.dtype)
        return (grad.reshape(logits.shape),)

    return make_result(out, (logits,), backward, "cross_entropy")


@fast_twin
def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5) -> Tensor:
    """mu = mean(x), var = mean((x - mu)^2), xhat = (x - mu) / sqrt(var + eps), out = xhat w + b.

    Means over the last axis; w = 1 without a weight, b = 0 without a bias. With
    G = dL/dxhat = g w, the backward is

        dL/dx = (G - mean(G) - xhat mean(G xhat)) / sqrt(var + eps)
        dL/dw = sum of g xhat,   dL/db = sum of g       (sums over every axis but the last)
    """
    check_params(x, (weight, bias), "layer_norm")
    # BEGIN STUDENT: layer_norm
    xp = backend.get_array_module(x.data)
    mu = x.data.mean(axis=-1, keepdims=True)
    var = ((x.data - mu) ** 2).mean(axis=-1, keepdims=True)
    sigma = xp.sqrt(var + eps)
    xhat = (x.data - mu) / sigma
    w = 1.0 if weight is None else weight.data
    b = 0.0 if bias is None else bias.data
    out = xhat * w + b
    parents = tuple(t for t in (x, weight, bias) if t is not None)

    def backward(g):
        lead = tuple(range(g.ndim - 1))  # every axis but the last
        G = g * w  # dL/dxhat
        gx = G - G.mean(axis=-1, keepdims=True) - xhat * (G * xhat).mean(axis=-1, keepdims=True)
        grads = [gx / sigma if x.requires_grad else None]
        if weight is not None:
            grads.append((g * xhat).sum(axis=lead) if weight.requires_grad else None)
        if bias is not None:
            grads.append(g.sum(axis=lead) if bias.requires_grad else None)
        return tuple(grads)

    return make_result(out, parents, backward, "layer_norm")
    # END STUDENT: layer_norm


GELU_C = math.sqrt(2.0 / math.pi)


@fast_twin
def gelu(x: Tensor) -> Tensor:
    """GELU, GPT-2's tanh form: out = 0.5 x (1 + t), t = tanh(c (x + 0.044715 x^3)), c = sqrt(2/pi).

    By the product and chain rules, with dt/dx = (1 - t^2) c (1 + 3 * 0.044715 x^2):

        dout/dx = 0.5 (1 + t) + 0.5 x dt/dx
    """
    xp = backend.get_array_module(x.data)
    a = x.data
    t = xp.tanh(GELU_C * (a + 0.044715 * a**3))
    out = 0.5 * a * (1.0 + t)

    def backward(g):
        dt_dx = (1.0 - t**2) * GELU_C * (1.0 + 3 * 0.044715 * a**2)
        return (g * (0.5 * (1.0 + t) + 0.5 * a * dt_dx),)

    return make_result(out, (x,), backward, "gelu")


@fast_twin
def attention(
    q: Tensor, k: Tensor, v: Tensor, hidden, dropout_p: float = 0.0, training: bool = False
) -> Tensor:
    """Scaled dot-product attention: softmax(Q K^T / sqrt(D), hidden keys excluded) V.

    q: (..., T, D); k, v: (..., S, D); ``hidden``: a bool array broadcastable to
    (..., T, S), True where query t must not see key s (the causal mask, padding).
    With dropout (``training`` and p > 0), P V becomes (P M) V for a dropout mask M.
    Composed from the engine's ops, so its backward is theirs, chained by
    ``Tensor.backward``. With G = dL/dout the chain gives

        dV = (P M)^T G,   dP = (G V^T) M,   dS = softmax's backward of dP,
        dQ = dS K / sqrt(D),   dK = dS^T Q / sqrt(D)

    (a hidden score is a constant, so dS = 0 there). Its fast twin
    (minilora/fast/attention.py) is one op with these products written out.
    """
    q, k = operands(q, k, "attention")
    q, v = operands(q, v, "attention")
    scores = ops.matmul(q, ops.transpose(k)) * (1.0 / math.sqrt(q.shape[-1]))  # (..., T, S)
    # a large finite negative, not -inf: a fully hidden row (padding) stays finite
    scores = ops.where(hidden, np.finfo(scores.dtype).min, scores)
    probs = softmax(scores)  # P, (..., T, S)
    if training and dropout_p > 0.0:
        probs = probs * dropout_mask(probs.shape, dropout_p, probs.dtype, q.device)  # P M
    return ops.matmul(probs, v)  # (..., T, D)


_causal_masks: dict = {}


def causal_mask(T: int, S: int | None = None, *, device: str = "cpu"):
    """(T, S) bool, True where query t must not see key s: the future positions to hide.

    The T queries are the last T of the S positions (S - T of them already in a key
    cache), so query t sees keys 0 .. S - T + t. S defaults to T: True above the
    diagonal. One array per (T, S, device), made once and shared (read-only on the CPU).
    """
    S = T if S is None else S
    if (T, S, device) not in _causal_masks:
        mask = np.triu(np.ones((T, S), dtype=bool), k=S - T + 1)
        mask.flags.writeable = False
        _causal_masks[T, S, device] = backend.to_device(mask, device)
    return _causal_masks[T, S, device]


def dropout(x: Tensor, p: float, training: bool = True, generator=None) -> Tensor:
    """Inverted dropout: zero each element with probability p, scale survivors by 1/(1-p).

    Off (the identity) when ``training`` is False or p == 0. The mask comes from
    ``dropout_mask`` (the same mask for a seed on every device).
    """
    checks.probability(p, "dropout")
    if not training or p == 0.0:
        return x
    keep = dropout_mask(x.shape, p, x.dtype, x.device, generator)
    return make_result(x.data * keep, (x,), lambda g: (g * keep,), "dropout")


def embedding(weight: Tensor, indices) -> Tensor:
    """Rows of ``weight`` picked by integer ``indices``; backward scatter-adds into those rows."""
    xp = backend.get_array_module(weight.data)
    idx = checks.row_indices(weight, indices)
    out = weight.data[idx]

    def backward(g):
        grad = xp.zeros_like(weight.data)
        backend.scatter_add(grad, idx.reshape(-1), g.reshape(-1, weight.shape[-1]))
        return (grad,)

    return make_result(out, (weight,), backward, "embedding")


# ---- argument checks, out of the formulas' way ---------------------------------------


def check_params(x: Tensor, params, op: str) -> None:
    """Every tensor in ``params`` (None skipped) shares x's device and floating dtype."""
    for param in params:
        if param is not None:
            operands(x, param, op)
