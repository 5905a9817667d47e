"""The grader's checks of the graph parts: topo_order and backward.

The graphs are chosen so that each wrong traversal gives its own symptom: a diamond whose two
branches have different lengths (a breadth-first order from the root, reversed, lists a node
before its input there; a backward that uses a node before all of its gradients arrived gets
the gradient wrong), a ladder where every node is used twice (2^40 paths: without a visited
set the walk never ends; the small ladder before it names the fault first), a chain 5,000 ops
deep (recursion), seeds that are not ones, float32 graphs, gradients that must not share memory.
"""

from __future__ import annotations

import numpy as np
from grade_tools import Check, check_dtype, close, diagnose, fail

VISITED = (
    "a node reached by many paths is expanded once per path: keep a set of visited nodes "
    "(this ladder uses every node twice: 2^40 paths)"
)

# ---- topo_order ------------------------------------------------------------------------


def _leaf(values, grad=True):
    from minilora.tensor import Tensor

    return Tensor(np.asarray(values, dtype=np.float64), requires_grad=grad)


def _graphs():
    """(label, root, {id: label} of every node that must be listed) for a few small graphs."""
    x, w = _leaf(np.arange(1.0, 7.0).reshape(2, 3)), _leaf(np.full((2, 3), 0.5))
    a = x * w
    b = a + x
    c = a * b
    d = c + b
    yield "d = a*b + b, b = a + x, a = x*w", d, {x: "x", w: "w", a: "a", b: "b", c: "c", d: "d"}
    x = _leaf([1.0, 2.0])
    a = x * 2.0  # the long branch: a -> b -> e; the short one: x -> e
    b = a * 3.0
    e = b + x
    yield "e = 3 (2x) + x (branches of different lengths)", e, {x: "x", a: "a", b: "b", e: "e"}
    x, frozen = _leaf([1.0, -1.0]), _leaf([2.0, 2.0], grad=False)
    y = (x * frozen) * x
    yield "y = (x * frozen) * x", y, {x: "x", y: "y"}


def _label(node, labels):
    return labels.get(node, node.op or "a leaf")


def check_order(order, root, labels, graph) -> None:
    """Each listed node once, every listed node after its inputs, the root last, every node of
    ``labels`` listed (others may be: nodes that need no gradient)."""
    if not isinstance(order, list):
        fail(f"returned {type(order).__name__}, expected a list of nodes")
    ids = [id(n) for n in order]
    for node, label in labels.items():
        if ids.count(id(node)) == 0 and node.op is None and any(n.op is None for n in order):
            fail(f"on {graph}: leaf {label} is missing: follow every input (_parents) of a node")
        if ids.count(id(node)) == 0 and node.op is None:
            fail(
                f"on {graph}: leaf {label} is missing: leaves are nodes too, list them (backward "
                "stores their gradients)"
            )
        if ids.count(id(node)) == 0:
            fail(f"on {graph}: node {label} is missing: follow every input (_parents) of a node")
        if ids.count(id(node)) > 1:
            fail(
                f"on {graph}: node {label} appears {ids.count(id(node))} times: remember "
                "visited nodes, list each once"
            )
    if ids[-1] != id(root):
        fail(f"on {graph}: the root is not last: a node goes after all of its inputs (post-order)")
    where = {i: k for k, i in enumerate(ids)}
    for node in order:
        for p in node._parents:
            if id(p) in where and where[id(p)] > where[id(node)]:
                fail(
                    f"on {graph}: node {_label(node, labels)} comes before its input "
                    f"{_label(p, labels)}: append a node only after ALL of its inputs (a "
                    "breadth-first order from the root, reversed, breaks this where two paths "
                    "of different lengths meet)"
                )


def check_topo_small_graphs():
    from minilora.tensor import _topological_order

    labels = {}
    for graph, root, named in _graphs():
        labels = {n: label for n, label in named.items()}
        check_order(_topological_order(root), root, labels, graph)


def check_topo_small_ladder():
    from minilora.tensor import _topological_order

    x = _leaf(np.ones(2))
    y, nodes = x, {}
    for k in range(10):  # every node used twice: 2^10 paths, quick even without a visited set
        y = y * y + y
        nodes[y] = f"rung {k + 1}"
    order = _topological_order(y)
    if isinstance(order, list) and len(_needing_grad(order)) > 21:
        fail(
            f"a 10-rung ladder (21 nodes, each used twice) gave {len(order)} nodes: a node "
            "reached by two paths is listed again: keep a set of visited nodes"
        )
    check_order(order, y, {x: "x", **nodes}, "a 10-rung ladder")


