"""The grader's checks of softmax and layer_norm.

Gradients are proved in float64 by the project's finite differences (``minilora.gradcheck``)
through ``Tensor.backward``, so an op with its own backward and one composed of engine ops are
graded alike (the contract allows both). A failure is named by comparing with the right
gradient and with the derivative missing one term, summed along the wrong axis, only its
diagonal, and so on. Both run in float32 too: the dtype of each result must be the inputs'.
"""

from __future__ import annotations

import numpy as np
from grade_tools import (
    Check,
    autograd_grads,
    check_dtype,
    check_gradients,
    close,
    diagnose,
    fail,
)

F32 = np.float32

# ---- softmax ------------------------------------------------------------------------------


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def check_softmax_forward():
    from minilora.functional import softmax
    from minilora.tensor import Tensor

    x = np.random.default_rng(6).standard_normal((2, 3, 4))
    for axis in (-1, 1, 0):
        got = np.asarray(softmax(Tensor(x.copy()), axis=axis).data)
        sums_to_one = [
            k for k in range(3) if got.shape == x.shape and np.allclose(got.sum(axis=k), 1.0)
        ]
        if got.shape == x.shape and axis % 3 not in sums_to_one and sums_to_one:
            fail(
                f"softmax(axis={axis}) normalised along axis {sums_to_one[0]}: its values sum "
                f"to 1 along axis {sums_to_one[0]}, not along axis={axis}"
            )
        others = [
            (_softmax(x, k), f"normalised along axis {k}, not along axis={axis}")
            for k in (-1, 0, 1)
            if k % 3 != axis % 3
        ]
        diagnose(got, _softmax(x, axis), f"softmax(x {x.shape}, axis={axis})", others)
    x32 = x.astype(F32)
    check_dtype(softmax(Tensor(x32), axis=-1), F32, "softmax of a float32 input")


def check_softmax_stable():
    from minilora.functional import softmax
    from minilora.tensor import Tensor

    x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -999.0]])
    got = np.asarray(softmax(Tensor(x), axis=-1).data)
    if got.shape == x.shape and not np.all(np.isfinite(got)):
        if np.all(np.isfinite(got[0])):
            fail(
                "softmax of a row of large negative inputs is NaN: subtract the max of each "
                "row along `axis` (keepdims=True), not one max of the whole array"
            )
        fail("softmax of large inputs overflows (NaN/inf): subtract the max before exp")
    diagnose(got, _softmax(x, -1), "softmax of large inputs")


def check_softmax_backward():
    from minilora.functional import softmax

    rng = np.random.default_rng(7)
    for shape, axis in (((3, 5), -1), ((2, 3, 4), 1), ((3, 2, 4), 0)):
        x = rng.standard_normal(shape)
        s = _softmax(x, axis)
        last = _softmax(x, -1)
        faults = {
            0: [
                (
                    lambda R, s=s: s * R,
                    f"the derivative misses the term -s * sum(g * s, axis={axis}) "
                    "(the normalisation's share)",
                ),
                (
                    lambda R, s=s: s * (1 - s) * R,
                    "only the diagonal of the Jacobian, s (1 - s) g: "
                    f"every output along axis={axis} depends on every input along it",
                ),
                (
                    lambda R, s=s: s * (R - (R * s).sum(-1, keepdims=True)),
                    f"the sum in the backward is over the last axis, not over axis={axis}",
                ),
                (
                    lambda R, last=last: last * (R - (R * last).sum(-1, keepdims=True)),
                    f"the backward uses the softmax along the last axis, not along axis={axis}",
                ),
            ]
        }
        want = lambda R, s=s, axis=axis: [s * (R - (R * s).sum(axis, keepdims=True))]
        check_gradients(
            lambda t, axis=axis: softmax(t, axis=axis),
            [x],
            f"softmax(axis={axis})",
            ["x"],
            want,
            faults,
        )
    x32 = rng.standard_normal((2, 5)).astype(F32)
    _, (g,) = autograd_grads(lambda t: softmax(t, axis=-1), [x32], np.ones((2, 5), F32))
    check_dtype(g, F32, "dL/dx of softmax for a float32 input")


# ---- layer_norm ---------------------------------------------------------------------------


def _ln_parts(x, eps=1e-5, ddof=0, outside=False):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, ddof=ddof, keepdims=True)
    sigma = np.sqrt(var) + eps if outside else np.sqrt(var + eps)
    return (x - mu) / sigma, sigma


def _layer_norm(x, w, b, eps=1e-5, **kw):
    return _ln_parts(x, eps, **kw)[0] * w + b


def check_layer_norm_forward():
    from minilora.functional import layer_norm
    from minilora.tensor import Tensor

    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal(5), rng.standard_normal(5)
    got = layer_norm(Tensor(x), Tensor(w), Tensor(b)).data
    mu0 = x.mean(0, keepdims=True)
    wrong_axis = (x - mu0) / np.sqrt(((x - mu0) ** 2).mean(0, keepdims=True) + 1e-5) * w + b
    xhat = _ln_parts(x)[0]
    diagnose(
        got,
        _layer_norm(x, w, b),
        f"layer_norm(x {x.shape}, w, b)",
        [
            (wrong_axis, "normalised over axis 0: mean and variance go over the last axis"),
            (_layer_norm(x, w, b, ddof=1), "variance with n - 1: layer norm divides by n"),
            (
                _layer_norm(x, w, b, outside=True),
                "eps is added outside the square root: divide by sqrt(var + eps)",
            ),
            (_layer_norm(x, w, b, eps=0.0), "eps is missing: divide by sqrt(var + eps)"),
            (xhat * w, "the bias is not added"),
            (xhat + b, "the weight is not applied"),
            (xhat, "weight and bias are not applied"),
            (xhat * b + w, "weight and bias swapped"),
        ],
    )
    got = layer_norm(Tensor(x), None, None).data
    diagnose(got, _layer_norm(x, 1.0, 0.0), "layer_norm without weight and bias")
    got = layer_norm(Tensor(np.ones((2, 5))), None, None).data
    if not np.all(np.isfinite(got)):
        fail("layer_norm of a constant row is NaN: add eps to the variance inside the sqrt")
    out = layer_norm(Tensor(x.astype(F32)), Tensor(w.astype(F32)), Tensor(b.astype(F32)))
    check_dtype(out, F32, "layer_norm of float32 inputs")


