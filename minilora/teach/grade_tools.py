"""What the grader's checks share: a check's record, failing with a named fault, comparing arrays
and dtypes, gradients through autograd or one op's own backward.

Loaded by ``grade_worker.py`` in the process that grades one part, where ``import minilora``
is the package being graded: the reference package with the student's code in the graded
part's regions. A check is a function of no arguments: it returns when the part passes and
raises ``AssertionError(message)`` (``fail``) naming the fault when it does not; any other
exception is reported with the hint that fits its type (``Check.hints``, then the worker's
generic ones).

The finite differences are the project's own, ``minilora.gradcheck``; the shape of a wrong
answer (transposed, a factor, a sign) is guessed by ``minilora.teach.checking.likely_fault``,
which the notebooks' checkers use too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Check:
    """One check of a part.

    ``hints``: (exception type name, words its message contains or "", the likely fault),
    tried in order for an exception the student's code raised. ``on_timeout``: the likely
    fault when the check runs out of time or memory (an endless loop, a graph walked without
    a visited set). ``seconds``: its time limit (the worker scales it).
    """

    name: str
    run: Callable[[], None]
    hints: tuple = ()
    on_timeout: str = ""
    seconds: float = 3.0


def fail(message: str):
    raise AssertionError(message)


def close(got, want, rtol=1e-7, atol=1e-9) -> bool:
    got, want = np.asarray(got), np.asarray(want)
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=rtol, atol=atol))


def shape_of(x) -> str:
    return "None" if x is None else str(tuple(np.shape(x)))


def values_of(x):
    """An array's values as NumPy (a Tensor's data); None stays None."""
    from minilora.tensor import Tensor

    if isinstance(x, Tensor):
        x = x.data
    return None if x is None else np.asarray(x)


def check_dtype(got, dtype, what: str) -> None:
    """Fail unless ``got`` is an array of ``dtype`` (a float32 input must give float32)."""
    got = values_of(got)
    if got is not None and got.dtype != np.dtype(dtype):
        fail(
            f"{what} is {got.dtype} for {np.dtype(dtype).name} inputs: keep the inputs' dtype "
            f"(a {np.dtype(dtype).name} model must stay {np.dtype(dtype).name}; an astype, a "
            "float64 constant array or np.ones without dtype= changes it)"
        )


def diagnose(got, want, what: str, faults=(), rtol=1e-7, atol=1e-9) -> None:
    """Fail unless ``got`` equals ``want``; the message names the likely fault.

    ``faults``: (the array a wrong answer would give, the fault's name), tried in order."""
    if got is None:
        fail(f"{what} is None; expected an array of shape {shape_of(want)}")
    from minilora.teach.checking import likely_fault

    got = np.asarray(values_of(got), dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if close(got, want, rtol, atol):
        return
    for wrong, name in faults:
        if close(got, np.asarray(wrong, dtype=np.float64), rtol, atol):
            fail(f"{what}: {name}")
    if got.shape != want.shape:
        guess = likely_fault(got, want, "it")
        fail(f"{what} has shape {got.shape}, expected {want.shape}" + (f": {guess}" * bool(guess)))
    if not np.all(np.isfinite(got)):
        fail(f"{what} has NaN or inf values")
    guess = likely_fault(got, want, "it")
    if guess:
        fail(f"{what}: {guess}")
    i = np.unravel_index(np.argmax(np.abs(got - want)), want.shape)
    fail(
        f"{what} is wrong: at index {tuple(int(k) for k in i)} got {got[i]:.6g}, "
        f"expected {want[i]:.6g}"
    )


def autograd_grads(op, arrays, projection, requires=None):
    """(the output, [dL/d input], for L = sum(op(*inputs) * projection)) through
    ``Tensor.backward``: an op with its own backward and one composed of engine ops alike."""
    from minilora.tensor import Tensor

    requires = requires or [True] * len(arrays)
    tensors = [Tensor(np.array(a), requires_grad=r) for a, r in zip(arrays, requires)]
    out = op(*tensors)
    if not isinstance(out, Tensor):
        fail(f"returned {type(out).__name__}, expected a Tensor (wrap the result: make_result)")
    if not out.requires_grad:
        fail("the output records no gradient: return make_result(out, parents, backward, op)")
    out.backward(np.asarray(projection, dtype=out.dtype))
    return out.data, [t.grad for t in tensors]


def op_grads(op, arrays, rng, requires=None):
    """An op's own backward: (the output, its _backward(R) for a random R, R).

    Only the op's backward closure runs, not Tensor.backward, so the closure is graded alone
    (matmul_backward: the part is that closure)."""
    from minilora.tensor import Tensor

    requires = requires or [True] * len(arrays)
    tensors = [Tensor(np.array(a), requires_grad=r) for a, r in zip(arrays, requires)]
    out = op(*tensors)
    if not isinstance(out, Tensor):
        fail(f"returned {type(out).__name__}, expected a Tensor (wrap the result: make_result)")
    if out._backward is None:
        fail("the output records no backward (return make_result(out, parents, backward, op))")
    projection = rng.standard_normal(out.shape).astype(out.dtype)
    grads = out._backward(projection)
    if not isinstance(grads, (tuple, list)):
        fail(f"backward returned {type(grads).__name__}; expected one gradient per input")
    return out.data, list(grads), projection


def gradcheck_op(op, arrays, name, requires=None) -> str:
    """The project's finite-difference check (``minilora.gradcheck``, float64, element by
    element) of ``op``'s gradients through autograd: "" when they pass, else its message."""
    from minilora.gradcheck import GradcheckError, gradcheck
    from minilora.tensor import Tensor

    requires = requires or [True] * len(arrays)
    tensors = [
        Tensor(np.array(a, dtype=np.float64), requires_grad=r) for a, r in zip(arrays, requires)
    ]
    try:
        gradcheck(op, tensors, mode="elementwise", name=name)
    except GradcheckError as err:
        return str(err)
    return ""


def check_gradients(op, arrays, name, names, want, faults=None, requires=None, seed=0):
    """Grade ``op``'s gradients in float64: finite differences decide (``gradcheck_op``); a
    failure is named by comparing the gradients with ``want(R)`` (the right ones for the
    projection R, None for an input not checked) and with ``faults[k]``: (fn(R), fault) pairs
    for input k (the derivative with a term missing, an axis wrong, ...)."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    shapes = ", ".join(shape_of(a) for a in arrays)
    R = np.random.default_rng(seed).standard_normal(op_output_shape(op, arrays))
    _, grads = autograd_grads(op, arrays, R, requires)  # fails clearly on a non-Tensor
    verdict = gradcheck_op(op, arrays, name, requires)
    if not verdict:
        return
    for k, w in enumerate(want(R)):
        if w is None:
            continue
        what = f"{name}: dL/d{names[k]} for shapes {shapes}"
        if grads[k] is None:
            fail(f"{what} is None: every input that requires grad gets a gradient")
        named = [(f(R), fault) for f, fault in (faults or {}).get(k, ())]
        diagnose(grads[k], w, what, named, 1e-6, 1e-8)
    fail(f"{name}: the gradients disagree with finite differences: {verdict}")


def op_output_shape(op, arrays) -> tuple:
    from minilora.tensor import Tensor, no_grad

    with no_grad():
        out = op(*[Tensor(np.array(a)) for a in arrays])
    if not isinstance(out, Tensor):
        fail(f"returned {type(out).__name__}, expected a Tensor (wrap the result: make_result)")
    return tuple(out.shape)


def tiny_gpt(seed=0, n_layer=2, d_model=16, vocab=20, block=16, dtype=None):
    """The grader's small GPT: ``minilora.teach.checking.tiny_gpt`` with its sizes."""
    from minilora.teach.checking import tiny_gpt as make

    return make(seed, None, n_layer, d_model, vocab, block, dtype)


def tokens(seed=0, shape=(2, 8), vocab=20):
    return np.random.default_rng(seed).integers(vocab, size=shape)


# ---- a LoRA layer for the LoRA parts' checks ------------------------------------------------

D_IN, D_OUT, R, ALPHA = 7, 5, 3, 6.0  # scaling alpha / r = 2
SHAPE_HINT = (
    "a shape error: A is (r, d_in) and B is (d_out, r), and a Linear computes x W^T; "
    "is a weight transposed or are A and B swapped?"
)
SHAPES = (
    ("ValueError", "matmul", SHAPE_HINT),
    ("ValueError", "broadcast", SHAPE_HINT),
    ("ValueError", "linear", SHAPE_HINT),
    (
        "RuntimeError",
        "does not require grad",
        "the output does not depend on A and B through "
        "the engine: compute with the layers (Tensors), not with .data",
    ),
)
HARD_CODED = (
    "the scaling is written out as alpha/r: use the config's scaling (rsLoRA: alpha/sqrt(r))"
)


def lora_layer(dtype=np.float64, seed=0, set_ab=True, d_in=D_IN, r=R, **config):
    from minilora.lora import LoRAConfig, LoRALinear
    from minilora.nn import Linear

    rng = np.random.default_rng(seed)
    base = Linear(d_in, D_OUT, dtype=dtype, generator=rng)
    base.bias.data = rng.standard_normal(D_OUT).astype(dtype)
    layer = LoRALinear(base)
    layer.add_adapter("default", LoRAConfig(r=r, alpha=ALPHA, **config), generator=rng)
    if set_ab:
        layer.lora_A["default"].weight.data = rng.standard_normal((r, d_in)).astype(dtype)
        layer.lora_B["default"].weight.data = rng.standard_normal((D_OUT, r)).astype(dtype)
    return layer


def lora_parts(layer, name="default"):
    f64 = lambda t: np.array(t.data, dtype=np.float64)
    return (
        f64(layer.base_layer.weight),
        f64(layer.base_layer.bias),
        f64(layer.lora_A[name].weight),
        f64(layer.lora_B[name].weight),
    )
