"""Where two inputs meet: one device, one dtype, shapes that broadcast; and add, sub, mul, div.

Broadcasting is handled once, here. ``broadcast_shape`` checks that shapes
broadcast (an error naming the op and the shapes, before NumPy's own);
``unbroadcast`` sums a gradient back to an input's shape. Every op that
broadcasts (the four below, ``matmul`` and ``where`` in ops.py, the fused ops in
functional.py) uses these two, and ``operands`` to check its inputs.

The four arithmetic ops are written twice (README, "Plain math first, fast path
beside it"). ``add_plain`` reads as the rule: check that the shapes broadcast,
compute once, sum each gradient back to its input's shape. ``add_fast`` (the
default) skips the check and the sums when both inputs have one shape, the
common case, and hands any other case to ``add_plain``. Both do the same
arithmetic, so they agree bit for bit (tests/test_fast_paths.py).
``minilora.fast_paths(False)`` makes ``add`` run ``add_plain`` always.
"""

from __future__ import annotations

import numpy as np

from minilora import backend
from minilora.tensor import Tensor, make_result

# ---- helpers shared by every op ----------------------------------------------


def as_tensor(x, like: Tensor) -> Tensor:
    """A constant (number, list, array) as a Tensor with ``like``'s dtype and device."""
    if isinstance(x, Tensor):
        return x
    xp = backend.get_array_module(like.data)
    return Tensor(xp.asarray(x, dtype=like.dtype))


def operands(a, b, op: str) -> tuple[Tensor, Tensor]:
    """Two inputs of a binary op as Tensors on one device with one floating dtype."""
    if not isinstance(a, Tensor):
        a = as_tensor(a, b)
    if not isinstance(b, Tensor):
        b = as_tensor(b, a)
    if a.device != b.device:
        raise RuntimeError(
            f"{op}: inputs are on different devices ({a.device} and {b.device}); "
            "move one with .to(device)"
        )
    if a.dtype != b.dtype and a.dtype.kind == "f" and b.dtype.kind == "f":
        raise TypeError(
            f"{op}: inputs have different dtypes ({a.dtype} and {b.dtype}); "
            "convert one explicitly so that float32 is never promoted by accident"
        )
    return a, b


def broadcast_shape(op: str, *shapes) -> tuple:
    """The shape that ``shapes`` broadcast to, or a ValueError naming ``op`` and the shapes."""
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(
            f"{op}: shapes {' and '.join(map(str, shapes))} do not broadcast "
            "(trailing dimensions must be equal or 1)"
        ) from None


