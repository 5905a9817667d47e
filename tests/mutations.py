"""Typical mistakes in the course kit's parts, for tests/test_grader.py.

Each is applied to a copy of the reference package; the grader must take points off in
that part with a message containing the given words.
"""

# (part, file, [(original, mutated), ...], words the failing message must contain)
MUTATIONS = [
    (
        "lora_forward",
        "lora.py",
        [
            (
                "scaling * B(A(F.dropout(x, p, self.training)))",
                "scaling * (F.dropout(x, p, self.training) @ A.weight @ B.weight)",
            )
        ],
        "transposed",
    ),
    (
        "lora_forward",
        "lora.py",
        [("return self.base_layer(x) + scaling * B(A(", "return self.base_layer(x) + B(A(")],
        "scaling alpha/r is missing",
    ),
    (
        "lora_forward",
        "lora.py",
        [
            (
                "return self.base_layer(x) + scaling * B(A(F.dropout(x, p, self.training)))",
                "return F.dropout(self.base_layer(x) + scaling * B(A(x)), p, self.training)",
            )
        ],
        "dropout goes on the adapter's input",
    ),
    (
        "lora_init",
        "lora.py",
        [
            (
                "B = zeros_linear(config.r, self.out_features, dtype)",
                "B = Linear(config.r, self.out_features, bias=False, dtype=dtype, generator=rng)",
            )
        ],
        "B is not zero",
    ),
    (
        "lora_init",
        "lora.py",
        [("A.weight.data = a.astype(dtype)", "A.weight.data = np.zeros_like(a).astype(dtype)")],
        "A is zero too",
    ),
    (
        "softmax",
        "functional.py",
        [("out = e / e.sum(axis=axis, keepdims=True)", "out = e / e.sum(axis=0, keepdims=True)")],
        "normalised along axis 0",
    ),
    (
        "softmax",
        "functional.py",
        [
            (
                "return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)",
                "return (out * ((g * out).sum(axis=axis, keepdims=True) - g),)",
            )
        ],
        "wrong sign",
    ),
    (
        "unbroadcast",
        "broadcasting.py",
        [("stretched = tuple(lead + i for i, n", "stretched = tuple(i for i, n")],
        "wrong axes",
    ),
    (
        "unbroadcast",
        "broadcasting.py",
        [
            (
                "stretched, keepdims=True).reshape(shape)",
                "stretched)",
            )
        ],
        "keepdims",
    ),
    (
        "matmul_backward",
        "ops.py",
        [
            (
                "ga = unbroadcast(mm(g, b.data.swapaxes(-1, -2)), a.shape)",
                "ga = unbroadcast(mm(g, b.data), a.shape)",
            )
        ],
        "transposes swapped",
    ),
    (
        "backward",
        "tensor.py",
        [
            (
                "for node in reversed(_topological_order(self)):",
                "for node in _topological_order(self):",
            )
        ],
        "reversed topological order",
    ),
    (
        "backward",
        "tensor.py",
        [
            (
                "pending[key] = parent_grad if key not in pending else pending[key] + parent_grad",
                "pending[key] = parent_grad",
            )
        ],
        "add them up",
    ),
    (
        "backward",
        "tensor.py",
        [("node.grad += g", "node.grad = g")],
        "leaves accumulate",
    ),
    (
        "topo_order",
        "tensor.py",
        [
            (
                "        if children_done:\n            order.append(node)\n",
                "        if children_done:\n",
            ),
            (
                "        seen.add(id(node))\n",
                "        seen.add(id(node))\n        order.append(node)\n",
            ),
        ],
        "post-order",
    ),
    (
        "layer_norm",
        "functional.py",
        [
            (
                "var = ((x.data - mu) ** 2).mean(axis=-1, keepdims=True)",
                "var = x.data.var(axis=-1, ddof=1, keepdims=True)",
            )
        ],
        "n - 1",
    ),
    (
        "unmerge",
        "lora.py",
        [
            (
                "self.base_layer.weight.data = self.base_layer.weight.data - self.delta_weight(",
                "self.base_layer.weight.data = self.base_layer.weight.data + self.delta_weight(",
            )
        ],
        "minus sign",
    ),
    (
        "merge",
        "lora.py",
        [("return (self.configs[name].scaling * (B @ A)).astype(", "return (B @ A).astype(")],
        "scaling alpha/r is missing",
    ),
    (
        "mark_trainable",
        "lora.py",
        [
            (
                'trainable = ".lora_A." in name or ".lora_B." in name\n',
                'trainable = ".lora_A." in name or ".lora_B." in name or "base_layer" in name\n',
            )
        ],
        "W0 is still trainable",
    ),
    (
        "inject_lora",
        "lora.py",
        [
            (
                "chosen = [n for n in names if _matches(n, config.target_modules)]",
                "chosen = [n for n in names if _matches(n, config.target_modules[:1])]",
            )
        ],
        "missing ['blocks.0.attn.v_proj'",
    ),
    (
        "answer_mask",
        "work/tasks.py",
        [("y[i, p - 1 : len(ids) - 1] = ids[p:]", "y[i, : len(ids) - 1] = ids[1:]")],
        "covers the prompt tokens",
    ),
    (
        "greedy",
        "transformer.py",
        [("return logits.argmax(axis=-1)", "return logits.argmin(axis=-1)")],
        "argmin",
    ),
    (
        "greedy",
        "transformer.py",
        [
            (
                "return logits.argmax(axis=-1)",
                "return np.array([np.random.default_rng().choice(len(p), p=np.exp(p - p.max()) / "
                "np.exp(p - p.max()).sum()) for p in logits])",
            )
        ],
        "no sampling",
    ),
    (
        "train_step",
        "work/train.py",
        [("    optimizer.zero_grad()\n    loss.backward()\n", "    loss.backward()\n")],
        "optimizer.zero_grad()",
    ),
]
