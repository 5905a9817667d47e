"""Adapter files in Hugging Face PEFT's layout: what is written, round trips, refusals.

The written files are read back with ``safetensors.numpy.load_file`` and
``json`` directly, independent of minilora's loader, and checked against
PEFT's names: ``base_model.model.<module path>.lora_A.weight`` (r x d_in) and
``.lora_B.weight`` (d_out x r), float32, plus LoraConfig's keys.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

from minilora import lora as L
from minilora.interop.adapters import load_adapter, save_adapter
from minilora.tensor import no_grad
from minilora.transformer import GPT, GPTConfig
from minilora.work import io

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc_in", "fc_out")
SEEDS = st.integers(0, 2**32 - 1)
WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"


def gpt_config(n_layer=1, d_model=8, vocab_size=13):
    return GPTConfig(
        vocab_size=vocab_size, block_size=8, n_layer=n_layer, n_head=2, d_model=d_model
    )


def make_gpt(config, seed=0):
    return GPT(config, generator=np.random.default_rng(seed)).eval()


def logits(model, idx):
    with no_grad():
        return model(idx)[0].data.copy()


def trained_model(config, lora_config, seed=0, rng=None):
    """A GPT with an adapter whose B is random (as after training), in eval mode."""
    rng = rng if rng is not None else np.random.default_rng(seed + 1)
    model = L.inject_lora(make_gpt(config, seed), lora_config, generator=rng).eval()
    for layer in L.lora_layers(model).values():
        B = layer.lora_B["default"].weight
        B.data = rng.normal(0.0, 0.5, B.shape).astype(B.dtype)
    return model


def adapted_paths(config, targets):
    where = {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "o_proj": "attn"}
    return {f"blocks.{i}.{where.get(t, 'mlp')}.{t}" for i in range(config.n_layer) for t in targets}


@st.composite
def adapter_cases(draw):
    d_model = draw(st.sampled_from([8, 12, 16]))
    config = gpt_config(draw(st.integers(1, 2)), d_model, draw(st.integers(11, 17)))
    lora_config = L.LoRAConfig(
        r=draw(st.integers(1, d_model)),
        alpha=draw(st.floats(0.5, 64.0)),
        dropout=draw(st.sampled_from([0.0, 0.05, 0.1])),
        target_modules=tuple(sorted(draw(st.sets(st.sampled_from(TARGETS), min_size=1)))),
        init=draw(st.sampled_from(["kaiming", "gaussian"])),
        use_rslora=draw(st.booleans()),
    )
    rng = np.random.default_rng(draw(SEEDS))
    idx = rng.integers(0, config.vocab_size, (2, draw(st.integers(2, 8))))
    return config, lora_config, idx, rng


# ---- proof 10: the files, exactly as PEFT writes them ----------------------------------------
@settings(max_examples=30, deadline=None)
@given(case=adapter_cases())
def test_saved_files_have_peft_keys_shapes_and_config(case):
    config, lora_config, idx, rng = case
    model = trained_model(config, lora_config, rng=rng)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "adapter"
        save_adapter(model, out, base_model_name="minilora/tiny")
        assert sorted(os.listdir(out)) == [CONFIG, WEIGHTS]  # no temporary file left behind
        tensors = load_file(str(out / WEIGHTS))
        meta = json.loads((out / CONFIG).read_text())

    paths = adapted_paths(config, lora_config.target_modules)
    assert set(tensors) == {f"base_model.model.{p}.lora_{ab}.weight" for p in paths for ab in "AB"}
    for p in paths:
        layer = model.get_submodule(p)
        A = tensors[f"base_model.model.{p}.lora_A.weight"]
        B = tensors[f"base_model.model.{p}.lora_B.weight"]
        assert A.dtype == np.float32 and A.shape == (lora_config.r, layer.in_features)
        assert B.dtype == np.float32 and B.shape == (layer.out_features, lora_config.r)
        assert np.array_equal(A, layer.lora_A["default"].weight.data)
        assert np.array_equal(B, layer.lora_B["default"].weight.data)

    assert meta["peft_type"] == "LORA" and meta["task_type"] == "CAUSAL_LM"
    assert meta["r"] == lora_config.r and meta["lora_alpha"] == lora_config.alpha
    assert meta["lora_dropout"] == lora_config.dropout
    assert meta["target_modules"] == list(lora_config.target_modules)
    assert meta["bias"] == "none" and meta["use_rslora"] is lora_config.use_rslora
    assert meta["fan_in_fan_out"] is False and meta["use_dora"] is False
    assert meta["init_lora_weights"] == (True if lora_config.init == "kaiming" else "gaussian")
    assert meta["base_model_name_or_path"] == "minilora/tiny"


@settings(max_examples=30, deadline=None)
@given(case=adapter_cases())
def test_round_trip_is_exact(case):
    config, lora_config, idx, rng = case
    model = trained_model(config, lora_config, rng=rng)
    expected = logits(model, idx)
    with tempfile.TemporaryDirectory() as tmp:
        save_adapter(model, tmp)
        fresh = load_adapter(make_gpt(config), tmp).eval()  # the same base weights
    for path, layer in L.lora_layers(model).items():
        twin = fresh.get_submodule(path)
        assert twin.configs["default"].scaling == layer.configs["default"].scaling
        for part in ("lora_A", "lora_B"):
            a = getattr(layer, part)["default"].weight.data
            assert np.array_equal(getattr(twin, part)["default"].weight.data, a)
    assert set(L.lora_layers(fresh)) == set(L.lora_layers(model))
    assert np.array_equal(logits(fresh, idx), expected)
    assert L.count_parameters(fresh).trainable == L.count_parameters(model).trainable


@pytest.mark.parametrize("bias", ["all", "lora_only"])
def test_trained_biases_round_trip(tmp_path, bias):
    config = gpt_config()
    model = trained_model(config, L.LoRAConfig(r=2, bias=bias))
    rng = np.random.default_rng(5)
    for _, p in model.named_parameters():
        if p.requires_grad and p.data.ndim == 1:
            p.data = rng.normal(size=p.shape).astype(p.dtype)
    save_adapter(model, tmp_path)
    saved = load_file(str(tmp_path / WEIGHTS))
    trained_biases = {
        n for n, p in model.named_parameters() if n.endswith("bias") and p.requires_grad
    }
    assert trained_biases  # "all": every bias; "lora_only": those of q_proj and v_proj
    assert {k for k in saved if k.endswith("bias")} == {
        f"base_model.model.{n}" for n in trained_biases
    }
    fresh = load_adapter(make_gpt(config), tmp_path).eval()
    idx = np.array([[1, 2, 3, 4]])
    assert np.array_equal(logits(fresh, idx), logits(model, idx))


# ---- refusals: another model, another rank, damaged files --------------------------------------
def test_adapter_for_a_deeper_model_is_refused_with_every_mismatch(tmp_path):
    save_adapter(trained_model(gpt_config(n_layer=2), L.LoRAConfig(r=2)), tmp_path)
    model = make_gpt(gpt_config(n_layer=1))
    idx = np.array([[1, 2, 3]])
    base = logits(model, idx)
    with pytest.raises(io.CheckpointError) as info:
        load_adapter(model, tmp_path)
    message = str(info.value)
    for p in ("q_proj", "v_proj"):
        for ab in "AB":
            assert f"not in model: base_model.model.blocks.1.attn.{p}.lora_{ab}.weight" in message
    assert "blocks.0" not in message  # the layers that fit are not listed
    # the failed load left the model as it was: no LoRA layer, the same names, nothing frozen
    assert not L.lora_layers(model)
    assert [n for n, _ in model.named_parameters()] == [
        n for n, _ in make_gpt(gpt_config(n_layer=1)).named_parameters()
    ]
    assert all(p.requires_grad for p in model.parameters())
    assert np.array_equal(logits(model, idx), base)


def test_adapter_for_a_shallower_model_lists_the_missing_keys(tmp_path):
    save_adapter(trained_model(gpt_config(n_layer=1), L.LoRAConfig(r=2)), tmp_path)
    with pytest.raises(io.CheckpointError) as info:
        load_adapter(make_gpt(gpt_config(n_layer=2)), tmp_path)
    assert "missing in file: base_model.model.blocks.1.attn.q_proj.lora_A.weight" in str(info.value)


def test_adapter_with_another_rank_lists_the_shape_mismatches(tmp_path):
    config = gpt_config()
    save_adapter(trained_model(config, L.LoRAConfig(r=2)), tmp_path / "r2")
    save_adapter(trained_model(config, L.LoRAConfig(r=4)), tmp_path / "r4")
    # the weights of the r=2 adapter with the config of the r=4 one
    (tmp_path / "r4" / WEIGHTS).write_bytes((tmp_path / "r2" / WEIGHTS).read_bytes())
    with pytest.raises(io.CheckpointError) as info:
        load_adapter(make_gpt(config), tmp_path / "r4")
    message = str(info.value)
    assert (
        "shape of base_model.model.blocks.0.attn.q_proj.lora_A.weight: file (2, 8), model (4, 8)"
        in message
    )
    assert (
        "shape of base_model.model.blocks.0.attn.v_proj.lora_B.weight: file (8, 2), model (8, 4)"
        in message
    )


def test_adapter_for_a_wider_model_is_refused(tmp_path):
    save_adapter(trained_model(gpt_config(d_model=16), L.LoRAConfig(r=12)), tmp_path)
    with pytest.raises(io.CheckpointError, match="r=12"):
        load_adapter(make_gpt(gpt_config(d_model=8)), tmp_path)


@pytest.mark.parametrize("keep", [0, 7, 0.5, -1])
def test_truncated_safetensors_file_is_refused(tmp_path, keep):
    save_adapter(trained_model(gpt_config(), L.LoRAConfig(r=2)), tmp_path)
    data = (tmp_path / WEIGHTS).read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    (tmp_path / WEIGHTS).write_bytes(data[:cut])
    with pytest.raises(io.CheckpointError, match="safetensors"):
        load_adapter(make_gpt(gpt_config()), tmp_path)


@pytest.mark.parametrize(
    "text",
    ['{"peft_type": "LORA", "r": 2', "", "\x00\x01 not json", '{"peft_type": "LORA" "r": 2}'],
)
def test_damaged_config_json_is_refused(tmp_path, text):
    save_adapter(trained_model(gpt_config(), L.LoRAConfig(r=2)), tmp_path)
    (tmp_path / CONFIG).write_text(text)
    with pytest.raises(io.CheckpointError, match="JSON"):
        load_adapter(make_gpt(gpt_config()), tmp_path)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda m: m.__delitem__("r"), ["'r'", "missing"]),
        (lambda m: m.__delitem__("target_modules"), ["'target_modules'"]),
        (lambda m: m.update(r=0), ["'r' is 0", "integer >= 1"]),
        (lambda m: m.update(r="two"), ["'r' is 'two'", "integer"]),
        (lambda m: m.update(r="eight"), ["'r' is 'eight' (str)", "expected an integer >= 1"]),
        (lambda m: m.update(r=8.5), ["'r' is 8.5 (float)", "integer"]),
        (lambda m: m.update(r=True), ["'r' is True (bool)", "integer"]),
        (lambda m: m.update(lora_alpha="16"), ["'lora_alpha' is '16' (str)", "a number > 0"]),
        (lambda m: m.update(lora_dropout=1.5), ["'lora_dropout' is 1.5", "[0, 1)"]),
        (lambda m: m.update(bias="some"), ["'bias' is 'some'", "'lora_only'"]),
        (lambda m: m.update(use_rslora="false"), ["'use_rslora' is 'false' (str)", "true or"]),
        (lambda m: m.update(target_modules=5), ["'target_modules' is 5 (int)", "module name"]),
        (lambda m: m.update(target_modules=[]), ["'target_modules' is []", "non-empty"]),
        (lambda m: m.update(init_lora_weights="pissa"), ["'init_lora_weights' is 'pissa'"]),
        (lambda m: m.update(rank_pattern={"q": "4"}), ["'rank_pattern' is {'q': '4'}"]),
        (lambda m: [m], ["JSON object", "list"]),
    ],
)
def test_config_json_that_is_not_a_lora_config_is_refused(tmp_path, change, words):
    save_adapter(trained_model(gpt_config(), L.LoRAConfig(r=2)), tmp_path)
    meta = json.loads((tmp_path / CONFIG).read_text())
    changed = change(meta)  # edits the dict in place, or returns a list to write instead
    meta = changed if isinstance(changed, list) else meta
    (tmp_path / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(io.CheckpointError) as info:
        load_adapter(make_gpt(gpt_config()), tmp_path)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_a_weight_is_refused_naming_the_tensor(tmp_path, bad):
    model = trained_model(gpt_config(n_layer=2), L.LoRAConfig(r=2))
    save_adapter(model, tmp_path)
    state = load_file(str(tmp_path / WEIGHTS))
    key = "base_model.model.blocks.1.attn.v_proj.lora_B.weight"
    state[key][3, 1] = bad
    io.save_arrays(tmp_path / WEIGHTS, state)
    fresh = make_gpt(gpt_config(n_layer=2))
    with pytest.raises(io.CheckpointError) as info:
        load_adapter(fresh, tmp_path)
    message = str(info.value)
    assert WEIGHTS in message and repr(key) in message and "(3, 1)" in message
    assert "1 non-finite value" in message and str(bad) in message and "finite" in message
    assert not L.lora_layers(fresh)  # refused before anything was injected


def test_target_modules_as_one_string_is_one_name(tmp_path):
    model = trained_model(gpt_config(), L.LoRAConfig(r=2, target_modules=("v_proj",)))
    save_adapter(model, tmp_path)
    meta = json.loads((tmp_path / CONFIG).read_text())
    meta["target_modules"] = "v_proj"  # PEFT accepts a string here
    (tmp_path / CONFIG).write_text(json.dumps(meta))
    fresh = load_adapter(make_gpt(gpt_config()), tmp_path).eval()
    assert list(L.lora_layers(fresh)) == ["blocks.0.attn.v_proj"]
    idx = np.array([[2, 7, 1, 8]])
    assert np.array_equal(logits(fresh, idx), logits(model, idx))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("use_dora", True),
        ("fan_in_fan_out", True),
        ("peft_type", "IA3"),
        ("rank_pattern", {"q": 4}),
    ],
)
def test_unsupported_peft_options_are_refused_by_name(tmp_path, key, value):
    save_adapter(trained_model(gpt_config(), L.LoRAConfig(r=2)), tmp_path)
    meta = json.loads((tmp_path / CONFIG).read_text())
    meta[key] = value
    (tmp_path / CONFIG).write_text(json.dumps(meta))
    model = make_gpt(gpt_config())
    with pytest.raises(io.CheckpointError, match=key):
        load_adapter(model, tmp_path)
    assert not L.lora_layers(model)  # refused before anything was injected


@pytest.mark.parametrize("missing", [CONFIG, WEIGHTS])
def test_missing_file_is_refused(tmp_path, missing):
    save_adapter(trained_model(gpt_config(), L.LoRAConfig(r=2)), tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(io.CheckpointError, match="not found"):
        load_adapter(make_gpt(gpt_config()), tmp_path)


# ---- atomic writes -----------------------------------------------------------------------------
def test_interrupted_save_keeps_the_old_files_and_leaves_no_temporary(tmp_path, monkeypatch):
    config = gpt_config()
    old = trained_model(config, L.LoRAConfig(r=2), seed=0)
    save_adapter(old, tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in (WEIGHTS, CONFIG)}

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(trained_model(config, L.LoRAConfig(r=4), seed=1), tmp_path)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == [CONFIG, WEIGHTS]
    assert {name: (tmp_path / name).read_bytes() for name in (WEIGHTS, CONFIG)} == before
    idx = np.array([[3, 1, 4, 1, 5]])
    assert np.array_equal(logits(load_adapter(make_gpt(config), tmp_path), idx), logits(old, idx))


def test_save_cut_off_between_weights_and_config_keeps_the_old_adapter(tmp_path, monkeypatch):
    config = gpt_config()
    old = trained_model(config, L.LoRAConfig(r=2), seed=0)
    target = tmp_path / "adapter"
    save_adapter(old, target)
    before = {name: (target / name).read_bytes() for name in (WEIGHTS, CONFIG)}

    def cut(path, obj):  # adapter_model.safetensors is written by now
        raise KeyboardInterrupt(f"power cut before {path}")

    monkeypatch.setattr(io, "write_json", cut)
    with pytest.raises(KeyboardInterrupt):
        save_adapter(trained_model(config, L.LoRAConfig(r=4), seed=1), target)
    with pytest.raises(KeyboardInterrupt):
        save_adapter(old, tmp_path / "first")  # a first save: nothing at all
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["adapter"]  # no temporary directory, no "first"
    assert {name: (target / name).read_bytes() for name in (WEIGHTS, CONFIG)} == before
    idx = np.array([[3, 1, 4, 1, 5]])
    assert np.array_equal(logits(load_adapter(make_gpt(config), target), idx), logits(old, idx))


def test_save_refuses_a_merged_model(tmp_path):
    model = L.merge(trained_model(gpt_config(), L.LoRAConfig(r=2)))
    with pytest.raises(RuntimeError, match="unmerge"):
        save_adapter(model, tmp_path)
    assert not any(tmp_path.iterdir())


def test_save_of_a_named_adapter_writes_that_adapter(tmp_path):
    config = gpt_config()
    model = trained_model(config, L.LoRAConfig(r=2, target_modules=("q_proj",)))
    L.inject_lora(model, L.LoRAConfig(r=3, target_modules=("fc_in",)), "task_b")
    L.set_adapter(model, "default")
    save_adapter(model, tmp_path / "b", adapter_name="task_b")
    save_adapter(model, tmp_path / "active")  # the active adapter, "default"
    keys_b = set(load_file(str(tmp_path / "b" / WEIGHTS)))
    keys_active = set(load_file(str(tmp_path / "active" / WEIGHTS)))
    assert keys_b == {f"base_model.model.blocks.0.mlp.fc_in.lora_{ab}.weight" for ab in "AB"}
    assert keys_active == {f"base_model.model.blocks.0.attn.q_proj.lora_{ab}.weight" for ab in "AB"}
    assert json.loads((tmp_path / "b" / CONFIG).read_text())["r"] == 3
