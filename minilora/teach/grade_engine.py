"""The grader's checks of the engine's ops: unbroadcast, matmul_backward (softmax, layer_norm:
grade_norms.py).

Gradients are proved in float64 by the project's finite differences (``minilora.gradcheck``)
through ``Tensor.backward``, so an op with its own backward and one composed of engine ops are
graded alike (the contract allows both for softmax and layer norm); matmul's backward closure
is graded alone (that closure is the part). A failure is named by comparing with the right
gradient and with the derivative missing one term, summed along the wrong axis, and so on.
Every op is run in float32 too: the dtype of each result must be the inputs'. Shapes are
non-square, batched and broadcast, so that each fault gives its own symptom.
"""

from __future__ import annotations

import numpy as np
from grade_tools import (
    Check,
    check_dtype,
    check_gradients,
    diagnose,
    fail,
    op_grads,
)

F32 = np.float32

# ---- unbroadcast --------------------------------------------------------------------------

UNBROADCAST_CASES = [
    ((2, 3, 4), (4,)),
    ((2, 3, 4), (3, 1)),
    ((2, 3, 4), (1, 3, 1)),
    ((2, 5, 4), (2, 1, 4)),
    ((5, 1, 4), (1, 4)),
    ((3, 4), ()),
    ((3, 4), (3, 4)),
]
WRONG_AXES = (
    "summed over the wrong axes: axis i of `shape` is axis lead + i of grad (lead = the number "
    "of new leading axes); sum the leading axes and the stretched size-1 axes"
)
UNBROADCAST_HINTS = (("ValueError", "reshape", WRONG_AXES), ("AxisError", "", WRONG_AXES))


def _summed(g, shape, how=np.sum):
    lead = g.ndim - len(shape)
    stretched = tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    return how(g, axis=tuple(range(lead)) + stretched, keepdims=True).reshape(shape), stretched


def check_unbroadcast():
    from minilora.broadcasting import unbroadcast

    rng = np.random.default_rng(1)
    for grad_shape, shape in UNBROADCAST_CASES:
        g = rng.standard_normal(grad_shape)
        want, stretched = _summed(g, shape)
        lead = len(grad_shape) - len(shape)
        got = unbroadcast(g.copy(), shape)
        what = f"unbroadcast(grad {grad_shape}, shape {shape})"
        got = np.asarray(got)
        if got.shape != want.shape:
            if stretched and got.shape == grad_shape[lead:]:
                fail(
                    f"{what} has shape {got.shape}: it summed only the new leading axes; sum "
                    "the stretched size-1 axes too (keepdims=True)"
                )
            if got.shape == tuple(n for n in shape if n != 1):
                fail(f"{what} has shape {got.shape}: keep the size-1 axes (keepdims=True)")
            fail(f"{what} has shape {got.shape}, expected {shape}: {WRONG_AXES}")
        mean, _ = _summed(g, shape, np.mean)
        diagnose(
            got,
            want,
            what,
            [
                (
                    mean,
                    "averaged over the broadcast axes: the chain rule adds up the gradient of "
                    "every copy (sum, not mean)",
                )
            ],
        )
    g32 = rng.standard_normal((2, 3, 4)).astype(F32)
    check_dtype(unbroadcast(g32, (3, 1)), F32, "unbroadcast of a float32 gradient")


def check_unbroadcast_through_add():
    from minilora.ops import add

    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 1))
    check_gradients(
        add,
        [a, b],
        "add (broadcast)",
        ["a", "b"],
        lambda R: [R, R.sum(axis=(0, 2), keepdims=True)[0]],
    )


# ---- matmul_backward ----------------------------------------------------------------------

MATMUL_CASES = [((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2))]
MATMUL_HINTS = (
    (
        "ValueError",
        "matmul",
        "G b^T has a's shape and a^T G has b's shape: are the transposes swapped?",
    ),
)


def _unbroadcast(g, shape):
    return _summed(g, shape)[0]


def _forced(x, shape):
    """``x`` brought to ``shape`` the way unbroadcast would: summed, or reshaped."""
    x = np.asarray(x)
    try:
        return _summed(x, shape)[0]
    except ValueError:  # unbroadcast's reshape: a transposed product keeps its size
        return x.reshape(shape) if x.size == int(np.prod(shape)) else np.full(shape, np.nan)


