"""Property tests for every primitive in ``minilora.ops``.

Each test draws random shapes (0 to 4 dims, sides 1 to 5), random axes and
domain-safe float64 values, checks the forward value against plain NumPy, and
gradchecks the backward against central differences, element by element
(tolerances in ``strategies.py``). The last tests gradcheck random composite
graphs with shared subexpressions.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    arrays,
    assert_forward,
    away_from_zero,
    axes,
    broadcastable_shapes,
    check_grads,
    distinct,
    divisors,
    leaf,
    noncontiguous,
    on,
    positive,
    shapes,
    to_host,
)

from minilora import ops

# ---- elementwise arithmetic, broadcasting ---------------------------------------
BINARY = {
    "add": (ops.add, np.add, arrays),
    "sub": (ops.sub, np.subtract, arrays),
    "mul": (ops.mul, np.multiply, arrays),
    "div": (ops.div, np.divide, divisors),
}


@pytest.mark.parametrize("name", BINARY)
@given(data=st.data())
def test_binary_broadcasting(name, data, device):
    op, np_op, b_values = BINARY[name]
    shape_a, shape_b = data.draw(broadcastable_shapes(), label="shapes")
    a, b = data.draw(arrays(shape_a)), data.draw(b_values(shape_b))
    assert_forward(op(leaf(a, device), leaf(b, device)), np_op(a, b))
    check_grads(op, [a, b], device)


@pytest.mark.parametrize("name", BINARY)
@given(shape=shapes(), data=st.data())
def test_binary_with_python_number(name, shape, data, device):
    op, np_op, b_values = BINARY[name]
    a = data.draw(divisors(shape))
    c = data.draw(st.sampled_from([-1.5, 0.75, 3.0]))
    assert_forward(op(leaf(a, device), c), np_op(a, c))
    assert_forward(op(c, leaf(a, device)), np_op(c, a))
    check_grads(lambda x: op(x, c) + op(c, x), [a], device)


UNARY = {
    "neg": (ops.neg, np.negative, arrays),
    "exp": (ops.exp, np.exp, arrays),
    "log": (ops.log, np.log, positive),
    "sqrt": (ops.sqrt, np.sqrt, positive),
    "tanh": (ops.tanh, np.tanh, arrays),
    "relu": (ops.relu, lambda x: np.maximum(x, 0.0), away_from_zero),
}


@pytest.mark.parametrize("name", UNARY)
@given(shape=shapes(), data=st.data())
def test_unary(name, shape, data, device):
    op, np_op, values = UNARY[name]
    a = data.draw(values(shape))
    assert_forward(op(leaf(a, device)), np_op(a))
    check_grads(op, [a], device)


@given(shape=shapes(), exponent=st.sampled_from([2, 3, -1, 0.5, 1.5, -0.5, 2.0]), data=st.data())
def test_pow_positive_base(shape, exponent, data, device):
    a = data.draw(positive(shape))
    assert_forward(ops.pow(leaf(a, device), exponent), a**exponent)
    check_grads(lambda x: ops.pow(x, exponent), [a], device)


@given(shape=shapes(), exponent=st.sampled_from([1, 2, 3]), data=st.data())
def test_pow_integer_exponent_signed_base(shape, exponent, data, device):
    a = data.draw(arrays(shape))
    assert_forward(leaf(a, device) ** exponent, a**exponent)
    check_grads(lambda x: x**exponent, [a], device)


# ---- matrix product ------------------------------------------------------------------
@given(
    batch=broadcastable_shapes(max_dims=2, max_side=3),
    mkn=st.tuples(*[st.integers(1, 4)] * 3),
    data=st.data(),
)
def test_matmul_batched_broadcasting(batch, mkn, data, device):
    """(..., m, k) @ (..., k, n) with broadcast batch dims; a 2-D side included (batch ())."""
    (m, k, n), (batch_a, batch_b) = mkn, batch
    a = data.draw(arrays((*batch_a, m, k)))
    b = data.draw(arrays((*batch_b, k, n)))
    assert_forward(ops.matmul(leaf(a, device), leaf(b, device)), np.matmul(a, b))
    check_grads(ops.matmul, [a, b], device)
    check_grads(ops.matmul, [a, b], device, requires_grad=[False, True])


@pytest.mark.parametrize(
    "shape_a, shape_b",
    [((3, 4), (4, 2)), ((2, 3, 4, 5), (5, 3)), ((4, 5), (2, 3, 5, 2)), ((1, 3, 2), (4, 2, 3))],
)
def test_matmul_fixed_shapes(shape_a, shape_b, device):
    """Plain 2-D, N-D input times a 2-D weight, 2-D times batched, size-1 batch dims."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    assert_forward(leaf(a, device) @ leaf(b, device), a @ b)
    for requires_grad in ([True, True], [True, False], [False, True]):
        check_grads(ops.matmul, [a, b], device, requires_grad)


