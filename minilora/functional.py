"""Fused neural-network ops: linear, softmax, cross-entropy, layer norm, GELU, dropout, embedding.

Each could be composed from the primitives in ``ops.py``; written as one op,
its backward is a short closed-form expression a learner can derive on paper,
and it allocates a few arrays instead of a dozen. Each is gradchecked in the
tests like any primitive.
"""

from __future__ import annotations

import math

import numpy as np

from minilora import backend
from minilora.ops import mm, operands
from minilora.tensor import Tensor, make_result


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, with W of shape (out_features, in_features) as in PyTorch.

    Backward, with G = dL/dy flattened to rows: dL/dx = G W, dL/dW = G^T x,
    dL/db = sum of G's rows. A frozen W (requires_grad False) skips the
    G^T x product entirely: this is where LoRA saves time (paper, section 4.2).
    """
    x, weight = operands(x, weight, "linear")
    if bias is not None:
        operands(x, bias, "linear")  # one device, one float dtype
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(
            f"linear: input's last dim is {x.shape[-1]} but weight {weight.shape} "
            f"expects in_features={weight.shape[-1]}"
        )
    # All leading dims folded into rows: one large matrix product, not a batch of
    # small ones (2-3x faster for (B, T, C) inputs with NumPy's BLAS).
    x_rows = x.data.reshape(-1, x.shape[-1])  # (N, in)
    out = mm(x_rows, weight.data.T)  # (N, out)
    if bias is not None:
        out += bias.data
    out = out.reshape(*x.shape[:-1], weight.shape[0])
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(g):
        rows = g.reshape(-1, g.shape[-1])  # (N, out)
        gx = mm(rows, weight.data).reshape(x.shape) if x.requires_grad else None
        gw = mm(rows.T, x_rows) if weight.requires_grad else None
        if bias is None:
            return gx, gw
        return gx, gw, rows.sum(axis=0) if bias.requires_grad else None

    return make_result(out, parents, backward, "linear")


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """s = exp(x - max) / sum exp(x - max); dL/dx = s * (g - sum(g * s))."""
    xp = backend.get_array_module(x.data)
    e = xp.exp(x.data - x.data.max(axis=axis, keepdims=True))
    out = e / e.sum(axis=axis, keepdims=True)

    def backward(g):
        return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)

    return make_result(out, (x,), backward, "softmax")


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
    t = targets.data if isinstance(targets, Tensor) else targets
    xp = backend.get_array_module(logits.data)
    t = xp.asarray(t)
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class indices, got {t.dtype}")
    if t.shape != logits.shape[:-1]:
        raise ValueError(
            f"cross_entropy: targets of shape {t.shape} do not match logits {logits.shape} "
            "(expected the logits' shape without its last, class, dimension)"
        )
    classes = logits.shape[-1]
    z = logits.data.reshape(-1, classes)
    t = t.reshape(-1)
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= classes))
    if bool(bad.any()):
        raise IndexError(
            f"cross_entropy: target {int(t[bad][0])} is outside [0, {classes}) "
            f"(and is not ignore_index={ignore_index})"
        )
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


def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5) -> Tensor:
    """Normalise the last axis to zero mean, unit variance, then scale and shift.

    With xhat = (x - mu) * rstd and G = dL/dxhat = g * weight:
    dL/dx = rstd * (G - mean(G) - xhat * mean(G * xhat)) (means over the last axis).
    """
    for param in (weight, bias):
        if param is not None:
            operands(x, param, "layer_norm")  # one device, one float dtype
    xp = backend.get_array_module(x.data)
    xhat = x.data - x.data.mean(axis=-1, keepdims=True)  # centred; normalised in place below
    rstd = 1.0 / xp.sqrt((xhat * xhat).mean(axis=-1, keepdims=True) + eps)
    xhat *= rstd
    out = xhat * weight.data if weight is not None else xhat.copy()
    if bias is not None:
        out += bias.data
    parents = tuple(t for t in (x, weight, bias) if t is not None)

    def backward(g):
        lead = tuple(range(g.ndim - 1))
        grads = []
        if x.requires_grad:
            gxhat = g * weight.data if weight is not None else g  # G = dL/dxhat
            gx = xhat * (gxhat * xhat).mean(axis=-1, keepdims=True)
            xp.subtract(gxhat, gx, out=gx)  # G - xhat mean(G xhat)
            gx -= gxhat.mean(axis=-1, keepdims=True)
            gx *= rstd
            grads.append(gx)
        else:
            grads.append(None)
        if weight is not None:
            grads.append((g * xhat).sum(axis=lead) if weight.requires_grad else None)
        if bias is not None:
            grads.append(g.sum(axis=lead) if bias.requires_grad else None)
        return tuple(grads)

    return make_result(out, parents, backward, "layer_norm")


_GELU_C = math.sqrt(2.0 / math.pi)


def gelu(x: Tensor) -> Tensor:
    """GELU in GPT-2's tanh form: 0.5 x (1 + tanh(c (x + 0.044715 x^3))), c = sqrt(2/pi)."""
    xp = backend.get_array_module(x.data)
    a = x.data
    t = xp.multiply(a, a, out=xp.empty_like(a))  # in place: t = tanh(c (a + 0.044715 a^3))
    t *= 0.044715
    t += 1.0
    t *= a
    t *= _GELU_C
    xp.tanh(t, out=t)
    out = t + 1.0
    out *= a
    out *= 0.5

    def backward(g):
        # d/da = 0.5 (1 + t) + 0.5 a (1 - t^2) c (1 + 3 * 0.044715 a^2), built in place
        slope = a * a
        slope *= 3 * 0.044715 * 0.5 * _GELU_C
        slope += 0.5 * _GELU_C
        slope *= a
        slope *= 1.0 - t * t
        slope += 0.5
        slope += 0.5 * t
        slope *= g
        return (slope,)

    return make_result(out, (x,), backward, "gelu")


