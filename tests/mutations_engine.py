"""More typical mistakes (issue 27), in the engine's ops: unbroadcast, matmul_backward,
softmax, layer_norm. Format: mutations_graph.py."""

# ruff: noqa: E501  (the snippets are lines of the library's source, matched exactly)

UNBROADCAST = [
    (
        "unbroadcast",
        "broadcasting.py",
        [
            (
                "    return grad.sum(axis=tuple(range(lead)) + stretched, keepdims=True).reshape(shape)",
                "    return grad.sum(axis=tuple(range(lead)))",
            )
        ],
        "only the new leading axes",
    ),
    (
        "unbroadcast",
        "broadcasting.py",
        [("return grad.sum(axis=tuple(range(lead))", "return grad.mean(axis=tuple(range(lead))")],
        "sum, not mean",
    ),
    (
        "unbroadcast",
        "broadcasting.py",
        [("keepdims=True).reshape(shape)", "keepdims=True).reshape(shape).astype(np.float64)")],
        "is float64 for float32",
    ),
    (
        "unbroadcast",
        "broadcasting.py",
        [
            (
                "grad.sum(axis=tuple(range(lead)) + stretched",
                "grad.sum(axis=tuple(range(grad.ndim - lead, grad.ndim)) + stretched",
            )
        ],
        "wrong axes",
    ),
]

MATMUL = [
    (
        "matmul_backward",
        "ops.py",
        [("b.data.swapaxes(-1, -2)", "b.data.T"), ("a.data.swapaxes(-1, -2)", "a.data.T")],
        ".T reverses EVERY axis",
    ),
    (
        "matmul_backward",
        "ops.py",
        [
            (
                "ga = unbroadcast(mm(g, b.data.swapaxes(-1, -2)), a.shape)",
                "ga = mm(g, b.data.swapaxes(-1, -2))",
            )
        ],
        "broadcast batch axes",
    ),
    (
        "matmul_backward",
        "ops.py",
        [("mm(a.data.swapaxes(-1, -2), g)", "mm(g.swapaxes(-1, -2), a.data)")],
        "transpose",
    ),
    (
        "matmul_backward",
        "ops.py",
        [("        return ga, gb\n", "        return gb, ga\n")],
        "wrong order",
    ),
    (
        "matmul_backward",
        "ops.py",
        [("        if a.requires_grad:\n", "        if True:\n")],
        "needs no gradient",
    ),
    (
        "matmul_backward",
        "ops.py",
        [
            (
                "ga = unbroadcast(mm(g, b.data.swapaxes(-1, -2)), a.shape)",
                "ga = unbroadcast(mm(g, b.data.swapaxes(-1, -2)), a.shape).astype(np.float64)",
            )
        ],
        "is float64 for float32",
    ),
    ("matmul_backward", "ops.py", [("ga = unbroadcast(", "ga = -unbroadcast(")], "wrong sign"),
    (
        "matmul_backward",
        "ops.py",
        [
            (
                "gb = unbroadcast(mm(a.data.swapaxes(-1, -2), g), b.shape)",
                "gb = mm(a.data.reshape(-1, a.shape[-1]).T, g.reshape(-1, g.shape[-1]))",
            )
        ],
        "folding",
    ),
]

