"""Bad inputs at every public entry point, as two tables: the API and the command line.

Each API case names the call, the exception it must raise and the words its message must
hold: the argument (or op) and the bad value, so that the message says what went wrong
where. Each command-line case runs ``minilora.cli.main(argv)`` in this process and asserts
the exit status (2 for a usage error, 1 for anything else) and that stderr is ONE line,
``minilora COMMAND: ...``, naming the argument and its value, without a traceback.

Nothing here trains for more than a couple of steps: the command-line cases fail before any
work (that is part of what they test).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minilora import backend, cli
from minilora import functional as F
from minilora.creation import randn, tensor
from minilora.lora import (
    LoRAConfig,
    LoRALinear,
    delete_adapter,
    inject_lora,
    lora_layers,
    mark_only_lora_as_trainable,
    merge,
    merge_and_unload,
    set_adapter,
)
from minilora.nn import Dropout, LayerNorm
from minilora.optim import SGD, AdamW
from minilora.transformer import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent.parent
NAN, INF = math.nan, math.inf

# ---- small things to break ---------------------------------------------------------------


def tiny_gpt(vocab_size: int = 11) -> GPT:
    config = GPTConfig(vocab_size=vocab_size, block_size=8, n_layer=2, n_head=2, d_model=8)
    return GPT(config, generator=np.random.default_rng(0))


def tiny_lora() -> GPT:
    model = tiny_gpt()
    inject_lora(model, LoRAConfig(r=2, alpha=4), generator=np.random.default_rng(1))
    return model


def damaged_lora() -> GPT:
    """Every adapter fine except one NaN in B of the last layer."""
    model = tiny_lora()
    layers = list(lora_layers(model).values())
    for layer in layers:
        layer.lora_B["default"].weight.data[...] = 0.1
    layers[-1].lora_B["default"].weight.data[0, 0] = np.nan
    return model


ONE = np.array([1])  # a prompt of one token


def params():
    return [randn(3, requires_grad=True)]


def a_layer() -> LoRALinear:
    return lora_layers(tiny_lora())["blocks.0.attn.q_proj"]


# ---- the API -------------------------------------------------------------------------------


def api(id, call, error, *words):
    return pytest.param(call, error, words, id=id)


# fmt: off
API_CASES = [
    # Tensor's constructor
    api("tensor-of-strings", lambda: tensor(["a", "b"]), TypeError, "['a', 'b']", "<U1"),
    api("tensor-of-strings-plus-number", lambda: tensor(["a", "b"]) + 1.0,
        TypeError, "['a', 'b']"),
    api("tensor-with-None", lambda: tensor([1, None]), TypeError, "[1, None]", "object"),
    api("tensor-of-complex", lambda: tensor(1 + 2j), TypeError, "(1+2j)", "complex"),
    api("tensor-ragged", lambda: tensor([[1, 2], [3]]),
        ValueError, "[[1, 2], [3]]", "rectangular"),
    api("tensor-string-dtype", lambda: tensor([1], dtype="U3"), TypeError, "dtype='U3'"),
    api("tensor-array-of-strings", lambda: tensor(np.array(["x"])), TypeError, "<U1"),
    api("tensor-unknown-device", lambda: tensor([1.0], device="tpu"),
        ValueError, "device='tpu'"),
    api("tensor-int-requires-grad", lambda: tensor([1], requires_grad=True),
        TypeError, "requires_grad", "int64"),
    # ops: shapes, axes and indices
    api("transpose-axis-5", lambda: randn(2, 3).transpose(0, 5),
        ValueError, "transpose", "axis2=5", "(2, 3)"),
    api("transpose-axis-minus-3", lambda: randn(2, 3).transpose(-3, 1),
        ValueError, "transpose", "axis1=-3", "(2, 3)"),
    api("permute-repeated-axis", lambda: randn(2, 3).permute(0, 0),
        ValueError, "permute", "(0, 0)", "(2, 3)"),
    api("permute-axis-3", lambda: randn(2, 3).permute(0, 3),
        ValueError, "permute", "(0, 3)", "(2, 3)"),
    api("permute-too-few-axes", lambda: randn(2, 3).permute(1),
        ValueError, "permute", "(1,)", "(2, 3)"),
    api("getitem-index-5", lambda: randn(3)[5], IndexError, "getitem", "5", "(3,)"),
    api("getitem-second-axis", lambda: randn(2, 3)[0, 7],
        IndexError, "getitem", "(0, 7)", "(2, 3)"),
    api("getitem-index-array", lambda: randn(2, 3)[tensor([0, 4])],
        IndexError, "getitem", "[0, 4]", "(2, 3)"),
    api("reshape-wrong-size", lambda: randn(2, 3).reshape(7),
        ValueError, "reshape", "(7,)", "(2, 3)"),
    api("reshape-non-integer", lambda: randn(2, 3).reshape("a"), ValueError, "reshape", "'a'"),
    api("add-shapes-do-not-broadcast", lambda: randn(2, 3) + randn(4),
        ValueError, "add", "(2, 3)", "(4,)"),
    api("matmul-inner-dims", lambda: randn(2, 3) @ randn(2, 3), ValueError, "matmul", "(2, 3)"),
    api("backward-non-scalar", lambda: (randn(2, requires_grad=True) * 2).backward(),
        RuntimeError, "non-scalar", "(2,)"),
    api("item-of-two", lambda: randn(2).item(), ValueError, "item()", "(2,)"),
    api("dropout-p-1.5", lambda: F.dropout(randn(2), 1.5), ValueError, "dropout", "p=1.5"),
    api("Dropout-p-nan", lambda: Dropout(NAN), ValueError, "Dropout", "p=nan"),
    # the model
    api("GPTConfig-d_model-not-divisible", lambda: GPTConfig(d_model=10, n_head=4),
        ValueError, "d_model=10", "n_head=4"),
    api("GPTConfig-n_layer-0", lambda: GPTConfig(n_layer=0), ValueError, "n_layer=0"),
    api("GPTConfig-dropout-1.5", lambda: GPTConfig(dropout=1.5), ValueError, "dropout=1.5"),
    api("GPT-1-D-ids", lambda: tiny_gpt()(np.array([1, 2])),
        ValueError, "(2,)", "(batch, time)"),
    api("GPT-id-outside-vocabulary", lambda: tiny_gpt()(np.array([[1, 11]])),
        IndexError, "embedding", "11"),
    api("GPT-float-ids", lambda: tiny_gpt()(np.array([[1.0, 2.0]])),
        TypeError, "embedding", "float64"),
    api("GPT-longer-than-block", lambda: tiny_gpt()(np.zeros((1, 9), dtype=np.int64)),
        ValueError, "9 tokens", "block_size=8"),
    api("generate-max_new_tokens-minus-5", lambda: tiny_gpt().generate(ONE, -5),
        ValueError, "max_new_tokens=-5"),
    api("generate-max_new_tokens-2.5", lambda: tiny_gpt().generate(ONE, 2.5),
        TypeError, "max_new_tokens=2.5"),
    api("generate-top_k-minus-5", lambda: tiny_gpt().generate(ONE, 2, top_k=-5),
        ValueError, "top_k=-5"),
    api("generate-temperature-minus-1", lambda: tiny_gpt().generate(ONE, 2, temperature=-1.0),
        ValueError, "temperature=-1.0"),
    api("generate-temperature-nan", lambda: tiny_gpt().generate(ONE, 2, temperature=NAN),
        ValueError, "temperature=nan"),
    api("generate-empty-prompt", lambda: tiny_gpt().generate(np.array([], dtype=np.int64), 2),
        ValueError, "(1, 0)", "at least one token"),
    # LoRA
    api("LoRAConfig-r-minus-1", lambda: LoRAConfig(r=-1), ValueError, "r=-1"),
    api("LoRAConfig-r-0", lambda: LoRAConfig(r=0), ValueError, "r=0"),
    api("LoRAConfig-r-True", lambda: LoRAConfig(r=True), ValueError, "r=True"),
    api("LoRAConfig-r-string", lambda: LoRAConfig(r="eight"), ValueError, "r='eight'"),
    api("LoRAConfig-alpha-inf", lambda: LoRAConfig(alpha=INF), ValueError, "alpha=inf", "finite"),
    api("LoRAConfig-alpha-nan", lambda: LoRAConfig(alpha=NAN), ValueError, "alpha=nan"),
    api("LoRAConfig-alpha-0", lambda: LoRAConfig(alpha=0), ValueError, "alpha=0", "> 0"),
    api("LoRAConfig-alpha-string", lambda: LoRAConfig(alpha="16"), ValueError, "alpha='16'"),
    api("LoRAConfig-dropout-nan", lambda: LoRAConfig(dropout=NAN), ValueError, "dropout=nan"),
    api("LoRAConfig-dropout-1", lambda: LoRAConfig(dropout=1.0), ValueError, "dropout=1.0"),
    api("LoRAConfig-init-xavier", lambda: LoRAConfig(init="xavier"), ValueError, "init='xavier'"),
    api("LoRAConfig-bias-some", lambda: LoRAConfig(bias="some"), ValueError, "bias='some'"),
    api("LoRAConfig-no-targets", lambda: LoRAConfig(target_modules=()),
        ValueError, "target_modules"),
    api("inject_lora-unknown-target",
        lambda: inject_lora(tiny_gpt(), LoRAConfig(target_modules=("nope",))),
        ValueError, "['nope']"),
    api("inject_lora-rank-too-large", lambda: inject_lora(tiny_gpt(), LoRAConfig(r=64)),
        ValueError, "r=64"),
    api("LoRALinear-of-LayerNorm", lambda: LoRALinear(LayerNorm(4)), TypeError, "LayerNorm"),
    api("delete_adapter-misspelt", lambda: delete_adapter(tiny_lora(), "defualt"),
        KeyError, "'defualt'", "['default']"),
    api("layer-delete_adapter-misspelt", lambda: a_layer().delete_adapter("x"),
        KeyError, "'x'", "['default']"),
    api("set_adapter-unknown", lambda: set_adapter(tiny_lora(), "nope"),
        KeyError, "'nope'", "['default']"),
    api("merge-NaN-in-last-layer", lambda: merge(damaged_lora()),
        FloatingPointError, "blocks.1.attn.v_proj", "nothing was changed"),
    api("merge_and_unload-NaN", lambda: merge_and_unload(damaged_lora()),
        FloatingPointError, "blocks.1.attn.v_proj"),
    api("mark_only_lora-bias-x", lambda: mark_only_lora_as_trainable(tiny_lora(), "x"),
        ValueError, "bias='x'"),
    # optimizers
    api("AdamW-lr-negative", lambda: AdamW(params(), lr=-0.1), ValueError, "AdamW", "lr=-0.1"),
    api("AdamW-lr-nan", lambda: AdamW(params(), lr=NAN), ValueError, "lr=nan"),
    api("AdamW-lr-string", lambda: AdamW(params(), lr="0.1"), ValueError, "lr='0.1'"),
    api("AdamW-beta2-1", lambda: AdamW(params(), betas=(0.9, 1.0)),
        ValueError, "betas[1]=1.0", "[0, 1)"),
    api("AdamW-beta1-negative", lambda: AdamW(params(), betas=(-0.1, 0.9)),
        ValueError, "betas[0]=-0.1"),
    api("AdamW-betas-not-a-pair", lambda: AdamW(params(), betas=0.9),
        ValueError, "betas=0.9", "pair"),
    api("AdamW-eps-0", lambda: AdamW(params(), eps=0.0), ValueError, "eps=0.0", "> 0"),
    api("AdamW-eps-negative", lambda: AdamW(params(), eps=-1e-8), ValueError, "eps=-1e-08"),
    api("AdamW-weight_decay-negative", lambda: AdamW(params(), weight_decay=-0.1),
        ValueError, "weight_decay=-0.1"),
    api("AdamW-second-group-lr",
        lambda: AdamW([{"params": params()}, {"params": params(), "lr": -1}]),
        ValueError, "param group 1", "lr=-1"),
    api("AdamW-set_lr-nan", lambda: AdamW(params()).set_lr(NAN), ValueError, "set_lr", "lr=nan"),
    api("AdamW-nothing-trainable", lambda: AdamW([randn(2)]), ValueError, "no parameter"),
    api("SGD-lr-negative", lambda: SGD(params(), lr=-1), ValueError, "SGD", "lr=-1"),
    api("SGD-momentum-1.5", lambda: SGD(params(), momentum=1.5), ValueError, "momentum=1.5"),
    api("SGD-weight_decay-inf", lambda: SGD(params(), weight_decay=INF),
        ValueError, "weight_decay=inf"),
    # device
    api("check_device-tpu", lambda: backend.check_device("tpu"), ValueError, "device='tpu'"),
]
# fmt: on


@pytest.mark.parametrize(("call", "error", "words"), API_CASES)
def test_api_refuses_bad_input_by_name(call, error, words):
    with pytest.raises(error) as info:
        call()
    message = info.value.args[0] if error is KeyError else str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def work_cases():
    """API cases of minilora.work (imported here, not at the top: they load the training stack)."""
    from minilora.work.data import CharTokenizer
    from minilora.work.io import CheckpointError, load_model
    from minilora.work.pretrained import load_pretrained
    from minilora.work.tasks import make_task
    from minilora.work.train import TrainConfig

    return {
        "encode-character-outside-vocabulary": (
            lambda: CharTokenizer("Caf ").encode("Café"),
            ValueError,
            ("'é'", "position 3"),
        ),
        "make_task-unknown": (lambda: make_task("foo", 1, 1, 1), ValueError, ("'foo'", "sql")),
        "make_task-negative-size": (
            lambda: make_task("sql", -1, 1, 1),
            ValueError,
            ("n_train", "-1"),
        ),
        "TrainConfig-steps-0": (lambda: TrainConfig(steps=0), ValueError, ("steps=0",)),
        "TrainConfig-lr-0": (lambda: TrainConfig(lr=0), ValueError, ("lr=0",)),
        "load_pretrained-unknown": (
            lambda: load_pretrained("char-big"),
            ValueError,
            ("'char-big'", "char-small"),
        ),
        "load_model-missing": (
            lambda: load_model("/nowhere/at/all"),
            CheckpointError,
            ("/nowhere/at/all",),
        ),
    }


@pytest.mark.parametrize("name", list(work_cases()))
def test_work_api_refuses_bad_input_by_name(name):
    call, error, words = work_cases()[name]
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


def test_default_device_from_environment_is_checked(monkeypatch):
    monkeypatch.setenv("MINILORA_DEVICE", "tpu")
    with pytest.raises(ValueError, match="MINILORA_DEVICE='tpu'"):
        backend.default_device()


# ---- behaviour that is documented rather than refused ----------------------------------------


def test_permute_of_a_1d_tensor_with_one_axis_is_legal():
    t = tensor([1.0, 2.0, 3.0])
    for result in (t.permute(0), t.permute((0,)), t.permute(-1)):
        np.testing.assert_array_equal(result.numpy(), [1.0, 2.0, 3.0])


def test_lr_zero_is_allowed_as_the_end_of_a_decay_schedule():
    p = randn(2, requires_grad=True)
    before = p.numpy().copy()
    opt = AdamW([p], lr=0.0)
    p.grad = np.ones(2, dtype=np.float32)
    opt.step()
    np.testing.assert_array_equal(p.numpy(), before)


def test_merge_refused_changes_no_layer():
    model = damaged_lora()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    for fn in (merge, merge_and_unload):
        with pytest.raises(FloatingPointError):
            fn(model)
        assert not any(layer.merged for layer in lora_layers(model).values())
        assert len(lora_layers(model)) == 4  # merge_and_unload unloaded nothing either
        for key, value in model.state_dict().items():
            np.testing.assert_array_equal(value, before[key], err_msg=key)


# ---- the command line ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Files to point the command at: a plain file, damaged and foreign checkpoints/adapters."""
    from safetensors.numpy import load_file, save_file

    from minilora.interop.adapters import ADAPTER_WEIGHTS, save_adapter
    from minilora.work.io import save_model
    from minilora.work.pretrained import load_pretrained

    root = tmp_path_factory.mktemp("bad")
    (root / "file.txt").write_text("not a directory\n")
    base, tokenizer, _ = load_pretrained("char-small")

    # an adapter for another base model (a tiny GPT with char-small's vocabulary)
    other = tiny_gpt(tokenizer.vocab_size)
    inject_lora(other, LoRAConfig(r=2, alpha=4), generator=np.random.default_rng(1))
    save_adapter(other, root / "adapter-other-base")
    save_model(tiny_gpt(tokenizer.vocab_size), root / "ckpt-tiny", tokenizer)

    # an adapter for char-small, then a copy with one NaN in B, and one cut short
    inject_lora(base, LoRAConfig(r=2, alpha=4), generator=np.random.default_rng(1))
    save_adapter(base, root / "adapter")
    shutil.copytree(root / "adapter", root / "adapter-nan")
    arrays = load_file(root / "adapter-nan" / ADAPTER_WEIGHTS)
    last = sorted(k for k in arrays if k.endswith("lora_B.weight"))[-1]
    arrays[last][0, 0] = np.nan
    save_file(arrays, root / "adapter-nan" / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    shutil.copytree(root / "adapter", root / "adapter-cut")
    weights = root / "adapter-cut" / ADAPTER_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])

    (root / "ckpt-damaged").mkdir()
    (root / "ckpt-damaged" / "config.json").write_text("{not json")
    (root / "ckpt-foreign").mkdir()
    (root / "ckpt-foreign" / "config.json").write_text(json.dumps({"format": "other"}))
    (root / "nb-damaged.ipynb").write_text("not a notebook")
    (root / "a-dir").mkdir()
    return root


