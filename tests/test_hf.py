"""minilora.interop.hf without torch: GPT-2 layouts, round trips, refusals, the commands.

Adapter conversions are in test_hf_adapters.py.

The checks against transformers and PEFT themselves are in test_compat_torch.py
(they need the ``compat`` extra). Here an export is checked against GPT-2's forward
pass written once more in NumPy (hf_reference.py, from GPT-2's own layout: Conv1D
y = x @ W + b, c_attn = [q | k | v]), so the arithmetic is checked even without torch.
"""

from __future__ import annotations

import json
import os

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
from safetensors.numpy import save_file

from minilora.cli import build_parser, main
from minilora.interop import hf, hf_adapters
from minilora.interop.adapters import ADAPTER_CONFIG, load_adapter, save_adapter
from minilora.lora import LoRAConfig, inject_lora, merge
from minilora.tensor import no_grad
from minilora.work import io
from minilora.work.data import CharTokenizer

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
