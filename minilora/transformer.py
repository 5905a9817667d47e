"""A GPT in the GPT-2 layout, small enough to read in one sitting.

Token and position embeddings -> n_layer pre-LayerNorm blocks (causal
multi-head self-attention, then a 4x MLP with GELU, each around a residual
connection) -> final LayerNorm -> logits through the token embedding (tied
LM head). The four attention projections are separate Linear layers named
``q_proj``, ``k_proj``, ``v_proj`` and ``o_proj``: these are the weights
W_q, W_k, W_v, W_o that LoRA adapts (paper, section 4.2).

Shape comments: B batch, T time (tokens), C = d_model, H heads, D = C / H.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from minilora import backend, checks, ops
from minilora import functional as F
from minilora.creation import default_generator
from minilora.nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList
from minilora.tensor import Tensor, no_grad


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 128  # the longest context the model reads
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases on every Linear and LayerNorm, as GPT-2
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        checks.gpt_config(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"GPTConfig: unknown fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


class KVCache:
    """Keys and values of the positions already seen, per block, for fast generation."""

    def __init__(self, n_layer: int):
        self.keys: list = [None] * n_layer
        self.values: list = [None] * n_layer

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def extend(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.keys[layer] is not None:
            k = ops.concat([self.keys[layer], k], axis=2)
            v = ops.concat([self.values[layer], v], axis=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class CausalSelfAttention(Module):
    """softmax(Q K^T / sqrt(D) + causal mask) V over H heads, then the output projection."""

    def __init__(self, config: GPTConfig, layer: int):
        c, bias = config.d_model, config.bias
        self.n_head, self.layer = config.n_head, layer
        self.q_proj = Linear(c, c, bias=bias)
        self.k_proj = Linear(c, c, bias=bias)
        self.v_proj = Linear(c, c, bias=bias)
        self.o_proj = Linear(c, c, bias=bias)
        self.attn_dropout = Dropout(config.dropout)
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None, key_padding=None) -> Tensor:
        B, T, C = x.shape
        H = self.n_head

        def heads(t: Tensor) -> Tensor:  # (B, T, C) -> (B, H, T, D)
            return t.reshape(B, T, H, C // H).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        if cache is not None:
            k, v = cache.extend(self.layer, k, v)  # (B, H, S, D), S = cached + T
        hidden = F.causal_mask(T, k.shape[2], device=x.device)  # (T, S): i sees keys <= S - T + i
        if key_padding is not None:  # (B, S) True at padding tokens
            hidden = hidden | key_padding[:, None, None, :]
        # softmax(Q K^T / sqrt(D), hidden excluded) V, as one fused op (attention.py)
        y = F.attention(q, k, v, hidden, self.attn_dropout.p, self.training)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.o_proj(y))


class MLP(Module):
    """Linear(C, 4C) -> GELU -> Linear(4C, C)."""

    def __init__(self, config: GPTConfig):
        c = config.d_model
        self.fc_in = Linear(c, 4 * c, bias=config.bias)
        self.fc_out = Linear(4 * c, c, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc_out(F.gelu(self.fc_in(x))))


class Block(Module):
    """x + attn(ln_1(x)), then + mlp(ln_2(x)): GPT-2's pre-LayerNorm residual block."""

    def __init__(self, config: GPTConfig, layer: int):
        self.ln_1 = LayerNorm(config.d_model, config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = LayerNorm(config.d_model, config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cache=None, key_padding=None) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, key_padding)
        return x + self.mlp(self.ln_2(x))


