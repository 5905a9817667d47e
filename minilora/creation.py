"""Making tensors: ``tensor``, ``zeros``, ``ones``, ``randn``, ``rand``, ``arange``, and seeding.

Random numbers come from a NumPy ``Generator`` (``manual_seed`` resets the
global one; every function also takes ``generator=``). They are drawn on the
CPU and then moved, so one seed gives bit-for-bit the same tensors on every
run and the same initial weights on "cpu" and "cuda". The dropout mask is
drawn here too (``dropout_mask``), the one mask every op that drops uses.
"""

from __future__ import annotations

import numpy as np

from minilora import backend
from minilora.tensor import Tensor

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Reset the global generator to ``seed`` and return it."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator() -> np.random.Generator:
    return _generator


def _shape(shape) -> tuple:
    if len(shape) == 1 and not isinstance(shape[0], int):
        return tuple(shape[0])
    return tuple(shape)


def tensor(data, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A new leaf tensor from a list, number or array (see ``Tensor``)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def _make(array, dtype, device, requires_grad) -> Tensor:
    array = backend.to_device(array.astype(dtype, copy=False), backend.check_device(device))
    return Tensor(array, requires_grad=requires_grad)


def zeros(*shape, dtype=np.float32, device=None, requires_grad=False) -> Tensor:
    return _make(np.zeros(_shape(shape)), dtype, device, requires_grad)


def ones(*shape, dtype=np.float32, device=None, requires_grad=False) -> Tensor:
    return _make(np.ones(_shape(shape)), dtype, device, requires_grad)


def randn(*shape, dtype=np.float32, device=None, requires_grad=False, generator=None) -> Tensor:
    """Standard normal samples."""
    rng = generator if generator is not None else _generator
    return _make(rng.standard_normal(_shape(shape)), dtype, device, requires_grad)


def rand(*shape, dtype=np.float32, device=None, requires_grad=False, generator=None) -> Tensor:
    """Uniform samples in [0, 1)."""
    rng = generator if generator is not None else _generator
    return _make(rng.random(_shape(shape)), dtype, device, requires_grad)


def arange(start, stop=None, step=1, dtype=np.int64, device=None) -> Tensor:
    if stop is None:
        start, stop = 0, start
    return _make(np.arange(start, stop, step), dtype, device, False)


def dropout_mask(shape, p: float, dtype, device: str, generator=None):
    """The inverted-dropout mask: 0 with probability p, else 1/(1-p).

    Drawn from ``generator`` (a NumPy Generator; the global one if None) on the
    CPU, so one seed gives the same mask on every device. Every op that drops
    (``dropout``, ``attention``, the fused adapter layer) takes its mask from here.
    """
    if generator is None:
        generator = _generator
    dtype = np.dtype(dtype)
    keep = (generator.random(shape) >= p).astype(dtype) / dtype.type(1.0 - p)
    return backend.to_device(keep, device)
