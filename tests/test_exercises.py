"""The exercises' checkers, the strip command and the golden vectors.

Every checker must accept a correct answer (written here independently of minilora's
engine, in plain NumPy) and reject plausible wrong ones with a message naming the fault.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from minilora.cli import main
from minilora.teach import exercises as E
from minilora.teach import golden
from minilora.teach.notebook_tools import strip_source

# ---- correct answers, in plain NumPy (the formulas of the paper and of any textbook) ----


def matmul_backward(a, b, g):
    return g @ b.T, a.T @ g


def unbroadcast(grad, shape):
    g = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    for i, n in enumerate(shape):
        if n == 1:
            g = g.sum(axis=i, keepdims=True)
    return g.reshape(shape)


def softmax_backward(x, g):
    s = np.exp(x - x.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    return s * (g - (g * s).sum(-1, keepdims=True))


def layer_norm_backward(x, g, eps):
    rstd = 1 / np.sqrt(x.var(-1, keepdims=True) + eps)
    xhat = (x - x.mean(-1, keepdims=True)) * rstd
    return (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)) * rstd


def lora_forward(x, W0, b, A, B, alpha, r):
    return x @ W0.T + b + (alpha / r) * (x @ A.T) @ B.T


def lora_backward(x, W0, A, B, G, alpha, r):
    s = alpha / r
    return G @ W0 + s * (G @ B) @ A, s * (G @ B).T @ x, s * G.T @ (x @ A.T)


def merge_weight(W0, A, B, alpha, r):
    return W0 + (alpha / r) * B @ A


def unmerge_weight(W, A, B, alpha, r):
    return W - (alpha / r) * B @ A


def subspace_similarity(A1, A2, i, j):
    u1 = np.linalg.svd(A1, full_matrices=False)[2][:i]
    u2 = np.linalg.svd(A2, full_matrices=False)[2][:j]
    return np.sum((u1 @ u2.T) ** 2) / min(i, j)


def adamw_state_bytes(model):
    return 2 * sum(p.data.nbytes for p in model.parameters() if p.requires_grad)


def exact_match(predictions, answers):
    return sum(p.strip() == a.strip() for p, a in zip(predictions, answers)) / len(answers)


# (checker, correct answer, [(wrong answer, words the message must contain)])
CASES = [
    (
        E.check_matmul_backward,
        matmul_backward,
        [
            (lambda a, b, g: (g @ b.T, g.T @ a), "transpose"),
            (lambda a, b, g: (2 * g @ b.T, a.T @ g), "2 times"),
            (lambda a, b, g: g @ b.T, "must return 2 values"),
        ],
    ),
    (
        E.check_unbroadcast,
        unbroadcast,
        [(lambda g, s: g.sum(axis=tuple(range(g.ndim - len(s)))), "shape")],
    ),
    (
        E.check_softmax_backward,
        softmax_backward,
        [(lambda x, g: -softmax_backward(x, g), "wrong sign"), (lambda x, g: g, "largest diff")],
    ),
    (
        E.check_layer_norm_backward,
        layer_norm_backward,
        [(lambda x, g, eps: g / np.sqrt(x.var(-1, keepdims=True) + eps), "largest difference")],
    ),
    (
        E.check_lora_forward,
        lora_forward,
        [
            (lambda x, W0, b, A, B, al, r: lora_forward(x, W0, b, A, B, r, r), "scaling"),
            (lambda x, W0, b, A, B, al, r: lora_forward(x, W0, b, A, B, al * r**0.5, r), "sqrt"),
        ],
    ),
    (
        E.check_lora_grads,
        lora_backward,
        [
            (lambda x, W0, A, B, G, al, r: lora_backward(x, W0, A, B, G, r, r), "scaling"),
            (
                lambda *a: (*lora_backward(*a)[:2], 2 * lora_backward(*a)[2]),
                "grad_B is wrong",
            ),
            (lambda *a: (a[4] @ a[1], *lora_backward(*a)[1:]), "grad_x"),
        ],
    ),
    (
        E.check_merge,
        merge_weight,
        [
            (lambda W0, A, B, al, r: W0 + B @ A, "scaling alpha / r is missing"),
            (lambda W0, A, B, al, r: (al / r) * B @ A, "W is wrong"),
        ],
    ),
    (
        E.check_lora_param_count,
        lambda L, d, r, n: 2 * n * L * d * r,
        [
            (lambda L, d, r, n: n * L * d * r, "0.5 times"),
            (lambda L, d, r, n: 2 * L * d * r, "wrong"),
        ],
    ),
    (
        E.check_exact_match,
        exact_match,
        [(lambda p, a: np.mean([x == y for x, y in zip(p, a)]), "strip")],
    ),
    (
        E.check_adamw_state_bytes,
        adamw_state_bytes,
        [
            (lambda m: 2 * sum(p.data.nbytes for p in m.parameters()), "trainable"),
            (lambda m: adamw_state_bytes(m) // 2, "0.5 times"),
        ],
    ),
    (
        E.check_subspace_similarity,
        subspace_similarity,
        [(lambda A1, A2, i, j: subspace_similarity(A1, A2, i, j) * min(i, j), "times")],
    ),
]


@pytest.mark.parametrize("checker, right, wrongs", CASES, ids=[c[0].__name__ for c in CASES])
def test_checker_accepts_the_answer_and_names_the_fault(checker, right, wrongs, capsys):
    assert checker(right) is True
    assert "Correct" in capsys.readouterr().out
    for wrong, words in wrongs:
        with pytest.raises(E.ExerciseError, match=words) as info:
            checker(wrong)
        assert isinstance(info.value, AssertionError)  # nbgrader counts AssertionErrors
        assert len(str(info.value)) > 30 and "False" != str(info.value)


def test_unmerge_is_checked_too():
    assert E.check_merge(merge_weight, unmerge_weight)
    with pytest.raises(E.ExerciseError, match="unmerge_weight"):
        E.check_merge(merge_weight, merge_weight)


def test_a_stub_says_not_implemented():
    def stub(*args):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError, match="lora_forward: not implemented yet"):
        E.check_lora_forward(stub)
    with pytest.raises(NotImplementedError):
        E.check_exact_match(stub)


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


# ---- golden vectors ------------------------------------------------------------------------


def test_golden_command_writes_what_is_shipped(tmp_path):
    main(["exercises", "golden", str(tmp_path)])
    manifest, arrays = golden.load_golden(tmp_path)
    shipped_manifest, shipped = golden.load_golden()
    assert sorted(arrays) == sorted(shipped)
    for key in shipped:
        np.testing.assert_allclose(arrays[key], shipped[key], rtol=1e-12, atol=1e-14, err_msg=key)
    assert [c["name"] for c in manifest["cases"]] == [c["name"] for c in shipped_manifest["cases"]]


def test_golden_manifest_records_version_dtype_seed_and_function():
    manifest, arrays = golden.load_golden()
    assert manifest["minilora_version"] and manifest["tolerance"]["float64"]
    for case in manifest["cases"]:
        assert case["dtype"] == "float64" and isinstance(case["seed"], int)
        assert case["function"].startswith("minilora.") and case["signature"]
        for spec in case["inputs"] + case["outputs"]:
            assert list(arrays[spec["key"]].shape) == spec["shape"]
    assert len(manifest["cases"]) >= 10


def test_golden_vectors_agree_with_independent_numpy_formulas():
    """The stored outputs are the textbook formulas, not only what the engine happens to do."""
    formulas = {
        "matmul_backward": matmul_backward,
        "unbroadcast": unbroadcast,
        "softmax_backward": softmax_backward,
        "layer_norm_backward": layer_norm_backward,
        "lora_forward": lora_forward,
        "lora_backward": lora_backward,
        "merge_weight": merge_weight,
        "unmerge_weight": unmerge_weight,
        "subspace_similarity": subspace_similarity,
    }
    manifest, arrays = golden.load_golden()
    for case in manifest["cases"]:
        if case["name"] not in formulas:
            continue
        got = formulas[case["name"]](*golden.case_arguments(case, arrays).values())
        got = got if isinstance(got, tuple) else (got,)
        for spec, value in zip(case["outputs"], got):
            np.testing.assert_allclose(value, arrays[spec["key"]], rtol=1e-9, atol=1e-12)


def _assert_reproduced(device):
    rows = golden.reproduce(device)
    bad = [r for r in rows if not r["ok"]]
    assert rows and not bad, bad


def test_engine_reproduces_golden_vectors_on_numpy():
    _assert_reproduced("cpu")


@pytest.mark.gpu
def test_engine_reproduces_golden_vectors_on_cupy():
    _assert_reproduced("cuda")


class _DeviceArray(np.ndarray):
    """A NumPy array whose ``.data`` is not its values, as a CuPy array's (a MemoryPointer) is."""

    @property
    def data(self):
        return object()


@pytest.mark.parametrize(
    "value",
    [np.arange(3.0), np.arange(3.0).view(_DeviceArray)],
    ids=["numpy-array", "array-whose-data-is-a-pointer"],
)
def test_golden_and_exercise_helpers_take_an_array_as_it_is(value):
    # the CuPy failure of test_engine_reproduces_golden_vectors_on_cupy, on the CPU: an array
    # (already the values) must not be unwrapped through its .data
    from minilora.creation import tensor
    from minilora.teach.golden_cases import _np

    for got in (_np(value), _np(tensor(np.arange(3.0))), E._host(value)):
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, [0.0, 1.0, 2.0])


def test_engine_entry_points_take_an_array_whose_data_is_a_pointer():
    # the same pattern elsewhere: load_state_dict's values and generate's prompt
    from minilora.transformer import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, d_model=8))
    state = {k: np.full(v.shape, 0.5).view(_DeviceArray) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    assert all(np.all(v == 0.5) for v in model.state_dict().values())
    out = model.generate(np.array([1, 2]).view(_DeviceArray), 2, temperature=0)
    assert out.shape == (1, 4) and out[0, :2].tolist() == [1, 2]
