"""The methods LoRA is compared with (Hu et al. 2021, arXiv 2106.09685, section 5.1).

``apply_method(model, name, settings, generator)`` turns a pretrained GPT into
one of them: it freezes everything, then makes trainable exactly what the
method's definition names (adding the modules it needs), and returns the model
to train (the GPT itself, or a wrapper around it for the prefix methods).
``trainable_count(name, config, settings)`` gives the same number from the
configuration alone, by the paper's formulas (``minilora.paper.counting``).

    FT        every weight trains
    FT-Top2   only the last two blocks train
    BitFit    only the biases train (Ben Zaken et al. 2021)
    PreEmbed  trainable prefix and infix token embeddings (Li & Liang 2021)
    PreLayer  trainable activations at those positions after every block
    AdapterH  two bottleneck adapters per block (Houlsby et al. 2019)
    AdapterL  one adapter, with a LayerNorm, after each block's MLP (Lin et al. 2020)
    LoRA      dW = B A on chosen attention projections (section 4; ``minilora.lora``);
              with ``b_lr_ratio``, LoRA+ (B trains at that multiple of A's rate)

and, for the paper's Appendix E, LoRA combined with a prefix method: ``lora+preembed`` and
``lora+prelayer`` (LoRA's r, alpha and targets, and the prefix's l_p and l_i).
"""

from __future__ import annotations

import numpy as np

from minilora import ops
from minilora.creation import default_generator
from minilora.lora import LoRAConfig, inject_lora
from minilora.nn import LayerNorm, Linear, Module
from minilora.paper.counting import (
    TransformerShape,
    adapter_params,
    ft_top2_params,
    lora_params,
    preembed_params,
    prelayer_params,
)
from minilora.paper.prefix import PrefixTuned, block_inputs  # noqa: F401 (importable from here)
from minilora.tensor import Tensor

METHODS = ("ft", "ft-top2", "bitfit", "preembed", "prelayer", "adapterh", "adapterl", "lora")
COMBINED = ("lora+preembed", "lora+prelayer")  # Appendix E: not Table 4's rows
LABELS = {
    "ft": "FT", "ft-top2": "FT-Top2", "bitfit": "BitFit", "preembed": "PreEmbed",
    "prelayer": "PreLayer", "adapterh": "AdapterH", "adapterl": "AdapterL", "lora": "LoRA",
    "lora+preembed": "LoRA+PreEmbed", "lora+prelayer": "LoRA+PreLayer",
}  # fmt: skip
# the settings each method takes, with their defaults
DEFAULTS = {
    "ft": {}, "ft-top2": {}, "bitfit": {},
    "preembed": {"l_p": 8, "l_i": 8}, "prelayer": {"l_p": 8, "l_i": 8},
    "adapterh": {"r": 4}, "adapterl": {"r": 4},
    "lora": {"r": 8, "alpha": None, "targets": ("q", "v")},  # alpha None: 2 r
}  # fmt: skip
# LoRA+ (Hayou et al. 2024): B's rate this multiple of A's; a training setting, not a layer
# one (None: one rate, the paper). Runs without it keep their keys (only given settings count).
DEFAULTS["lora"]["b_lr_ratio"] = None
for _name in COMBINED:
    DEFAULTS[_name] = {**DEFAULTS["lora"], **DEFAULTS[_name.split("+")[1]]}
PROJ = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
# The MLP's two Linears (d -> 4d, 4d -> d): LoRA on every Linear of a block adds them to
# Wq, Wk, Wv, Wo (Biderman et al. 2024; Schulman et al. 2025), not a setting of the paper.
MLP_PROJ = {"fc1": "fc_in", "fc2": "fc_out"}
ALL_LINEAR = ("q", "k", "v", "o", "fc1", "fc2")


def check_method(name: str, settings: dict | None = None) -> dict:
    """The method's full settings (defaults filled in), or a ValueError naming what is wrong."""
    if name not in DEFAULTS:
        valid = ", ".join((*METHODS, *COMBINED))
        raise ValueError(f"unknown method {name!r}; valid methods: {valid}")
    settings = dict(settings or {})
    unknown = set(settings) - set(DEFAULTS[name])
    if unknown:
        raise ValueError(
            f"method {name!r} takes no setting {sorted(unknown)}; its settings: "
            f"{sorted(DEFAULTS[name]) or 'none'}"
        )
    return {**DEFAULTS[name], **settings}


