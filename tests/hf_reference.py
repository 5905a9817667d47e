"""Shared by test_hf.py and test_hf_adapters.py: small random GPTs and GPT-2's forward pass
written once more in NumPy from GPT-2's own layout (Conv1D: y = x @ W + b, c_attn = [q | k | v]),
so that an export is checked against GPT-2's arithmetic even where torch is absent.
"""

from __future__ import annotations

import json
import math

import numpy as np
from safetensors.numpy import save_file

from minilora.interop import hf
from minilora.interop.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from minilora.lora import LoRAConfig, inject_lora, lora_layers
from minilora.tensor import no_grad
from minilora.transformer import GPT, GPTConfig
from minilora.work import io

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
