"""More typical mistakes (issue 27), in training and decoding: answer_mask, train_step, greedy.
Format: mutations_graph.py."""

# ruff: noqa: E501  (the snippets are lines of the library's source, matched exactly)

Y = "y[i, p - 1 : len(ids) - 1] = ids[p:]"
ANSWER = [
    (
        "answer_mask",
        "work/tasks.py",
        [(Y, "y[i, p : len(ids) - 1] = ids[p + 1 :]")],
        "the first answer token is masked",
    ),
    ("answer_mask", "work/tasks.py", [(Y, "y[i, p - 1 : len(ids) - 2] = ids[p:-1]")], "terminator"),
    (
        "answer_mask",
        "work/tasks.py",
        [(Y, "y[i, p - 2 : len(ids) - 1] = ids[p - 1 :]")],
        "one prompt token too many",
    ),
    (
        "answer_mask",
        "work/tasks.py",
        [(Y, "y[i, p - 1 : len(ids) - 1] = ids[p - 1 : -1]")],
        "the targets equal the inputs",
    ),
    (
        "answer_mask",
        "work/tasks.py",
        [("x[i, : len(ids) - 1] = ids[:-1]", "x[i, : len(ids) - 1] = ids[1:]")],
        "x is wrong",
    ),
    (
        "answer_mask",
        "work/tasks.py",
        [(Y, "y[i] = -100\n        " + Y)],
        "ignore_index=-1 is not used",
    ),
]

STEP = [
    (
        "train_step",
        "work/train.py",
        [("    if grad_clip:\n        clip_grad_norm(optimizer.params, grad_clip)\n", "")],
        "clip their global norm",
    ),
    ("train_step", "work/train.py", [("    if grad_clip:\n", "    if True:\n")], "clipped to 0"),
    (
        "train_step",
        "work/train.py",
        [
            (
                "    if grad_clip:\n        clip_grad_norm(optimizer.params, grad_clip)\n    optimizer.step()\n",
                "    optimizer.step()\n    if grad_clip:\n        clip_grad_norm(optimizer.params, grad_clip)\n",
            )
        ],
        "clipped after optimizer.step()",
    ),
    (
        "train_step",
        "work/train.py",
        [("    if not math.isfinite(value):\n        return value\n", "")],
        "NaN loss was stepped",
    ),
    (
        "train_step",
        "work/train.py",
        [
            (
                "    optimizer.zero_grad()\n    loss.backward()\n",
                "    loss.backward()\n    optimizer.zero_grad()\n",
            )
        ],
        "not in between",
    ),
    (
        "train_step",
        "work/train.py",
        [("    optimizer.step()\n    return value\n", "    optimizer.step()\n    return loss\n")],
        "as a float",
    ),
    (
        "train_step",
        "work/train.py",
        [
            (
                "    optimizer.step()\n    return value\n",
                "    optimizer.step()\n    return model(x, y)[1].item()\n",
            )
        ],
        "not one computed after it",
    ),
    (
        "train_step",
        "work/train.py",
        [
            (
                "    optimizer.zero_grad()\n",
                "    for q in optimizer.params[:3]:\n        q.grad = None\n",
            )
        ],
        "not some",
    ),
    (
        "train_step",
        "work/train.py",
        [
            (
                "    optimizer.step()\n    return value\n",
                "    optimizer.step()\n    optimizer.step()\n    return value\n",
            )
        ],
        "ran 2 times",
    ),
    (
        "train_step",
        "work/train.py",
        [
            (
                "clip_grad_norm(optimizer.params, grad_clip)",
                "[clip_grad_norm([q], grad_clip) for q in optimizer.params]",
            )
        ],
        "clipped on its own",
    ),
    ("train_step", "work/train.py", [("    loss.backward()\n", "")], "call loss.backward()"),
]

ARGMAX = "return logits.argmax(axis=-1)"
GREEDY = [
    (
        "greedy",
        "transformer.py",
        [(ARGMAX, "return logits.argmax(axis=0)")],
        "argmax over the wrong axis",
    ),
    ("greedy", "transformer.py", [(ARGMAX, "return logits.argmax()")], "one token per row"),
    ("greedy", "transformer.py", [(ARGMAX, "return logits.max(axis=-1)")], "not their positions"),
    (
        "greedy",
        "transformer.py",
        [(ARGMAX, "return logits.argmax(axis=-1).astype(np.float64)")],
        "token ids are integers",
    ),
    (
        "greedy",
        "transformer.py",
        [(ARGMAX, "return logits.argmax(axis=-1)[:, None]")],
        "shape (B,)",
    ),
]

MUTATIONS_TRAIN = ANSWER + STEP + GREEDY
