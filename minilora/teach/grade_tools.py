"""What the grader's checks share: faults, finite differences, diagnoses, a tiny GPT.

Loaded by ``grade_worker.py`` in the process that grades one part, where ``import
minilora`` is the package being graded (never ours). A check is a function of no
arguments: it returns when the part passes, raises ``AssertionError(message)`` (``fail``)
naming the likely fault when it does not; any other exception is reported with the
check's hint.
"""

from __future__ import annotations

import numpy as np


def fail(message: str):
    raise AssertionError(message)


def close(got, want, rtol=1e-7, atol=1e-9) -> bool:
    got, want = np.asarray(got), np.asarray(want)
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=rtol, atol=atol))


def shape_of(x) -> str:
    return "None" if x is None else str(tuple(np.shape(x)))


def diagnose(got, want, what: str, faults=(), rtol=1e-7, atol=1e-9) -> None:
    """Fail unless ``got`` equals ``want``; the message names the likely fault.

    ``faults``: (array a wrong answer would give, the fault's name), tried in order."""
    if got is None:
        fail(f"{what} is None; expected an array of shape {shape_of(want)}")
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if close(got, want, rtol, atol):
        return
    for wrong, name in faults:
        if close(got, wrong, rtol, atol):
            fail(f"{what}: {name}")
    if got.shape != want.shape:
        if got.shape == want.T.shape and close(got.T, want):
            fail(f"{what} is transposed: shape {got.shape}, expected {want.shape}")
        fail(f"{what} has shape {got.shape}, expected {want.shape}")
    if close(got, -want):
        fail(f"{what} has the wrong sign (it is the negative of the right value)")
    ratio = np.divide(got, want, out=np.full(got.shape, np.nan), where=np.abs(want) > 1e-8)
    finite = ratio[np.isfinite(ratio)]
    if finite.size and np.allclose(finite, finite[0], rtol=1e-6) and abs(finite[0]) > 1e-12:
        fail(f"{what} is off by a constant factor {finite[0]:.4g}")
    if not np.all(np.isfinite(got)):
        fail(f"{what} has NaN or inf values")
    i = np.unravel_index(np.argmax(np.abs(got - want)), want.shape)
    fail(
        f"{what} is wrong: at index {tuple(int(k) for k in i)} got {got[i]:.6g}, "
        f"expected {want[i]:.6g}"
    )


def numeric_grads(fn, arrays, projection, eps=1e-6):
    """Central differences of sum(fn(*arrays) * projection) for every element of every array."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            up = float((fn(*arrays) * projection).sum())
            a[i] = old - eps
            down = float((fn(*arrays) * projection).sum())
            a[i] = old
            g[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def op_grads(op, arrays, rng, requires=None):
    """An op's own backward: (the output, its _backward(R) for a random R, R).

    The op is called on float64 Tensors; only its backward closure runs, not
    Tensor.backward, so the op is graded alone."""
    from minilora.tensor import Tensor

    requires = requires or [True] * len(arrays)
    tensors = [Tensor(a.copy(), requires_grad=r) for a, r in zip(arrays, requires)]
    out = op(*tensors)
    if not isinstance(out, Tensor):
        fail(f"returned {type(out).__name__}, expected a Tensor (wrap the result: make_result)")
    if out._backward is None:
        fail("the output records no backward (return make_result(out, parents, backward, op))")
    projection = rng.standard_normal(out.shape)
    grads = out._backward(projection)
    if not isinstance(grads, (tuple, list)):
        fail(f"backward returned {type(grads).__name__}; expected one gradient per input")
    return out.data, list(grads), projection


def check_op_gradient(op, arrays, rng, name, names, faults=None, requires=None):
    """Compare an op's backward with central differences in float64."""
    from minilora.tensor import Tensor, no_grad

    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    _, grads, R = op_grads(op, arrays, rng, requires)

    def value(*xs):
        with no_grad():
            return op(*[Tensor(x) for x in xs]).data

    want = numeric_grads(value, [a.copy() for a in arrays], R)
    requires = requires or [True] * len(arrays)
    for k, (got, w, needed) in enumerate(zip(grads, want, requires)):
        what = f"{name}: dL/d{names[k]} for shapes {', '.join(shape_of(a) for a in arrays)}"
        if not needed:
            if got is not None:
                fail(f"{what}: computed for an input that needs no gradient (return None)")
            continue
        diagnose(got, w, what, (faults or {}).get(k, ()))


def tiny_gpt(seed=0, n_layer=2, d_model=16, vocab=20, block=16, dtype=np.float32):
    from minilora.transformer import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=2, d_model=d_model)
    model = GPT(cfg, generator=np.random.default_rng(seed))
    for p in model.parameters():
        p.data = p.data.astype(dtype)
    return model


def tokens(seed=0, shape=(2, 8), vocab=20):
    return np.random.default_rng(seed).integers(vocab, size=shape)
