"""The grader's checks of the engine parts: topo_order, backward, unbroadcast, matmul_backward,
softmax, layer_norm. Gradients are checked in float64 against central differences, through
each op's own backward (so one op is graded alone), on shapes chosen so that each typical
fault (transposes, axes, signs) gives its own symptom: non-square, batched, broadcast.
"""

from __future__ import annotations

import numpy as np
from grade_tools import check_op_gradient, close, diagnose, fail

# ---- topo_order ------------------------------------------------------------------------


def _graph():
    from minilora.tensor import Tensor

    x = Tensor(np.arange(1.0, 7.0).reshape(2, 3), requires_grad=True)
    w = Tensor(np.full((2, 3), 0.5), requires_grad=True)
    a = x * w
    b = a + x
    c = a * b
    d = c + b
    return x, w, [a, b, c, d]


def check_topo_order_is_topological():
    from minilora.tensor import _topological_order

    x, w, (a, b, c, d) = _graph()
    order = _topological_order(d)
    ids = [id(n) for n in order]
    for node, label in ((x, "x"), (w, "w"), (a, "a"), (b, "b"), (c, "c"), (d, "the root")):
        if ids.count(id(node)) == 0:
            fail(f"node {label} is missing: follow every input (_parents) that requires grad")
        if ids.count(id(node)) > 1:
            fail(f"node {label} appears {ids.count(id(node))} times: remember visited nodes")
    if ids[-1] != id(d):
        fail("the root is not last: a node goes after all of its inputs (post-order)")
    where = {i: k for k, i in enumerate(ids)}
    for node in order:
        for p in node._parents:
            if id(p) in where and where[id(p)] > where[id(node)]:
                fail(
                    f"a node ({node.op}) comes before its input ({p.op or 'a leaf'}): append "
                    "a node only after all of its inputs are in the list"
                )


def check_topo_order_deep_graph():
    from minilora.tensor import Tensor, _topological_order

    x = Tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    order = _topological_order(y)
    if len(order) != 5001:
        fail(f"a chain of 5000 ops gave {len(order)} nodes, expected 5001")


def check_topo_order_shared_ladder():
    from minilora.tensor import Tensor, _topological_order

    x = Tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(40):  # every node used twice: without a visited set, 2^40 paths
        y = y * y + y
    if len(_topological_order(y)) != 81:
        fail("a node reached by two paths is listed again: keep a set of visited nodes")


# ---- backward ----------------------------------------------------------------------------


def check_backward_accumulates_within_a_graph():
    from minilora.tensor import Tensor

    xv, wv = np.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]]), np.array([0.3, -0.7, 1.1])
    x, w = Tensor(xv.copy(), requires_grad=True), Tensor(wv.copy(), requires_grad=True)
    a = x * w  # a is used twice below: its gradient arrives from two places
    y = a * a + a
    y.backward(np.ones((2, 3)))
    want = (2 * xv * wv + 1) * wv
    if x.grad is None:
        fail("x.grad is None: visit nodes from the output back (reversed topological order)")
    if not close(x.grad, want):
        fail(
            f"x.grad of y = a*a + a, a = x*w is {np.round(x.grad[0], 4).tolist()}..., expected "
            f"{np.round(want[0], 4).tolist()}...: 'a' is used twice, so two gradients reach it; "
            "add them up (never overwrite one with the other)"
        )


def check_backward_order_on_a_diamond():
    from minilora.tensor import Tensor

    xv = np.array([1.5, -0.5, 2.0])
    x = Tensor(xv.copy(), requires_grad=True)
    a = x * x
    b = a * 3.0
    c = a + b  # c depends on a directly and through b
    c.sum().backward()
    if x.grad is None:
        fail("x.grad is None: visit nodes from the output back (reversed topological order)")
    diagnose(
        x.grad,
        8 * xv,
        "x.grad of c = a + 3a, a = x*x",
        [
            (
                2 * xv,
                "a node was used before all of its gradients arrived: visit in reversed "
                "topological order",
            ),
            (6 * xv, "a gradient was lost: visit each node once, after every output that uses it"),
        ],
    )


def check_backward_leaves_accumulate_across_calls():
    from minilora.tensor import Tensor

    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 3.0).sum().backward()
    (x * 3.0).sum().backward()
    if x.grad is None:
        fail("x.grad is None after backward: store the gradient of every leaf in .grad")
    diagnose(
        x.grad,
        [6.0, 6.0],
        "x.grad after two backward() calls",
        [
            (
                [3.0, 3.0],
                "a second backward replaced .grad: leaves accumulate (.grad += g), "
                "as in PyTorch; zero_grad clears them",
            )
        ],
    )