# ---- reductions ------------------------------------------------------------------
REDUCTIONS = {
    "sum": (ops.sum, np.sum, arrays),
    "mean": (ops.mean, np.mean, arrays),
    "max": (ops.max, np.max, distinct),  # distinct values: no ties, no kinks
}


@pytest.mark.parametrize("name", REDUCTIONS)
@given(shape=shapes(), keepdims=st.booleans(), data=st.data())
def test_reductions(name, shape, keepdims, data, device):
    op, np_op, values = REDUCTIONS[name]
    axis = data.draw(axes(len(shape)), label="axis")
    a = data.draw(values(shape))
    assert_forward(op(leaf(a, device), axis, keepdims), np_op(a, axis=axis, keepdims=keepdims))
    check_grads(lambda x: op(x, axis, keepdims), [a], device)


def test_max_shares_gradient_among_ties(device):
    x = leaf(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]), device)
    ops.max(x, axis=1).sum().backward()
    np.testing.assert_allclose(to_host(x.grad), [[0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])


# ---- shapes ------------------------------------------------------------------------
@st.composite
def reshape_targets(draw, shape):
    """A new shape with as many elements: the sides shuffled, some merged, maybe one -1."""
    sides = draw(st.permutations(list(shape)))
    merged = []
    for side in sides:
        if merged and draw(st.booleans()):
            merged[-1] *= side
        else:
            merged.append(side)
    merged += [1] * draw(st.integers(0, 1))
    if merged and draw(st.booleans()):
        merged[draw(st.integers(0, len(merged) - 1))] = -1
    return tuple(merged)


@given(shape=shapes(), data=st.data())
def test_reshape(shape, data, device):
    target = data.draw(reshape_targets(shape), label="target")
    a = data.draw(noncontiguous(shape) if data.draw(st.booleans()) else arrays(shape))
    assert_forward(ops.reshape(leaf(a, device), target), a.reshape(target))
    check_grads(lambda x: ops.reshape(x, target), [a], device)


@given(shape=shapes(min_dims=1), data=st.data())
def test_transpose(shape, data, device):
    pair = st.integers(-len(shape), len(shape) - 1)
    axis1, axis2 = data.draw(pair), data.draw(pair)
    a = data.draw(arrays(shape))
    assert_forward(ops.transpose(leaf(a, device), axis1, axis2), a.swapaxes(axis1, axis2))
    check_grads(lambda x: ops.transpose(x, axis1, axis2), [a], device)


@given(shape=shapes(), data=st.data())
def test_permute(shape, data, device):
    order = tuple(data.draw(st.permutations(range(len(shape))), label="axes"))
    a = data.draw(noncontiguous(shape))
    assert_forward(ops.permute(leaf(a, device), order), a.transpose(order))
    check_grads(lambda x: ops.permute(x, order), [a], device)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_permute_every_order_of_three_axes(order, device):
    """Cycles of three axes are where the inverse permutation differs from the permutation."""
    a = np.random.default_rng(0).standard_normal((2, 3, 4))
    assert_forward(ops.permute(leaf(a, device), order), a.transpose(order))
    check_grads(lambda x: ops.permute(x, order), [a], device)


@st.composite
def basic_indices(draw, shape):
    """Per dimension an int or a slice (negative steps, empty results included)."""
    items = []
    for n in shape[: draw(st.integers(1, len(shape)))]:
        if draw(st.booleans()):
            items.append(draw(st.integers(-n, n - 1)))
        else:
            bound = st.none() | st.integers(-n - 1, n + 1)
            step = draw(st.none() | st.sampled_from([-2, -1, 1, 2, 3]))
            items.append(slice(draw(bound), draw(bound), step))
    return tuple(items)


@given(shape=shapes(min_dims=1), data=st.data())
def test_getitem_basic(shape, data, device):
    index = data.draw(basic_indices(shape), label="index")
    a = data.draw(arrays(shape))
    assert_forward(ops.getitem(leaf(a, device), index), a[index])
    check_grads(lambda x: ops.getitem(x, index), [a], device)


@given(shape=shapes(min_dims=1), data=st.data())
def test_getitem_integer_arrays_with_repeats(shape, data, device):
    """An element picked twice gets both gradients (scatter-add, not assignment)."""
    n = shape[0]
    picks = data.draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=6), label="picks")
    picks = np.array([*picks, picks[0]])  # at least one repeat
    if data.draw(st.booleans()):
        picks = picks.reshape(2, -1) if picks.size % 2 == 0 else picks[None]
    a = data.draw(arrays(shape))
    if len(shape) >= 2 and data.draw(st.booleans()):  # a slice, then the array on axis 1
        picks = picks % shape[1]
        index = (slice(None), on(device, picks))
        expected = a[:, picks]
    else:
        index, expected = on(device, picks), a[picks]
    assert_forward(ops.getitem(leaf(a, device), index), expected)
    check_grads(lambda x: ops.getitem(x, index), [a], device)


