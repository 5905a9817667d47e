"""Check a backward against central finite differences, for our ops and for yours.

For a function f of some tensors, gradcheck forms the scalar L = sum(f(x) * R)
with a fixed random R (so every output element counts), computes dL/dx with
``backward()``, and compares it with

    (L(x + eps e) - L(x - eps e)) / (2 eps)            (error O(eps^2))

* ``mode="elementwise"``: e runs over every element of every input (exact
  location of a wrong gradient; cost 2 evaluations per element).
* ``mode="direction"``: e is one random direction over all inputs at once
  and the comparison is with the dot product <dL/dx, e> (HIPS autograd's
  check: two evaluations whatever the size, for big inputs).
* ``mode="auto"``: elementwise up to ``max_elements`` inputs, else direction.

Use float64: in float32 the round-off of L, about 1e-7 * |L| / eps, swamps
the difference. A failure raises ``GradcheckError`` naming the input, the
index and both values.
"""

from __future__ import annotations

import numpy as np

from minilora import backend
from minilora.tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with the finite difference."""


def gradcheck(
    fn,
    inputs,
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    mode: str = "auto",
    max_elements: int = 400,
    seed: int = 0,
    name: str | None = None,
) -> bool:
    """Return True if ``fn``'s gradients match central differences, else raise.

    Args:
        fn: a function of ``inputs`` (Tensors) returning a Tensor.
        inputs: the tensors to differentiate; those with requires_grad=True
            are checked, the others held fixed.
        eps: the finite-difference step.
        atol, rtol: pass if |analytic - numeric| <= atol + rtol * |numeric|.
        mode: "elementwise", "direction" or "auto" (see the module docstring).
        seed: seeds the output projection R and the random direction.
        name: what to call ``fn`` in messages (default: its __name__).
    """
    inputs = list(inputs)
    name = name or getattr(fn, "__name__", "fn")
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True; nothing to check")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(
                f"gradcheck: input {i} is {inputs[i].dtype}; use float64, since float32 "
                "round-off makes central differences meaningless"
            )
    if mode not in ("auto", "elementwise", "direction"):
        raise ValueError(f"gradcheck: mode={mode!r}; expected 'auto', 'elementwise' or 'direction'")
    rng = np.random.default_rng(seed)

    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: {name} returned {type(out).__name__}, expected a Tensor")
    xp = backend.get_array_module(out.data)
    projection = xp.asarray(rng.standard_normal(out.shape))

    def loss() -> float:
        with no_grad():
            return float((fn(*inputs).data * projection).sum())

    for i in checked:
        inputs[i].grad = None
    (out * Tensor(projection)).sum().backward()
    analytic = {}
    for i in checked:
        grad = inputs[i].grad
        analytic[i] = xp.zeros_like(inputs[i].data) if grad is None else grad
        inputs[i].grad = None

    total = sum(inputs[i].size for i in checked)
    if mode == "direction" or (mode == "auto" and total > max_elements):
        _check_direction(inputs, checked, analytic, loss, eps, atol, rtol, rng, name)
    else:
        _check_elementwise(inputs, checked, analytic, loss, eps, atol, rtol, name)
    return True


def _check_elementwise(inputs, checked, analytic, loss, eps, atol, rtol, name):
    for i in checked:
        data = inputs[i].data
        flat_grad = analytic[i].reshape(-1)
        for flat_index in range(data.size):
            index = np.unravel_index(flat_index, data.shape)
            original = data[index].item()
            data[index] = original + eps
            up = loss()
            data[index] = original - eps
            down = loss()
            data[index] = original
            numeric = (up - down) / (2 * eps)
            value = float(flat_grad[flat_index])
            if not abs(value - numeric) <= atol + rtol * abs(numeric):
                raise GradcheckError(
                    f"gradcheck of {name}: input {i} (shape {data.shape}) at index "
                    f"{tuple(int(k) for k in index)}: backward gives {value:.10g}, "
                    f"central difference gives {numeric:.10g} (difference {value - numeric:.3g})"
                )


def _check_direction(inputs, checked, analytic, loss, eps, atol, rtol, rng, name):
    xp = backend.get_array_module(inputs[checked[0]].data)
    direction = {i: xp.asarray(rng.standard_normal(inputs[i].shape)) for i in checked}
    predicted = sum(float((analytic[i] * direction[i]).sum()) for i in checked)
    originals = {i: inputs[i].data.copy() for i in checked}
    for i in checked:
        inputs[i].data[...] = originals[i] + eps * direction[i]
    up = loss()
    for i in checked:
        inputs[i].data[...] = originals[i] - eps * direction[i]
    down = loss()
    for i in checked:
        inputs[i].data[...] = originals[i]
    numeric = (up - down) / (2 * eps)
    if not abs(predicted - numeric) <= atol + rtol * abs(numeric):
        raise GradcheckError(
            f"gradcheck of {name} along a random direction over inputs {checked}: "
            f"backward gives {predicted:.10g}, central difference gives {numeric:.10g} "
            f"(difference {predicted - numeric:.3g})"
        )
