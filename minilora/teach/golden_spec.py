"""What a golden case is: the record (GoldenCase), the registering decorator, the input helpers.

The cases themselves, each with minilora's engine as its reference, are in golden_cases.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DTYPE = np.float64


@dataclass
class GoldenCase:
    """One function on one set of inputs; ``reference(inputs, device)`` gives the outputs."""

    name: str
    signature: str
    formula: str
    function: str  # what in minilora computes the reference
    exercise: str | None  # the notebook whose exercise it checks, or None (an engine op)
    seed: int
    make_inputs: object  # callable(rng) -> dict name -> array / int / float / shape tuple
    reference: object  # callable(inputs: dict, device: str) -> dict name -> np.ndarray
    no_gradient: tuple = ()  # inputs that are frozen: an implementation gives them no gradient

    @property
    def inputs(self) -> dict:
        """The inputs, in call order, drawn afresh from ``default_rng(seed)``."""
        return self.make_inputs(np.random.default_rng(self.seed))


_CASES: list[GoldenCase] = []
NB1, NB2, NB5 = (
    f"notebooks/{s}.ipynb" for s in ("01_autograd", "02_lora_layer", "05_understanding_updates")
)


def case(name, seed, signature, formula, function, inputs, exercise=None, no_gradient=()):
    """Register the decorated reference function as the golden case ``name``."""

    def register(reference):
        _CASES.append(
            GoldenCase(
                name, signature, formula, function, exercise, seed, inputs, reference, no_gradient
            )
        )
        return reference

    return register


def _n(rng, *shape):
    return rng.standard_normal(shape)


def _lora_inputs(*keys):
    """Inputs of a LoRA layer with d_in 10, d_out 7, r 3, a batch of 6 rows; B is not zero."""

    def make(rng):
        everything = {
            "x": _n(rng, 6, 10), "W": _n(rng, 7, 10), "W0": _n(rng, 7, 10), "b": _n(rng, 7),
            "A": _n(rng, 3, 10), "B": _n(rng, 7, 3), "G": _n(rng, 6, 7), "alpha": 6.0, "r": 3,
        }  # fmt: skip
        return {k: everything[k] for k in keys}

    return make


def _t(x, device, grad=False):
    from minilora.tensor import Tensor

    return Tensor(np.asarray(x, dtype=DTYPE), requires_grad=grad, device=device)


def _np(x):
    """A Tensor's or an array's values as a NumPy array.

    Only a Tensor is unwrapped: arrays have a ``.data`` too (NumPy's is a
    memoryview, CuPy's a MemoryPointer), which is not the values.
    """
    from minilora.backend import to_numpy
    from minilora.tensor import Tensor

    return to_numpy(x.data if isinstance(x, Tensor) else x)
