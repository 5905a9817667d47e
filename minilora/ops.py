"""Differentiable operations on Tensors, each forward written beside its backward.

Every op follows one shape::

    def op(a, b):
        out = <forward on a.data, b.data>
        def backward(g):                 # g = dLoss/dout, same shape as out
            return (<dLoss/da or None>, <dLoss/db or None>)
        return make_result(out, (a, b), backward, "op")

A backward returns ``None`` for an input that does not require a gradient, and
skips the work of computing it: that is how a frozen weight costs nothing.
Gradients of broadcast inputs are summed back to the input's shape by one
helper, ``unbroadcast``; it lives in ``broadcasting.py`` with the other helpers
every op shares. The fused neural-network ops (softmax, cross-entropy, layer
norm, GELU, attention, ...) live in ``functional.py`` and follow the same shape.
"""

from __future__ import annotations

import builtins

import numpy as np

from minilora import backend, checks
from minilora.broadcasting import broadcast_shape, operands, unbroadcast
from minilora.tensor import Tensor, make_result

# ---- helpers (the shared ones: broadcasting.py) ---------------------------------


def mm(x, y):
    """Every matrix product of the engine goes through here (tests count the calls)."""
    return x @ y


# ---- elementwise ----------------------------------------------------------------
# Inputs broadcast; each gradient is summed back to its input's shape (``unbroadcast``),
# and computed only for an input that requires one.


def add(a, b) -> Tensor:
    """out = a + b; dL/da = g, dL/db = g."""
    a, b = operands(a, b, "add", broadcast=True)
    backward = lambda g: (unbroadcast(g, a.shape), unbroadcast(g, b.shape))
    return make_result(a.data + b.data, (a, b), backward, "add")


def sub(a, b) -> Tensor:
    """out = a - b; dL/da = g, dL/db = -g."""
    a, b = operands(a, b, "sub", broadcast=True)
    backward = lambda g: (unbroadcast(g, a.shape), unbroadcast(-g, b.shape))
    return make_result(a.data - b.data, (a, b), backward, "sub")


def mul(a, b) -> Tensor:
    """out = a * b; dL/da = g b, dL/db = g a."""
    a, b = operands(a, b, "mul", broadcast=True)

    def backward(g):
        return (
            unbroadcast(g * b.data, a.shape) if a.requires_grad else None,
            unbroadcast(g * a.data, b.shape) if b.requires_grad else None,
        )

    return make_result(a.data * b.data, (a, b), backward, "mul")


def div(a, b) -> Tensor:
    """out = a / b; dL/da = g / b, dL/db = -g a / b^2 = -(g / b) out."""
    a, b = operands(a, b, "div", broadcast=True)
    out = a.data / b.data

    def backward(g):
        g_over_b = g / b.data
        return (
            unbroadcast(g_over_b, a.shape) if a.requires_grad else None,
            unbroadcast(-g_over_b * out, b.shape) if b.requires_grad else None,
        )

    return make_result(out, (a, b), backward, "div")


def neg(a: Tensor) -> Tensor:
    return make_result(-a.data, (a,), lambda g: (-g,), "neg")


def pow(a: Tensor, exponent: float) -> Tensor:
    """a ** exponent for a constant (Python number) exponent."""
    checks.exponent(exponent)
    out = a.data**exponent
    return make_result(out, (a,), lambda g: (g * exponent * a.data ** (exponent - 1),), "pow")


def exp(a: Tensor) -> Tensor:
    out = backend.get_array_module(a.data).exp(a.data)
    return make_result(out, (a,), lambda g: (g * out,), "exp")


def log(a: Tensor) -> Tensor:
    out = backend.get_array_module(a.data).log(a.data)
    return make_result(out, (a,), lambda g: (g / a.data,), "log")


def sqrt(a: Tensor) -> Tensor:
    out = backend.get_array_module(a.data).sqrt(a.data)
    return make_result(out, (a,), lambda g: (g * 0.5 / out,), "sqrt")


def tanh(a: Tensor) -> Tensor:
    out = backend.get_array_module(a.data).tanh(a.data)
    return make_result(out, (a,), lambda g: (g * (1 - out * out),), "tanh")


def relu(a: Tensor) -> Tensor:
    positive = a.data > 0
    return make_result(a.data * positive, (a,), lambda g: (g * positive,), "relu")


# ---- matrix product ----------------------------------------------------------