@st.composite
def parts_along_axis(draw, min_parts=1):
    """A shape with >= 1 dim, an axis, and per part its length along that axis."""
    shape = draw(shapes(min_dims=1, max_side=4))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    lengths = draw(st.lists(st.integers(1, 3), min_size=min_parts, max_size=3))
    return shape, axis, lengths


@given(parts=parts_along_axis(), data=st.data())
def test_concat(parts, data, device):
    shape, axis, lengths = parts
    arrs = []
    for length in lengths:
        part_shape = list(shape)
        part_shape[axis] = length
        arrs.append(data.draw(arrays(tuple(part_shape))))
    out = ops.concat([leaf(x, device) for x in arrs], axis=axis)
    assert_forward(out, np.concatenate(arrs, axis=axis))
    check_grads(lambda *xs: ops.concat(xs, axis=axis), arrs, device)


@given(shape=shapes(max_dims=3), count=st.integers(1, 3), data=st.data())
def test_stack(shape, count, data, device):
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)), label="axis")
    arrs = [data.draw(arrays(shape)) for _ in range(count)]
    assert_forward(ops.stack([leaf(x, device) for x in arrs], axis=axis), np.stack(arrs, axis))
    check_grads(lambda *xs: ops.stack(xs, axis=axis), arrs, device)


@given(parts=parts_along_axis(min_parts=1), equal=st.booleans(), data=st.data())
def test_split(parts, equal, data, device):
    shape, axis, lengths = parts
    shape = list(shape)
    shape[axis] = sum(lengths) if not equal else lengths[0] * len(lengths)
    sizes = len(lengths) if equal else lengths
    a = data.draw(arrays(tuple(shape)))
    pieces = ops.split(leaf(a, device), sizes, axis=axis)
    ends = np.cumsum([lengths[0]] * len(lengths) if equal else lengths)[:-1]
    expected = np.split(a, ends, axis=axis)
    assert len(pieces) == len(expected)
    for piece, want in zip(pieces, expected):
        assert_forward(piece, want)

    def weighted_pieces(x):  # every piece counts, each with its own weight
        scaled = [p * float(j + 1) for j, p in enumerate(ops.split(x, sizes, axis=axis))]
        return ops.concat(scaled, axis=axis)

    check_grads(weighted_pieces, [a], device)


# ---- selection -----------------------------------------------------------------------
@given(trio=broadcastable_shapes(num_shapes=3), data=st.data())
def test_where(trio, data, device):
    shape_c, shape_a, shape_b = trio
    cond = data.draw(arrays(shape_c)) > 0
    a, b = data.draw(arrays(shape_a)), data.draw(arrays(shape_b))
    cond_d = on(device, cond)
    assert_forward(ops.where(cond_d, leaf(a, device), leaf(b, device)), np.where(cond, a, b))
    check_grads(lambda x, y: ops.where(cond_d, x, y), [a, b], device)


@given(shape=shapes(), value=st.sampled_from([0.0, -1e9, 7.5]), data=st.data())
def test_masked_fill(shape, value, data, device):
    """The mask broadcasts to the input: leading dims dropped, others maybe 1."""
    drop = data.draw(st.integers(0, len(shape)), label="drop")
    mask_shape = tuple(1 if data.draw(st.booleans()) else n for n in shape[drop:])
    mask = data.draw(arrays(mask_shape)) > 0
    a = data.draw(arrays(shape))
    mask_d = on(device, mask)
    assert_forward(ops.masked_fill(leaf(a, device), mask_d, value), np.where(mask, value, a))
    # The fill value does not reach the gradient, but it does enter gradcheck's
    # L = sum(out * R): a fill of -1e9 adds round-off of 1e-16 * 1e9 / EPS = 0.1 to
    # the central difference. So the backward is checked with a moderate fill.
    fill = value if abs(value) < 10 else -3.0
    check_grads(lambda x: ops.masked_fill(x, mask_d, fill), [a], device)


