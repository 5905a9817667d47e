"""Fast twin of ``functional.attention``: one op, the masked corner skipped, few passes over P.

``functional.attention`` composes five engine ops and keeps their intermediates. This twin
computes the same products as one op, with its backward written out (the formulas in
``functional.attention``'s docstring), and does less of the work:

* **The hidden corner is skipped.** The queries go in chunks of rows (``row_chunks``); a
  chunk's scores are computed only up to the last key any of its rows may see. Under a
  causal mask, half of each (T, S) square is hidden: its probabilities are exactly 0 (exp of
  the lowest float), so they need no product and no pass. Only the columns where hidden and
  visible keys mix are masked. The chunks run a few (T, S) matrices at a time (slabs along
  the first batch dimension, ``sums.row_blocks``), so that each pass stays in the cache.
* **P is kept unnormalised.** The chunk keeps E = exp(S - max) and the row sums l; the output
  is (E V) / l, a pass over (T, D) instead of over (T, S).
* **The backward's row sum is taken over the output**: rowsum(dP * P) = rowsum(G * out)
  (out = P V), a pass over (T, D); with G' = G / l the softmax's backward is
  dS = E (G' V^T - rowsum(G' * out)), two passes over the chunk.
* **1 / sqrt(D) scales Q**, a (T, D) array, instead of the scores (and dQ, dK after the
  products).

The products and sums run in another order than the formula's, so the twin equals it to a
few ulps of the largest term (tests/test_fast_paths.py). The output and the gradients are
laid out as q is (``empty_like``): the model's heads are a transposed view of its
(B, T, H, D) projections, so the heads joined again need no copy.
"""

from __future__ import annotations

import math

import numpy as np

from minilora import backend
from minilora.broadcasting import operands
from minilora.creation import dropout_mask
from minilora.functional import attention as plain_attention
from minilora.ops import mm
from minilora.tensor import Tensor, make_result

from .sums import row_blocks, sum_last

ROWS_PER_CHUNK = 64  # queries per chunk: with fewer, the (rows, D) x (D, S) products run slower


def row_chunks(hidden, T: int, S: int, xp=np) -> list:
    """(r0, r1, c0, c1, dead) for chunks of query rows r0..r1 that cover range(T) in order.

    Keys c1.. are hidden from every row of the chunk in every matrix, keys ..c0 from none;
    ``dead``: some row of the chunk sees no key at all (a padding row), which the formula
    gives uniform weights over all S keys (so c1 = S). A chunk that sees no more keys than
    the one before joins it, so c1 grows from chunk to chunk (a staircase, as the causal
    mask's); without a mask that hides a corner, one chunk of T rows.
    """
    if xp is not np:  # one chunk on a GPU, masked everywhere
        return [(0, T, 0, S, True)]
    h = np.broadcast_to(hidden, (*np.shape(hidden)[:-2], T, S)).reshape(-1, T, S)
    hidden_all, hidden_any = h.all(axis=0), h.any(axis=0)  # (T, S): in every / some matrix
    dead = h.all(axis=2).any(axis=0)  # (T,)
    starts = list(range(0, T, ROWS_PER_CHUNK))
    seen = ~np.logical_and.reduceat(hidden_all, starts, axis=0)  # (chunks, S): some row sees
    mixed = np.logical_or.reduceat(hidden_any, starts, axis=0)  # some row does not see
    chunks = []
    for i, r0 in enumerate(starts):
        r1 = min(r0 + ROWS_PER_CHUNK, T)
        is_dead = bool(dead[r0:r1].any())
        c1 = S if is_dead else S - int(np.argmax(seen[i][::-1]))  # 1 + the last key seen
        c0 = int(np.argmax(mixed[i])) if mixed[i].any() else S  # the first key hidden
        if chunks and chunks[-1][3] >= c1:  # no more keys than the chunk before: join it
            p0, _, p_c0, c1, p_dead = chunks.pop()
            r0, c0, is_dead = p0, min(c0, p_c0), is_dead or p_dead
        chunks.append((r0, r1, min(c0, c1), c1, is_dead))
    return chunks