class GPT(Module):
    """The language model. ``forward(idx, targets)`` returns (logits, loss or None)."""

    def __init__(self, config: GPTConfig, generator: np.random.Generator | None = None):
        self.config = config
        self.wte = Embedding(config.vocab_size, config.d_model)
        self.wpe = Embedding(config.block_size, config.d_model)
        self.drop = Dropout(config.dropout)
        self.blocks = ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = LayerNorm(config.d_model, config.layer_norm_eps, bias=config.bias)
        self._init_weights(generator if generator is not None else default_generator())

    def _init_weights(self, rng: np.random.Generator) -> None:
        """GPT-2's initialisation: N(0, 0.02) weights, zero biases, and the two
        projections that write into the residual stream scaled by 1/sqrt(2 n_layer)."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.data[...] = 0.0
            elif name.startswith("ln") or ".ln_" in name:
                p.data[...] = 1.0
            else:
                std = residual_std if name.endswith(("o_proj.weight", "fc_out.weight")) else 0.02
                p.data[...] = rng.normal(0.0, std, p.shape).astype(p.dtype)

    def forward(self, idx, targets=None, *, cache=None, positions=None, key_padding=None):
        """idx: (B, T) token ids. targets: (B, T) next-token ids (ignore_index -100 skips).

        ``cache``, ``positions`` and ``key_padding`` serve batched generation
        (see ``generate``); training never needs them.
        """
        start = 0 if cache is None else cache.length
        idx = checks.token_ids(idx, start, self.config.block_size)  # (B, T), fits the context
        B, T = idx.shape
        xp = backend.get_array_module(self.wte.weight.data)
        if positions is None:
            positions = xp.arange(start, start + T)
        x = self.drop(self.wte(xp.asarray(idx)) + self.wpe(positions))  # (B, T, C)
        for block in self.blocks:
            x = block(x, cache, key_padding)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # (B, T, vocab): the tied head
        loss = None if targets is None else F.cross_entropy(logits, xp.asarray(targets))
        return logits, loss

    @no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k=None, seed=None):
        """Continue each row of ``idx`` (B, T) by ``max_new_tokens`` sampled tokens.

        temperature 0 means greedy (argmax). ``top_k`` keeps only the k most
        likely tokens. Returns a NumPy array (B, T + max_new_tokens). A negative
        length, a negative or NaN temperature, top_k < 1 or an empty prompt raise.
        Uses a key/value cache, so each new token costs one position's work while
        the text fits the context; beyond ``block_size`` tokens the model sees
        the last ``block_size`` of them (a sliding window, recomputed per token),
        since it was never trained on longer inputs or later positions.
        """
        checks.sampling(max_new_tokens, temperature, top_k)
        idx = idx.data if isinstance(idx, Tensor) else idx  # an array's .data is not its values
        out = np.array(backend.to_numpy(idx), dtype=np.int64)
        if out.ndim == 1:
            out = out[None, :]
        if out.ndim != 2 or out.shape[1] == 0:
            raise ValueError(
                f"generate: idx has shape {out.shape}; expected at least one token per row, "
                "shape (T,) or (batch, T) with T >= 1 (an empty prompt has nothing to continue)"
            )
        was_training = self.training
        self.eval()
        rng = np.random.default_rng(seed)
        block = self.config.block_size
        cache = KVCache(self.config.n_layer)
        step_input = out[:, -block:]
        for _ in range(max_new_tokens):
            logits, _ = self(step_input, cache=cache)
            next_ids = sample_next(logits.numpy()[:, -1, :], temperature, top_k, rng)
            out = np.concatenate([out, next_ids[:, None]], axis=1)
            if cache.length < block:
                step_input = next_ids[:, None]
            else:  # the context is full: slide the window by one token
                cache = KVCache(self.config.n_layer)
                step_input = out[:, -block:]
        self.train(was_training)
        return out


def sample_next(logits: np.ndarray, temperature: float, top_k, rng) -> np.ndarray:
    """One token id per row of (B, vocab) logits: argmax, or a draw from softmax(logits / T)."""
    if not temperature >= 0:  # also NaN
        raise ValueError(f"temperature={temperature}: expected a value >= 0")
    if temperature == 0:  # greedy: the most likely token of each row
        # BEGIN STUDENT: greedy
        return logits.argmax(axis=-1)
        # END STUDENT: greedy
    logits = logits.astype(np.float64) / temperature
    if top_k is not None:
        kth = np.sort(logits, axis=-1)[:, -min(int(top_k), logits.shape[-1])][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    return np.array([rng.choice(len(p), p=p) for p in probs], dtype=np.int64)
