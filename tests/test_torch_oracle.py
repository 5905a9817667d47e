"""The second gradient oracle: every differentiable op against PyTorch's autograd, in float64.

The first oracle is central differences (test_ops.py, test_functional.py); it is
independent of any library but only accurate to ~1e-6. Here each op's forward
value and the gradients of all its inputs (for a random upstream gradient g,
i.e. the vector-Jacobian product) must equal torch's to ~1e-10, over
Hypothesis-drawn shapes with broadcasting. Needs torch (the ``compat`` extra);
skipped cleanly without it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import (
    SEEDS,
    arrays,
    away_from_zero,
    axes,
    broadcastable_shapes,
    distinct,
    divisors,
    noncontiguous,
    positive,
    shapes,
)

torch = pytest.importorskip("torch", reason="needs the compat extra: pip install -e '.[compat]'")
import torch.nn.functional as TF  # noqa: E402

import minilora as ml  # noqa: E402
from minilora import functional as F  # noqa: E402
from minilora import ops  # noqa: E402

RTOL, ATOL = 1e-10, 1e-11
FAST = settings(max_examples=20, deadline=None)


def oracle(ours, theirs, inputs, seed, differentiable=None):
    """ours(*minilora tensors) and theirs(*torch tensors) agree in value and in every gradient."""
    differentiable = differentiable or [True] * len(inputs)
    mine = [
        ml.tensor(np.asarray(a, np.float64), requires_grad=d)
        for a, d in zip(inputs, differentiable)
    ]
    ref = [
        torch.tensor(np.array(a, np.float64), requires_grad=d)
        for a, d in zip(inputs, differentiable)
    ]
    out, expected = ours(*mine), theirs(*ref)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    exps = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    assert len(outs) == len(exps)
    rng = np.random.default_rng(seed)
    upstream = [rng.standard_normal(e.shape) for e in exps]
    for o, e in zip(outs, exps):
        assert o.shape == tuple(e.shape), f"shape {o.shape}, torch {tuple(e.shape)}"
        assert o.dtype == np.float64
        np.testing.assert_allclose(o.numpy(), e.detach().numpy(), rtol=RTOL, atol=ATOL)
    if not any(differentiable):
        return
    loss = None
    for o, g in zip(outs, upstream):
        term = ops.sum(ops.mul(o, ml.tensor(g)))
        loss = term if loss is None else ops.add(loss, term)
    loss.backward()
    sum((e * torch.tensor(g)).sum() for e, g in zip(exps, upstream)).backward()
    for i, (m, r) in enumerate(zip(mine, ref)):
        if differentiable[i]:
            assert m.grad is not None, f"input {i}: no gradient"
            np.testing.assert_allclose(
                m.grad, r.grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=f"gradient of input {i}"
            )


# ---- elementwise --------------------------------------------------------------------------
BINARY = {
    "add": (ops.add, torch.add, arrays),
    "sub": (ops.sub, torch.sub, arrays),
    "mul": (ops.mul, torch.mul, arrays),
    "div": (ops.div, torch.div, divisors),
}


@pytest.mark.parametrize("name", BINARY)
@FAST
@given(pair=broadcastable_shapes(), seed=SEEDS, data=st.data())
def test_binary(name, pair, seed, data):
    ours, theirs, b_values = BINARY[name]
    a, b = data.draw(arrays(pair[0])), data.draw(b_values(pair[1]))
    oracle(ours, theirs, [a, b], seed)


UNARY = {
    "neg": (ops.neg, torch.neg, arrays),
    "exp": (ops.exp, torch.exp, arrays),
    "log": (ops.log, torch.log, positive),
    "sqrt": (ops.sqrt, torch.sqrt, positive),
    "tanh": (ops.tanh, torch.tanh, arrays),
    "relu": (ops.relu, torch.relu, away_from_zero),
    "gelu": (F.gelu, lambda x: TF.gelu(x, approximate="tanh"), arrays),
}


@pytest.mark.parametrize("name", UNARY)
@FAST
@given(shape=shapes(), seed=SEEDS, data=st.data())
def test_unary(name, shape, seed, data):
    ours, theirs, values = UNARY[name]
    oracle(ours, theirs, [data.draw(values(shape))], seed)


@FAST
@given(
    shape=shapes(), exponent=st.sampled_from([2, 3, -1, 0.5, 1.5, -0.5]), seed=SEEDS, data=st.data()
)
def test_pow(shape, exponent, seed, data):
    oracle(
        lambda x: ops.pow(x, exponent),
        lambda x: torch.pow(x, exponent),
        [data.draw(positive(shape))],
        seed,
    )


@FAST
@given(
    batch=broadcastable_shapes(max_dims=2, max_side=3),
    mkn=st.tuples(*[st.integers(1, 4)] * 3),
    seed=SEEDS,
    data=st.data(),
)
def test_matmul(batch, mkn, seed, data):
    (m, k, n), (batch_a, batch_b) = mkn, batch
    a, b = data.draw(arrays((*batch_a, m, k))), data.draw(arrays((*batch_b, k, n)))
    oracle(ops.matmul, torch.matmul, [a, b], seed)


# ---- reductions ----------------------------------------------------------------------------
REDUCTIONS = {
    "sum": (ops.sum, torch.sum, arrays),
    "mean": (ops.mean, torch.mean, arrays),
    "max": (ops.max, torch.amax, distinct),  # distinct values: no ties
}


@pytest.mark.parametrize("name", REDUCTIONS)
@FAST
@given(shape=shapes(), keepdims=st.booleans(), seed=SEEDS, data=st.data())
def test_reduction(name, shape, keepdims, seed, data):
    ours, theirs, values = REDUCTIONS[name]
    axis = data.draw(axes(len(shape)), label="axis")
    assume(axis != ())  # numpy: reduce over no axis; torch: over every axis
    dims = tuple(range(len(shape))) if axis is None else axis
    oracle(
        lambda x: ours(x, axis, keepdims),
        lambda x: theirs(x, dim=dims, keepdim=keepdims),
        [data.draw(values(shape))],
        seed,
    )


# ---- shapes -------------------------------------------------------------------------------


@FAST
@given(shape=shapes(), seed=SEEDS, data=st.data())
def test_reshape(shape, seed, data):
    sides = list(data.draw(st.permutations(list(shape))))
    if len(sides) > 1 and data.draw(st.booleans()):
        sides = [sides[0] * sides[1], *sides[2:]]
    if sides and data.draw(st.booleans()):
        sides[0] = -1
    a = data.draw(noncontiguous(shape))
    oracle(lambda x: ops.reshape(x, sides), lambda x: torch.reshape(x, sides), [a], seed)


@FAST
@given(shape=shapes(min_dims=1), seed=SEEDS, data=st.data())
def test_transpose_and_permute(shape, seed, data):
    axis = st.integers(-len(shape), len(shape) - 1)
    a1, a2 = data.draw(axis), data.draw(axis)
    order = tuple(data.draw(st.permutations(range(len(shape)))))
    a = data.draw(arrays(shape))
    oracle(lambda x: ops.transpose(x, a1, a2), lambda x: torch.transpose(x, a1, a2), [a], seed)
    oracle(lambda x: ops.permute(x, order), lambda x: torch.permute(x, order), [a], seed)


@st.composite
def indices(draw, shape):
    """Slices (positive steps) and integers, or slices and one integer array with repeats.

    (An integer beside an array is an advanced index too, which moves axes; keep the
    two kinds apart, as the engine's own tests do.)
    """
    count = draw(st.integers(1, len(shape)))
    array_at = draw(st.integers(-1, count - 1))  # -1: no array index
    index = []
    for i, side in enumerate(shape[:count]):
        if i == array_at:
            picks = draw(st.lists(st.integers(-side, side - 1), min_size=1, max_size=5))
            index.append(np.array(picks))
        elif array_at < 0 and draw(st.booleans()):
            index.append(draw(st.integers(-side, side - 1)))
        else:
            start = draw(st.integers(0, side - 1))
            index.append(slice(start, draw(st.integers(start + 1, side)), draw(st.integers(1, 2))))
    return tuple(index)


@FAST
@given(shape=shapes(min_dims=1), seed=SEEDS, data=st.data())
def test_getitem(shape, seed, data):
    index = data.draw(indices(shape), label="index")
    torch_index = tuple(torch.tensor(i) if isinstance(i, np.ndarray) else i for i in index)
    oracle(
        lambda x: ops.getitem(x, index), lambda x: x[torch_index], [data.draw(arrays(shape))], seed
    )


@FAST
@given(shape=shapes(min_dims=1), n=st.integers(1, 3), seed=SEEDS, data=st.data())
def test_concat_stack_split(shape, n, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    parts = []
    for _ in range(n):
        part = list(shape)
        part[axis] = data.draw(st.integers(1, 3))
        parts.append(data.draw(arrays(tuple(part))))
    oracle(lambda *xs: ops.concat(xs, axis), lambda *xs: torch.cat(xs, axis), parts, seed)
    same = [data.draw(arrays(shape)) for _ in range(n)]
    stack_axis = data.draw(st.integers(-len(shape) - 1, len(shape)), label="stack axis")
    oracle(
        lambda *xs: ops.stack(xs, stack_axis), lambda *xs: torch.stack(xs, stack_axis), same, seed
    )
    whole = np.concatenate(parts, axis=axis)
    sizes = [p.shape[axis] for p in parts]
    oracle(
        lambda x: ops.split(x, sizes, axis), lambda x: torch.split(x, sizes, axis), [whole], seed
    )


# ---- selection ------------------------------------------------------------------------------


@FAST
@given(three=broadcastable_shapes(num_shapes=3), seed=SEEDS, data=st.data())
def test_where(three, seed, data):
    cond = np.random.default_rng(seed).random(three[0]) < 0.5
    a, b = data.draw(arrays(three[1])), data.draw(arrays(three[2]))
    oracle(
        lambda x, y: ops.where(cond, x, y),
        lambda x, y: torch.where(torch.tensor(cond), x, y),
        [a, b],
        seed,
    )


@FAST
@given(shape=shapes(), seed=SEEDS, data=st.data())
def test_masked_fill(shape, seed, data):
    drop = data.draw(st.integers(0, len(shape)))
    mask_shape = tuple(1 if data.draw(st.booleans()) else n for n in shape[drop:])
    mask = np.random.default_rng(seed).random(mask_shape) < 0.5
    oracle(
        lambda x: ops.masked_fill(x, mask, -3.5),
        lambda x: x.masked_fill(torch.tensor(mask), -3.5),
        [data.draw(arrays(shape))],
        seed,
    )


# ---- the fused neural-network ops ----------------------------------------------------------


@FAST
@given(
    lead=shapes(0, 2, 1, 3),
    io=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    with_bias=st.booleans(),
    seed=SEEDS,
    data=st.data(),
)
def test_linear(lead, io, with_bias, seed, data):
    n_in, n_out = io
    inputs = [data.draw(arrays((*lead, n_in))), data.draw(arrays((n_out, n_in)))]
    if with_bias:
        inputs.append(data.draw(arrays((n_out,))))
    oracle(F.linear, TF.linear, inputs, seed)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@FAST
@given(shape=shapes(min_dims=1), seed=SEEDS, data=st.data())
def test_softmax_and_log_softmax(name, shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    ours = getattr(F, name)
    theirs = getattr(torch, name)
    oracle(
        lambda x: ours(x, axis),
        lambda x: theirs(x, axis),
        [data.draw(arrays(shape, -4.0, 4.0))],
        seed,
    )


@FAST
@given(
    lead=shapes(1, 2, 1, 4),
    classes=st.integers(2, 6),
    ignore=st.sampled_from([-100, 1]),
    seed=SEEDS,
    data=st.data(),
)
def test_cross_entropy_with_ignore_index(lead, classes, ignore, seed, data):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, lead)
    targets[rng.random(lead) < 0.3] = ignore
    assume(np.any(targets != ignore))  # torch gives nan when every target is ignored, we give 0
    logits = data.draw(arrays((*lead, classes), -3.0, 3.0))
    oracle(
        lambda z: F.cross_entropy(z, targets, ignore_index=ignore),
        lambda z: TF.cross_entropy(
            z.reshape(-1, classes), torch.tensor(targets.reshape(-1)), ignore_index=ignore
        ),
        [logits],
        seed,
    )


@FAST
@given(
    shape=shapes(1, 3, 2, 5),
    affine=st.booleans(),
    eps=st.sampled_from([1e-5, 1e-3]),
    seed=SEEDS,
    data=st.data(),
)
def test_layer_norm(shape, affine, eps, seed, data):
    D = shape[-1]
    x = data.draw(distinct(shape))  # no near-constant rows
    if affine:
        w, b = data.draw(arrays((D,))), data.draw(arrays((D,)))
        oracle(
            lambda x, w, b: F.layer_norm(x, w, b, eps),
            lambda x, w, b: TF.layer_norm(x, (D,), w, b, eps),
            [x, w, b],
            seed,
        )
    else:
        oracle(
            lambda x: F.layer_norm(x, None, None, eps),
            lambda x: TF.layer_norm(x, (D,), None, None, eps),
            [x],
            seed,
        )


@FAST
@given(
    rows=st.integers(1, 6),
    dim=st.integers(1, 4),
    idx_shape=shapes(1, 2, 1, 5),
    seed=SEEDS,
    data=st.data(),
)
def test_embedding(rows, dim, idx_shape, seed, data):
    idx = np.random.default_rng(seed).integers(0, rows, idx_shape)  # repeats likely
    oracle(
        lambda w: F.embedding(w, idx),
        lambda w: TF.embedding(torch.tensor(idx), w),
        [data.draw(arrays((rows, dim)))],
        seed,
    )