def attention(
    q: Tensor, k: Tensor, v: Tensor, hidden, dropout_p: float = 0.0, training: bool = False
) -> Tensor:
    """softmax(Q K^T / sqrt(D), hidden keys excluded) V as one op (see functional.attention)."""
    q, k = operands(q, k, "attention")
    q, v = operands(q, v, "attention")
    xp = backend.get_array_module(q.data)
    hidden = xp.asarray(hidden)
    lead, T, S = q.shape[:-2], q.shape[-2], k.shape[-2]
    if 0 in (q.size, k.size, v.size) or not (
        k.shape[:-2] == v.shape[:-2] == lead and _fits(hidden.shape, (*lead, T, S))
    ):  # empty, or batch dimensions that broadcast: the formula
        return plain_attention.plain(q, k, v, hidden, dropout_p, training)
    # BEGIN ANSWER: softmax
    scale = 1.0 / math.sqrt(q.shape[-1])
    chunks = row_chunks(hidden, T, S, xp)
    hidden = xp.broadcast_to(hidden, (*lead, T, S))
    width = chunks[-1][3]  # no query sees a key past this one
    qs = q.data * scale  # Q / sqrt(D): the scores come out scaled (not kept for backward)
    keep = None
    if training and dropout_p > 0.0:  # the formula's mask, all of it (the same draws)
        keep = dropout_mask((*lead, T, S), dropout_p, q.dtype, q.device)
    lowest = xp.finfo(q.dtype).min
    e_all = xp.empty((*lead, T, width), dtype=q.dtype)  # E = exp(S - max), chunk by chunk
    row_sums = xp.empty((*lead, T, 1), dtype=q.dtype)  # l
    out = xp.empty_like(q.data, shape=(*lead, T, v.shape[-1]))  # laid out as q
    slabs = _slabs(lead, T * width, xp)
    for at in slabs:  # a few (T, S) matrices at a time, their chunks of rows one by one
        for r0, r1, c0, c1, _ in chunks:
            rows, keys = (*at, Ellipsis, slice(r0, r1), slice(None)), slice(0, c1)
            e = e_all[at][..., r0:r1, keys]  # the chunk's scores
            xp.matmul(qs[rows], k.data[at][..., keys, :].swapaxes(-1, -2), out=e)
            if c0 < c1:  # a large finite negative, not -inf: a fully hidden row stays finite
                xp.copyto(e[..., c0:], lowest, where=hidden[at][..., r0:r1, c0:c1])
            e -= e.max(axis=-1, keepdims=True)
            xp.exp(e, out=e)
            row_sums[rows] = sum_last(e)
            used = e if keep is None else e * keep[at][..., r0:r1, keys]  # E M
            xp.divide(mm(used, v.data[at][..., keys, :]), row_sums[rows], out=out[rows])

    def backward(g):
        g_l = g / row_sums  # G' = G / l: then E takes the place of P = E / l
        delta = xp.einsum("...td,...td->...t", g_l, out)[..., None]  # rowsum(dP P) / l
        gq = xp.empty_like(q.data) if q.requires_grad else None
        gk = xp.empty_like(k.data) if k.requires_grad else None
        gv = xp.empty_like(v.data) if v.requires_grad else None
        for grad in (gk, gv):
            if grad is not None:
                grad[..., width:, :] = 0.0  # keys that no query sees
        for at in slabs:
            ds_all = xp.empty_like(e_all[at])  # dS, chunk by chunk as E
            e_at, g_at, qa, ka, va = e_all[at], g_l[at], q.data[at], k.data[at], v.data[at]
            for r0, r1, _, c1, dead in chunks:  # dS = P (dP - rowsum(dP P)), dP = G V^T M
                rows, keys = slice(r0, r1), slice(0, c1)
                ds = ds_all[..., rows, keys]
                xp.matmul(g_at[..., rows, :], va[..., keys, :].swapaxes(-1, -2), out=ds)
                if keep is not None:
                    ds *= keep[at][..., rows, keys]
                ds -= delta[at][..., rows, :]
                ds *= e_at[..., rows, keys]
                if dead:  # a hidden score is a constant: its gradient is 0 (in padding)
                    xp.copyto(ds, 0.0, where=hidden[at][..., rows, keys])
                if gq is not None:  # dQ = dS K / sqrt(D)
                    xp.multiply(mm(ds, ka[..., keys, :]), scale, out=gq[at][..., rows, :])
            start = 0
            for r0, _, _, c1, _ in chunks:  # keys start..c1 are seen by the rows r0.. only
                rows, keys = slice(r0, None), slice(start, c1)
                if gk is not None:  # dK = dS^T Q / sqrt(D)
                    ds = ds_all[..., rows, keys].swapaxes(-1, -2)
                    xp.multiply(mm(ds, qa[..., rows, :]), scale, out=gk[at][..., keys, :])
                if gv is not None:  # dV = (P M)^T G = (E M)^T G'
                    used = e_at[..., rows, keys]
                    used = used if keep is None else used * keep[at][..., rows, keys]
                    gv[at][..., keys, :] = mm(used.swapaxes(-1, -2), g_at[..., rows, :])
                start = c1
        return gq, gk, gv

    return make_result(out, (q, k, v), backward, "attention")
    # END ANSWER: softmax


def _fits(shape, target) -> bool:
    """True when an array of ``shape`` broadcasts to ``target`` (and no larger)."""
    try:
        return np.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def _slabs(lead, matrix_size: int, xp) -> list:
    """Indices of blocks along the first batch dimension, about BLOCK_ELEMENTS numbers each
    (a few (T, S) matrices, so that a chunk's passes run in the cache); () without one."""
    if not lead:
        return [()]
    per_row = matrix_size * math.prod(lead[1:])
    return [(slice(i, j),) for i, j in row_blocks(lead[0], per_row, xp)]