def _ln_faults(x, w):
    """The right dL/dx for projection R, and the derivative with each term missing."""
    xhat, sigma = _ln_parts(x)
    n = x.shape[-1]
    lead = tuple(range(x.ndim - 1))

    def dx(R, w=w, mean=True, proj=True, divide=True, ddof=0):
        xh, sg = (xhat, sigma) if ddof == 0 else _ln_parts(x, ddof=1)
        G = R * w
        out = G - (G.mean(-1, keepdims=True) if mean else 0)
        out = out - (xh * (G * xh).mean(-1, keepdims=True) if proj else 0)
        return out / sg if divide else out

    faults = [
        (
            lambda R: dx(R, mean=False),
            "the derivative misses the term -mean(G) (G = g * w): the mean depends on x",
        ),
        (
            lambda R: dx(R, proj=False),
            "the derivative misses the term -xhat * mean(G * xhat) "
            "(G = g * w): the variance depends on x",
        ),
        (
            lambda R: dx(R, mean=False, proj=False),
            "the derivative misses both terms that come "
            "from the mean and the variance (they depend on x too)",
        ),
        (
            lambda R: dx(R, w=1.0),
            "the weight is forgotten in dL/dx: the gradient reaching xhat is G = g * w",
        ),
        (lambda R: dx(R, divide=False), "dL/dx is not divided by sqrt(var + eps)"),
        (lambda R: dx(R) * n / (n - 1), "a factor n / (n - 1): the variance divides by n"),
    ]
    return dx, xhat, lead, faults


def check_layer_norm_backward():
    from minilora.functional import layer_norm

    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal(5), rng.standard_normal(5)
    dx, xhat, lead, fx = _ln_faults(x, w)
    G = np.random.default_rng(10).standard_normal(x.shape)
    _, (_, gw, gb) = autograd_grads(layer_norm, [x, w, b], G)
    for got, name in ((gw, "weight"), (gb, "bias")):
        if got is not None and np.shape(got) != (5,):
            fail(
                f"layer_norm: dL/d{name} has shape {np.shape(got)}, expected (5,): sum over "
                "every axis but the last"
            )
    if close(gw, G.sum(lead)) and close(gb, (G * xhat).sum(lead)):
        fail("layer_norm: dL/dw and dL/db are swapped: dL/dw = sum(g * xhat), dL/db = sum(g)")
    fw = [
        (lambda R: R.sum(lead), "dL/dw is sum(g * xhat) over every axis but the last, not sum(g)"),
        (lambda R: (R * x).sum(lead), "dL/dw uses x where it needs xhat"),
    ]
    fb = [(lambda R: (R * xhat).sum(lead), "dL/dw and dL/db are swapped: dL/db = sum(g)")]
    check_gradients(
        layer_norm,
        [x, w, b],
        "layer_norm",
        ["x", "weight", "bias"],
        lambda R: [dx(R), (R * xhat).sum(lead), R.sum(lead)],
        {0: fx, 1: fw, 2: fb},
    )
    dx, _, _, fx = _ln_faults(x[0], 1.0)
    check_gradients(
        lambda t: layer_norm(t, None, None),
        [x[0]],
        "layer_norm (no w, b)",
        ["x"],
        lambda R: [dx(R)],
        {0: fx},
    )
    arrays = [a.astype(F32) for a in (x, w, b)]
    _, grads = autograd_grads(layer_norm, arrays, np.ones(x.shape, F32))
    for g, name in zip(grads, ("x", "weight", "bias")):
        check_dtype(g, F32, f"dL/d{name} of layer_norm for float32 inputs")


LN_HINT = (
    (
        "ValueError",
        "broadcast",
        "dL/dw and dL/db sum over every axis but the last; the "
        "means in dL/dx keep their axis (keepdims=True)",
    ),
)

CHECKS = {
    "softmax": [
        Check(
            "forward along the given axis, dtype kept",
            check_softmax_forward,
            (("ValueError", "broadcast", "reduce along `axis` with keepdims=True"),),
        ),
        Check("large inputs stay finite", check_softmax_stable),
        Check(
            "backward along any axis, finite differences",
            check_softmax_backward,
            (
                (
                    "ValueError",
                    "broadcast",
                    "the sum in the backward keeps its axis (keepdims=True)",
                ),
            ),
        ),
    ],
    "layer_norm": [
        Check(
            "forward (last axis, eps inside the sqrt, dtype kept)",
            check_layer_norm_forward,
            LN_HINT,
        ),
        Check("backward for x, weight, bias", check_layer_norm_backward, LN_HINT),
    ],
}
