"""minilora.hf and minilora.hf_adapters without torch: layouts, round trips, refusals.

The checks against transformers and PEFT themselves are in test_compat_torch.py
(they need the ``compat`` extra). Here GPT-2's forward pass is written once more
in NumPy, from GPT-2's own layout (Conv1D: y = x @ W + b, c_attn = [q | k | v]),
so that an export is checked against GPT-2's arithmetic even where torch is absent.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from minilora import hf, hf_adapters, io
from minilora.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, load_adapter, save_adapter
from minilora.cli import build_parser, main
from minilora.data import CharTokenizer
from minilora.lora import LoRAConfig, inject_lora, lora_layers, merge
from minilora.tensor import no_grad
from minilora.transformer import GPT, GPTConfig

VOCAB = "abcdefghijklm"
PREFIX = "base_model.model.transformer."


def random_gpt(seed=0, n_layer=2, n_head=4, d_model=12, bias=True, vocab=13, block=16):
    """A GPT whose every parameter (biases, LayerNorm scales included) is random."""
    rng = np.random.default_rng(seed)
    config = GPTConfig(
        vocab_size=vocab,
        block_size=block,
        n_layer=n_layer,
        n_head=n_head,
        d_model=d_model,
        bias=bias,
    )
    model = GPT(config, generator=rng)
    for _, p in model.named_parameters():
        p.data = p.data + rng.normal(0.0, 0.3, p.shape).astype(np.float32)
    return model.eval()


def add_lora(model, seed=1, targets=("q_proj", "v_proj"), r=2, alpha=3.0, rslora=False):
    """Inject LoRA with B random (nonzero), as after some training."""
    rng = np.random.default_rng(seed)
    inject_lora(
        model,
        LoRAConfig(r=r, alpha=alpha, target_modules=targets, use_rslora=rslora),
        generator=rng,
    )
    for layer in lora_layers(model).values():
        B = layer.lora_B["default"].weight
        B.data = rng.normal(0.0, 0.5, B.shape).astype(np.float32)
    return model


def logits(model, ids):
    with no_grad():
        return model(ids)[0].numpy()


def gpt2_reference_logits(state, config, ids):
    """GPT-2's forward pass from its own checkpoint layout, in float64 NumPy."""
    g = {k.removeprefix("transformer."): np.asarray(v, np.float64) for k, v in state.items()}
    C, H, eps = config["n_embd"], config["n_head"], config["layer_norm_epsilon"]

    def ln(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * g[name + ".weight"] + g[name + ".bias"]

    def conv1d(x, name):  # transformers' Conv1D: weight (in, out)
        return x @ g[name + ".weight"] + g[name + ".bias"]

    def gelu_new(x):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))

    def heads(t):  # (B, T, C) -> (B, H, T, D)
        return t.reshape(*t.shape[:2], H, C // H).swapaxes(1, 2)

    T = ids.shape[1]
    x = g["wte.weight"][ids] + g["wpe.weight"][:T]
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    for i in range(config["n_layer"]):
        h = f"h.{i}."
        q, k, v = np.split(conv1d(ln(x, h + "ln_1"), h + "attn.c_attn"), 3, axis=-1)
        att = heads(q) @ heads(k).swapaxes(-1, -2) / math.sqrt(C // H)
        att = np.exp(np.where(future, -np.inf, att - att.max(-1, keepdims=True)))
        att /= att.sum(-1, keepdims=True)
        x = x + conv1d((att @ heads(v)).swapaxes(1, 2).reshape(x.shape), h + "attn.c_proj")
        x = x + conv1d(gelu_new(conv1d(ln(x, h + "ln_2"), h + "mlp.c_fc")), h + "mlp.c_proj")
    return ln(x, "ln_f") @ g["wte.weight"].T  # the tied head


def ids_for(config, seed=0, batch=2):
    return np.random.default_rng(seed).integers(0, config.vocab_size, (batch, config.block_size))


def read_exported(directory):
    return io.load_arrays(directory / hf.WEIGHTS_NAME), io.read_json(directory / hf.CONFIG_NAME)


# ---- the model ---------------------------------------------------------------------------

SHAPES = [(1, 4, 12), (2, 4, 20), (3, 2, 8), (2, 1, 6)]  # (layers, heads, width): D = 3, 5, 4, 6


@pytest.mark.parametrize("n_layer,n_head,d_model", SHAPES)
def test_round_trip_through_the_gpt2_layout_is_exact(tmp_path, n_layer, n_head, d_model):
    model = random_gpt(n_layer=n_layer, n_head=n_head, d_model=d_model)
    hf.save_gpt2(model, tmp_path / "gpt2", CharTokenizer(VOCAB))
    back, tokenizer = hf.load_gpt2(tmp_path / "gpt2")
    assert back.config == model.config
    assert tokenizer.chars == VOCAB
    mine, theirs = model.state_dict(), back.state_dict()
    assert mine.keys() == theirs.keys()
    for k in mine:
        np.testing.assert_array_equal(theirs[k], mine[k], err_msg=k)


@pytest.mark.parametrize("n_layer,n_head,d_model", SHAPES)
def test_export_is_gpt2_layout_and_computes_gpt2s_logits(tmp_path, n_layer, n_head, d_model):
    model = random_gpt(n_layer=n_layer, n_head=n_head, d_model=d_model)
    hf.save_gpt2(model, tmp_path / "gpt2")
    state, config = read_exported(tmp_path / "gpt2")
    C = d_model
    assert config["model_type"] == "gpt2" and config["activation_function"] == "gelu_new"
    assert config["tie_word_embeddings"] is True and "lm_head.weight" not in state
    c_attn = state["transformer.h.0.attn.c_attn.weight"]  # Conv1D: (in, out) = (C, 3C)
    assert c_attn.shape == (C, 3 * C)
    attn = model.blocks[0].attn
    for j, proj in enumerate((attn.q_proj, attn.k_proj, attn.v_proj)):
        np.testing.assert_array_equal(c_attn[:, j * C : (j + 1) * C], proj.weight.data.T)
    np.testing.assert_array_equal(
        state["transformer.h.0.mlp.c_fc.weight"], model.blocks[0].mlp.fc_in.weight.data.T
    )
    ids = ids_for(model.config)
    expected = gpt2_reference_logits(state, config, ids)
    model.to(dtype=np.float64)
    np.testing.assert_allclose(logits(model, ids), expected, rtol=0, atol=1e-10)


def test_a_model_without_biases_exports_zero_biases(tmp_path):
    model = random_gpt(bias=False)
    hf.save_gpt2(model, tmp_path / "gpt2")
    back, _ = hf.load_gpt2(tmp_path / "gpt2")
    assert back.config.bias and not np.any(back.blocks[0].attn.q_proj.bias.data)
    ids = ids_for(model.config)
    np.testing.assert_array_equal(logits(back, ids), logits(model, ids))


def test_import_accepts_gpt2model_keys_buffers_and_a_tied_lm_head(tmp_path):
    model = random_gpt(n_layer=1)
    hf.save_gpt2(model, tmp_path / "gpt2")
    state, config = read_exported(tmp_path / "gpt2")
    plain = {k.removeprefix("transformer."): v for k, v in state.items()}  # GPT2Model: no prefix
    plain["h.0.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), np.float32))  # old mask buffers
    plain["h.0.attn.masked_bias"] = np.array(-1e4, np.float32)
    plain["lm_head.weight"] = plain["wte.weight"]
    config["layer_norm_epsilon"] = 1e-6
    (tmp_path / "b").mkdir()
    save_file(plain, str(tmp_path / "b" / hf.WEIGHTS_NAME), metadata={"format": "pt"})
    (tmp_path / "b" / hf.CONFIG_NAME).write_text(json.dumps(config))
    back, tokenizer = hf.load_gpt2(tmp_path / "b")
    assert tokenizer is None and back.config.layer_norm_eps == 1e-6
    np.testing.assert_array_equal(back.wte.weight.data, model.wte.weight.data)


def test_import_reads_a_sharded_checkpoint(tmp_path):
    model = random_gpt()
    hf.save_gpt2(model, tmp_path / "gpt2")
    state = io.load_arrays(tmp_path / "gpt2" / hf.WEIGHTS_NAME)
    (tmp_path / "gpt2" / hf.WEIGHTS_NAME).unlink()
    names = sorted(state)
    weight_map = {}
    for shard, part in (("model-1.safetensors", names[::2]), ("model-2.safetensors", names[1::2])):
        save_file({k: state[k] for k in part}, str(tmp_path / "gpt2" / shard))
        weight_map.update(dict.fromkeys(part, shard))
    (tmp_path / "gpt2" / hf.INDEX_NAME).write_text(json.dumps({"weight_map": weight_map}))
    back, _ = hf.load_gpt2(tmp_path / "gpt2")
    ids = ids_for(model.config)
    np.testing.assert_array_equal(logits(back, ids), logits(model, ids))


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


def write_peft(directory, arrays, **config):
    directory.mkdir(parents=True, exist_ok=True)
    base = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": 2,
        "lora_alpha": 4,
        "target_modules": ["c_attn"],
        "fan_in_fan_out": True,
        "bias": "none",
    }
    save_file(
        {k: np.asarray(v, np.float32) for k, v in arrays.items()},
        str(directory / ADAPTER_WEIGHTS),
        metadata={"format": "pt"},
    )
    (directory / ADAPTER_CONFIG).write_text(json.dumps({**base, **config}))
    return directory


def peft_arrays(rng, C=12, layers=(0, 1), modules=(("attn.c_attn", 3, 2),)):
    """Random A (r, in) and B (out, r) as PEFT saves them; modules: (kind, out/C, r)."""
    out = {}
    for i in layers:
        for kind, mult, r in modules:
            n_in = 4 * C if kind == "mlp.c_proj" else C
            out[f"{PREFIX}h.{i}.{kind}.lora_A.weight"] = rng.normal(size=(r, n_in))
            out[f"{PREFIX}h.{i}.{kind}.lora_B.weight"] = rng.normal(size=(mult * C, r))
    return out


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


# ---- refusals -----------------------------------------------------------------------------


def exported(tmp_path, **config_changes):
    hf.save_gpt2(random_gpt(), tmp_path / "gpt2")
    path = tmp_path / "gpt2" / hf.CONFIG_NAME
    config = json.loads(path.read_text())
    for k, v in config_changes.items():
        config.pop(k) if v is None else config.__setitem__(k, v)
    path.write_text(json.dumps(config))
    return tmp_path / "gpt2"


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("activation_function", "relu", ["'relu'", "gelu_new"]),
        ("tie_word_embeddings", False, ["False", "true"]),
        ("n_inner", 7, ["7", "4 * n_embd = 48"]),
        ("model_type", "llama", ["'llama'", "'gpt2'"]),
        ("scale_attn_by_inverse_layer_idx", True, ["True", "false"]),
        ("n_head", 5, ["not divisible"]),
    ],
)
def test_configs_we_cannot_compute_are_refused_by_field(tmp_path, field, value, words):
    directory = exported(tmp_path, **{field: value})
    with pytest.raises(io.CheckpointError) as err:
        hf.load_gpt2(directory)
    message = str(err.value)
    assert "config.json" in message and all(w in message for w in words), message
    if field != "n_head":
        assert field in message