def _check_fits(name: str, s: dict, config) -> None:
    """Ranks and prefix lengths must fit the model: a ValueError names the limit."""
    d = config.d_model
    if "r" in s and not (isinstance(s["r"], (int, np.integer)) and 1 <= s["r"] <= d):
        raise ValueError(f"{name}: rank r={s['r']!r} must be an integer in [1, d_model={d}]")
    if "targets" in s:
        bad = [t for t in s["targets"] if t not in {**PROJ, **MLP_PROJ}]
        if bad or not s["targets"]:
            raise ValueError(
                f"lora: targets {list(s['targets'])} must be some of {[*PROJ, *MLP_PROJ]}"
            )
    if "l_p" in s:
        l_p, l_i, limit = s["l_p"], s["l_i"], config.block_size
        if min(l_p, l_i) < 0 or l_p + l_i < 1 or l_p + l_i > limit:
            raise ValueError(
                f"{name}: l_p={l_p}, l_i={l_i}: each must be >= 0, and l_p + l_i between 1 and "
                f"the model's block_size={limit}"
            )


def trainable_count(name: str, config, settings: dict | None = None) -> int:
    """The number of trainable parameters of method ``name`` on a GPT of ``config``.

    From the configuration alone, by the paper's formulas (section 5.1):
    FT counts every parameter of the GPT; FT-Top2 2 x (12 d^2 + 13 d); BitFit
    the biases (per block 4d attention + 5d MLP + 2d LayerNorm, plus d for the
    final LayerNorm); PreEmbed d (l_p + l_i); PreLayer L d (l_p + l_i);
    AdapterH 2L (2 d r + r + d); AdapterL L (2 d r + r + d) + 2 L d;
    LoRA 2 x L_hat x d x r (and r (d + 4d) per adapted MLP Linear, a target beyond the paper's).
    """
    s = check_method(name, settings)
    _check_fits(name, s, config)
    shape = TransformerShape(config.n_layer, config.d_model)
    L, d = config.n_layer, config.d_model
    if name in ("ft", "ft-top2", "bitfit") and not config.bias:
        if name == "bitfit":
            raise ValueError("bitfit: the model has no biases (GPTConfig.bias is False)")
        per_block = 12 * d * d + 2 * d  # weights and the two LayerNorms' scales
        if name == "ft-top2":
            return 2 * per_block
        return (config.vocab_size + config.block_size) * d + L * per_block + d
    if name == "ft":  # token and position tables, the blocks, the final LayerNorm
        return (config.vocab_size + config.block_size) * d + L * (12 * d * d + 13 * d) + 2 * d
    if name == "ft-top2":
        return ft_top2_params(shape)
    if name == "bitfit":
        return L * 11 * d + d
    if name == "preembed":
        return preembed_params(shape, s["l_p"], s["l_i"])
    if name == "prelayer":
        return prelayer_params(shape, s["l_p"], s["l_i"])
    if name == "adapterh":
        return adapter_params(shape, s["r"], n_adapters=2 * L)
    if name == "adapterl":
        return adapter_params(shape, s["r"], n_adapters=L, n_layernorms=L)
    if name in COMBINED:  # Appendix E: the two counts add up
        prefix = {k: s[k] for k in ("l_p", "l_i")}
        lora = {k: s[k] for k in ("r", "alpha", "targets")}
        return trainable_count("lora", config, lora) + trainable_count(
            name.split("+")[1], config, prefix
        )
    attention = tuple(t for t in s["targets"] if t in PROJ)
    mlp = L * 5 * d * s["r"] * sum(t in MLP_PROJ for t in s["targets"])  # B (.. x r), A (r x ..)
    return (lora_params(shape, s["r"], attention) if attention else 0) + mlp


