"""Checkpoints: exact round trips, atomic writes, and clear errors for damaged or foreign files."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

import minilora.work.io as mio
from minilora.creation import manual_seed
from minilora.transformer import GPT, GPTConfig
from minilora.work.data import CharTokenizer
from minilora.work.io import CheckpointError, load_model, save_model, write_atomic

CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8)


def tiny_gpt(seed=0, config=CONFIG) -> GPT:
    manual_seed(seed)
    return GPT(config, generator=np.random.default_rng(seed))


def files_in(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


# ---- round trip ---------------------------------------------------------------------------------


def test_save_load_round_trip_is_exact(tmp_path):
    model = tiny_gpt(seed=1)
    tok = CharTokenizer("abcdefghij\n")
    meta = {"steps": 12, "note": "hello", "val_loss": 2.25}
    out = save_model(model, tmp_path / "ckpt", tokenizer=tok, meta=meta)
    assert out == tmp_path / "ckpt"
    assert files_in(out) == {"config.json", "model.safetensors"}

    loaded, tok2, meta2 = load_model(out)
    assert loaded.config == model.config
    assert tok2 == tok and tok2.chars == tok.chars
    assert meta2 == meta
    own, theirs = model.state_dict(), loaded.state_dict()
    assert list(theirs) == list(own)
    for name in own:
        assert theirs[name].dtype == np.float32
        assert theirs[name].tobytes() == own[name].tobytes(), name  # bit for bit
    x = np.array([[1, 2, 3, 4]])
    np.testing.assert_array_equal(model(x)[0].numpy(), loaded(x)[0].numpy())


def test_round_trip_without_tokenizer_and_of_another_config(tmp_path):
    config = GPTConfig(
        vocab_size=13,
        block_size=6,
        n_layer=2,
        n_head=4,
        d_model=12,
        dropout=0.1,
        bias=False,
        layer_norm_eps=1e-6,
    )
    model = tiny_gpt(seed=2, config=config)
    save_model(model, tmp_path)
    loaded, tok, meta = load_model(tmp_path)
    assert tok is None and meta == {}
    assert loaded.config == config
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)


def test_saving_again_replaces_the_checkpoint(tmp_path):
    save_model(tiny_gpt(seed=1), tmp_path)
    second = tiny_gpt(seed=2)
    save_model(second, tmp_path)
    loaded, _, _ = load_model(tmp_path)
    np.testing.assert_array_equal(loaded.wte.weight.data, second.wte.weight.data)
    assert files_in(tmp_path) == {"config.json", "model.safetensors"}  # no temp files


def test_float64_model_is_saved_as_float32(tmp_path):
    model = tiny_gpt().to(dtype=np.float64)
    save_model(model, tmp_path)
    loaded, _, _ = load_model(tmp_path)
    np.testing.assert_array_equal(loaded.wte.weight.data, model.wte.weight.data.astype(np.float32))


# ---- the files are data only: safetensors and JSON, no pickle -----------------------------------


def test_files_are_safetensors_and_json(tmp_path):
    save_model(tiny_gpt(), tmp_path, tokenizer=CharTokenizer("abc"))
    info = json.loads((tmp_path / "config.json").read_text())
    assert info["format"] == "minilora"
    assert info["config"] == CONFIG.to_dict()
    assert info["tokenizer"] == {"type": "char", "chars": "abc"}
    raw = (tmp_path / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])  # safetensors: u64 header size, JSON header
    header = json.loads(raw[8 : 8 + header_len])
    assert header["wte.weight"]["dtype"] == "F32"
    assert header["wte.weight"]["shape"] == [11, 8]
    assert len(raw) == 8 + header_len + 4 * sum(p.size for p in tiny_gpt().parameters())


def test_no_pickle_anywhere(tmp_path, monkeypatch):
    source = Path(mio.__file__).read_text()
    assert "import pickle" not in source and "pickle.load" not in source
    save_model(tiny_gpt(), tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    loaded, _, _ = load_model(tmp_path)
    assert loaded.config == CONFIG


# ---- atomic writes ------------------------------------------------------------------------------


def test_write_atomic_writes_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    write_atomic(target, b"first")
    write_atomic(target, b"second version")
    assert target.read_bytes() == b"second version"
    assert files_in(target.parent) == {"file.bin"}


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    write_atomic(target, b"old contents")

    def broken_replace(src, dst):
        raise OSError("disk unplugged")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk unplugged"):
        write_atomic(target, b"new contents that never land")
    assert target.read_bytes() == b"old contents"
    assert files_in(tmp_path) == {"file.bin"}


def test_write_interrupted_mid_file_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    write_atomic(target, b"old contents")

    def broken_fsync(fd):
        raise KeyboardInterrupt  # e.g. Ctrl-C after part of the data was written

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, b"x" * 100_000)
    assert target.read_bytes() == b"old contents"
    assert files_in(tmp_path) == {"file.bin"}


def test_interrupted_save_model_leaves_the_old_checkpoint_loadable(tmp_path, monkeypatch):
    old = tiny_gpt(seed=1)
    save_model(old, tmp_path)

    def killed(src, dst):
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(OSError):
        save_model(tiny_gpt(seed=2), tmp_path)
    loaded, _, _ = load_model(tmp_path)
    np.testing.assert_array_equal(loaded.wte.weight.data, old.wte.weight.data)
    assert files_in(tmp_path) == {"config.json", "model.safetensors"}


# ---- damaged and foreign checkpoints ------------------------------------------------------------


def test_truncated_weights_give_a_checkpoint_error(tmp_path):
    save_model(tiny_gpt(), tmp_path)
    weights = tmp_path / "model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors") as info:
        load_model(tmp_path)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no deep traceback
    assert "truncated" in str(info.value)


def test_missing_files_and_directories(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_model(tmp_path / "nope")
    save_model(tiny_gpt(), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(tmp_path)


def test_other_format_is_refused(tmp_path):
    save_model(tiny_gpt(), tmp_path)
    info = json.loads((tmp_path / "config.json").read_text())
    info["format"] = "huggingface"
    (tmp_path / "config.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="huggingface"):
        load_model(tmp_path)
    info["format"] = "minilora"
    info["format_version"] = 99
    (tmp_path / "config.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="format_version"):
        load_model(tmp_path)


def test_config_that_is_not_json_is_refused(tmp_path):
    save_model(tiny_gpt(), tmp_path)
    (tmp_path / "config.json").write_text("{'format': 'minilora',")
    with pytest.raises(CheckpointError, match="config.json") as info:
        load_model(tmp_path)
    assert "JSON" in str(info.value)
    (tmp_path / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(tmp_path)


def test_weights_of_another_shape_are_refused_with_the_keys(tmp_path):
    save_model(tiny_gpt(), tmp_path)  # d_model 8
    info = json.loads((tmp_path / "config.json").read_text())
    info["config"]["d_model"] = 16
    (tmp_path / "config.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError) as info_err:
        load_model(tmp_path)
    message = str(info_err.value)
    assert "model.safetensors" in message
    for key in ("wte.weight", "blocks.0.attn.q_proj.weight", "blocks.0.mlp.fc_in.bias"):
        assert key in message
    assert "(11, 8)" in message and "(11, 16)" in message


def test_weights_with_missing_keys_are_refused(tmp_path):
    model = tiny_gpt()
    save_model(model, tmp_path)
    state = {k: v for k, v in model.state_dict().items() if k != "ln_f.bias"}
    mio.save_arrays(tmp_path / "model.safetensors", state)
    with pytest.raises(CheckpointError, match="ln_f.bias"):
        load_model(tmp_path)


def test_save_and_load_arrays(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64)}
    mio.save_arrays(tmp_path / "x.safetensors", arrays, metadata={"k": 1})
    back = mio.load_arrays(tmp_path / "x.safetensors")
    assert set(back) == {"a", "b"}
    for k in arrays:
        assert back[k].dtype == arrays[k].dtype
        np.testing.assert_array_equal(back[k], arrays[k])
    (tmp_path / "y.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="y.safetensors"):
        mio.load_arrays(tmp_path / "y.safetensors")


# ---- bfloat16 and float16 files -----------------------------------------------------------------

# bfloat16 bit patterns and the float32 each stands for (sign, 8 exponent bits, 7 mantissa bits)
BF16 = {
    0x3F80: 1.0,
    0xC020: -2.5,
    0x4049: 3.140625,  # pi to bfloat16's 8 significant bits
    0x3E00: 0.125,
    0x7F7F: 3.3895313892515355e38,  # the largest finite bfloat16
    0x0080: 2.0**-126,  # the smallest normal
    0x0001: 2.0**-133,  # the smallest subnormal
    0x8000: -0.0,
    0x7F80: np.inf,
    0xFF80: -np.inf,
}


def safetensors_bytes(tensors: dict) -> bytes:
    """A safetensors file by hand: {name: (dtype code, shape, raw little-endian bytes)}."""
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        offsets = [len(data), len(data) + len(raw)]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        data += raw
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_bfloat16_loads_as_float32_exactly_and_float16_stays(tmp_path):
    bits = list(BF16)
    halves = np.array([1.5, -0.099975586, 65504.0], np.float16)
    path = tmp_path / "mixed.safetensors"
    path.write_bytes(
        safetensors_bytes(
            {
                "w.bf16": ("BF16", [2, 5], struct.pack(f"<{len(bits)}H", *bits)),
                "w.f32": ("F32", [2], struct.pack("<2f", 0.5, -7.0)),
                "w.f16": ("F16", [3], halves.astype("<f2").tobytes()),
            }
        )
    )
    back = mio.load_arrays(path)
    assert back["w.bf16"].dtype == np.float32 and back["w.bf16"].shape == (2, 5)
    want = np.array(list(BF16.values()), np.float32).reshape(2, 5)
    assert back["w.bf16"].tobytes() == want.tobytes()  # bit for bit, -0.0 and inf included
    np.testing.assert_array_equal(back["w.f32"], np.array([0.5, -7.0], np.float32))
    assert back["w.f16"].dtype == np.float16
    np.testing.assert_array_equal(back["w.f16"], halves)


def test_bfloat16_nan_stays_nan():
    out = mio.bfloat16_to_float32(np.array([0x7FC0, 0xFFC1], np.uint16))
    assert out.dtype == np.float32 and np.isnan(out).all()


def test_a_damaged_bfloat16_file_is_still_called_damaged(tmp_path):
    raw = safetensors_bytes({"w": ("BF16", [4], struct.pack("<4H", 0x3F80, 0, 0, 0))})
    for name, broken in {
        "short.safetensors": raw[:-3],  # truncated data
        "offsets.safetensors": raw.replace(b"[0, 8]", b"[0, 9]"),  # offsets past the data
        "shape.safetensors": raw.replace(b"[4]", b"[5]"),  # shape and size disagree
    }.items():
        (tmp_path / name).write_bytes(broken)
        with pytest.raises(CheckpointError, match=f"{name}.*truncated or damaged"):
            mio.load_arrays(tmp_path / name)


# ---- the tokenizer and the config must agree -----------------------------------------------------


def test_a_tokenizer_larger_than_the_vocabulary_is_refused_naming_both(tmp_path):
    save_model(tiny_gpt(), tmp_path, tokenizer=CharTokenizer("abcdefghijkl"))  # 12 > 11
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path)
    message = str(info.value)
    assert "config.json" in message
    assert "the tokenizer has 12 characters" in message and "vocab_size=11" in message


def test_a_tokenizer_smaller_than_the_vocabulary_loads(tmp_path):
    """As GPT-2 imports allow: a vocabulary padded beyond the characters (nanoGPT pads to 64s)."""
    save_model(tiny_gpt(), tmp_path, tokenizer=CharTokenizer("abc"))
    _, tok, _ = load_model(tmp_path)
    assert tok.vocab_size == 3


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda info: info["config"].update(n_layer="two"), ["n_layer='two'", "int >= 1"]),
        (lambda info: info["config"].update(width=3), ["unknown fields ['width']"]),
        (lambda info: info.update(tokenizer={"type": "wordpiece"}), ['"type": "char"', "bpe"]),
        (lambda info: info.update(tokenizer={"type": "bpe"}), ["tokenizer.json, which is missing"]),
        (lambda info: info.pop("config"), ["'config'", "missing"]),
    ],
)
def test_a_bad_config_json_is_refused_naming_the_file(tmp_path, edit, words):
    save_model(tiny_gpt(), tmp_path, tokenizer=CharTokenizer("abc"))
    info = json.loads((tmp_path / "config.json").read_text())
    edit(info)
    (tmp_path / "config.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path)
    assert "config.json" in str(err.value)
    for word in words:
        assert word in str(err.value)
