"""Row sums as BLAS products, and blocks of rows that fit the cache: the fast twins' tools.

NumPy sums a short last axis (rows of 64-512 numbers, as in layer norm and softmax) about
5x slower than BLAS's matrix-vector product computes the same sums, so the CPU twins sum
rows and columns as products with a vector of ones (benchmarks/RESULTS.md). The additions
run in another order: equal to ``.sum()`` to a few ulps of the sum of |terms|.
"""

from __future__ import annotations

import math

import numpy as np

BLOCK_ELEMENTS = 1 << 16  # numbers per block of rows: a chain of in-place passes stays in cache
_ones: dict = {}


def ones_vector(n: int, dtype):
    key = (n, np.dtype(dtype))
    if key not in _ones:
        _ones[key] = np.ones(n, dtype=dtype)
    return _ones[key]


def sum_last(a, scale: float = 1.0, weights=None):
    """``(a * weights).sum(axis=-1, keepdims=True) * scale``, ``weights`` a vector the length
    of a's last axis (None: ones); on NumPy, one matrix-vector product."""
    if not isinstance(a, np.ndarray) or a.ndim == 0:
        return (a if weights is None else a * weights).sum(axis=-1, keepdims=True) * scale
    rows = a.reshape(math.prod(a.shape[:-1]), a.shape[-1])  # (-1 cannot be inferred for 0)
    sums = rows @ (ones_vector(a.shape[-1], a.dtype) if weights is None else weights)
    if scale != 1.0:
        sums *= scale
    return sums.reshape(*a.shape[:-1], 1)


def sum_squares(a, scale: float = 1.0):
    """``(a * a).sum(axis=-1, keepdims=True) * scale`` for a 2-D array, without a * a: on
    NumPy, one pass of ``einsum``'s row dot products."""
    if not isinstance(a, np.ndarray):
        return (a * a).sum(axis=-1, keepdims=True) * scale
    sums = np.einsum("ij,ij->i", a, a)[:, None]
    if scale != 1.0:
        sums *= scale
    return sums


def sum_rows(a):
    """The sum of a 2-D array's rows, ``a.sum(axis=0)``; on NumPy, one vector-matrix product."""
    if not isinstance(a, np.ndarray):
        return a.sum(axis=0)
    return ones_vector(a.shape[0], a.dtype) @ a


def row_blocks(rows: int, row_size: int, xp=np):
    """(start, stop) blocks that cover ``range(rows)`` once each, about BLOCK_ELEMENTS numbers
    each on the CPU (so that each pass over a block runs in the cache); one block on a GPU."""
    if xp is not np or rows == 0:
        return [(0, rows)]
    step = max(1, BLOCK_ELEMENTS // max(row_size, 1))
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


def as_rows(a):
    """``a`` as a 2-D array of rows (its last axis), a view when it can be."""
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
