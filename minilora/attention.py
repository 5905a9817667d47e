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
    """``attention_plain`` reusing its buffers: the scores become P in place, a few (T, S)
    matrices at a time (``backend.for_row_blocks``), so that each pass over a block runs in
    the cache.

    Its row sums are products with a vector of ones (``backend.sum_last``, about 5x
    faster than NumPy's ``sum`` on rows this short), so P, the output and dV equal the
    plain version's to a few ulps; dQ and dK also scale dS before the product. A stub
    in the student package (its backward would give ``softmax`` away), where the fast
    paths are off.
    """
    q, k = operands(q, k, "attention")
    operands(q, v, "attention")
    # BEGIN ANSWER: softmax
    xp = backend.get_array_module(q.data)
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = mm(q.data, k.data.swapaxes(-1, -2))  # (..., T, S)
    T, S = scores.shape[-2:]
    # the (T, S) matrices one after another, and the mask beside them (a view for a (T, S) mask)
    M = math.prod(scores.shape[:-2])
    matrices = scores.reshape(M, T, S)
    hidden_of = xp.broadcast_to(xp.asarray(hidden), scores.shape).reshape(M, T, S)
    lowest = xp.finfo(scores.dtype).min

    def softmax_of(i, j):  # the scores of matrices i..j become P, in place
        block = matrices[i:j]
        block *= scale
        # a large finite negative, not -inf: a fully hidden row (padding) stays finite
        xp.copyto(block, lowest, where=hidden_of[i:j])
        block -= block.max(axis=-1, keepdims=True)
        xp.exp(block, out=block)
        block /= backend.sum_last(block)

    backend.for_row_blocks(softmax_of, M, T * S, xp)
    probs = scores  # P
    keep = None
    if training and dropout_p > 0.0:
        keep = dropout_mask(probs.shape, dropout_p, probs.dtype, q.device)
    used = probs if keep is None else probs * keep
    out = mm(used, v.data)  # (..., T, D)

    def backward(g):
        gv = mm(used.swapaxes(-1, -2), g) if v.requires_grad else None
        gs = mm(g, v.data.swapaxes(-1, -2))  # dL/dP_used, then dL/dS in place
        if keep is not None:
            gs *= keep
        gs_of, probs_of = gs.reshape(M, T, S), probs.reshape(M, T, S)

        def softmax_backward_of(i, j):  # dS = P (dP - rowsum(dP P)) / sqrt(D)
            block, p = gs_of[i:j], probs_of[i:j]
            block -= backend.sum_last(block * p)
            block *= p
            block *= scale
            xp.copyto(block, 0.0, where=hidden_of[i:j])  # a hidden score is a constant

        backend.for_row_blocks(softmax_backward_of, M, T * S, xp)
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
