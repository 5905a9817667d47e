"""Hypothesis strategies and small helpers shared by the engine tests.

Shapes follow the engine's test plan: 0 to 4 dimensions, sides 1 to 5, with
size-1 dimensions and different ranks for broadcasting pairs. Values are drawn
from a seed with NumPy's generator (one Hypothesis draw per array rather than
one per element: much faster than ``hypothesis.extra.numpy.arrays``, while
Hypothesis still shrinks shapes, axes and indices). Every value strategy is
bounded and keeps away from the kinks and poles of the op it feeds (minitorch's
habit): ``positive`` for log and sqrt, ``away_from_zero`` for relu and the
divisor of div, ``distinct`` for max (no ties) and layer norm (no tiny variance).

Tests build their arrays with NumPy and then move them with ``on(device, ...)``,
so one test body runs on "cpu" and on "cuda".
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minilora as ml
from minilora import backend

# ---- tolerances ---------------------------------------------------------------
# Gradchecks run in float64 with central differences. Their truncation error is
# about eps^2 * |f'''| (< 1e-9 with the inputs kept away from kinks and poles),
# their round-off about 1e-16 * |L| / eps (< 1e-8 for our sizes). So 1e-6
# absolute plus 1e-5 relative leaves a margin of 100x or more, while a wrong
# backward (a lost factor, a missing broadcast sum) is off by O(1).
EPS = 1e-6
ATOL = 1e-6
RTOL = 1e-5
# Forward values against NumPy in float64: the same formulas, at most a
# different order of summation, so they agree to round-off.
FWD_RTOL = 1e-10
FWD_ATOL = 1e-12
# float32 results (and CuPy's) against the float64 NumPy reference: float32
# rounds at ~6e-8 relative; a few dozen roundings and small reductions stay well
# inside 1e-4 relative. Gradchecks are never run in float32.
F32_RTOL = 1e-4
F32_ATOL = 1e-5
# relu's kink at 0: inputs keep at least this far away (1000 eps).
KINK_MARGIN = 1e-3

SEEDS = st.integers(0, 2**32 - 1)


# ---- shapes and axes ------------------------------------------------------------
def shapes(min_dims=0, max_dims=4, min_side=1, max_side=5):
    """Array shapes: ``min_dims`` to ``max_dims`` dimensions, each side in [min_side, max_side]."""
    return hnp.array_shapes(
        min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    )


@st.composite
def broadcastable_shapes(draw, num_shapes=2, min_dims=0, max_dims=4, max_side=5):
    """``num_shapes`` shapes that broadcast together: different ranks, size-1 dims included.

    Each is a random shape with some leading dims dropped and about one dim in
    four set to 1.
    """
    full = draw(shapes(min_dims, max_dims, 1, max_side))
    result = []
    for _ in range(num_shapes):
        drop = draw(st.integers(0, len(full) - min_dims))
        result.append(tuple(1 if draw(st.integers(0, 3)) == 3 else n for n in full[drop:]))
    return tuple(result)


@st.composite
def axes(draw, ndim):
    """An ``axis`` argument: None, one (maybe negative) int, or a tuple of distinct axes."""
    if ndim == 0:
        return draw(st.sampled_from([None, ()]))
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    chosen = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
    return tuple(ax - ndim if draw(st.booleans()) else ax for ax in chosen)


# ---- values -------------------------------------------------------------------------
def _rng(draw):
    return np.random.default_rng(draw(SEEDS))


@st.composite
def arrays(draw, shape, low=-2.0, high=2.0):
    """float64 values uniform in [low, high)."""
    return _rng(draw).uniform(low, high, size=shape)


@st.composite
def positive(draw, shape):
    """float64 values in [0.5, 2.5): the domain of log, sqrt and fractional powers."""
    return np.abs(_rng(draw).uniform(-2.0, 2.0, size=shape)) + 0.5


@st.composite
def away_from_zero(draw, shape, margin=KINK_MARGIN):
    """float64 values in [-2 - margin, -margin] U [margin, 2 + margin]."""
    x = _rng(draw).uniform(-2.0, 2.0, size=shape)
    return np.where(x >= 0, x + margin, x - margin)


@st.composite
def divisors(draw, shape):
    """float64 values with 0.5 <= |b| <= 2: a / b and its derivatives stay bounded."""
    rng = _rng(draw)
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.5, 2.0, size=shape)


@st.composite
def distinct(draw, shape, per_row=False):
    """float64 values in [-2, 2], no two closer than 2 / n (>> EPS): max has no ties.

    n is the size, or with ``per_row`` the last side: then each row on its own
    spreads over [-2, 2], so its variance is large (layer norm's rstd stays small).
    """
    rng = _rng(draw)
    size = int(np.prod(shape, dtype=np.int64))
    n = shape[-1] if per_row and shape else size
    ranks = np.argsort(rng.random((size // n, n)), axis=1)  # a random permutation per row
    values = -2.0 + (4.0 / n) * (ranks + rng.uniform(0.25, 0.75, size=(size // n, n)))
    return values.reshape(shape)


@st.composite
def noncontiguous(draw, shape):
    """float64 values in [-2, 2] as a strided view: a transposed or a step-2 sliced array."""
    rng = _rng(draw)
    if len(shape) >= 2 and draw(st.booleans()):
        return rng.uniform(-2.0, 2.0, size=shape[::-1]).T
    if len(shape) == 0:
        return rng.uniform(-2.0, 2.0, size=shape)
    return rng.uniform(-2.0, 2.0, size=(*shape[:-1], 2 * shape[-1]))[..., ::2]


# ---- moving to the device, checking ---------------------------------------------
def on(device, array):
    """A NumPy array (or list) moved to ``device``, unchanged (a view, not a copy) on the CPU."""
    return backend.to_device(np.asarray(array), device)


def leaf(array, device, requires_grad=True):
    """A leaf tensor on ``device`` holding ``array``."""
    return ml.tensor(on(device, array), requires_grad=requires_grad)


def check_grads(fn, arrays, device, requires_grad=None):
    """Gradcheck ``fn`` (float64, elementwise) at ``arrays``; all of them are checked by default."""
    requires_grad = requires_grad or [True] * len(arrays)
    inputs = [leaf(a, device, r) for a, r in zip(arrays, requires_grad)]
    return ml.gradcheck(fn, inputs, eps=EPS, atol=ATOL, rtol=RTOL, mode="elementwise")


def to_host(array):
    """A NumPy array from a NumPy or CuPy array (a gradient, say)."""
    return backend.to_numpy(array)


def assert_forward(out, expected, rtol=FWD_RTOL, atol=FWD_ATOL):
    """``out`` (a Tensor) has the shape and values of the NumPy ``expected``."""
    got = out.numpy()
    expected = np.asarray(expected)
    assert got.shape == expected.shape, f"shape {got.shape}, expected {expected.shape}"
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