def apply_method(model, name: str, settings: dict | None = None, generator=None) -> Module:
    """Make ``model`` (a pretrained GPT) train as method ``name``; returns the model to train.

    Everything is frozen first; then exactly the parameters the method's
    definition names are made trainable (new modules are created with
    ``generator``, e.g. ``np.random.default_rng(seed)``).
    """
    s = check_method(name, settings)
    _check_fits(name, s, model.config)
    rng = generator if generator is not None else default_generator()
    model.requires_grad_(False)
    if name == "ft":  # FT: the whole model
        model.requires_grad_(True)
    elif name == "ft-top2":  # FT-Top2: the last two blocks, nothing else
        for block in list(model.blocks)[-2:]:
            block.requires_grad_(True)
    elif name == "bitfit":  # BitFit: every bias, LayerNorms' included
        for pname, p in model.named_parameters():
            p.requires_grad_(pname.endswith("bias"))
    elif name in ("preembed", "prelayer"):
        return PrefixTuned(model, s["l_p"], s["l_i"], every_layer=name == "prelayer", rng=rng)
    elif name == "adapterh":
        add_adapters_houlsby(model, s["r"], rng)
    elif name == "adapterl":
        add_adapters_lin(model, s["r"], rng)
    elif name in COMBINED:  # Appendix E: LoRA inside, the prefix's vectors around it
        lora = {k: s[k] for k in ("r", "alpha", "targets")}
        prefixed = apply_method(model, "lora", lora, rng)
        wrapped = PrefixTuned(prefixed, s["l_p"], s["l_i"], name == "lora+prelayer", rng=rng)
        for pname, p in wrapped.named_parameters():  # PrefixTuned froze the GPT, LoRA too
            p.requires_grad_(p.requires_grad or ".lora_" in pname)
        return wrapped
    else:
        alpha = s["alpha"] if s["alpha"] is not None else 2.0 * s["r"]
        targets = tuple({**PROJ, **MLP_PROJ}[t] for t in s["targets"])
        inject_lora(model, LoRAConfig(r=s["r"], alpha=alpha, target_modules=targets), generator=rng)
    return model


# --------------------------------------------------------------------------- adapters


class Adapter(Module):
    """h + up(relu(down(norm(h)))): a bottleneck d -> r -> d around its own residual.

    ``up`` starts at zero (weight and bias), so a new adapter is the identity
    and the adapted model computes exactly what the base model computes.
    ``norm`` is a trainable LayerNorm (Lin et al.) or absent (Houlsby et al.).
    """

    def __init__(self, d: int, r: int, layer_norm: bool = False, rng=None):
        self.norm = LayerNorm(d) if layer_norm else None
        self.down = Linear(d, r, generator=rng)  # PyTorch's U(-1/sqrt(d), 1/sqrt(d))
        self.up = Linear(r, d, generator=rng)
        self.up.weight.data[...] = 0.0
        self.up.bias.data[...] = 0.0

    def forward(self, h: Tensor) -> Tensor:
        z = self.norm(h) if self.norm is not None else h
        return h + self.up(ops.relu(self.down(z)))


class AdaptedAttention(Module):
    """The block's attention, then an adapter (on its output, before the residual add)."""

    def __init__(self, base_layer, adapter: Adapter):
        self.base_layer, self.adapter = base_layer, adapter

    def forward(self, x, cache=None, key_padding=None):
        return self.adapter(self.base_layer(x, cache, key_padding))


class AdaptedMLP(Module):
    """The block's MLP, then an adapter (on its output, before the residual add)."""

    def __init__(self, base_layer, adapter: Adapter):
        self.base_layer, self.adapter = base_layer, adapter

    def forward(self, x):
        return self.adapter(self.base_layer(x))


class AdaptedBlock(Module):
    """A whole block, then an adapter with a LayerNorm on the block's output."""

    def __init__(self, base_layer, adapter: Adapter):
        self.base_layer, self.adapter = base_layer, adapter

    def forward(self, x, cache=None, key_padding=None):
        return self.adapter(self.base_layer(x, cache, key_padding))


def _to_device(module: Module, model) -> Module:
    return module.to(model.wte.weight.device)


def add_adapters_houlsby(model, r: int, rng=None) -> None:
    """AdapterH (Houlsby et al. 2019): an adapter after the attention and after the MLP
    of every block; only the adapters train (L_adpt = 2L, L_LN = 0 in the paper's count)."""
    d = model.config.d_model
    for block in model.blocks:
        block.attn = AdaptedAttention(block.attn, _to_device(Adapter(d, r, rng=rng), model))
        block.mlp = AdaptedMLP(block.mlp, _to_device(Adapter(d, r, rng=rng), model))


def add_adapters_lin(model, r: int, rng=None) -> None:
    """AdapterL (Lin et al. 2020): one adapter with its own trainable LayerNorm after each
    block (that is, after its MLP); L_adpt = L_LN = L in the paper's count."""
    d = model.config.d_model
    for i in range(len(model.blocks)):
        adapter = _to_device(Adapter(d, r, layer_norm=True, rng=rng), model)
        model.set_submodule(f"blocks.{i}", AdaptedBlock(model.blocks[i], adapter))


__all__ = [
    "DEFAULTS",
    "LABELS",
    "METHODS",
    "COMBINED",
    "Adapter",
    "PrefixTuned",
    "apply_method",
    "check_method",
    "trainable_count",
]
