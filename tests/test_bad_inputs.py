"""Bad inputs at the API: each case names the call, the exception and the words of its message.

Each case names the call, the exception it must raise and the words its message must hold:
the argument (or op) and the bad value, so that the message says what went wrong where.
The command line's cases are in tests/test_bad_inputs_cli.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from minilora import backend
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
