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
    LoRA      dW = B A on chosen attention projections (section 4; ``minilora.lora``)
"""

from __future__ import annotations

import numpy as np

from minilora import backend, ops
from minilora.creation import default_generator
from minilora.lora import LoRAConfig, inject_lora
from minilora.nn import LayerNorm, Linear, Module, Parameter
from minilora.paper.counting import (
    TransformerShape,
    adapter_params,
    ft_top2_params,
    lora_params,
    preembed_params,
    prelayer_params,
)
from minilora.tensor import Tensor, no_grad

METHODS = ("ft", "ft-top2", "bitfit", "preembed", "prelayer", "adapterh", "adapterl", "lora")
LABELS = {
    "ft": "FT", "ft-top2": "FT-Top2", "bitfit": "BitFit", "preembed": "PreEmbed",
    "prelayer": "PreLayer", "adapterh": "AdapterH", "adapterl": "AdapterL", "lora": "LoRA",
}  # fmt: skip
# the settings each method takes, with their defaults
DEFAULTS = {
    "ft": {}, "ft-top2": {}, "bitfit": {},
    "preembed": {"l_p": 8, "l_i": 8}, "prelayer": {"l_p": 8, "l_i": 8},
    "adapterh": {"r": 4}, "adapterl": {"r": 4},
    "lora": {"r": 8, "alpha": None, "targets": ("q", "v")},  # alpha None: 2 r
}  # fmt: skip
PROJ = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}


def check_method(name: str, settings: dict | None = None) -> dict:
    """The method's full settings (defaults filled in), or a ValueError naming what is wrong."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
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
        bad = [t for t in s["targets"] if t not in PROJ]
        if bad or not s["targets"]:
            raise ValueError(f"lora: targets {list(s['targets'])} must be some of {list(PROJ)}")
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
    LoRA 2 x L_hat x d x r.
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
    return lora_params(shape, s["r"], tuple(s["targets"]))


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
    else:
        alpha = s["alpha"] if s["alpha"] is not None else 2.0 * s["r"]
        targets = tuple(PROJ[t] for t in s["targets"])
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


# --------------------------------------------------------------------------- prefixes