# ---- non-contiguous inputs -----------------------------------------------------------
STRIDED = {  # fn(x, y, device)
    "add": lambda x, y, d: ops.add(x, y),
    "mul": lambda x, y, d: ops.mul(x, y.exp()),
    "sum": lambda x, y, d: ops.sum(x, axis=0) * ops.sum(y, axis=-1, keepdims=True).mean(),
    "matmul": lambda x, y, d: ops.matmul(x, ops.transpose(y)),
    "getitem": lambda x, y, d: x[::-1, on(d, [0, 0])] + y[1:2, :1],
}


@pytest.mark.parametrize("name", STRIDED)
@given(shape=shapes(min_dims=2, max_dims=2, min_side=2), data=st.data())
def test_noncontiguous_inputs(name, shape, data, device):
    """Transposed and strided views give the same forward and backward as copies."""
    a, b = data.draw(noncontiguous(shape)), data.draw(noncontiguous(shape))
    fn = lambda x, y: STRIDED[name](x, y, device)  # noqa: E731
    same = fn(leaf(np.ascontiguousarray(a), device), leaf(np.ascontiguousarray(b), device))
    assert_forward(fn(leaf(a, device), leaf(b, device)), same.numpy())
    check_grads(fn, [a, b], device)


# ---- random composite graphs ---------------------------------------------------------
# Each entry works on Tensors and on NumPy arrays alike, and is defined for any
# real input (no poles, no kinks), so a random graph of them can be gradchecked.
COMPOSITE_UNARY = {
    "tanh": (ops.tanh, np.tanh),
    "exp_tanh": (lambda x: ops.exp(ops.tanh(x)), lambda x: np.exp(np.tanh(x))),
    "square": (lambda x: x * x, lambda x: x * x),
    "soft_abs": (lambda x: ops.sqrt(x * x + 1.0), lambda x: np.sqrt(x * x + 1.0)),
    "log1p_sq": (lambda x: ops.log(x * x + 1.0), lambda x: np.log(x * x + 1.0)),
    "neg": (ops.neg, np.negative),
    "row_sum": (lambda x: ops.sum(x, -1, True), lambda x: x.sum(-1, keepdims=True)),
}
COMPOSITE_BINARY = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "safe_div": lambda x, y: x / (y * y + 1.0),
}


@st.composite
def programs(draw, n_inputs):
    """A list of (op, operand indices) over the inputs and earlier nodes (a random DAG)."""
    steps = []
    for step in range(draw(st.integers(1, 8))):
        pick = st.integers(0, n_inputs + step - 1)  # an input or any earlier node
        unary = draw(st.booleans())
        name = draw(st.sampled_from(sorted(COMPOSITE_UNARY if unary else COMPOSITE_BINARY)))
        steps.append((name, (draw(pick),) if unary else (draw(pick), draw(pick))))
    return steps


def run_program(steps, inputs, hub, uses, numpy):
    nodes = list(inputs)
    for name, args in steps:
        if name in COMPOSITE_UNARY:
            nodes.append(COMPOSITE_UNARY[name][1 if numpy else 0](nodes[args[0]]))
        else:
            nodes.append(COMPOSITE_BINARY[name](*(nodes[i] for i in args)))
    out = nodes[-1]
    for _ in range(uses):  # one node used many times
        out = out * 0.5 + nodes[hub]
    for node in nodes[:-1]:  # and every node at least once more
        out = out + node
    return out


@given(shape=shapes(min_dims=1, max_dims=3, max_side=3), data=st.data())
def test_random_composite_graphs(shape, data, device):
    """Random DAGs: shared subexpressions, a hub node used 2 to 12 times, broadcasting."""
    steps = data.draw(programs(3), label="program")
    hub = data.draw(st.integers(0, 2 + len(steps)), label="hub")
    uses = data.draw(st.integers(2, 12), label="uses")
    inputs = [data.draw(arrays(shape)), data.draw(arrays(shape)), data.draw(arrays(shape[-1:]))]
    fn = lambda *xs: run_program(steps, xs, hub, uses, numpy=False)  # noqa: E731
    expected = run_program(steps, inputs, hub, uses, numpy=True)
    assert_forward(fn(*[leaf(x, device) for x in inputs]), expected)
    check_grads(fn, inputs, device)