def test_damaged_weights_are_refused_naming_file_key_found_and_expected(tmp_path):
    directory = exported(tmp_path)
    weights = directory / hf.WEIGHTS_NAME
    state = io.load_arrays(weights)
    state["transformer.h.1.mlp.c_fc.weight"] = state["transformer.h.1.mlp.c_fc.weight"].T
    del state["transformer.ln_f.bias"]
    state["transformer.h.0.attn.rotary"] = np.zeros(3, np.float32)
    save_file(state, str(weights))
    with pytest.raises(io.CheckpointError) as err:
        hf.load_gpt2(directory)
    message = str(err.value)
    assert "model.safetensors" in message
    assert "h.1.mlp.c_fc.weight: shape (48, 12), expected (12, 48)" in message
    assert "missing key ln_f.bias" in message and "unexpected key h.0.attn.rotary" in message


def test_truncated_or_missing_weights_and_non_checkpoints_are_refused(tmp_path):
    directory = exported(tmp_path)
    weights = directory / hf.WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(io.CheckpointError, match="model.safetensors.*truncated"):
        hf.load_gpt2(directory)
    weights.rename(directory / "pytorch_model.bin")
    with pytest.raises(io.CheckpointError, match=r"no model.safetensors \(found .*pytorch_model"):
        hf.load_gpt2(directory)
    with pytest.raises(io.CheckpointError, match="not a directory"):
        hf.load_gpt2(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(io.CheckpointError, match="config.json: file not found"):
        hf.load_gpt2(tmp_path / "empty")


@pytest.mark.parametrize(
    "change,words",
    [
        ({"use_dora": True}, ["adapter_config.json", "'use_dora'", "DoRA"]),
        ({"bias": "all"}, ["adapter_config.json", "'bias'", "'all'", "'none'"]),
        ({"lora_bias": True}, ["adapter_config.json", "'lora_bias'", "True"]),
        ({"modules_to_save": ["lm_head"]}, ["'modules_to_save'", "lm_head"]),
        ({"peft_type": "IA3"}, ["'IA3'", "'LORA'"]),
    ],
)
def test_adapter_options_we_cannot_convert_are_refused(tmp_path, change, words):
    write_peft(tmp_path / "ad", peft_arrays(np.random.default_rng(0)), **change)
    with pytest.raises(io.CheckpointError) as err:
        hf_adapters.read_peft_adapter(tmp_path / "ad", random_gpt().config)
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize(
    "extra,words",
    [
        ({"attn.c_attn.lora_magnitude_vector": (36,)}, ["lora_magnitude_vector", "DoRA"]),
        ({"attn.c_attn.lora_B.bias": (36,)}, ["lora_B.bias", "LoRA bias"]),
        ({"wte.lora_embedding_A": (2, 13)}, ["wte.lora_embedding_A", "unknown target"]),
    ],
)
def test_adapter_keys_we_cannot_convert_are_refused(tmp_path, extra, words):
    arrays = peft_arrays(np.random.default_rng(0))
    arrays.update(
        {f"{PREFIX}{'h.0.' if 'attn' in k else ''}{k}": np.zeros(s) for k, s in extra.items()}
    )
    write_peft(tmp_path / "ad", arrays)
    with pytest.raises(io.CheckpointError) as err:
        hf_adapters.read_peft_adapter(tmp_path / "ad", random_gpt().config)
    assert "adapter_model.safetensors" in str(err.value)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_adapters_that_do_not_fit_the_model_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    write_peft(tmp_path / "wide", peft_arrays(rng, C=16))  # made for n_embd 16
    with pytest.raises(io.CheckpointError) as err:
        hf_adapters.read_peft_adapter(tmp_path / "wide", random_gpt().config)
    assert "h.0.attn.c_attn.lora_A.weight has shape (2, 16), expected (2, 12)" in str(err.value)
    write_peft(tmp_path / "deep", peft_arrays(rng, layers=(0, 5)))
    with pytest.raises(io.CheckpointError, match="layer 5, but the model has n_layer=2"):
        hf_adapters.read_peft_adapter(tmp_path / "deep", random_gpt().config)
    write_peft(tmp_path / "rank", peft_arrays(rng), r=4)  # config says 4, file holds 2
    with pytest.raises(io.CheckpointError, match=r"shape \(2, 12\), expected \(4, 12\)"):
        hf_adapters.read_peft_adapter(tmp_path / "rank", random_gpt().config)
    # c_attn rank 3 with an unstructured B beside c_proj rank 2: no single minilora rank
    mixed = peft_arrays(rng, modules=(("attn.c_attn", 3, 3), ("attn.c_proj", 1, 2)))
    write_peft(tmp_path / "mixed", mixed, rank_pattern={"c_attn": 3})
    with pytest.raises(io.CheckpointError, match=r"per-module ranks .*'h.0.attn.c_attn': 3"):
        hf_adapters.read_peft_adapter(tmp_path / "mixed", random_gpt().config)


def test_lora_biases_and_merged_adapters_are_not_exported(tmp_path):
    model = random_gpt()
    inject_lora(model, LoRAConfig(r=2, bias="lora_only"))
    with pytest.raises(ValueError, match="LoRA bias"):
        hf.save_gpt2(model, tmp_path / "a")
    model = add_lora(random_gpt())
    with no_grad():
        merge(model)
    with pytest.raises(ValueError, match="merged"):
        hf.save_gpt2(model, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ---- nothing half-written -----------------------------------------------------------------


def test_an_interrupted_export_leaves_nothing_at_the_target(tmp_path, monkeypatch):
    model = add_lora(random_gpt())

    def interrupted(path, obj):
        raise KeyboardInterrupt(f"power cut while writing {path}")

    monkeypatch.setattr(io, "write_json", interrupted)  # after model.safetensors is written
    with pytest.raises(KeyboardInterrupt):
        hf.save_gpt2(model, tmp_path / "out", CharTokenizer(VOCAB))
    assert os.listdir(tmp_path) == []


def test_a_failed_import_leaves_nothing_and_existing_targets_are_kept(tmp_path):
    hf.save_gpt2(random_gpt(), tmp_path / "gpt2")
    write_peft(tmp_path / "ad", peft_arrays(np.random.default_rng(0)), use_dora=True)
    with pytest.raises(io.CheckpointError, match="use_dora"):
        hf.import_gpt2(tmp_path / "gpt2", tmp_path / "out", adapter=tmp_path / "ad")
    assert sorted(os.listdir(tmp_path)) == ["ad", "gpt2"]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(io.CheckpointError, match="taken: already exists"):
        hf.save_gpt2(random_gpt(), tmp_path / "taken")
    assert os.listdir(tmp_path / "taken") == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    hf.save_gpt2(random_gpt(), tmp_path / "empty")  # an empty directory may be filled
    assert (tmp_path / "empty" / hf.WEIGHTS_NAME).is_file()


# ---- the command line -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["export-hf", "import-hf"])
def test_hf_commands_have_useful_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"minilora {command}" in text and "--adapter" in text and "OUT" in text
    assert "GPT-2" in text and "nothing is written" in text.lower().replace("\n", " ")


def test_export_hf_then_import_hf_gives_back_model_and_adapter(tmp_path, capsys):
    model = random_gpt()
    io.save_model(model, tmp_path / "ckpt", CharTokenizer(VOCAB))
    add_lora(model, targets=("q_proj", "v_proj", "fc_in"))
    save_adapter(model, tmp_path / "lora")
    assert (
        main(
            [
                "export-hf",
                str(tmp_path / "ckpt"),
                str(tmp_path / "hf"),
                "--adapter",
                str(tmp_path / "lora"),
            ]
        )
        == 0
    )
    assert "GPT2LMHeadModel.from_pretrained" in capsys.readouterr().out
    assert (tmp_path / "hf" / "adapter" / ADAPTER_CONFIG).is_file()
    assert (
        main(
            [
                "import-hf",
                str(tmp_path / "hf"),
                str(tmp_path / "back"),
                "--adapter",
                str(tmp_path / "hf" / "adapter"),
            ]
        )
        == 0
    )
    back, tokenizer, meta = io.load_model(tmp_path / "back")
    assert tokenizer.chars == VOCAB and "minilora import-hf" in meta["command"]
    load_adapter(back, tmp_path / "back" / "adapter")
    ids = ids_for(model.config)
    np.testing.assert_array_equal(logits(back.eval(), ids), logits(model, ids))
    with pytest.raises(SystemExit, match="minilora import-hf: .*back: already exists"):
        main(["import-hf", str(tmp_path / "hf"), str(tmp_path / "back")])
