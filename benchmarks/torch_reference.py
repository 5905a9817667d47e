"""The minilora GPT in plain ``torch.nn``, for the benchmark's PyTorch column.

Same layout and same names as ``minilora.transformer.GPT``, so a minilora
state dict loads into it one to one (``load_minilora_state``):

    wte, wpe (token and position embeddings)
    -> n_layer pre-LayerNorm blocks:
         x + o_proj(causal attention(q_proj, k_proj, v_proj of ln_1(x)))
         x + fc_out(GELU_tanh(fc_in(ln_2(x))))        (4x MLP)
    -> ln_f -> logits = ln_f(x) @ wte.weight^T        (tied LM head, no bias)

Choices, made to compute what minilora computes:

* The LM head is **tied** to ``wte``, as in minilora's GPT. (The PyTorch figures
  in shared/PERFORMANCE.md were taken with an untied head; the matmul FLOPs are
  identical either way, the tie only saves the V x C head weight and adds its
  gradient into the embedding's.)
* Attention is written **explicitly** by default: ``softmax(QK^T / sqrt(D)``
  masked with the dtype's most negative finite value, then ``@ V``, the full
  T x T square, as minilora does. ``attention="sdpa"`` switches to
  ``F.scaled_dot_product_attention(is_causal=True)`` (fused kernels; on the GPU
  they may skip the masked half, so FLOP fractions are no longer comparable).
* LoRA is a small wrapper (``LoRALinear``) with a frozen ``base_layer`` and
  ``lora_A["default"]`` / ``lora_B["default"]`` Linear layers without bias,
  PEFT's (and minilora's) names: h = base(x) + (alpha / r) B(A(x)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    def __init__(self, n_head: int, d_model: int, attention: str = "explicit"):
        super().__init__()
        if attention not in ("explicit", "sdpa"):
            raise ValueError(f"attention={attention!r}: expected 'explicit' or 'sdpa'")
        self.n_head, self.attention = n_head, attention
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        H = self.n_head

        def heads(t):  # (B, T, C) -> (B, H, T, D)
            return t.view(B, T, H, C // H).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        if self.attention == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))  # (B, H, T, T)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu_(1)
            scores = scores.masked_fill(mask, torch.finfo(x.dtype).min)
            y = F.softmax(scores, dim=-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.fc_in = nn.Linear(d_model, 4 * d_model)
        self.fc_out = nn.Linear(4 * d_model, d_model)

    def forward(self, x):
        return self.fc_out(F.gelu(self.fc_in(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, n_head: int, d_model: int, eps: float, attention: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, eps=eps)
        self.attn = CausalSelfAttention(n_head, d_model, attention)
        self.ln_2 = nn.LayerNorm(d_model, eps=eps)
        self.mlp = MLP(d_model)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    """minilora's GPT (dropout 0, biases everywhere, tied head) in torch.nn."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int,
        n_head: int,
        d_model: int,
        layer_norm_eps: float = 1e-5,
        attention: str = "explicit",
    ):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList(
            [Block(n_head, d_model, layer_norm_eps, attention) for _ in range(n_layer)]
        )
        self.ln_f = nn.LayerNorm(d_model, eps=layer_norm_eps)

    @classmethod
    def from_config(cls, config, attention: str = "explicit") -> TorchGPT:
        """Build from a ``minilora.transformer.GPTConfig`` (or anything with its fields)."""
        return cls(
            config.vocab_size,
            config.block_size,
            config.n_layer,
            config.n_head,
            config.d_model,
            config.layer_norm_eps,
            attention,
        )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, vocab) logits."""
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)  # the tied head


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class LoRALinear(nn.Module):
    """A frozen Linear plus h = base(x) + scaling * B(A(x)), with PEFT's parameter names."""

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / r
        d_in, d_out = base_layer.in_features, base_layer.out_features
        dev, dtype = base_layer.weight.device, base_layer.weight.dtype
        self.lora_A = nn.ModuleDict(
            {"default": nn.Linear(d_in, r, bias=False, device=dev, dtype=dtype)}
        )
        self.lora_B = nn.ModuleDict(
            {"default": nn.Linear(r, d_out, bias=False, device=dev, dtype=dtype)}
        )
        nn.init.zeros_(self.lora_B["default"].weight)
        self.merged = False

    def forward(self, x):
        h = self.base_layer(x)
        if self.merged:
            return h
        return h + self.lora_B["default"](self.lora_A["default"](x)) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """W0 <- W0 + scaling * B A; forward then costs what the base layer costs."""
        if not self.merged:
            delta = self.lora_B["default"].weight @ self.lora_A["default"].weight
            self.base_layer.weight += self.scaling * delta
            self.merged = True


def inject_lora(model: nn.Module, r: int, alpha: float, targets=("q_proj", "v_proj")) -> nn.Module:
    """Wrap the target Linear layers in LoRALinear and freeze everything but A and B."""
    model.requires_grad_(False)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            parent = model.get_submodule(name.rsplit(".", 1)[0])
            setattr(parent, name.rsplit(".", 1)[-1], LoRALinear(module, r, alpha))
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_A." in name or ".lora_B." in name)
    return model


def merge(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, LoRALinear):
            module.merge()
    return model


@torch.no_grad()
def load_minilora_state(model: nn.Module, state: dict) -> None:
    """Copy a minilora state dict (name -> NumPy array) into the same-named parameters."""
    own = dict(model.named_parameters())
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise KeyError(f"state dicts differ: missing {missing}, unexpected {unexpected}")
    for name, p in own.items():
        p.copy_(torch.as_tensor(state[name]))


def state_bytes(model: nn.Module, optimizer=None) -> dict:
    """Bytes of parameters, gradients and optimizer state (tied weights counted once)."""
    params = list(model.parameters())  # deduplicates shared parameters
    out = {
        "params": sum(p.numel() * p.element_size() for p in params),
        "grads": sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None),
        "optimizer": 0,
    }
    if optimizer is not None:
        out["optimizer"] = sum(
            t.numel() * t.element_size()
            for s in optimizer.state.values()
            for t in s.values()
            if torch.is_tensor(t)
        )
    return out