def _needing_grad(order) -> list:
    """The listed nodes that need a gradient (the contract lets the others be listed too)."""
    return [n for n in order if n.requires_grad]


def check_topo_shared_ladder():
    from minilora.tensor import _topological_order

    x = _leaf(np.ones(2))
    y = x
    for _ in range(40):
        y = y * y + y
    if len(_needing_grad(_topological_order(y))) != 81:
        fail("a node reached by two paths is listed again: keep a set of visited nodes")


def check_topo_deep_chain():
    from minilora.tensor import _topological_order

    x = _leaf(np.ones(2))
    y = x
    for _ in range(5000):
        y = y + 1.0
    order = _needing_grad(_topological_order(y))
    if len(order) != 5001:
        fail(f"a chain of 5000 ops gave {len(order)} nodes that need a gradient, expected 5001")
    if order[0] is not x or order[-1] is not y:
        fail("on a chain of 5000 ops the input is not first or the root not last")


# ---- backward ----------------------------------------------------------------------------

ORDER = "visit the nodes in reversed topological order, from _topological_order(self)"


def check_backward_accumulates_within_a_graph():
    xv, wv = np.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]]), np.array([0.3, -0.7, 1.1])
    x, w = _leaf(xv.copy()), _leaf(wv.copy())
    a = x * w  # a is used twice below: its gradient arrives from two places
    y = a * a + a
    y.backward(np.ones((2, 3)))
    want = (2 * xv * wv + 1) * wv
    if x.grad is None:
        fail(f"x.grad is None: {ORDER}, and store every leaf's gradient in .grad")
    if not close(x.grad, want):
        fail(
            f"x.grad of y = a*a + a, a = x*w is {np.round(x.grad[0], 4).tolist()}..., expected "
            f"{np.round(want[0], 4).tolist()}...: 'a' is used twice, so two gradients reach it; "
            "add them up (never overwrite one with the other)"
        )


def check_backward_order():
    """Graphs where using a node before all of its gradients arrived gives a wrong gradient."""
    xv = np.array([1.5, -0.5, 2.0])
    x = _leaf(xv.copy())
    a = x * x
    b = a * 3.0
    c = a + b  # c depends on a directly and through b
    c.sum().backward()
    early = "a node was used before all of its gradients arrived: " + ORDER
    lost = "a gradient was lost: visit each node once, after every node that uses it"
    if x.grad is None:
        fail(f"x.grad is None: {ORDER}")
    diagnose(x.grad, 8 * xv, "x.grad of c = a + 3a, a = x*x", [(2 * xv, early), (6 * xv, lost)])
    x = _leaf(xv.copy())
    a = x * x
    d = ((a * 2.0) * 3.0) * 0.5  # a long branch: three ops
    e = a + d  # and a short one
    e.sum().backward()
    diagnose(x.grad, 8 * xv, "x.grad of e = a + 3a, the 3a three ops long", [(2 * xv, early)])
    x = _leaf(xv.copy())
    y = x
    for _ in range(200):  # a long chain, and a shortcut from its start to its end
        y = y * 1.0
    (y + x * 2.0).sum().backward()
    diagnose(
        x.grad,
        np.full(3, 3.0),
        "x.grad of chain(x) + 2x (a 200-op chain)",
        [(np.full(3, 2.0), early), (np.full(3, 1.0), early)],
    )


def check_backward_seed():
    xv, wv = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), np.array([0.5, -1.0, 2.0])
    G = np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]])
    x = _leaf(xv.copy())
    (x * wv).backward(G.copy())
    if x.grad is None:
        fail(f"x.grad is None after backward(grad=G): {ORDER}")
    diagnose(
        x.grad,
        G * wv,
        "x.grad of (x * w).backward(grad=G)",
        [
            (
                np.ones_like(xv) * wv,
                "the seed grad= was ignored: backward starts from `grad` (the "
                "gradient passed in, or 1 for a scalar), not from ones",
            )
        ],
    )


