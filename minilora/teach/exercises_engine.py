"""Checkers for notebook 1: the backward of matmul, softmax and layer norm, undoing broadcasting."""

from __future__ import annotations

import numpy as np

from minilora.teach.checking import (
    _check,
    _fresh_case,
)


def check_matmul_backward(matmul_backward) -> bool:
    """``matmul_backward(a, b, g) -> (grad_a, grad_b)`` for y = a @ b and dL/dy = g."""
    hints = {
        "grad_a": "grad_a has a's shape (n, k): g is (n, m), so multiply g by b transposed.",
        "grad_b": "grad_b has b's shape (k, m): a transposed times g.",
    }
    crash = lambda err, i: (
        "a matrix product whose inner sizes do not match: with a (n, k), b (k, m) and "
        "g (n, m), each gradient has its input's shape and only one product of g with "
        "b or a (one of them transposed) gives it"
        if "matmul" in str(err) else ""
    )  # fmt: skip
    extra = [_fresh_case("matmul_backward", 15)]
    return _check(
        "matmul_backward", matmul_backward, ("grad_a", "grad_b"), hints, extra, crash=crash
    )


def _unbroadcast_leading_only(i) -> dict:
    g = np.asarray(i["grad"])
    return {"grad_x": g.sum(axis=tuple(range(g.ndim - len(i["shape"]))))}


def check_unbroadcast(unbroadcast) -> bool:
    """``unbroadcast(grad, shape) -> grad_x``: grad summed back to an input of ``shape``."""
    rng = np.random.default_rng(7)
    extra = []
    for shape in [(4,), (2, 1, 4), (), (2, 3, 4), (1, 3, 1)]:
        grad = rng.standard_normal((2, 3, 4))
        target = grad.sum(axis=tuple(range(3 - len(shape))))  # the axes broadcasting added
        for i, n in enumerate(shape):
            if n == 1:
                target = target.sum(axis=i, keepdims=True)
        extra.append(({"grad": grad, "shape": shape}, {"grad_x": target.reshape(shape)}))
    hint = (
        "sum over the leading axes broadcasting added, then over the axes where `shape` "
        "has a 1 (keepdims=True), so the result has exactly `shape`."
    )
    only_leading = (
        "you summed only the leading axes that broadcasting added; an axis where `shape` "
        "has a 1 was stretched too and must be summed (keepdims=True)"
    )

    def crash(err, i):
        if "reshape" in str(err) and 1 in tuple(i["shape"]):
            return only_leading
        return ""

    variants = {only_leading: _unbroadcast_leading_only}
    return _check("unbroadcast", unbroadcast, ("grad_x",), {"grad_x": hint}, extra, variants, crash)


def check_softmax_backward(softmax_backward) -> bool:
    """``softmax_backward(x, g) -> grad_x`` for s = softmax(x) over the last axis."""
    hint = "grad_x = s * (g - sum(g * s, axis=-1, keepdims=True)) with s = softmax(x)."

    def s_of(x):
        s = np.exp(x - x.max(-1, keepdims=True))
        return s / s.sum(-1, keepdims=True)

    def wrong_axis(i):
        s = np.exp(i["x"] - i["x"].max(0, keepdims=True))
        s /= s.sum(0, keepdims=True)
        return {"grad_x": s * (i["g"] - (i["g"] * s).sum(0, keepdims=True))}

    variants = {
        "the softmax (or the sum in its backward) is over the first axis, not the last "
        "(axis=-1)": wrong_axis,
        "you returned s * g: the term - s * sum(g * s) (the normalisation's share) is "
        "missing": lambda i: {"grad_x": s_of(i["x"]) * i["g"]},
    }
    extra = [_fresh_case("softmax_backward", 16)]
    return _check(
        "softmax_backward", softmax_backward, ("grad_x",), {"grad_x": hint}, extra, variants
    )


def check_layer_norm_backward(layer_norm_backward) -> bool:
    """``layer_norm_backward(x, g, eps) -> grad_x`` for layer norm without weight and bias."""
    hint = (
        "with xhat = (x - mean) / sqrt(var + eps) (var without Bessel's correction): "
        "grad_x = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps), means over the "
        "last axis."
    )

    def ln(i, ddof=0, terms=True):
        x, g = i["x"], i["g"]
        r = 1 / np.sqrt(x.var(-1, ddof=ddof, keepdims=True) + i["eps"])
        if not terms:
            return {"grad_x": g * r}
        xhat = (x - x.mean(-1, keepdims=True)) * r
        return {
            "grad_x": r
            * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
        }

    variants = {
        "you used the variance with Bessel's correction (ddof=1): layer norm divides by n": (
            lambda i: ln(i, ddof=1)
        ),
        "you treated mean and variance as constants (g / sqrt(var + eps)): both depend on "
        "x, which adds the terms - mean(g) - xhat * mean(g * xhat)": lambda i: ln(i, terms=False),
    }
    extra = [_fresh_case("layer_norm_backward", 17, eps=1e-3)]
    return _check(
        "layer_norm_backward", layer_norm_backward, ("grad_x",), {"grad_x": hint}, extra, variants
    )


# ---- notebook 2: the LoRA layer ----------------------------------------------------------
