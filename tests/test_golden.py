"""The golden vectors: what ``minilora exercises golden`` writes, and that they hold.

They agree with the independent NumPy answers (tests/answers.py) and the engine reproduces
them on NumPy (and on CuPy where a GPU is present).
"""

from __future__ import annotations

import numpy as np
import pytest
from answers import (  # the correct answers, in plain NumPy
    layer_norm_backward,
    lora_backward,
    lora_forward,
    matmul_backward,
    merge_weight,
    softmax_backward,
    subspace_similarity,
    unbroadcast,
    unmerge_weight,
)

from minilora.cli import main
from minilora.teach import exercises as E
from minilora.teach import golden

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
    import hashlib

    manifest, arrays = golden.load_golden()
    assert manifest["format_version"] == 2 and golden.GOLDEN_DIR.name == "v2"
    assert manifest["minilora_version"] and manifest["tolerance"]["float64"]
    assert manifest["tolerance"]["rule"] == golden.RULE
    weights = (golden.GOLDEN_DIR / manifest["weights"]).read_bytes()
    assert manifest["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    for case in manifest["cases"]:
        assert case["dtype"] == "float64" and isinstance(case["seed"], int)
        assert case["function"].startswith("minilora.") and case["signature"]
        for spec in case["inputs"] + case["outputs"]:
            assert list(arrays[spec["key"]].shape) == spec["array_shape"]
        for spec in case["inputs"]:
            if spec["kind"] != "array":
                assert np.array_equal(arrays[spec["key"]], spec["value"]), spec
    shape = next(s for c in manifest["cases"] if c["name"] == "unbroadcast" for s in c["inputs"]
                 if s["kind"] == "shape")  # fmt: skip
    assert shape["value"] == [3, 1] and shape["array_shape"] == [2]
    names = {c["name"]: c for c in manifest["cases"]}
    assert names["lora_layer"]["no_gradient"] == ["W0"] == names["lora_layer_init"]["no_gradient"]
    assert len(manifest["cases"]) >= 12


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
        "lora_param_count": lambda L, d, r, n: 2 * n * L * d * r,
        "lora_layer": lambda x, W0, b, A, B, G, al, r: (
            lora_forward(x, W0, b, A, B, al, r),
            lora_backward(x, W0, A, B, G, al, r)[0],
            G.sum(0),
            *lora_backward(x, W0, A, B, G, al, r)[1:],
        ),
        "lora_layer_init": lambda x, W0, b, A, G, al, r: (
            x @ W0.T + b,
            G @ W0,
            G.sum(0),
            np.zeros_like(A),
            (al / r) * G.T @ (x @ A.T),
        ),
    }
    manifest, arrays = golden.load_golden()
    checked = set()
    for case in manifest["cases"]:
        if case["name"] not in formulas:
            continue
        got = formulas[case["name"]](*golden.case_arguments(case, arrays).values())
        got = got if isinstance(got, tuple) else (got,)
        for spec, value in zip(case["outputs"], got):
            assert golden.within(value, arrays[spec["key"]])[0], (case["name"], spec["name"])
        checked.add(case["name"])
    assert checked == set(formulas)
    init = next(c for c in manifest["cases"] if c["name"] == "lora_layer_init")
    i = golden.case_arguments(init, arrays)
    # at initialisation the layer is the base layer, bit for bit, and A gets exactly nothing
    assert np.array_equal(arrays["lora_layer_init/out/h"], i["x"] @ i["W0"].T + i["b"])
    assert not arrays["lora_layer_init/out/grad_A"].any()


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


def test_a_transposed_view_is_stored_in_its_logical_order():
    """safetensors writes memory as it lies; the writer must hand it C-ordered arrays."""
    from safetensors.numpy import load, save

    view = np.arange(24.0).reshape(2, 3, 4).swapaxes(0, 1)  # as attention's output is laid out
    stored = golden._stored(view)
    assert np.array_equal(load(save({"a": stored}))["a"], view)
    assert golden._stored(np.float64(2.5)).shape == ()  # a 0-d value stays 0-d
