"""minilora.interop.hf_adapters without torch: LoRA adapters to PEFT's fused c_attn and back.

The checks against PEFT itself are in test_compat_torch.py (the ``compat`` extra).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hf_reference import (  # noqa: E402
    PREFIX,
    VOCAB,
    add_lora,
    gpt2_reference_logits,
    ids_for,
    logits,
    peft_arrays,
    random_gpt,
    read_exported,
    write_peft,
)

from minilora.interop import hf, hf_adapters
from minilora.interop.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, load_adapter
from minilora.lora import LoRAConfig, inject_lora, lora_layers
from minilora.work import io
from minilora.work.data import CharTokenizer

# ---- adapters ---------------------------------------------------------------------------

TARGETS = [
    ("q_proj", "v_proj"),
    ("q_proj", "k_proj", "v_proj", "o_proj", "fc_in", "fc_out"),
    ("v_proj", "fc_out"),
    ("k_proj",),
]


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("targets", TARGETS)
def test_adapter_export_fuses_qkv_exactly(targets, rslora):
    model = add_lora(random_gpt(), targets=targets, rslora=rslora)
    arrays, config = hf_adapters.peft_adapter(model)
    assert config["fan_in_fan_out"] is True and config["task_type"] == "CAUSAL_LM"
    assert config["peft_type"] == "LORA" and config["use_rslora"] is rslora
    C, layers = model.config.d_model, lora_layers(model)
    n = sum(t in targets for t in ("q_proj", "k_proj", "v_proj"))
    for i in range(model.config.n_layer):
        key = f"{PREFIX}h.{i}.attn.c_attn"
        if not n:
            assert f"{key}.lora_A.weight" not in arrays
            continue
        A, B = arrays[f"{key}.lora_A.weight"], arrays[f"{key}.lora_B.weight"]
        assert A.shape == (2 * n, C) and B.shape == (3 * C, 2 * n)  # (r, in), (out, r)
        r = config["rank_pattern"].get("attn.c_attn", config["r"])
        alpha = config["alpha_pattern"].get("attn.c_attn", config["lora_alpha"])
        assert r == 2 * n
        scaling = alpha / (math.sqrt(r) if rslora else r)
        assert scaling == pytest.approx(3.0 / (math.sqrt(2) if rslora else 2), rel=1e-15)
        fused = scaling * B.astype(np.float64) @ A  # dW of c_attn in (out, in) form
        for j, p in enumerate(("q_proj", "k_proj", "v_proj")):
            layer = layers.get(f"blocks.{i}.attn.{p}")
            expected = np.zeros((C, C)) if layer is None else layer.delta_weight()
            np.testing.assert_allclose(fused[j * C : (j + 1) * C], expected, atol=1e-6)


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("targets", TARGETS)
def test_adapter_round_trip_is_exact_in_effect(tmp_path, targets, rslora):
    model = add_lora(random_gpt(), targets=targets, rslora=rslora)
    hf.save_gpt2(model, tmp_path / "gpt2", CharTokenizer(VOCAB))
    hf.import_gpt2(tmp_path / "gpt2", tmp_path / "back", adapter=tmp_path / "gpt2" / "adapter")
    back, _, _ = io.load_model(tmp_path / "back")
    load_adapter(back, tmp_path / "back" / hf.ADAPTER_SUBDIR)
    mine, theirs = lora_layers(model), lora_layers(back)
    assert sorted(theirs) == sorted(mine)  # k_proj is not adapted when it was not
    for path, layer in mine.items():
        assert theirs[path].configs["default"].r == 2
        np.testing.assert_array_equal(theirs[path].delta_weight(), layer.delta_weight())
    ids = ids_for(model.config)
    np.testing.assert_array_equal(logits(back.eval(), ids), logits(model, ids))


def test_exported_adapter_computes_gpt2_logits_with_the_merged_c_attn(tmp_path):
    model = add_lora(random_gpt(), targets=("q_proj", "v_proj", "o_proj", "fc_in"))
    hf.save_gpt2(model, tmp_path / "gpt2")
    state, config = read_exported(tmp_path / "gpt2")
    adapter = io.load_arrays(tmp_path / "gpt2" / "adapter" / ADAPTER_WEIGHTS)
    peft = io.read_json(tmp_path / "gpt2" / "adapter" / ADAPTER_CONFIG)
    merged = {k: v.astype(np.float64) for k, v in state.items()}
    for key in adapter:
        if key.endswith("lora_A.weight"):
            module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            leaf = module.split(".", 3)[3]
            r = peft["rank_pattern"].get(leaf, peft["r"])
            alpha = peft["alpha_pattern"].get(leaf, peft["lora_alpha"])
            B = adapter[key.replace("lora_A", "lora_B")].astype(np.float64)
            merged[module + ".weight"] += (alpha / r * B @ adapter[key]).T  # fan_in_fan_out
    ids = ids_for(model.config)
    model.to(dtype=np.float64)
    np.testing.assert_allclose(
        logits(model, ids), gpt2_reference_logits(merged, config, ids), atol=1e-10, rtol=0
    )


def test_a_peft_adapter_splits_by_rows_of_b_sharing_a(tmp_path):
    rng = np.random.default_rng(3)
    arrays = peft_arrays(rng, modules=(("attn.c_attn", 3, 2), ("mlp.c_proj", 1, 2)))
    write_peft(tmp_path / "ad", arrays, target_modules=["c_attn", "mlp.c_proj"], use_rslora=True)
    model = random_gpt()
    lora, weights = hf_adapters.read_peft_adapter(tmp_path / "ad", model.config)
    assert lora.r == 2 and lora.use_rslora and lora.alpha == 4
    assert set(lora.target_modules) == {"q_proj", "k_proj", "v_proj", "fc_out"}
    hf_adapters.apply_adapter(model, lora, weights)
    layers, s = lora_layers(model), 4 / math.sqrt(2)
    for i in (0, 1):
        A = arrays[f"{PREFIX}h.{i}.attn.c_attn.lora_A.weight"].astype(np.float32)
        B = arrays[f"{PREFIX}h.{i}.attn.c_attn.lora_B.weight"].astype(np.float32)
        for j, p in enumerate(("q_proj", "k_proj", "v_proj")):
            layer = layers[f"blocks.{i}.attn.{p}"]
            np.testing.assert_array_equal(layer.lora_A["default"].weight.data, A)
            expected = s * B[j * 12 : (j + 1) * 12].astype(np.float64) @ A
            np.testing.assert_allclose(layer.delta_weight(), expected, rtol=1e-5, atol=1e-6)


def test_alpha_patterns_fold_into_b_and_partial_layers_keep_full_names(tmp_path):
    rng = np.random.default_rng(4)
    arrays = peft_arrays(rng, layers=(1,), modules=(("attn.c_attn", 3, 2), ("attn.c_proj", 1, 2)))
    write_peft(tmp_path / "ad", arrays, alpha_pattern={"c_proj": 8})
    model = random_gpt()
    lora, weights = hf_adapters.read_peft_adapter(tmp_path / "ad", model.config)
    assert "blocks.1.attn.o_proj" in lora.target_modules and "o_proj" not in lora.target_modules
    hf_adapters.apply_adapter(model, lora, weights)
    A = arrays[f"{PREFIX}h.1.attn.c_proj.lora_A.weight"]
    B = arrays[f"{PREFIX}h.1.attn.c_proj.lora_B.weight"]
    np.testing.assert_allclose(
        lora_layers(model)["blocks.1.attn.o_proj"].delta_weight(),
        8 / 2 * B @ A,
        rtol=1e-5,
        atol=1e-6,
    )


# ---- bad content is refused at the door ------------------------------------------------


def test_a_peft_adapter_with_nan_or_inf_is_refused_naming_the_tensor(tmp_path):
    arrays = peft_arrays(np.random.default_rng(5))
    key = f"{PREFIX}h.1.attn.c_attn.lora_A.weight"
    arrays[key][0, 2] = np.inf
    write_peft(tmp_path / "ad", arrays)
    with pytest.raises(io.CheckpointError) as info:
        hf_adapters.read_peft_adapter(tmp_path / "ad", random_gpt().config)
    assert repr(key) in str(info.value) and "inf" in str(info.value)
    hf.save_gpt2(random_gpt(), tmp_path / "gpt2")
    with pytest.raises(io.CheckpointError, match="non-finite"):
        hf.import_gpt2(tmp_path / "gpt2", tmp_path / "out", adapter=tmp_path / "ad")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("r", "eight", ["'r' is 'eight' (str)", "expected an integer >= 1"]),
        ("lora_alpha", None, ["'lora_alpha' is None", "a number > 0"]),
        ("use_rslora", "true", ["'use_rslora' is 'true' (str)", "true or false"]),
        ("rank_pattern", {"c_attn": 4.0}, ["'rank_pattern'", "integer rank"]),
        ("alpha_pattern", [8], ["'alpha_pattern' is [8]", "an object"]),
        ("init_lora_weights", "pissa_niter_4", ["'init_lora_weights' is 'pissa_niter_4'"]),
    ],
)
def test_a_peft_config_field_of_the_wrong_type_is_refused_by_name(tmp_path, field, value, words):
    write_peft(tmp_path / "ad", peft_arrays(np.random.default_rng(6)), **{field: value})
    with pytest.raises(io.CheckpointError) as info:
        hf_adapters.read_peft_adapter(tmp_path / "ad", random_gpt().config)
    assert "adapter_config.json" in str(info.value)
    for word in words:
        assert word in str(info.value)


# ---- two named adapters on different layers ------------------------------------------------


def two_adapters():
    """Adapter "default" (r 2) on q_proj and "b" (r 3) on v_proj, B random in both."""
    model = random_gpt()
    rng = np.random.default_rng(7)
    inject_lora(model, LoRAConfig(r=2, alpha=3.0, target_modules=("q_proj",)), generator=rng)
    inject_lora(model, LoRAConfig(r=3, alpha=5.0, target_modules=("v_proj",)), "b", generator=rng)
    for layer in lora_layers(model).values():
        for name in layer.lora_B.keys():
            B = layer.lora_B[name].weight
            B.data = rng.normal(0.0, 0.5, B.shape).astype(np.float32)
    return model


@pytest.mark.parametrize(
    ("adapter_name", "name", "proj"),
    [(None, "b", "v_proj"), ("b", "b", "v_proj"), ("default", "default", "q_proj")],
)
def test_each_of_two_named_adapters_exports_alone(tmp_path, adapter_name, name, proj):
    """The first LoRA layer (q_proj) does not hold "b", and after inject_lora(..., "b") its
    active adapter is None: the export must find the adapter where it is. With no name,
    the active adapter ("b", injected last) is exported."""
    model = two_adapters()
    own, other = (2, 0) if proj == "v_proj" else (0, 2)  # row blocks of c_attn's B: q, k, v
    hf.save_gpt2(model, tmp_path / "gpt2", adapter_name=adapter_name)
    arrays = io.load_arrays(tmp_path / "gpt2" / "adapter" / ADAPTER_WEIGHTS)
    peft = io.read_json(tmp_path / "gpt2" / "adapter" / ADAPTER_CONFIG)
    C, r = model.config.d_model, 2 if name == "default" else 3
    keys = {f"{PREFIX}h.{i}.attn.c_attn.lora_{ab}.weight" for i in (0, 1) for ab in "AB"}
    assert set(arrays) == keys  # c_attn only: nothing of the other adapter
    assert peft["r"] == r and peft["target_modules"] == ["attn.c_attn"]
    for i in (0, 1):
        A = arrays[f"{PREFIX}h.{i}.attn.c_attn.lora_A.weight"]
        B = arrays[f"{PREFIX}h.{i}.attn.c_attn.lora_B.weight"]
        assert A.shape == (r, C) and B.shape == (3 * C, r)
        layer = model.get_submodule(f"blocks.{i}.attn.{proj}")
        np.testing.assert_array_equal(A, layer.lora_A[name].weight.data)
        np.testing.assert_array_equal(B[own * C : (own + 1) * C], layer.lora_B[name].weight.data)
        assert not B[other * C : (other + 1) * C].any()  # the other adapter's rows: zero
        assert not B[C : 2 * C].any()  # k_proj: not adapted
    hf.import_gpt2(tmp_path / "gpt2", tmp_path / "back", adapter=tmp_path / "gpt2" / "adapter")
    back, _, _ = io.load_model(tmp_path / "back")
    load_adapter(back, tmp_path / "back" / hf.ADAPTER_SUBDIR)
    assert sorted(lora_layers(back)) == [f"blocks.{i}.attn.{proj}" for i in (0, 1)]
    for path, layer in lora_layers(back).items():
        want = model.get_submodule(path).delta_weight(name)
        np.testing.assert_allclose(layer.delta_weight(), want, rtol=1e-6, atol=1e-7)