def matmul(a, b) -> Tensor:
    """a @ b for 2-D or batched inputs; batch dimensions broadcast.

    With G = dL/d(out): dL/da = G @ b^T and dL/db = a^T @ G (summed over
    broadcast batch dimensions). Only the products for inputs that require a
    gradient are computed.
    """
    a, b = operands(a, b, "matmul")
    checks.matmul_shapes(a, b)
    broadcast_shape("matmul (batch dimensions)", a.shape[:-2], b.shape[:-2])
    out = mm(a.data, b.data)

    def backward(g):
        # BEGIN STUDENT: matmul_backward
        ga = gb = None
        if a.requires_grad:
            ga = unbroadcast(mm(g, b.data.swapaxes(-1, -2)), a.shape)
        if b.requires_grad:
            gb = unbroadcast(mm(a.data.swapaxes(-1, -2), g), b.shape)
        return ga, gb
        # END STUDENT: matmul_backward

    return make_result(out, (a, b), backward, "matmul")


# ---- reductions ------------------------------------------------------------


def sum(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    axes = checks.axes(axis, a.ndim, "sum")
    out = a.data.sum(axis=axes, keepdims=keepdims)
    kept = tuple(1 if i in axes else n for i, n in enumerate(a.shape))

    def backward(g):  # every summed element receives the output's gradient
        xp = backend.get_array_module(g)
        return (xp.broadcast_to(g.reshape(kept), a.shape),)

    return make_result(out, (a,), backward, "sum")


def mean(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    axes = checks.axes(axis, a.ndim, "mean")
    count = int(np.prod([a.shape[i] for i in axes]))
    return mul(sum(a, axes, keepdims), 1.0 / builtins.max(count, 1))


def max(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Maximum over axes; the gradient is shared equally among tied maxima."""
    axes = checks.axes(axis, a.ndim, "max")
    if a.size == 0:
        raise ValueError(f"max: the input of shape {a.shape} is empty")
    kept_values = a.data.max(axis=axes, keepdims=True)
    out = (
        kept_values
        if keepdims
        else kept_values.reshape(tuple(n for i, n in enumerate(a.shape) if i not in axes))
    )

    def backward(g):
        winners = (a.data == kept_values).astype(g.dtype)  # bool / int division gives float64
        share = winners / winners.sum(axis=axes, keepdims=True)
        return (share * g.reshape(kept_values.shape),)

    return make_result(out, (a,), backward, "max")


# ---- shapes ------------------------------------------------------------------


def reshape(a: Tensor, shape) -> Tensor:
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    out = checks.reshaped(a.data, shape)
    return make_result(out, (a,), lambda g: (g.reshape(a.shape),), "reshape")


def transpose(a: Tensor, axis1: int = -2, axis2: int = -1) -> Tensor:
    checks.axis_pair(a.shape, axis1, axis2)
    out = a.data.swapaxes(axis1, axis2)
    return make_result(out, (a,), lambda g: (g.swapaxes(axis1, axis2),), "transpose")


def permute(a: Tensor, axes) -> Tensor:
    axes = checks.permutation(a.shape, axes)
    inverse = tuple(np.argsort([ax % a.ndim for ax in axes]))
    out = a.data.transpose(axes)
    return make_result(out, (a,), lambda g: (g.transpose(inverse),), "permute")


def _plain_index(index):
    """Tensors inside an index become their arrays."""
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index.data if isinstance(index, Tensor) else index


def _is_advanced(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(not isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)


def getitem(a: Tensor, index) -> Tensor:
    """a[index] for integers, slices and integer arrays; repeated indices add up."""
    index = _plain_index(index)
    try:
        out = a.data[index]
    except IndexError as err:  # name the op, the index and the shape, not just NumPy's words
        raise IndexError(f"getitem: index {index!r} does not fit shape {a.shape}: {err}") from None

    def backward(g):
        xp = backend.get_array_module(g)
        grad = xp.zeros_like(a.data)
        if _is_advanced(index):  # an element picked twice gets both gradients
            backend.scatter_add(grad, index, g)
        else:
            grad[index] = g
        return (grad,)

    return make_result(out, (a,), backward, "getitem")


def concat(tensors, axis: int = 0) -> Tensor:
    tensors = tuple(tensors)
    for t in tensors[1:]:
        operands(tensors[0], t, "concat")  # one device, one float dtype
    xp = backend.get_array_module(tensors[0].data)
    try:
        out = xp.concatenate([t.data for t in tensors], axis=axis)
    except ValueError as err:
        shapes = [t.shape for t in tensors]
        raise ValueError(f"concat: shapes {shapes} along axis {axis}: {err}") from None
    ends = np.cumsum([t.shape[axis] for t in tensors])[:-1].tolist()

    def backward(g):
        return tuple(xp.split(g, ends, axis=axis))

    return make_result(out, tensors, backward, "concat")


def stack(tensors, axis: int = 0) -> Tensor:
    tensors = tuple(tensors)
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack: all inputs need one shape, got {[t.shape for t in tensors]}")
    for t in tensors[1:]:
        operands(tensors[0], t, "stack")  # one device, one float dtype
    xp = backend.get_array_module(tensors[0].data)
    out = xp.stack([t.data for t in tensors], axis=axis)

    def backward(g):
        return tuple(xp.take(g, i, axis=axis) for i in range(len(tensors)))

    return make_result(out, tensors, backward, "stack")


def split(a: Tensor, sizes, axis: int = -1) -> list[Tensor]:
    """Cut ``a`` along ``axis`` into pieces of the given sizes (or N equal pieces)."""
    sizes = checks.split_sizes(a.shape[axis], sizes)
    starts = np.cumsum([0, *sizes]).tolist()
    lead = (slice(None),) * (axis % a.ndim)
    return [getitem(a, (*lead, slice(s, e))) for s, e in zip(starts[:-1], starts[1:])]


# ---- selection ---------------------------------------------------------------


def where(condition, a, b) -> Tensor:
    """Elementwise ``a`` where ``condition`` holds, else ``b`` (all three broadcast)."""
    a, b = operands(a, b, "where")
    xp = backend.get_array_module(a.data)
    cond = xp.asarray(condition.data if isinstance(condition, Tensor) else condition)
    broadcast_shape("where", cond.shape, a.shape, b.shape)
    out = xp.where(cond, a.data, b.data)

    def backward(g):
        zero = xp.zeros((), dtype=g.dtype)
        return (
            unbroadcast(xp.where(cond, g, zero), a.shape) if a.requires_grad else None,
            unbroadcast(xp.where(cond, zero, g), b.shape) if b.requires_grad else None,
        )

    return make_result(out, (a, b), backward, "where")


def masked_fill(a: Tensor, mask, value: float) -> Tensor:
    """``a`` with ``value`` wherever ``mask`` is True (mask broadcasts to a's shape)."""
    mask = mask.data if isinstance(mask, Tensor) else mask
    if broadcast_shape("masked_fill", mask.shape, a.shape) != a.shape:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} is larger than input {a.shape}")
    xp = backend.get_array_module(a.data)
    out = xp.where(mask, xp.asarray(value, dtype=a.dtype), a.data)
    return make_result(out, (a,), lambda g: (xp.where(mask, 0, g).astype(g.dtype),), "masked_fill")


# ---- devices -----------------------------------------------------------------


def to_device(a: Tensor, device: str) -> Tensor:
    """``a`` moved to ``device``; its gradient moves back to a's device."""
    if a.device == backend.check_device(device):
        return a
    source = a.device
    out = backend.to_device(a.data, device)
    return make_result(out, (a,), lambda g: (backend.to_device(g, source),), "to_device")


# ---- Tensor's operators ------------------------------------------------------------
# Bound here rather than in tensor.py so that tensor.py needs nothing from this file.


BINARY = {"add": add, "sub": sub, "mul": mul, "truediv": div, "matmul": matmul}
METHODS = "sum mean max exp log sqrt tanh relu transpose masked_fill".split()


def _bind_operators() -> None:
    for name, op in BINARY.items():  # a + b, and b + a when b is a number or an array
        setattr(Tensor, f"__{name}__", op)
        setattr(Tensor, f"__r{name}__", lambda self, other, op=op: op(other, self))
    for name in METHODS:
        setattr(Tensor, name, globals()[name])
    Tensor.__neg__, Tensor.__pow__, Tensor.__getitem__, Tensor.to = neg, pow, getitem, to_device
    Tensor.reshape = lambda self, *shape: reshape(self, shape[0] if len(shape) == 1 else shape)
    Tensor.permute = lambda self, *axes: permute(self, axes[0] if len(axes) == 1 else axes)
    Tensor.T = property(lambda self: permute(self, tuple(reversed(range(self.ndim)))))


_bind_operators()
