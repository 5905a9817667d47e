"""The exercises' checkers and the strip command.

Every checker must accept a correct answer (tests/answers.py, written independently of
minilora's engine, in plain NumPy) and reject plausible wrong ones with a message naming the
fault. The golden vectors are tested in tests/test_golden.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from answers import (  # the correct answers, in plain NumPy
    adamw_state_bytes,
    add_lora,
    answer_targets,
    exact_match,
    greedy_decode,
    init_lora,
    layer_norm_backward,
    lora_backward,
    lora_forward,
    matmul_backward,
    merge_weight,
    softmax_backward,
    subspace_similarity,
    train_step,
    unbroadcast,
    unmerge_weight,
)

from minilora.cli import main
from minilora.teach import exercises as E
from minilora.teach import golden
from minilora.teach.notebook_tools import strip_source


def _no_zero_grad(model, optimizer, x, y):
    _, loss = model(x, y)
    loss.backward()
    optimizer.step()
    return loss.item()


def _zero_after_backward(model, optimizer, x, y):
    _, loss = model(x, y)
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    return loss.item()


def _greedy_no_crop(model, prompt_ids, n):
    ids = list(prompt_ids)
    for _ in range(n):
        ids.append(int(np.argmax(model(np.array(ids)[None, :])[0].data[0, -1])))
    return ids[len(prompt_ids) :]


def _add_lora_substring(model, targets, r, alpha, rng):
    from minilora.lora import LoRAConfig, LoRALinear
    from minilora.nn import Linear

    for path, module in list(model.named_modules()):
        if isinstance(module, Linear) and any(t[0] in path for t in targets):
            layer = LoRALinear(module)
            layer.add_adapter("default", LoRAConfig(r=r, alpha=alpha), generator=rng)
            model.set_submodule(path, layer)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model


def _add_lora_unfrozen(model, targets, r, alpha, rng):
    add_lora(model, targets, r, alpha, rng)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _masked(first):
    def f(p, a):
        ids = np.concatenate([p, a])
        y = ids[1:].copy()
        y[: first(len(p))] = -100
        return ids[:-1], y

    return f


def _unbroadcast_in_template(grad, shape):
    # the notebook's template: the solution region, then `return grad.reshape(shape)`
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    return grad.reshape(shape)


# (checker, correct answer, [(wrong answer, words the message must contain)]): the typical
# mistakes, each with the words of its "Likely fault" line (the resolution of issue 18 lists them)
WRONG = [
    (
        E.check_matmul_backward,
        matmul_backward,
        [
            (lambda a, b, g: (g @ b.T, g.T @ a), "transpose"),
            (lambda a, b, g: (2 * g @ b.T, a.T @ g), "2 times"),
            (lambda a, b, g: g @ b.T, "must return 2 values"),
            (lambda a, b, g: (g @ b, a.T @ g), "raised ValueError.*inner sizes do not match"),
        ],
    ),
    (
        E.check_unbroadcast,
        unbroadcast,
        [
            (lambda g, s: g.sum(axis=tuple(range(g.ndim - len(s)))), "only the leading axes"),
            (_unbroadcast_in_template, "raised ValueError.*only the leading axes"),
        ],
    ),
    (
        E.check_softmax_backward,
        softmax_backward,
        [
            (lambda x, g: -softmax_backward(x, g), "wrong sign"),
            (lambda x, g: g, "largest diff"),
            (lambda x, g: softmax_backward(x.T, g.T).T, "first axis"),
        ],
    ),
    (
        E.check_layer_norm_backward,
        layer_norm_backward,
        [
            (lambda x, g, eps: g / np.sqrt(x.var(-1, keepdims=True) + eps), "as constants"),
            (
                lambda x, g, eps: (
                    layer_norm_backward(x, g, eps)
                    * np.sqrt(x.var(-1, keepdims=True) + eps)
                    / np.sqrt(x.var(-1, ddof=1, keepdims=True) + eps)
                ),
                "largest difference",
            ),
        ],
    ),
    (
        E.check_lora_init,
        init_lora,
        [
            (lambda d, o, r, g: (g.uniform(-1, 1, (r, d)), g.normal(size=(o, r))), "B is not zero"),
            (lambda d, o, r, g: (np.zeros((r, d)), np.zeros((o, r))), "saddle"),
            (lambda d, o, r, g: (np.zeros((r, d)), g.normal(size=(o, r))), "zeroed A"),
            (lambda d, o, r, g: init_lora(d, o, r, g)[::-1], "swapped"),
            (lambda d, o, r, g: (np.ones((r, d)), np.zeros((o, r))), "rows repeat"),
            (lambda d, o, r, g: init_lora(d, o, r, np.random.default_rng(0)), "not a function"),
        ],
    ),
    (
        E.check_lora_forward,
        lora_forward,
        [
            (lambda x, W0, b, A, B, al, r: lora_forward(x, W0, b, A, B, r, r), "scaling"),
            (lambda x, W0, b, A, B, al, r: lora_forward(x, W0, b, A, B, al * r**0.5, r), "sqrt"),
            (lambda x, W0, b, A, B, al, r: x @ W0 + b, r"raised ValueError.*without .*\.T"),
            (lambda x, W0, b, A, B, al, r: x @ W0.T + (al / r) * x @ A.T @ B.T, "bias b"),
            (lambda x, W0, b, A, B, al, r: x @ W0.T + b, "LoRA term"),
        ],
    ),
    (
        E.check_lora_grads,
        lora_backward,
        [
            (lambda x, W0, A, B, G, al, r: lora_backward(x, W0, A, B, G, r, r), "scaling"),
            (lambda *a: (*lora_backward(*a)[:2], 2 * lora_backward(*a)[2]), "grad_B is wrong"),
            (lambda *a: (a[4] @ a[1], *lora_backward(*a)[1:]), "path through A and B"),
            (
                lambda *a: (lora_backward(*a)[0], lora_backward(*a)[1].T, lora_backward(*a)[2]),
                "transpose",
            ),
        ],
    ),
    (
        E.check_merge,
        merge_weight,
        [
            (lambda W0, A, B, al, r: W0 + B @ A, "scaling alpha / r is missing"),
            (lambda W0, A, B, al, r: (al / r) * B @ A, "W0 is missing"),
            (lambda W0, A, B, al, r: W0 + (al / r) * A.T @ B.T, "raised ValueError.*A.T @ B.T"),
            (lambda W0, A, B, al, r: W0 - (al / r) * B @ A, r"- instead of \+"),
        ],
    ),
    (
        E.check_lora_param_count,
        lambda L, d, r, n: 2 * n * L * d * r,
        [
            (lambda L, d, r, n: n * L * d * r, "factor 2 is missing"),
            (lambda L, d, r, n: 2 * L * d * r, "n_adapted is ignored"),
            (lambda L, d, r, n: 2 * n * d * r, "n_layer is ignored"),
            (lambda L, d, r, n: n * L * d * d, "full matrices"),
        ],
    ),
    (
        E.check_greedy_decode,
        greedy_decode,
        [
            (_greedy_no_crop, "raised ValueError.*last block_size tokens"),
            (lambda m, p, n: np.concatenate([p, greedy_decode(m, p, n)]), "prompt too"),
            (
                lambda m, p, n: [int(np.argmax(m(np.array(p)[None, :])[0].data[0, -1]))] * n,
                "reads the prompt again",
            ),
        ],
    ),
    (
        E.check_exact_match,
        exact_match,
        [
            (lambda p, a: np.mean([x == y for x, y in zip(p, a)]), "strip"),
            (lambda p, a: sum(x.strip() == y.strip() for x, y in zip(p, a)), "number of hits"),
            (
                lambda p, a: np.mean(
                    [x.strip().lower() == y.strip().lower() for x, y in zip(p, a)]
                ),  # noqa: E501
                "ignores case",
            ),
        ],
    ),
    (
        E.check_inject_lora,
        add_lora,
        [
            (_add_lora_substring, "loosely"),
            (_add_lora_unfrozen, "still trainable"),
            (lambda m, t, r, a, g: add_lora(m, t, r, a, g) and None, "return model"),
        ],
    ),
    (
        E.check_training_step,
        answer_targets,
        [
            (
                lambda p, a: (np.concatenate([p, a])[:-1], np.concatenate([p, a])[1:]),
                "prompt tokens are in the loss",
            ),
            (_masked(lambda p: p), "masked the first answer token"),
            (_masked(lambda p: p - 2), "one prompt token is still"),
            (lambda p, a: (np.concatenate([p, a]),) * 2, "shifted left by one"),
        ],
    ),
    (
        E.check_adamw_state_bytes,
        adamw_state_bytes,
        [
            (lambda m: 2 * sum(p.data.nbytes for p in m.parameters()), "every parameter"),
            (lambda m: adamw_state_bytes(m) // 2, "0.5 times"),
        ],
    ),
    (
        E.check_subspace_similarity,
        subspace_similarity,
        [
            (lambda A1, A2, i, j: subspace_similarity(A1, A2, i, j) * min(i, j), "missing"),
            (lambda A1, A2, i, j: subspace_similarity(A1, A2, i, j) * min(i, j) / max(i, j), "max"),
            (
                lambda A1, A2, i, j: (
                    subspace_similarity(A1.T @ A1 @ A1.T, A2, i, j)
                    if False
                    else np.sum(np.linalg.svd(A1)[0][:, :i].T @ np.linalg.svd(A2)[0][:, :j])
                ),
                "left-singular",
            ),
        ],
    ),
]
CASES = WRONG


def _one_fault_line(message: str) -> bool:
    return message.count("Likely fault:") == 1


@pytest.mark.parametrize("checker, right, wrongs", CASES, ids=[c[0].__name__ for c in CASES])
def test_checker_accepts_the_answer_and_names_the_fault(checker, right, wrongs, capsys):
    assert checker(right) is True
    assert "Correct" in capsys.readouterr().out
    for wrong, words in wrongs:
        with pytest.raises(E.ExerciseError, match=f"(?s){words}") as info:
            checker(wrong)
        assert isinstance(info.value, AssertionError)  # nbgrader counts AssertionErrors
        message = str(info.value)
        assert len(message) > 30 and "False" != message
        assert message.count("Likely fault:") <= 1, message
        if "must return" not in message and "largest diff" not in words:
            assert _one_fault_line(message), message


def test_unmerge_is_checked_too_and_its_sign_named():
    assert E.check_merge(merge_weight, unmerge_weight)
    with pytest.raises(E.ExerciseError, match="(?s)unmerge_weight.*\\+ instead of -") as info:
        E.check_merge(merge_weight, merge_weight)
    assert _one_fault_line(str(info.value))


def test_train_step_mistakes_are_named():
    assert E.check_training_step(answer_targets, train_step)
    with pytest.raises(E.ExerciseError, match="(?s)accumulate.*zero_grad"):
        E.check_training_step(answer_targets, _no_zero_grad)
    with pytest.raises(E.ExerciseError, match="did not move"):
        E.check_training_step(answer_targets, _zero_after_backward)


def test_a_crash_names_the_input_shapes():
    with pytest.raises(E.ExerciseError) as info:
        E.check_lora_forward(lambda x, W0, b, A, B, al, r: x @ W0 + b)
    message = str(info.value)
    assert "x (6, 10), W0 (7, 10), b (7,), A (3, 10), B (7, 3), alpha = 6.0, r = 3" in message
    assert _one_fault_line(message) and "Traceback" not in message


def test_hints_can_be_hidden(monkeypatch):
    wrong = lambda W0, A, B, al, r: W0 + B @ A  # noqa: E731
    with pytest.raises(E.ExerciseError, match="Hint:"):
        E.check_merge(wrong)
    for hide in (
        lambda: E.hide_hints(True),
        lambda: monkeypatch.setenv("MINILORA_HIDE_HINTS", "1"),
    ):
        hide()
        try:
            with pytest.raises(E.ExerciseError) as info:
                E.check_merge(wrong)
            assert "Hint:" not in str(info.value) and "B @ A" not in str(info.value)
            assert "Likely fault: the scaling alpha / r is missing" in str(info.value)
        finally:
            E.hide_hints(None)
            monkeypatch.delenv("MINILORA_HIDE_HINTS", raising=False)


def test_the_checkers_use_the_golden_tolerance_rule():
    # a relative error of 1e-8 of max|want| fails (rule: 1e-9); 1e-11 passes, everywhere
    manifest, arrays = golden.load_golden()
    want = arrays["merge_weight/out/W"]
    scale = np.abs(want).max()
    for error, ok in ((1e-8, False), (1e-11, True)):
        got = want + error * scale
        assert golden.within(got, want)[0] is ok
        try:
            E._compare("f", "W", got, want)
            passed = True
        except E._Wrong:
            passed = False
        assert passed is ok
    assert "max|want|" in manifest["tolerance"]["rule"]


# ---- strip ---------------------------------------------------------------------------------


def test_strip_source_keeps_indentation_and_the_rest():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    y = 2 * x\n    return y\n"
    src += "    ### END SOLUTION\n\nz = 1"
    assert strip_source(src) == "def f(x):\n    raise NotImplementedError()\n\nz = 1"
    with pytest.raises(ValueError, match="without"):
        strip_source("### BEGIN SOLUTION\nx = 1")


def test_strip_command_writes_a_student_notebook(tmp_path):
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": "# Title"},
        {
            "cell_type": "code",
            "metadata": {},
            "execution_count": 3,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "42\n"}],
            "source": [
                "def f():\n",
                "    ### BEGIN SOLUTION\n",
                "    return 42\n",
                "    ### END SOLUTION\n",
            ],
        },  # fmt: skip
    ]
    nb = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "in.ipynb").write_text(json.dumps(nb))
    assert main(
        ["exercises", "strip", str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb")]
    ) in (
        0,
        None,
    )
    out = json.loads((tmp_path / "out.ipynb").read_text())
    assert out["cells"][0]["source"] == "# Title"
    assert out["cells"][1]["source"] == "def f():\n    raise NotImplementedError()"
    assert out["cells"][1]["outputs"] == [] and out["cells"][1]["execution_count"] is None
