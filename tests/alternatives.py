"""Correct solutions written differently from the reference (issue 27): each must get full
marks in its part. They use what each part's contract allows (minilora/teach/parts.py): any
topological order, frozen nodes kept, an op composed of engine ops with autograd doing its
backward, zero_grad after the step (the Hugging Face Trainer's order), clipping by hand, and so
on. Format: (part, file, changes) as in mutations_graph.py.
"""

# ruff: noqa: E501  (the snippets are lines of the library's source, matched exactly)

from mutations_graph import REGION

ALTERNATIVES = [
    (  # Kahn's algorithm: in-degree order from the root, frozen nodes kept
        "topo_order",
        "tensor.py",
        [
            (
                REGION,
                """    from collections import deque

    nodes, stack, seen = [], [root], {id(root)}
    while stack:  # every node the root depends on
        node = stack.pop()
        nodes.append(node)
        for p in node._parents:
            if id(p) not in seen:
                seen.add(id(p))
                stack.append(p)
    users = {id(n): 0 for n in nodes}  # how many uses of each node are not yet listed
    for n in nodes:
        for p in n._parents:
            users[id(p)] += 1
    ready, outputs_first = deque([root]), []
    while ready:
        node = ready.popleft()
        outputs_first.append(node)
        for p in node._parents:
            users[id(p)] -= 1
            if users[id(p)] == 0:
                ready.append(p)
    return outputs_first[::-1]
""",
            )
        ],
    ),
    (  # depth-first with an iterator per node on the stack
        "topo_order",
        "tensor.py",
        [
            (
                REGION,
                """    order, seen, stack = [], {id(root)}, [(root, iter(root._parents))]
    while stack:
        node, parents = stack[-1]
        for p in parents:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                stack.append((p, iter(p._parents)))
                break
        else:
            stack.pop()
            order.append(node)
    return order
""",
            )
        ],
    ),
    (  # gradients collected in lists, summed when the node is visited; .grad = .grad + g
        "backward",
        "tensor.py",
        [
            (
                REGION,
                """        incoming = {id(self): [grad]}
        for node in reversed(_topological_order(self)):
            grads = incoming.pop(id(node), None)
            if not grads:
                continue
            g = grads[0]
            for more in grads[1:]:
                g = g + more
            if node.op is None:
                node.grad = np.array(g, copy=True) if node.grad is None else node.grad + g
                continue
            if node._backward is None:
                raise RuntimeError("backward through a freed graph: pass retain_graph=True")
            for parent, parent_grad in zip(node._parents, node._backward(g)):
                if parent_grad is not None and parent.requires_grad:
                    incoming.setdefault(id(parent), []).append(parent_grad)
            if not retain_graph:
                node._backward, node._parents = None, ()
""",
            )
        ],
    ),
    (  # axis by axis
        "unbroadcast",
        "broadcasting.py",
        [
            (
                REGION,
                """    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for i, n in enumerate(shape):
        if n == 1 and grad.shape[i] != 1:
            grad = grad.sum(axis=i, keepdims=True)
    return grad
""",
            )
        ],
    ),
    (  # without keepdims, then a reshape
        "unbroadcast",
        "broadcasting.py",
        [("stretched, keepdims=True).reshape(shape)", "stretched).reshape(shape)")],
    ),
    (  # np.matmul and np.moveaxis
        "matmul_backward",
        "ops.py",
        [
            (
                "ga = unbroadcast(mm(g, b.data.swapaxes(-1, -2)), a.shape)",
                "ga = unbroadcast(np.matmul(g, np.moveaxis(b.data, -1, -2)), a.shape)",
            ),
            (
                "gb = unbroadcast(mm(a.data.swapaxes(-1, -2), g), b.shape)",
                "gb = unbroadcast(np.einsum('...ki,...kj->...ij', a.data, g), b.shape)",
            ),
        ],
    ),
    (  # composed of engine ops: autograd does the backward
        "softmax",
        "functional.py",
        [
            (
                REGION,
                """    shifted = x - x.data.max(axis=axis, keepdims=True)
    e = shifted.exp()
    return e / e.sum(axis=axis, keepdims=True)
""",
            )
        ],
    ),
    (  # its own backward, the terms arranged differently
        "softmax",
        "functional.py",
        [
            (
                "return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)",
                "return (out * g - out * (out * g).sum(axis=axis, keepdims=True),)",
            )
        ],
    ),
    (  # composed of engine ops: autograd does the backward
        "layer_norm",
        "functional.py",
        [
            (
                REGION,
                """    mu = x.mean(axis=-1, keepdims=True)
    centred = x - mu
    var = (centred * centred).mean(axis=-1, keepdims=True)
    out = centred / (var + eps).sqrt()
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out
""",
            )
        ],
    ),
    (  # its own backward: (n G - sum G - xhat sum(G xhat)) / (n sigma)
        "layer_norm",
        "functional.py",
        [
            (
                "        gx = G - G.mean(axis=-1, keepdims=True) - xhat * (G * xhat).mean(axis=-1, keepdims=True)\n",
                "        n = g.shape[-1]\n        gx = (n * G - G.sum(axis=-1, keepdims=True) - xhat * (G * xhat).sum(axis=-1, keepdims=True)) / n\n",
            )
        ],
    ),
    (  # standard_normal / r, and B a Linear whose weight is zeroed
        "lora_init",
        "lora.py",
        [
            (
                "a = rng.normal(0.0, 1.0 / config.r, A.weight.shape)",
                "a = rng.standard_normal(A.weight.shape) / config.r",
            ),
            (
                "B = zeros_linear(config.r, self.out_features, dtype)  # (d_out, r): B = 0, so dW = B A = 0",
                "B = Linear(config.r, self.out_features, bias=False, dtype=dtype, generator=rng)\n        B.weight.data = np.zeros_like(B.weight.data)",
            ),
        ],
    ),
    (  # explicit products with the weights, the scaling last
        "lora_forward",
        "lora.py",
        [
            (
                "return self.base_layer(x) + scaling * B(A(F.dropout(x, p, self.training)))",
                "return self.base_layer(x) + (F.dropout(x, p, self.training) @ A.weight.T @ B.weight.T) * scaling",
            )
        ],
    ),
    (  # a copy, then in place; dW with einsum
        "merge",
        "lora.py",
        [
            (
                "        merged = self.base_layer.weight.data + self.delta_weight()\n",
                "        merged = self.base_layer.weight.data.copy()\n        merged += self.delta_weight()\n",
            ),
            (
                "return (self.configs[name].scaling * (B @ A)).astype(self.base_layer.weight.dtype)",
                'return (np.einsum("or,ri->oi", B, A) * self.configs[name].scaling).astype(self.base_layer.weight.dtype)',
            ),
        ],
    ),
    (  # in place
        "unmerge",
        "lora.py",
        [
            (
                REGION,
                "        self.base_layer.weight.data -= self.delta_weight(self.merged_adapter)\n",
            )
        ],
    ),
    (  # a target as a suffix of the name's dotted components
        "inject_lora",
        "lora.py",
        [
            (
                "chosen = [n for n in names if _matches(n, config.target_modules)]",
                "def named(n):\n            parts = n.split('.')\n            return any(parts[len(parts) - len(t.split('.')):] == t.split('.') for t in config.target_modules)\n\n        chosen = [n for n in names if named(n)]",
            )
        ],
    ),
    (  # the name's components, not substrings
        "mark_trainable",
        "lora.py",
        [
            (
                'trainable = ".lora_A." in name or ".lora_B." in name',
                'trainable = bool({"lora_A", "lora_B"} & set(name.split(".")[:-2]))',
            )
        ],
    ),
    (  # a loop over positions
        "answer_mask",
        "work/tasks.py",
        [
            (
                REGION,
                """        for t in range(len(ids) - 1):
            x[i, t] = ids[t]
            if t >= p - 1:
                y[i, t] = ids[t + 1]
""",
            )
        ],
    ),
    (  # the Hugging Face Trainer's order: zero_grad after the step
        "train_step",
        "work/train.py",
        [
            (
                REGION,
                """    _, loss = model(x, y)
    value = float(loss.item())
    if not math.isfinite(value):
        return value
    loss.backward()
    if grad_clip > 0:
        clip_grad_norm(optimizer.params, grad_clip)
    optimizer.step()
    optimizer.zero_grad()
    return value
""",
            )
        ],
    ),
    (  # model.zero_grad and clipping by hand
        "train_step",
        "work/train.py",
        [
            (
                REGION,
                """    _, loss = model(x, y)
    value = loss.item()
    if not np.isfinite(value):
        return value
    model.zero_grad()
    loss.backward()
    grads = [p.grad for p in optimizer.params if p.grad is not None]
    norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    if grad_clip > 0 and norm > grad_clip:
        for g in grads:
            g *= grad_clip / norm
    optimizer.step()
    return value
""",
            )
        ],
    ),
    (  # the last column of argsort
        "greedy",
        "transformer.py",
        [("return logits.argmax(axis=-1)", "return np.argsort(logits, axis=-1)[:, -1]")],
    ),
]