def check_backward_frozen_and_freed():
    from minilora.tensor import Tensor

    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    w = Tensor(np.array([3.0, 4.0]))  # frozen
    y = (x * w).sum()
    y.backward(retain_graph=True)
    if w.grad is not None:
        fail("a tensor that does not require grad got a .grad")
    y.backward()  # the graph was kept
    if not close(x.grad, [6.0, 8.0]):
        fail(f"with retain_graph=True a second backward gave x.grad {x.grad}, expected [6, 8]")
    try:
        y.backward()
    except RuntimeError:
        return
    fail("backward through a freed graph did not raise: free it unless retain_graph")


# ---- unbroadcast --------------------------------------------------------------------------

UNBROADCAST_CASES = [
    ((2, 3, 4), (4,)),
    ((2, 3, 4), (3, 1)),
    ((2, 3, 4), (1, 3, 1)),
    ((2, 5, 4), (2, 1, 4)),
    ((3, 4), ()),
    ((3, 4), (3, 4)),
]


UNBROADCAST_HINT = (
    "summed over the wrong axes? sum over the new leading axes and the stretched size-1 axes "
    "(offset by the number of leading axes), keeping the size-1 axes"
)


def check_unbroadcast():
    from minilora.broadcasting import unbroadcast

    rng = np.random.default_rng(1)
    for grad_shape, shape in UNBROADCAST_CASES:
        g = rng.standard_normal(grad_shape)
        lead = len(grad_shape) - len(shape)
        stretched = tuple(
            lead + i for i, n in enumerate(shape) if n == 1 and grad_shape[lead + i] != 1
        )
        want = g.sum(axis=tuple(range(lead)) + stretched, keepdims=True).reshape(shape)
        got = np.asarray(unbroadcast(g.copy(), shape))
        what = f"unbroadcast(grad {grad_shape}, shape {shape})"
        if got.shape != want.shape:
            if stretched and got.shape == grad_shape[lead:]:
                fail(
                    f"{what} has shape {got.shape}: it summed only the new leading axes; sum "
                    "the stretched size-1 axes too (keepdims=True)"
                )
            if got.shape == tuple(n for n in shape if n != 1):
                fail(f"{what} has shape {got.shape}: keep the size-1 axes (keepdims=True)")
            fail(f"{what} has shape {got.shape}, expected {shape}")
        diagnose(got, want, what)


def check_unbroadcast_through_add():
    from minilora.ops import add

    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 1))
    check_op_gradient(add, [a, b], rng, "add (broadcast)", ["a", "b"])


# ---- matmul_backward --------------------------------------------------------------------------

MATMUL_CASES = [((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2))]
MATMUL_HINT = "G b^T has a's shape and a^T G has b's shape: are the transposes swapped?"


def check_matmul_backward_2d():
    from minilora.ops import matmul

    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    check_op_gradient(matmul, [a, b], rng, "matmul", ["a", "b"])


def check_matmul_backward_batched():
    from minilora.ops import matmul

    rng = np.random.default_rng(4)
    for sa, sb in MATMUL_CASES:
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        check_op_gradient(matmul, [a, b], rng, "matmul", ["a", "b"])


def check_matmul_backward_frozen_input():
    from minilora.ops import matmul

    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    check_op_gradient(matmul, [a, b], rng, "matmul", ["a", "b"], requires=[True, False])
    check_op_gradient(matmul, [a, b], rng, "matmul", ["a", "b"], requires=[False, True])


# ---- softmax --------------------------------------------------------------------------------


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def check_softmax_forward():
    from minilora.functional import softmax
    from minilora.tensor import Tensor

    x = np.random.default_rng(6).standard_normal((2, 3, 4))
    for axis in (-1, 1, 0):
        got = np.asarray(softmax(Tensor(x.copy()), axis=axis).data)
        sums_to_one = [
            k for k in range(3) if got.shape == x.shape and np.allclose(got.sum(axis=k), 1.0)
        ]
        if got.shape == x.shape and axis % 3 not in sums_to_one and sums_to_one:
            fail(
                f"softmax(axis={axis}) normalised along axis {sums_to_one[0]}: its values sum "
                f"to 1 along axis {sums_to_one[0]}, not along axis={axis}"
            )
        others = [
            (_softmax(x, k), f"normalised along axis {k}, not along axis={axis}")
            for k in (-1, 0, 1)
            if k % 3 != axis % 3
        ]
        diagnose(got, _softmax(x, axis), f"softmax(x {x.shape}, axis={axis})", others)