def check_backward_dtype():
    x = _leaf(np.array([1.0, 2.0, 3.0]))
    x.data = x.data.astype(np.float32)
    w = np.array([0.5, 1.5, -2.0], dtype=np.float32)
    (x * w * x).sum().backward()
    if x.grad is None:
        fail(f"x.grad is None: {ORDER}")
    check_dtype(x.grad, np.float32, "x.grad of a float32 graph")
    x2 = _leaf(np.array([1.0, 2.0, 3.0]))
    x2.data = x2.data.astype(np.float32)
    (x2 * w).backward(np.ones(3, dtype=np.float32))
    check_dtype(x2.grad, np.float32, "x.grad of a float32 graph seeded with grad=")


def check_backward_no_aliasing():
    G = np.array([1.0, -2.0, 3.0])
    x, w = _leaf([0.0, 0.0, 0.0]), _leaf([1.0, 1.0, 1.0])
    (x + 0.0).backward(G)  # add's backward hands the very seed array to x
    if x.grad is None:
        fail(f"x.grad is None: {ORDER}")
    if np.shares_memory(x.grad, G):
        fail(
            "x.grad is the array passed as grad= (it shares its memory), so changing one "
            "changes the other: the first time a leaf gets a gradient, store a copy"
        )
    (x + w).backward(G.copy())  # both leaves get the same gradient array from add
    if np.shares_memory(x.grad, w.grad):
        fail(
            "x.grad and w.grad are one array (two leaves got the same gradient array): store "
            "a copy the first time a leaf gets a gradient"
        )
    diagnose(x.grad, 2 * G, "x.grad after two backward() calls")
    diagnose(
        w.grad,
        G,
        "w.grad (z = x + w, z.backward(G))",
        [(2 * G, "w.grad changed when x.grad was added to: they share memory; store a copy")],
    )


def check_backward_leaves_accumulate_across_calls():
    x = _leaf([1.0, 2.0])
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
                "a second backward replaced .grad: leaves accumulate (.grad += g), as in "
                "PyTorch; zero_grad clears them",
            )
        ],
    )


def check_backward_frozen_and_freed():
    x, w = _leaf([1.0, 2.0]), _leaf([3.0, 4.0], grad=False)
    y = (x * w).sum()
    y.backward(retain_graph=True)
    if w.grad is not None:
        fail("a tensor that does not require grad got a .grad")
    try:
        y.backward()  # the graph was kept
    except RuntimeError:
        fail(
            "with retain_graph=True a second backward raised: keep the graph (free it only "
            "when retain_graph is False)"
        )
    if not close(x.grad, [6.0, 8.0]):
        fail(f"with retain_graph=True a second backward gave x.grad {x.grad}, expected [6, 8]")
    try:
        y.backward()
    except RuntimeError:
        return
    fail(
        "backward through a freed graph did not raise: free the graph (node._backward = None, "
        "node._parents = ()) unless retain_graph, so that a second backward raises"
    )


BACKWARD_HINTS = (
    (
        "TypeError",
        "NoneType",
        "a leaf's .grad is None before its first gradient: store a copy of "
        "g the first time, add to it afterwards",
    ),
)

CHECKS = {
    "topo_order": [
        Check("small graphs: inputs first, each node once", check_topo_small_graphs),
        Check(
            "a 10-rung ladder: shared nodes listed once",
            check_topo_small_ladder,
            on_timeout=VISITED,
        ),
        Check("a 5000-op chain (no recursion limit)", check_topo_deep_chain, seconds=15),
        Check(
            "a 40-rung ladder (2^40 paths) in linear time",
            check_topo_shared_ladder,
            on_timeout=VISITED,
        ),
    ],
    "backward": [
        Check(
            "gradients reaching a node add up",
            check_backward_accumulates_within_a_graph,
            BACKWARD_HINTS,
        ),
        Check("diamonds and a long chain: outputs first", check_backward_order, BACKWARD_HINTS),
        Check("the grad= seed is used", check_backward_seed, BACKWARD_HINTS),
        Check("float32 graphs keep float32 gradients", check_backward_dtype, BACKWARD_HINTS),
        Check(".grad never shares memory", check_backward_no_aliasing, BACKWARD_HINTS),
        Check(
            "leaves accumulate across calls",
            check_backward_leaves_accumulate_across_calls,
            BACKWARD_HINTS,
        ),
        Check(
            "frozen inputs, retain_graph, freed graph",
            check_backward_frozen_and_freed,
            BACKWARD_HINTS,
        ),
    ],
}
