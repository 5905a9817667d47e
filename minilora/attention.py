"""Scaled dot-product attention, plain and fast, and the causal mask.

softmax(Q K^T / sqrt(D), hidden keys excluded) V is the heart of the
transformer's attention layer. Written as five ops it would keep five
intermediates; as one op its backward is a handful of closed-form products a
learner can derive on paper. It is written twice (README, "Plain math first,
fast path beside it"): ``attention_plain`` composed from the engine's ops (its
backward is theirs), then ``attention_fast``, one op that reuses its buffers in
place; ``attention`` picks one
by ``minilora.fast_paths``. ``minilora.functional`` offers the same functions
(``F.attention``, ``F.causal_mask``).
"""

from __future__ import annotations

import math

import numpy as np

from minilora import backend
from minilora.broadcasting import div, mul, operands, sub
from minilora.creation import dropout_mask
from minilora.ops import exp, matmul, mm, transpose, where
from minilora.ops import sum as total
from minilora.tensor import Tensor, make_result


def attention(
    q: Tensor, k: Tensor, v: Tensor, hidden, dropout_p: float = 0.0, training: bool = False
) -> Tensor:
    """Scaled dot-product attention: softmax(Q K^T / sqrt(D), hidden keys excluded) V.

    q: (..., T, D); k, v: (..., S, D); ``hidden``: a bool array broadcastable to
    (..., T, S), True where query t must not see key s (the causal mask, padding).
    ``attention_fast`` is one op instead of five, its backward in closed form.
    Runs ``attention_fast``, or ``attention_plain`` with the fast paths off.
    """
    if backend.fast_paths_enabled():
        return attention_fast(q, k, v, hidden, dropout_p, training)
    return attention_plain(q, k, v, hidden, dropout_p, training)


def attention_plain(
    q: Tensor, k: Tensor, v: Tensor, hidden, dropout_p: float = 0.0, training: bool = False
) -> Tensor:
    """S = Q K^T / sqrt(D), hidden scores set to a large negative; P = softmax(S); out = P V.

    With dropout (``training`` and p > 0), P V becomes (P M) V for a dropout mask M.
    Composed from the engine's primitive ops (``matmul``, ``where``, ``exp``, ``sum``,
    ``sub``, ``mul``, ``div``), so its backward is theirs, chained by ``Tensor.backward``
    (the softmax, P = exp(S - max S) / rowsum(exp(S - max S)), is spelled out here in
    those ops rather than taken from ``functional``, which imports this module; the max
    is a constant, since softmax does not change when every score shifts by one number).
    With G = dL/dout, the chain gives

        dV = (P M)^T G,   dP = (G V^T) M,   dS = softmax's backward of dP,
        dQ = dS K / sqrt(D),   dK = dS^T Q / sqrt(D)

    (a hidden score is a constant, so dS = 0 there). ``attention_fast`` is the same
    as one op with these products written out.
    """
    q, k = operands(q, k, "attention")
    operands(q, v, "attention")
    xp = backend.get_array_module(q.data)
    scale = 1.0 / math.sqrt(q.shape[-1])  # 1 / sqrt(D)
    hidden = xp.asarray(hidden)
    scores = mul(matmul(q, transpose(k)), scale)  # (..., T, S)
    # a large finite negative, not -inf: a fully hidden row (padding) stays finite
    scores = where(hidden, np.finfo(scores.dtype).min, scores)
    e = exp(sub(scores, scores.data.max(axis=-1, keepdims=True)))
    probs = div(e, total(e, axis=-1, keepdims=True))  # P, (..., T, S)
    if training and dropout_p > 0.0:
        probs = mul(probs, dropout_mask(probs.shape, dropout_p, probs.dtype, q.device))  # P M
    return matmul(probs, v)  # (..., T, D)


def attention_fast(
    q: Tensor, k: Tensor, v: Tensor, hidden, dropout_p: float = 0.0, training: bool = False
) -> Tensor:
    """``attention_plain`` reusing its buffers: the scores become P in place.

    The forward and dV are the same arithmetic as the plain version (bit for bit);
    dQ and dK scale dS before the product instead of after (a few ulps apart). A stub
    in the student package (its backward would give ``softmax`` away), where the fast
    paths are off.
    """
    q, k = operands(q, k, "attention")
    operands(q, v, "attention")
    # BEGIN ANSWER: softmax
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
    # END ANSWER: softmax


_causal_masks: dict = {}


def causal_mask(T: int, S: int | None = None, *, device: str = "cpu"):
    """(T, S) bool, True where query t must not see key s: the future positions to hide.

    The T queries are the last T of the S positions (S - T of them already in a key
    cache), so query t sees keys 0 .. S - T + t. S defaults to T: True above the
    diagonal. One array per (T, S, device), made once and shared (read-only on the CPU).
    """
    S = T if S is None else S
    key = (T, S, device)
    if key not in _causal_masks:
        mask = np.triu(np.ones((T, S), dtype=bool), k=S - T + 1)
        mask.flags.writeable = False
        _causal_masks[key] = backend.to_device(mask, device)
    return _causal_masks[key]