def check_softmax_stable():
    from minilora.functional import softmax
    from minilora.tensor import Tensor

    x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -999.0]])
    got = softmax(Tensor(x), axis=-1).data
    if not np.all(np.isfinite(got)):
        fail("softmax of large inputs overflows (NaN/inf): subtract the max before exp")
    diagnose(got, _softmax(x, -1), "softmax of large inputs")


def check_softmax_backward():
    from minilora.functional import softmax

    rng = np.random.default_rng(7)
    for shape, axis in (((3, 5), -1), ((2, 3, 4), 1)):
        x = rng.standard_normal(shape)
        check_op_gradient(
            lambda t, axis=axis: softmax(t, axis=axis), [x], rng, f"softmax(axis={axis})", ["x"]
        )


# ---- layer_norm ------------------------------------------------------------------------------


def _layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    xhat = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    return xhat * w + b


def check_layer_norm_forward():
    from minilora.functional import layer_norm
    from minilora.tensor import Tensor

    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal(5), rng.standard_normal(5)
    got = layer_norm(Tensor(x), Tensor(w), Tensor(b)).data
    mu0 = x.mean(0, keepdims=True)
    wrong_axis = (x - mu0) / np.sqrt(((x - mu0) ** 2).mean(0, keepdims=True) + 1e-5) * w + b
    biased = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, ddof=1, keepdims=True) + 1e-5)
    diagnose(
        got,
        _layer_norm(x, w, b),
        f"layer_norm(x {x.shape}, w, b)",
        [
            (wrong_axis, "normalised over axis 0: mean and variance go over the last axis"),
            (biased * w + b, "variance with n - 1: layer norm divides by n"),
        ],
    )
    got = layer_norm(Tensor(x), None, None).data
    diagnose(got, _layer_norm(x, 1.0, 0.0), "layer_norm without weight and bias")
    flat = np.ones((2, 5))
    got = layer_norm(Tensor(flat), None, None).data
    if not np.all(np.isfinite(got)):
        fail("layer_norm of a constant row is NaN: add eps to the variance inside the sqrt")


def check_layer_norm_backward():
    from minilora.functional import layer_norm

    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal(5), rng.standard_normal(5)
    check_op_gradient(layer_norm, [x, w, b], rng, "layer_norm", ["x", "weight", "bias"])
    check_op_gradient(
        lambda t: layer_norm(t, None, None), [x[0]], rng, "layer_norm (no w, b)", ["x"]
    )


CHECKS = {
    "topo_order": [
        ("inputs before outputs, each node once", check_topo_order_is_topological, ""),
        ("a 5000-op chain (no recursion limit)", check_topo_order_deep_graph, ""),
        ("shared nodes visited once", check_topo_order_shared_ladder, ""),
    ],
    "backward": [
        ("gradients reaching a node add up", check_backward_accumulates_within_a_graph, ""),
        ("nodes visited outputs-first", check_backward_order_on_a_diamond, ""),
        ("leaves accumulate across calls", check_backward_leaves_accumulate_across_calls, ""),
        ("frozen inputs, retain_graph, freed graph", check_backward_frozen_and_freed, ""),
    ],
    "unbroadcast": [
        ("sums to the input's shape", check_unbroadcast, UNBROADCAST_HINT),
        ("add's gradient with broadcasting", check_unbroadcast_through_add, ""),
    ],
    "matmul_backward": [
        ("2-D, finite differences", check_matmul_backward_2d, MATMUL_HINT),
        ("batched and broadcast", check_matmul_backward_batched, MATMUL_HINT),
        ("None for a frozen input", check_matmul_backward_frozen_input, MATMUL_HINT),
    ],
    "softmax": [
        ("forward along the given axis", check_softmax_forward, "reduce along `axis`"),
        ("large inputs stay finite", check_softmax_stable, ""),
        ("backward, finite differences", check_softmax_backward, ""),
    ],
    "layer_norm": [
        ("forward (last axis, eps)", check_layer_norm_forward, ""),
        (
            "backward for x, weight, bias",
            check_layer_norm_backward,
            "dL/dw, dL/db sum over every axis but the last",
        ),
    ],
}