SOFTMAX = [
    (
        "softmax",
        "functional.py",
        [("e = xp.exp(x.data - x.data.max(axis=axis, keepdims=True))", "e = xp.exp(x.data)")],
        "subtract the max before exp",
    ),
    (
        "softmax",
        "functional.py",
        [
            (
                "e = xp.exp(x.data - x.data.max(axis=axis, keepdims=True))",
                "e = xp.exp(x.data - x.data.max())",
            )
        ],
        "not one max of the whole array",
    ),
    (
        "softmax",
        "functional.py",
        [("return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)", "return (out * g,)")],
        "misses the term",
    ),
    (
        "softmax",
        "functional.py",
        [("(g * out).sum(axis=axis, keepdims=True)", "(g * out).sum(axis=-1, keepdims=True)")],
        "over the last axis, not over axis",
    ),
    (
        "softmax",
        "functional.py",
        [
            (
                "return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)",
                "return (out * (1 - out) * g,)",
            )
        ],
        "only the diagonal",
    ),
    (
        "softmax",
        "functional.py",
        [
            (
                "out = e / e.sum(axis=axis, keepdims=True)",
                "out = (e / e.sum(axis=axis, keepdims=True)).astype(np.float64)",
            )
        ],
        "is float64 for float32",
    ),
    (
        "softmax",
        "functional.py",
        [("(g * out).sum(axis=axis, keepdims=True)", "(g * out).sum(axis=axis)")],
        "keepdims",
    ),
    (
        "softmax",
        "functional.py",
        [("out = e / e.sum(axis=axis, keepdims=True)", "out = e / e.sum(axis=axis)")],
        "keepdims",
    ),
]

LAYER_NORM = [
    (
        "layer_norm",
        "functional.py",
        [("gx = G - G.mean(axis=-1, keepdims=True) - xhat *", "gx = G - xhat *")],
        "misses the term -mean(G)",
    ),
    (
        "layer_norm",
        "functional.py",
        [
            (
                "gx = G - G.mean(axis=-1, keepdims=True) - xhat * (G * xhat).mean(axis=-1, keepdims=True)",
                "gx = G - G.mean(axis=-1, keepdims=True)",
            )
        ],
        "misses the term -xhat * mean(G * xhat)",
    ),
    (
        "layer_norm",
        "functional.py",
        [("G = g * w  # dL/dxhat", "G = g")],
        "the weight is forgotten",
    ),
    (
        "layer_norm",
        "functional.py",
        [("sigma = xp.sqrt(var + eps)", "sigma = xp.sqrt(var) + eps")],
        "outside the square root",
    ),
    (
        "layer_norm",
        "functional.py",
        [("grads = [gx / sigma if", "grads = [gx if")],
        "not divided by sqrt(var + eps)",
    ),
    (
        "layer_norm",
        "functional.py",
        [("grads.append((g * xhat).sum(axis=lead)", "grads.append(g.sum(axis=lead)")],
        "not sum(g)",
    ),
    (
        "layer_norm",
        "functional.py",
        [("grads.append((g * xhat).sum(axis=lead)", "grads.append((g * xhat).sum(axis=0)")],
        "every axis but the last",
    ),
    (
        "layer_norm",
        "functional.py",
        [
            (
                "grads.append((g * xhat).sum(axis=lead) if weight",
                "grads.append(g.sum(axis=lead) if weight",
            ),
            (
                "grads.append(g.sum(axis=lead) if bias",
                "grads.append((g * xhat).sum(axis=lead) if bias",
            ),
        ],
        "swapped",
    ),
    (
        "layer_norm",
        "functional.py",
        [
            ("mu = x.data.mean(axis=-1, keepdims=True)", "mu = x.data.mean(axis=0, keepdims=True)"),
            (
                "var = ((x.data - mu) ** 2).mean(axis=-1, keepdims=True)",
                "var = ((x.data - mu) ** 2).mean(axis=0, keepdims=True)",
            ),
        ],
        "normalised over axis 0",
    ),
    (
        "layer_norm",
        "functional.py",
        [
            (
                "    out = xhat * w + b\n    parents = tuple(t for t in (x, weight, bias)",
                "    out = (xhat * w + b).astype(np.float64)\n    parents = tuple(t for t in (x, weight, bias)",
            )
        ],
        "is float64 for float32",
    ),
    (
        "layer_norm",
        "functional.py",
        [
            (
                "    out = xhat * w + b\n    parents = tuple(t for t in (x, weight, bias)",
                "    out = xhat * w\n    parents = tuple(t for t in (x, weight, bias)",
            )
        ],
        "the bias is not added",
    ),
]

MUTATIONS_ENGINE = UNBROADCAST + MATMUL + SOFTMAX + LAYER_NORM