def unbroadcast(grad, shape: tuple):
    """Sum ``grad`` over the axes that broadcasting added or stretched, to get ``shape``.

    Broadcasting copies an input along new leading axes and along its size-1
    axes; the chain rule adds up the gradient of every copy.
    """
    # BEGIN STUDENT: unbroadcast
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    stretched = tuple(lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    return grad.sum(axis=tuple(range(lead)) + stretched, keepdims=True).reshape(shape)
    # END STUDENT: unbroadcast


# ---- add ----------------------------------------------------------------------------


def add(a, b) -> Tensor:
    """a + b, broadcasting: ``add_fast``, or ``add_plain`` with the fast paths off."""
    return add_fast(a, b) if backend.fast_paths_enabled() else add_plain(a, b)


def add_plain(a, b) -> Tensor:
    """out = a + b; dL/da = g and dL/db = g, each summed back to its input's shape."""
    a, b = operands(a, b, "add")
    broadcast_shape("add", a.shape, b.shape)
    out = a.data + b.data

    def backward(g):
        return (
            unbroadcast(g, a.shape) if a.requires_grad else None,
            unbroadcast(g, b.shape) if b.requires_grad else None,
        )

    return make_result(out, (a, b), backward, "add")


def add_fast(a, b) -> Tensor:
    """``add_plain`` for two inputs of one shape: nothing to check, nothing to sum back."""
    a, b = operands(a, b, "add")
    if a.shape != b.shape:
        return add_plain(a, b)

    def backward(g):
        return (g if a.requires_grad else None, g if b.requires_grad else None)

    return make_result(a.data + b.data, (a, b), backward, "add")


# ---- sub ----------------------------------------------------------------------------


def sub(a, b) -> Tensor:
    """a - b, broadcasting: ``sub_fast``, or ``sub_plain`` with the fast paths off."""
    return sub_fast(a, b) if backend.fast_paths_enabled() else sub_plain(a, b)


def sub_plain(a, b) -> Tensor:
    """out = a - b; dL/da = g and dL/db = -g, each summed back to its input's shape."""
    a, b = operands(a, b, "sub")
    broadcast_shape("sub", a.shape, b.shape)
    out = a.data - b.data

    def backward(g):
        return (
            unbroadcast(g, a.shape) if a.requires_grad else None,
            unbroadcast(-g, b.shape) if b.requires_grad else None,
        )

    return make_result(out, (a, b), backward, "sub")


def sub_fast(a, b) -> Tensor:
    """``sub_plain`` for two inputs of one shape: nothing to check, nothing to sum back."""
    a, b = operands(a, b, "sub")
    if a.shape != b.shape:
        return sub_plain(a, b)

    def backward(g):
        return (g if a.requires_grad else None, -g if b.requires_grad else None)

    return make_result(a.data - b.data, (a, b), backward, "sub")


# ---- mul ----------------------------------------------------------------------------


def mul(a, b) -> Tensor:
    """a * b, broadcasting: ``mul_fast``, or ``mul_plain`` with the fast paths off."""
    return mul_fast(a, b) if backend.fast_paths_enabled() else mul_plain(a, b)


def mul_plain(a, b) -> Tensor:
    """out = a * b; dL/da = g b and dL/db = g a, each summed back to its input's shape."""
    a, b = operands(a, b, "mul")
    broadcast_shape("mul", a.shape, b.shape)
    out = a.data * b.data

    def backward(g):
        return (
            unbroadcast(g * b.data, a.shape) if a.requires_grad else None,
            unbroadcast(g * a.data, b.shape) if b.requires_grad else None,
        )

    return make_result(out, (a, b), backward, "mul")


def mul_fast(a, b) -> Tensor:
    """``mul_plain`` for two inputs of one shape: nothing to check, nothing to sum back."""
    a, b = operands(a, b, "mul")
    if a.shape != b.shape:
        return mul_plain(a, b)

    def backward(g):
        return (
            g * b.data if a.requires_grad else None,
            g * a.data if b.requires_grad else None,
        )

    return make_result(a.data * b.data, (a, b), backward, "mul")


# ---- div ----------------------------------------------------------------------------


def div(a, b) -> Tensor:
    """a / b, broadcasting: ``div_fast``, or ``div_plain`` with the fast paths off."""
    return div_fast(a, b) if backend.fast_paths_enabled() else div_plain(a, b)


def div_plain(a, b) -> Tensor:
    """out = a / b; dL/da = g / b and dL/db = -g a / b^2 = -(g / b) out, each summed back."""
    a, b = operands(a, b, "div")
    broadcast_shape("div", a.shape, b.shape)
    out = a.data / b.data

    def backward(g):
        g_over_b = g / b.data
        return (
            unbroadcast(g_over_b, a.shape) if a.requires_grad else None,
            unbroadcast(-g_over_b * out, b.shape) if b.requires_grad else None,
        )

    return make_result(out, (a, b), backward, "div")


def div_fast(a, b) -> Tensor:
    """``div_plain`` for two inputs of one shape: nothing to check, nothing to sum back."""
    a, b = operands(a, b, "div")
    if a.shape != b.shape:
        return div_plain(a, b)
    out = a.data / b.data

    def backward(g):
        g_over_b = g / b.data
        return (
            g_over_b if a.requires_grad else None,
            -g_over_b * out if b.requires_grad else None,
        )

    return make_result(out, (a, b), backward, "div")