def unwritable(root: Path) -> Path:
    """A place this process cannot make anything in (root ignores permission bits)."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        locked = root / "locked"
        locked.mkdir(exist_ok=True)
        locked.chmod(0o555)
        return locked / "out"
    if not Path("/proc").is_dir():
        pytest.skip("no unwritable place to test with")
    return Path("/proc/minilora-cannot-write-here")


def command(id, argv, status, *words, env=None):
    """``argv`` may hold "{root}" (the files fixture), "{file}" and "{unwritable}"."""
    return pytest.param(argv, status, words, env or {}, id=id)


FT = ["finetune", "--out", "{root}/ft", "--steps", "1", "--quiet"]
PT = ["pretrain", "--out", "{root}/pt", "--steps", "1", "--quiet"]
GEN = ["generate", "--length", "2"]
MERGE = ["merge", "--out", "{root}/merged"]
NO_CUPY = "CuPy" if not backend.cuda_available() else None

# fmt: off
CLI_CASES = [
    command("no-command", [], 2, "minilora:", "COMMAND"),
    command("unknown-command", ["frob"], 2, "'frob'"),
    command("unknown-option", ["generate", "--frob"], 2, "--frob"),
    # generate
    command("generate-length-negative", [*GEN, "--length", "-1"], 2, "--length", "'-1'", ">= 0"),
    command("generate-length-not-a-number", [*GEN, "--length", "abc"], 2, "--length", "'abc'"),
    command("generate-temperature-negative", [*GEN, "--temperature", "-0.5"],
            2, "--temperature", "'-0.5'"),
    command("generate-temperature-nan", [*GEN, "--temperature", "nan"],
            2, "--temperature", "'nan'"),
    command("generate-top-k-0", [*GEN, "--top-k", "0"], 2, "--top-k", "'0'", ">= 1"),
    command("generate-empty-prompt", [*GEN, "--prompt", ""], 2, "--prompt", "''"),
    command("generate-prompt-outside-vocabulary", [*GEN, "--prompt", "Café"],
            2, "--prompt", "'Café'", "'é'"),
    command("generate-seed-negative", [*GEN, "--seed", "-1"], 2, "--seed", "'-1'"),
    command("generate-model-missing", [*GEN, "--model", "{root}/nowhere"],
            1, "--model", "nowhere"),
    command("generate-model-is-a-file", [*GEN, "--model", "{file}"], 1, "--model", "file.txt"),
    command("generate-model-damaged", [*GEN, "--model", "{root}/ckpt-damaged"],
            1, "--model", "ckpt-damaged", "JSON"),
    command("generate-model-not-minilora", [*GEN, "--model", "{root}/ckpt-foreign"],
            1, "--model", "ckpt-foreign", "'other'"),
    command("generate-adapter-missing", [*GEN, "--adapter", "{root}/nowhere"],
            1, "--adapter", "nowhere"),
    command("generate-adapter-cut-short", [*GEN, "--adapter", "{root}/adapter-cut"],
            1, "--adapter", "adapter-cut"),
    command("generate-adapter-for-another-base", [*GEN, "--adapter", "{root}/adapter-other-base"],
            1, "--adapter", "adapter-other-base", "does not fit"),
    command("generate-device-tpu", [*GEN, "--device", "tpu"], 2, "--device", "'tpu'"),
    command("generate-env-device-tpu", GEN, 1, "MINILORA_DEVICE", "'tpu'",
            env={"MINILORA_DEVICE": "tpu"}),
    command("generate-env-device-cuda", GEN, 1, "MINILORA_DEVICE=cuda", NO_CUPY,
            env={"MINILORA_DEVICE": "cuda"}),
    command("generate-device-cuda", [*GEN, "--device", "cuda"], 1, "--device cuda", NO_CUPY),
    # finetune
    command("finetune-steps-0", [*FT, "--steps", "0"], 2, "--steps", "'0'", ">= 1"),
    command("finetune-steps-negative", [*FT, "--steps", "-3"], 2, "--steps", "'-3'"),
    command("finetune-rank-negative", [*FT, "--r", "-2"], 2, "--r", "'-2'", ">= 1"),
    command("finetune-rank-0", [*FT, "--r", "0"], 2, "--r", "'0'"),
    command("finetune-rank-not-a-number", [*FT, "--r", "eight"], 2, "--r", "'eight'"),
    command("finetune-alpha-0", [*FT, "--alpha", "0"], 2, "--alpha", "'0'", "(0, inf)"),
    command("finetune-alpha-negative", [*FT, "--alpha", "-16"], 2, "--alpha", "'-16'"),
    command("finetune-alpha-inf", [*FT, "--alpha", "inf"], 2, "--alpha", "'inf'", "finite"),
    command("finetune-alpha-nan", [*FT, "--alpha", "nan"], 2, "--alpha", "'nan'"),
    command("finetune-dropout-1", [*FT, "--dropout", "1"], 2, "--dropout", "'1'", "[0, 1)"),
    command("finetune-dropout-negative", [*FT, "--dropout", "-0.1"], 2, "--dropout", "'-0.1'"),
    command("finetune-lr-0", [*FT, "--lr", "0"], 2, "--lr", "'0'"),
    command("finetune-lr-nan", [*FT, "--lr", "nan"], 2, "--lr", "'nan'"),
    command("finetune-batch-size-0", [*FT, "--batch-size", "0"], 2, "--batch-size", "'0'"),
    command("finetune-eval-negative", [*FT, "--eval", "-1"], 2, "--eval", "'-1'"),
    command("finetune-unknown-task", [*FT, "--task", "foo"], 2, "--task", "'foo'", "'sql'"),
    command("finetune-no-targets", [*FT, "--targets", ","], 2, "--targets", "','"),
    command("finetune-unknown-target", [*FT, "--targets", "nope", "--eval", "0"],
            1, "--targets nope", "match no Linear"),
    command("finetune-rank-larger-than-layer", [*FT, "--r", "500", "--eval", "0"],
            1, "--r 500", "r=500"),
    command("finetune-out-missing", ["finetune", "--steps", "1"], 2, "--out", "required"),
    command("finetune-out-is-a-file", [*FT, "--out", "{file}"],
            2, "--out", "file.txt", "existing file"),
    command("finetune-out-under-a-file", [*FT, "--out", "{file}/sub"],
            2, "--out", "file.txt/sub"),
    command("finetune-out-unwritable", [*FT, "--out", "{unwritable}"],
            1, "--out", "{unwritable}", "cannot write"),
    command("finetune-model-missing", [*FT, "--model", "{root}/nowhere"],
            1, "--model", "nowhere"),
    # pretrain
    command("pretrain-steps-0", [*PT, "--steps", "0"], 2, "--steps", "'0'"),
    command("pretrain-d-model-not-multiple", [*PT, "--d-model", "10", "--n-head", "4"],
            2, "--d-model 10", "--n-head 4"),
    command("pretrain-n-head-0", [*PT, "--n-head", "0"], 2, "--n-head", "'0'"),
    command("pretrain-block-size-0", [*PT, "--block-size", "0"], 2, "--block-size", "'0'"),
    command("pretrain-eval-every-negative", [*PT, "--eval-every", "-1"],
            2, "--eval-every", "'-1'"),
    command("pretrain-lr-negative", [*PT, "--lr", "-0.001"], 2, "--lr", "'-0.001'"),
    command("pretrain-out-is-a-file", [*PT, "--out", "{file}"], 2, "--out", "file.txt"),
    command("pretrain-out-unwritable", [*PT, "--out", "{unwritable}"],
            1, "--out", "cannot write"),
    # merge
    command("merge-adapter-required", ["merge", "--out", "{root}/m"], 2, "--adapter", "required"),
    command("merge-adapter-missing", [*MERGE, "--adapter", "{root}/nowhere"],
            1, "--adapter", "nowhere"),
    command("merge-adapter-for-another-base", [*MERGE, "--adapter", "{root}/adapter-other-base"],
            1, "--adapter", "adapter-other-base"),
    command("merge-adapter-with-NaN", [*MERGE, "--adapter", "{root}/adapter-nan"],
            1, "--adapter", "adapter-nan"),
    command("merge-out-is-a-file", [*MERGE, "--adapter", "{root}/adapter", "--out", "{file}"],
            2, "--out", "file.txt"),
    command("merge-model-missing",
            [*MERGE, "--adapter", "{root}/adapter", "--model", "{root}/nowhere"],
            1, "--model", "nowhere"),
    # demo
    command("demo-steps-0", ["demo", "--steps", "0"], 2, "--steps", "'0'"),
    command("demo-eval-0", ["demo", "--eval", "0"], 2, "--eval", "'0'"),
    command("demo-alpha-0", ["demo", "--alpha", "0"], 2, "--alpha", "'0'"),
    command("demo-out-is-a-file", ["demo", "--out", "{file}"], 2, "--out", "file.txt"),
    # export-hf and import-hf
    command("export-hf-model-missing", ["export-hf", "{root}/nowhere", "{root}/hf"],
            1, "MODEL", "nowhere"),
    command("export-hf-out-is-a-file", ["export-hf", "char-small", "{file}"],
            2, "OUT", "file.txt"),
    command("export-hf-adapter-for-another-base",
            ["export-hf", "char-small", "{root}/hf2", "--adapter", "{root}/adapter-other-base"],
            1, "--adapter", "adapter-other-base"),
    command("import-hf-dir-missing", ["import-hf", "{root}/nowhere", "{root}/back"],
            1, "DIR", "nowhere"),
    command("import-hf-out-is-a-file", ["import-hf", "{root}/a-dir", "{file}"],
            2, "OUT", "file.txt"),
    command("import-hf-adapter-missing",
            ["import-hf", "{root}/a-dir", "{root}/back", "--adapter", "{root}/nowhere"],
            1, "--adapter", "nowhere"),
    # the paper's and the course's commands
    command("reproduce-unknown-name", ["reproduce", "table9"], 2, "NAME", "'table9'", "counts"),
    command("reproduce-unknown-budget", ["reproduce", "counts", "--budget", "huge"],
            2, "--budget", "'huge'", "quick"),
    command("reproduce-out-is-a-file", ["reproduce", "counts", "--out", "{file}"],
            2, "--out", "file.txt"),
    command("exercises-no-subcommand", ["exercises"], 2, "minilora exercises:", "required"),
    command("exercises-strip-missing-notebook",
            ["exercises", "strip", "{root}/no.ipynb", "{root}/s.ipynb"],
            1, "NOTEBOOK", "no.ipynb"),
    command("exercises-strip-damaged-notebook",
            ["exercises", "strip", "{root}/nb-damaged.ipynb", "{root}/s.ipynb"],
            1, "NOTEBOOK", "nb-damaged.ipynb"),
    command("exercises-strip-out-is-a-dir",
            ["exercises", "strip", "{root}/nb-damaged.ipynb", "{root}/a-dir"],
            2, "OUT", "a-dir", "directory"),
    command("exercises-golden-out-is-a-file", ["exercises", "golden", "{file}"],
            2, "OUT_DIR", "file.txt"),
    command("exercises-execute-timeout-0", ["exercises", "execute", "x.ipynb", "--timeout", "0"],
            2, "--timeout", "'0'"),
]
# fmt: on


def run_cli(argv, capsys, monkeypatch, env=None):
    """(exit status, stdout, stderr) of ``minilora ARGV`` run in this process."""
    monkeypatch.delenv("MINILORA_DEBUG", raising=False)
    monkeypatch.delenv("MINILORA_DEVICE", raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    try:
        status = cli.main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    out, err = capsys.readouterr()
    return status, out, err


def fill(text: str, files: Path) -> str:
    if "{unwritable}" in text:
        text = text.replace("{unwritable}", str(unwritable(files)))
    return text.replace("{root}", str(files)).replace("{file}", str(files / "file.txt"))


@pytest.mark.parametrize(("argv", "status", "words", "env"), CLI_CASES)
def test_cli_reports_bad_input_in_one_line(argv, status, words, env, files, capsys, monkeypatch):
    if "cuda" in env.get("MINILORA_DEVICE", "") + " ".join(argv) and NO_CUPY is None:
        pytest.skip("CuPy and a GPU are here: device 'cuda' is not an error")
    got, _, err = run_cli([fill(a, files) for a in argv], capsys, monkeypatch, env)
    lines = err.strip().splitlines()
    assert got == status, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("minilora"), err
    for word in words:
        assert fill(word, files) in lines[0], f"{word!r} not in {lines[0]!r}"


def test_cli_task_names_are_the_tasks():
    from minilora.work.tasks import TASKS

    assert cli.TASKS == TASKS


# ---- before any work, --debug, and what is not an expected error ---------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["finetune", "--out", "{file}", "--steps", "1"],
        ["pretrain", "--out", "{unwritable}", "--steps", "1"],
        ["merge", "--adapter", "{root}/adapter", "--out", "{file}"],
    ],
    ids=["finetune-out-is-a-file", "pretrain-out-unwritable", "merge-out-is-a-file"],
)
def test_output_places_are_checked_before_any_work(argv, files, capsys, monkeypatch):
    def must_not_run(args, command):
        raise AssertionError("the command started although its output place is bad")

    monkeypatch.setitem(cli.COMMANDS, argv[0], must_not_run)
    status, out, err = run_cli([fill(a, files) for a in argv], capsys, monkeypatch)
    assert status in (1, 2) and "--out" in err and "started" not in err
    assert not out


def test_finetune_alpha_defaults_to_2r_and_an_explicit_alpha_is_kept(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setitem(cli.COMMANDS, "finetune", lambda args, command: seen.append(args.alpha))
    out = str(tmp_path / "adapter")
    cli.main(["finetune", "--out", out, "--r", "4"])
    cli.main(["finetune", "--out", out, "--r", "4", "--alpha", "0.5"])
    assert seen == [None, 0.5]  # None becomes 2r in the handler; 0.5 is not replaced


@pytest.mark.parametrize("how", ["flag-before", "flag-after", "environment"])
def test_debug_shows_the_original_exception(how, capsys, monkeypatch):
    argv = ["generate", "--prompt", "Café", "--length", "1"]
    if how == "flag-before":
        argv = ["--debug", *argv]
    elif how == "flag-after":
        argv = [*argv, "--debug"]
    else:
        monkeypatch.setenv("MINILORA_DEBUG", "1")
    with pytest.raises(Exception) as info:
        cli.main(argv)
    assert not isinstance(info.value, SystemExit)
    assert "'é'" in str(info.value)


def test_a_bug_is_one_line_marked_internal_and_debug_gives_its_traceback(capsys, monkeypatch):
    def buggy(args, command):
        return None + 1

    monkeypatch.setitem(cli.COMMANDS, "generate", buggy)
    status, _, err = run_cli(["generate"], capsys, monkeypatch)
    assert status == 1 and len(err.strip().splitlines()) == 1
    assert "internal error" in err and "TypeError" in err and "--debug" in err
    with pytest.raises(TypeError):
        cli.main(["--debug", "generate"])


def test_the_real_command_exits_2_with_one_line_and_debug_prints_the_traceback():
    env = {k: v for k, v in os.environ.items() if k not in ("MINILORA_DEBUG", "MINILORA_DEVICE")}

    def minilora(*args):
        argv = [sys.executable, "-m", "minilora.cli", *args]
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    plain = minilora("generate", "--prompt", "Café", "--length", "1")
    assert plain.returncode == 2, plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1, plain.stderr
    assert plain.stderr.startswith("minilora generate: --prompt 'Café'")
    debug = minilora("--debug", "generate", "--prompt", "Café", "--length", "1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "'é'" in debug.stderr