def _matmul_want(a, b, R):
    swap = lambda t: np.swapaxes(t, -1, -2)
    return _unbroadcast(R @ swap(b), a.shape), _unbroadcast(swap(a) @ R, b.shape)


def _grade_matmul(a, b, rng, dtype=np.float64, requires=(True, True)):
    from minilora.ops import matmul

    a, b = a.astype(dtype), b.astype(dtype)
    shapes = f"{a.shape} @ {b.shape}"
    try:
        _, grads, R = op_grads(matmul, [a, b], rng, list(requires))
    except ValueError as err:
        if "matmul" not in str(err) or (a.ndim == 2 and b.ndim == 2):
            raise
        batched = " and ".join(n for n, t in (("a", a), ("b", b)) if t.ndim > 2)
        fail(
            f"for {shapes} the backward raised ValueError ({str(err).splitlines()[0]}): with a "
            f"batched {batched}, .T reverses EVERY axis, so the batch axes move too; swap only "
            "the last two (swapaxes(-1, -2)), and let the product broadcast over the batch "
            "axes (folding them into rows works only when the other operand is 2-D)"
        )
    if len(grads) != 2:
        fail(f"the backward returned {len(grads)} values; expected (dL/da, dL/db)")
    want = _matmul_want(a.astype(np.float64), b.astype(np.float64), R.astype(np.float64))
    ga, gb = grads
    if ga is not None and gb is not None and np.shape(ga) == b.shape != a.shape:
        fail(
            f"for {shapes}: dL/da has b's shape: the gradients are in the wrong order, return "
            "(dL/da, dL/db)"
        )
    for k, (got, w, name) in enumerate(zip(grads, want, "ab")):
        what = f"matmul: dL/d{name} for {shapes}"
        if not requires[k]:
            if got is not None:
                fail(f"{what}: computed for an input that needs no gradient (return None)")
            continue
        t = (a, b)[k]
        full = (R @ np.swapaxes(b, -1, -2)) if k == 0 else (np.swapaxes(a, -1, -2) @ R)
        if got is not None and np.shape(got) == full.shape != t.shape:
            fail(
                f"{what} has shape {np.shape(got)}: sum it over the broadcast batch axes to "
                f"{name}'s shape {t.shape} (unbroadcast)"
            )
        swap = lambda t: np.swapaxes(t, -1, -2)
        flipped = (b @ swap(R)) if k == 0 else (swap(R) @ a)  # the product in the wrong order
        faults = [
            (
                _forced(flipped, t.shape),
                f"the product is in the wrong order: dL/d{name} "
                f"is {'G b^T' if k == 0 else 'a^T G'}, and its transpose is not the same",
            )
        ]
        diagnose(got, w, what, faults, rtol=1e-5 if dtype == F32 else 1e-7, atol=1e-5)
        check_dtype(got, dtype, what)


def check_matmul_backward_2d():
    rng = np.random.default_rng(3)
    _grade_matmul(rng.standard_normal((3, 4)), rng.standard_normal((4, 5)), rng)


def check_matmul_backward_batched():
    rng = np.random.default_rng(4)
    for sa, sb in MATMUL_CASES:
        _grade_matmul(rng.standard_normal(sa), rng.standard_normal(sb), rng)


def check_matmul_backward_frozen_and_float32():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    _grade_matmul(a, b, rng, requires=(True, False))
    _grade_matmul(a, b, rng, requires=(False, True))
    _grade_matmul(rng.standard_normal((2, 3, 4)), b, rng, dtype=F32)


CHECKS = {
    "unbroadcast": [
        Check("sums to the input's shape, keeps its dtype", check_unbroadcast, UNBROADCAST_HINTS),
        Check("add's gradient with broadcasting", check_unbroadcast_through_add, UNBROADCAST_HINTS),
    ],
    "matmul_backward": [
        Check("2-D, against G b^T and a^T G", check_matmul_backward_2d, MATMUL_HINTS),
        Check("batched and broadcast", check_matmul_backward_batched, MATMUL_HINTS),
        Check(
            "None for a frozen input; float32",
            check_matmul_backward_frozen_and_float32,
            MATMUL_HINTS,
        ),
    ],
}
