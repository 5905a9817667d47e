"""Where two inputs meet: one device, one dtype, shapes that broadcast.

Broadcasting is handled once, here, by the helpers every op shares: ``operands``
checks that two inputs share a device and a dtype; ``broadcast_shape`` that their
shapes broadcast (an error naming the op and the shapes, before NumPy's own);
``unbroadcast`` sums a gradient back to an input's shape (the chain rule for an
input that broadcasting copied).
"""

from __future__ import annotations

import numpy as np

from minilora import backend
from minilora.tensor import Tensor


def as_tensor(x, like: Tensor) -> Tensor:
    """A constant (number, list, array) as a Tensor with ``like``'s dtype and device."""
    if isinstance(x, Tensor):
        return x
    if not isinstance(like, Tensor):  # two arrays: the first becomes a Tensor as it is
        return Tensor(x)
    xp = backend.get_array_module(like.data)
    return Tensor(xp.asarray(x, dtype=like.dtype))


def operands(a, b, op: str, broadcast: bool = False) -> tuple[Tensor, Tensor]:
    """Two inputs of a binary op as Tensors on one device with one floating dtype (and,
    with ``broadcast``, shapes that broadcast)."""
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
    if broadcast and a.shape != b.shape:
        broadcast_shape(op, a.shape, b.shape)
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