def dropout_mask(shape, p: float, dtype, device: str, generator=None):
    """The inverted-dropout mask: 0 with probability p, else 1/(1-p).

    Drawn from ``generator`` (a NumPy Generator; the global one if None) on the
    CPU, so one seed gives the same mask on every device. Every op that drops
    (``dropout``, ``attention``, the fused LoRA layer) takes its mask from here.
    """
    if generator is None:
        from minilora.creation import default_generator

        generator = default_generator()
    dtype = np.dtype(dtype)
    keep = (generator.random(shape) >= p).astype(dtype) / dtype.type(1.0 - p)
    return backend.to_device(keep, device)


def dropout(x: Tensor, p: float, training: bool = True, generator=None) -> Tensor:
    """Inverted dropout: zero each element with probability p, scale survivors by 1/(1-p).

    Off (the identity) when ``training`` is False or p == 0. The mask comes from
    ``dropout_mask`` (the same mask for a seed on every device).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p={p} must be in [0, 1)")
    if not training or p == 0.0:
        return x
    keep = dropout_mask(x.shape, p, x.dtype, x.device, generator)
    return make_result(x.data * keep, (x,), lambda g: (g * keep,), "dropout")


def embedding(weight: Tensor, indices) -> Tensor:
    """Rows of ``weight`` picked by integer ``indices``; backward scatter-adds into those rows."""
    idx = indices.data if isinstance(indices, Tensor) else indices
    xp = backend.get_array_module(weight.data)
    idx = xp.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got {idx.dtype}")
    rows = weight.shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= rows):
        raise IndexError(
            f"embedding: index {int(idx.max()) if int(idx.max()) >= rows else int(idx.min())} "
            f"is outside [0, {rows}) (the table has {rows} rows)"
        )
    out = weight.data[idx]

    def backward(g):
        grad = xp.zeros_like(weight.data)
        backend.scatter_add(grad, idx.reshape(-1), g.reshape(-1, weight.shape[-1]))
        return (grad,)

    return make_result(out, (weight,), backward, "embedding")


def attention(
    q: Tensor, k: Tensor, v: Tensor, hidden, dropout_p: float = 0.0, training: bool = False
) -> Tensor:
    """Scaled dot-product attention, fused: softmax(Q K^T / sqrt(D), hidden keys excluded) V.

    q: (..., T, D); k, v: (..., S, D); ``hidden``: a bool array broadcastable to
    (..., T, S), True where query t must not see key s (the causal mask, padding).
    With P the attention weights and G = dL/dout, the backward is

        dV = P^T G,   dP = G V^T,   dS = P * (dP - rowsum(dP * P)),
        dQ = dS K / sqrt(D),   dK = dS^T Q / sqrt(D)

    (the middle one is softmax's backward). One op instead of five: fewer
    temporaries, and the formulas side by side.
    """
    q, k = operands(q, k, "attention")
    operands(q, v, "attention")
    xp = backend.get_array_module(q.data)
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = mm(q.data, k.data.swapaxes(-1, -2))  # (..., T, S)
    scores *= scale
    # a large finite negative, not -inf: a fully hidden row (padding) stays finite
    hidden = xp.asarray(hidden)
    xp.copyto(scores, xp.finfo(scores.dtype).min, where=hidden)
    scores -= scores.max(axis=-1, keepdims=True)
    probs = xp.exp(scores, out=scores)
    probs /= probs.sum(axis=-1, keepdims=True)  # P
    keep = None
    if training and dropout_p > 0.0:
        keep = dropout_mask(probs.shape, dropout_p, probs.dtype, q.device)
    used = probs if keep is None else probs * keep
    out = mm(used, v.data)  # (..., T, D)

    def backward(g):
        gv = mm(used.swapaxes(-1, -2), g) if v.requires_grad else None
        gp = mm(g, v.data.swapaxes(-1, -2))  # dL/dP_used
        if keep is not None:
            gp *= keep
        gs = gp - (gp * probs).sum(axis=-1, keepdims=True)
        gs *= probs
        gs *= scale
        xp.copyto(gs, 0.0, where=hidden)  # a hidden score is a constant: no gradient
        gq = mm(gs, k.data) if q.requires_grad else None
        gk = mm(gs.swapaxes(-1, -2), q.data) if k.requires_grad else None
        return gq, gk, gv

    return make_result(out, (q, k, v), backward, "attention")


def causal_mask(length: int, device: str = "cpu"):
    """Boolean (T, T) array, True above the diagonal: the future positions to hide."""
    mask = np.triu(np.ones((length, length), dtype=bool), k=1)
    return backend.to_device(mask, device)
