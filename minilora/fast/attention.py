"""Fast twin of ``functional.attention``: one op, the scores turned into P in place.

``functional.attention`` composes five engine ops and keeps their intermediates. This
twin computes the same products as one op, with its backward written out (the formulas
in ``functional.attention``'s docstring): the (T, S) score matrices become P in place, a
few at a time (``sums.row_blocks``), so each pass over a block runs in the cache. Its row
sums are products with a vector of ones (``sums.sum_last``), so P, the output and dV equal
the composition's to a few ulps; dQ and dK also scale dS before the product.
"""

from __future__ import annotations

import math

from minilora import backend
from minilora.broadcasting import operands
from minilora.creation import dropout_mask
from minilora.ops import mm
from minilora.tensor import Tensor, make_result

from .sums import row_blocks, sum_last


def attention(
    q: Tensor, k: Tensor, v: Tensor, hidden, dropout_p: float = 0.0, training: bool = False
) -> Tensor:
    """softmax(Q K^T / sqrt(D), hidden keys excluded) V as one op (see functional.attention)."""
    q, k = operands(q, k, "attention")
    q, v = operands(q, v, "attention")
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
    blocks = row_blocks(M, T * S, xp)
    for i, j in blocks:  # the scores of matrices i..j become P, in place
        block = matrices[i:j]
        block *= scale
        # a large finite negative, not -inf: a fully hidden row (padding) stays finite
        xp.copyto(block, lowest, where=hidden_of[i:j])
        block -= block.max(axis=-1, keepdims=True)
        xp.exp(block, out=block)
        block /= sum_last(block)
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
        for i, j in blocks:  # dS = P (dP - rowsum(dP P)) / sqrt(D)
            block, p = gs_of[i:j], probs_of[i:j]
            block -= sum_last(block * p)
            block *= p
            block *= scale
            xp.copyto(block, 0.0, where=hidden_of[i:j])  # a hidden score is a constant
        gq = mm(gs, k.data) if q.requires_grad else None
        gk = mm(gs.swapaxes(-1, -2), q.data) if k.requires_grad else None
        return gq, gk, gv

    return make_result(out, (q, k, v), backward, "attention")
    # END ANSWER: softmax