class PrefixTuned(Module):
    """PreEmbed and PreLayer: trainable vectors at l_p prefix and l_i infix positions.

    The sequence the frozen GPT reads is ``[l_p prefix] prompt [l_i infix] answer``:
    the prefix comes before the prompt, the infix between the prompt and the
    answer (Li & Liang's prefixing and infixing; for a training batch the
    prompt ends where the targets begin, at generation time it is all the
    given text). The special tokens are not in the vocabulary: their input to
    block 0 is a trainable vector ("a trainable word embedding, or equivalently
    the activation after the embedding layer"), with no position embedding of
    its own, so the real tokens keep the positions 0, 1, ... the base model
    was pretrained with and the context of 128 still holds the longest example.

    * PreEmbed (``every_layer=False``): one set, ``special`` of shape (1, S, C).
    * PreLayer (``every_layer=True``): the input of every block i at the special
      positions is ``special[i]``, shape (L, S, C); the activations the
      previous block computed there are simply replaced. (Replacing the last
      block's output would change nothing that is scored, so L sets, as the
      paper's count L x d x (l_p + l_i).)

    Initialised as Li & Liang suggest, from the activations of real tokens:
    random characters (drawn with ``rng``, or ``init_ids``) run through the
    frozen base model at positions 0..S-1.
    """

    def __init__(self, gpt, l_p: int, l_i: int, every_layer: bool, rng=None, init_ids=None):
        self.gpt = gpt.requires_grad_(False)
        self.l_p, self.l_i, self.every_layer = int(l_p), int(l_i), bool(every_layer)
        S = self.l_p + self.l_i
        if init_ids is None:
            rng = rng if rng is not None else default_generator()
            init_ids = rng.integers(gpt.config.vocab_size, size=S)
        acts = block_inputs(gpt, np.asarray(init_ids, dtype=np.int64)[None, :])
        sets = acts if self.every_layer else acts[:1]
        xp = backend.get_array_module(sets[0])
        self.special = Parameter(xp.stack([a[0] for a in sets]))  # (L or 1, S, C)

    @property
    def config(self):
        return self.gpt.config

    @property
    def wte(self):
        return self.gpt.wte

    def forward(self, idx, targets=None, *, cache=None, positions=None, key_padding=None):
        """Like ``GPT.forward``: logits (B, T, vocab) for the T real tokens, and the loss.

        The prediction made after the last prompt token is read at the last
        infix slot (the answer follows the infix). With a ``cache`` (generation)
        the special vectors enter on the first call and stay in the cache.
        """
        gpt, xp = self.gpt, backend.get_array_module(self.gpt.wte.weight.data)
        idx = xp.asarray(idx.data if isinstance(idx, Tensor) else idx)
        B, T = idx.shape
        first = cache is None or cache.length == 0
        if positions is None:
            positions = xp.arange(T) + (0 if first else cache.real_length)
        limit = gpt.config.block_size
        if int(xp.max(positions)) >= limit:
            raise ValueError(f"PrefixTuned: a sequence longer than block_size={limit} tokens")
        x = gpt.drop(gpt.wte(idx) + gpt.wpe(positions))  # (B, T, C) the real tokens
        if not first:  # a generation step: the special slots are already in the cache
            if key_padding is not None:
                key_padding = self._padding(xp, key_padding, cache.real_start)
            cache.real_length += T
            for block in gpt.blocks:
                x = block(x, cache, key_padding)
            return self._head(x, targets)
        # the last prompt token of each row: where the infix goes
        if targets is not None:
            scored = backend.to_numpy(xp.asarray(targets)) != -100
            last = np.where(scored.any(axis=1), scored.argmax(axis=1), T - 1)
        else:
            last = np.full(B, T - 1)
        slots, special, out = self._layout(B, T, last)
        W = T + self.l_p + self.l_i
        if key_padding is not None:
            key_padding = self._padding(xp, key_padding, T)
        if cache is not None:
            cache.real_start, cache.real_length = T, T
        # gather: the real tokens' rows, then the S special rows, into the W slots
        x = ops.concat([x.reshape(B * T, -1), self.special[0]], axis=0)[xp.asarray(slots)]
        for i, block in enumerate(gpt.blocks):
            if i > 0 and self.every_layer:  # replace the previous block's output there
                flat = ops.concat([x.reshape(B * W, -1), self.special[i]], axis=0)
                x = flat[xp.asarray(special)]
            x = block(x, cache, key_padding)  # (B, W, C)
        x = x.reshape(B * W, -1)[xp.asarray(out)]  # (B, T, C) read where each token predicts
        return self._head(x, targets)

    def _layout(self, B: int, T: int, last):
        """Index arrays for the W = l_p + T + l_i slots of each row.

        slots (B, W): row of concat(real tokens (B*T), special (S)) for each slot.
        special (B, W): row of concat(slots (B*W), special (S)) keeping real slots.
        out (B, T): the slot whose output predicts the token after real token t.
        """
        l_p, l_i = self.l_p, self.l_i
        W = T + l_p + l_i
        slots = np.empty((B, W), dtype=np.int64)
        special = np.arange(B * W).reshape(B, W)
        out = np.empty((B, T), dtype=np.int64)
        for b in range(B):
            a = int(last[b]) + 1  # tokens up to and including the last prompt token
            order = np.concatenate(
                [
                    B * T + np.arange(l_p),  # prefix
                    b * T + np.arange(a),  # the prompt
                    B * T + l_p + np.arange(l_i),  # infix
                    b * T + np.arange(a, T),  # the answer (and padding)
                ]
            )
            slots[b] = order
            where = np.concatenate([np.arange(l_p), l_p + a + np.arange(l_i)])
            special[b, where] = B * W + np.arange(l_p + l_i)
            real = np.concatenate([l_p + np.arange(a), l_p + a + l_i + np.arange(T - a)])
            out[b] = b * W + real
            if l_i:
                out[b, a - 1] = b * W + l_p + a + l_i - 1  # the last infix slot
        return slots, special, out

    def _padding(self, xp, key_padding, prompt_len: int):
        """(B, real keys) padding flags -> (B, all keys): special slots are never padding."""
        kp = xp.asarray(key_padding)
        B = kp.shape[0]
        pre, inf = xp.zeros((B, self.l_p), dtype=bool), xp.zeros((B, self.l_i), dtype=bool)
        return xp.concatenate([pre, kp[:, :prompt_len], inf, kp[:, prompt_len:]], axis=1)

    def _head(self, x, targets):
        from minilora import functional as F

        gpt = self.gpt
        logits = F.linear(gpt.ln_f(x), gpt.wte.weight)
        if targets is None:
            return logits, None
        xp = backend.get_array_module(logits.data)
        return logits, F.cross_entropy(logits, xp.asarray(targets))

    def extra_repr(self):
        return f"l_p={self.l_p}, l_i={self.l_i}, every_layer={self.every_layer}"


@no_grad()
def block_inputs(gpt, ids) -> list[np.ndarray]:
    """The input of each block (before block i), for token ids (B, T) at positions 0..T-1."""
    xp = backend.get_array_module(gpt.wte.weight.data)
    ids = xp.asarray(ids)
    x = gpt.wte(ids) + gpt.wpe(xp.arange(ids.shape[1]))
    inputs = []
    for block in gpt.blocks:
        inputs.append(x.data.copy())
        x = block(x)
    return inputs


__all__ = [
    "DEFAULTS",
    "LABELS",
    "METHODS",
    "Adapter",
    "PrefixTuned",
    "apply_method",
    "check_method",
    "trainable_count",
]
