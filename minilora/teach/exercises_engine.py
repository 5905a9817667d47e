"""Checkers for notebook 1: the backward of matmul, softmax and layer norm, undoing broadcasting.

Each compares the learner's function with its exercise's answers (``recorded.answers``: the
golden case, fresh cases, the known wrong answers); the formulas are not here.
"""

from __future__ import annotations

from minilora.teach.checking import _check
from minilora.teach.exercise_inputs import ONLY_LEADING
from minilora.teach.recorded import answers


def check_matmul_backward(matmul_backward) -> bool:
    """``matmul_backward(a, b, g) -> (grad_a, grad_b)`` for y = a @ b and dL/dy = g."""
    crash = lambda err, i: (
        "a matrix product whose inner sizes do not match: with a (n, k), b (k, m) and "
        "g (n, m), each gradient has its input's shape and only one product of g with "
        "b or a (one of them transposed) gives it"
        if "matmul" in str(err) else ""
    )  # fmt: skip
    return _check(
        "matmul_backward", matmul_backward, ("grad_a", "grad_b"), answers("matmul_backward"), crash
    )


def check_unbroadcast(unbroadcast) -> bool:
    """``unbroadcast(grad, shape) -> grad_x``: grad summed back to an input of ``shape``."""

    def crash(err, i):
        if "reshape" in str(err) and 1 in tuple(i["shape"]):
            return ONLY_LEADING
        return ""

    return _check("unbroadcast", unbroadcast, ("grad_x",), answers("unbroadcast"), crash)


def check_softmax_backward(softmax_backward) -> bool:
    """``softmax_backward(x, g) -> grad_x`` for s = softmax(x) over the last axis."""
    return _check("softmax_backward", softmax_backward, ("grad_x",), answers("softmax_backward"))


def check_layer_norm_backward(layer_norm_backward) -> bool:
    """``layer_norm_backward(x, g, eps) -> grad_x`` for layer norm without weight and bias."""
    return _check(
        "layer_norm_backward", layer_norm_backward, ("grad_x",), answers("layer_norm_backward")
    )
