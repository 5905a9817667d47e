"""More typical mistakes (issue 27), in the graph parts: topo_order and backward.

Same format as mutations.py: (part, file, changes, words), where a change is (original,
mutated) or (REGION, the region's new body), and words are in the failing messages (None: the
mistake must lose points, its fault need not be named).
"""

# ruff: noqa: E501  (the snippets are lines of the library's source, matched exactly)

REGION = "REGION"  # replace the body of the part's first region in the file

TOPO = [
    (
        "topo_order",
        "tensor.py",
        [
            ("        if id(node) in seen:\n            continue\n", ""),
            (" and id(p) not in seen)", ")"),
        ],
        "remember visited nodes",
    ),
    (
        "topo_order",
        "tensor.py",
        [
            (
                REGION,
                """    order = []
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            if all(n is not node for n in order):
                order.append(node)
            continue
        stack.append((node, True))
        stack.extend((p, False) for p in node._parents if p.requires_grad)
    return order
""",
            )
        ],
        "keep a set of visited nodes",
    ),
    (
        "topo_order",
        "tensor.py",
        [
            (
                REGION,
                """    order, seen = [], set()

    def visit(node):
        if id(node) in seen:
            return
        seen.add(id(node))
        for p in node._parents:
            if p.requires_grad:
                visit(p)
        order.append(node)

    visit(root)
    return order
""",
            )
        ],
        "explicit stack",
    ),
    (
        "topo_order",
        "tensor.py",
        [
            (
                REGION,
                """    from collections import deque

    order, seen, queue = [], {id(root)}, deque([root])
    while queue:
        node = queue.popleft()
        order.append(node)
        for p in node._parents:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                queue.append(p)
    return order[::-1]
""",
            )
        ],
        "comes before its input",
    ),
    (
        "topo_order",
        "tensor.py",
        [
            (
                "for p in node._parents if p.requires_grad",
                "for p in node._parents[:1] if p.requires_grad",
            )
        ],
        "is missing",
    ),
    (
        "topo_order",
        "tensor.py",
        [("    return order\n    # END", "    return order[:-1]\n    # END")],
        "is missing",
    ),
    (
        "topo_order",
        "tensor.py",
        [
            (
                "        if children_done:\n            order.append(node)\n",
                "        if children_done:\n            if node.op is not None:\n                order.append(node)\n",
            )
        ],
        "leaves are nodes too",
    ),
    (
        "topo_order",
        "tensor.py",
        [("    return order\n    # END", "    return order[::-1]\n    # END")],
        "the root is not last",
    ),
]

BACKWARD = [
    (
        "backward",
        "tensor.py",
        [("pending = {id(self): grad}", "pending = {id(self): np.ones_like(self.data)}")],
        "seed grad= was ignored",
    ),
    (
        "backward",
        "tensor.py",
        [("node.grad = backend.get_array_module(g).array(g)", "node.grad = g")],
        "shares its memory",
    ),
    (
        "backward",
        "tensor.py",
        [
            (
                "node.grad = backend.get_array_module(g).array(g)",
                "node.grad = np.array(g, dtype=np.float64)",
            )
        ],
        "is float64 for float32",
    ),
    (
        "backward",
        "tensor.py",
        [
            (
                "            if not retain_graph:\n                node._backward, node._parents = None, ()\n",
                "",
            )
        ],
        "free the graph",
    ),
    (
        "backward",
        "tensor.py",
        [("            if not retain_graph:\n", "            if True:\n")],
        "a second backward raised",
    ),
    (
        "backward",
        "tensor.py",
        [
            (
                REGION,
                """        from collections import deque

        pending = {id(self): grad}
        queue, seen = deque([self]), {id(self)}
        while queue:
            node = queue.popleft()
            g = pending.pop(id(node), None)
            if g is None:
                continue
            if node.op is None:
                node.grad = g.copy() if node.grad is None else node.grad + g
                continue
            for parent, parent_grad in zip(node._parents, node._backward(g)):
                if parent_grad is None or not parent.requires_grad:
                    continue
                key = id(parent)
                pending[key] = parent_grad if key not in pending else pending[key] + parent_grad
                if key not in seen:
                    seen.add(key)
                    queue.append(parent)
            if not retain_graph:
                node._backward, node._parents = None, ()
""",
            )
        ],
        "before all of its gradients arrived",
    ),
    (
        "backward",
        "tensor.py",
        [
            (
                "                if node.grad is None:  # a copy, and an array even where NumPy gave a scalar\n"
                "                    node.grad = backend.get_array_module(g).array(g)\n"
                "                else:\n"
                "                    node.grad += g\n",
                "                node.grad += g\n",
            )
        ],
        "store a copy of g the first time",
    ),
]

MUTATIONS_GRAPH = TOPO + BACKWARD
