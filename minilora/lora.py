"""LoRA: Low-Rank Adaptation (Hu et al. 2021, arXiv 2106.09685), section 4.

A frozen weight W0 (d_out x d_in) gets a trainable update dW = B A with
A (r x d_in) random and B (d_out x r) zero, so dW = 0 at the start. The layer
computes (Eq. 3, with the scaling of section 4.1)

    h = W0 x + (alpha / r) B A x

Only A and B train. After training W = W0 + (alpha / r) B A is computed once
(``merge``), so inference costs nothing extra; subtracting it (``unmerge``)
restores W0, and another B' A' can be added: one base model, many tasks.

The layout follows Hugging Face PEFT, so names and files carry over:
``q_proj.base_layer`` is the frozen Linear, ``q_proj.lora_A[name]`` and
``q_proj.lora_B[name]`` are Linear layers without bias holding A and B of the
adapter ``name`` ("default" unless you add more).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from minilora import backend
from minilora import functional as F
from minilora.creation import default_generator
from minilora.lora_config import BIAS_MODES, INITS, LoRAConfig  # noqa: F401
from minilora.lora_fused import lora_linear
from minilora.nn import (  # noqa: F401
    Linear,
    Module,
    ModuleDict,
    ParameterCount,
    count_parameters,
    print_trainable_parameters,
)
from minilora.tensor import Tensor, is_grad_enabled, no_grad


class LoRALinear(Module):
    """A frozen Linear plus low-rank adapters: h = base(x) + scaling * B(A(dropout(x)))."""

    def __init__(self, base_layer: Linear):
        if not isinstance(base_layer, Linear):
            raise TypeError(f"LoRALinear wraps a Linear, got {type(base_layer).__name__}")
        self.base_layer = base_layer.requires_grad_(False)
        self.lora_A = ModuleDict()
        self.lora_B = ModuleDict()
        self.configs: dict[str, LoRAConfig] = {}
        self.active_adapter: str | None = None
        self.merged_adapter: str | None = None  # the adapter folded into base_layer.weight
        self.disabled = False

    @property
    def in_features(self):
        return self.base_layer.in_features

    @property
    def out_features(self):
        return self.base_layer.out_features

    @property
    def merged(self) -> bool:
        return self.merged_adapter is not None

    def add_adapter(self, name: str, config: LoRAConfig, generator=None) -> None:
        """Create A (random) and B (zero) for adapter ``name`` and make it active."""
        if name in self.lora_A:
            raise ValueError(f"adapter {name!r} already exists; delete it first")
        limit = min(self.in_features, self.out_features)
        if config.r > limit:
            raise ValueError(
                f"LoRA rank r={config.r} is larger than min(in_features, out_features) = "
                f"min({self.in_features}, {self.out_features}) = {limit}"
            )
        rng = generator if generator is not None else default_generator()
        dtype = self.base_layer.weight.dtype
        A = Linear(self.in_features, config.r, bias=False, dtype=dtype, generator=rng)  # (r, d_in)
        # BEGIN STUDENT: lora_init
        if config.init == "kaiming":  # U(-1/sqrt(d_in), 1/sqrt(d_in)), kaiming_uniform(a=sqrt(5))
            bound = 1.0 / math.sqrt(self.in_features)
            a = rng.uniform(-bound, bound, A.weight.shape)
        else:  # the paper's "random Gaussian", with PEFT's std 1/r
            a = rng.normal(0.0, 1.0 / config.r, A.weight.shape)
        A.weight.data = a.astype(dtype)
        # B is made after A's draw: Linear draws its own start from the generator too
        B = Linear(config.r, self.out_features, bias=False, dtype=dtype)  # (d_out, r)
        B.weight.data = np.zeros_like(B.weight.data)  # B = 0, so dW = B A = 0 exactly
        # END STUDENT: lora_init
        device = self.base_layer.weight.device
        self.lora_A[name], self.lora_B[name] = A.to(device), B.to(device)
        self.configs[name] = config
        self.active_adapter = name

    def delete_adapter(self, name: str) -> None:
        if name not in self.configs:
            raise KeyError(
                f"delete_adapter: no adapter {name!r}; this layer has {list(self.configs)}"
            )
        if self.merged_adapter == name:
            raise RuntimeError(f"adapter {name!r} is merged into the weights; unmerge it first")
        del self.lora_A[name], self.lora_B[name]
        del self.configs[name]
        if self.active_adapter == name:
            self.active_adapter = next(iter(self.configs), None)

    def delta_weight(self, name: str | None = None, dtype=None):
        """dW = (alpha / r) B A (section 4.1), an array of W0's shape (d_out x d_in).

        In W0's dtype (what ``merge`` adds), or computed in ``dtype`` (section 7's
        analyses ask for float64).
        """
        name = name or self.active_adapter
        A, B = self.lora_A[name].weight.data, self.lora_B[name].weight.data
        # BEGIN STUDENT: merge
        if dtype is not None:
            return self.configs[name].scaling * (B.astype(dtype) @ A.astype(dtype))
        return (self.configs[name].scaling * (B @ A)).astype(self.base_layer.weight.dtype)
        # END STUDENT: merge

    def forward(self, x: Tensor) -> Tensor:
        """h = W0 x + b + (alpha / r) B A dropout(x): the paper's Eq. 3 (section 4.1).

        W0 (``base_layer``) is frozen; A and B are the adapter's two Linear layers
        without bias. While B = 0 (its initialisation), h is the base layer's output
        bit for bit. With the fast paths on (the default) the same sum is computed by
        ``lora_fused.lora_linear``, which equals this line bit for bit in the forward
        and keeps less memory for the backward.
        """
        name = self.active_adapter
        if self.merged:
            if is_grad_enabled() and name and self.lora_A[name].weight.requires_grad:
                raise RuntimeError(
                    "forward with gradients through a merged LoRA layer: A and B would get no "
                    "gradient. Call unmerge(model) before training, or run inference under "
                    "no_grad()."
                )
            return self.base_layer(x)  # W0 + dW is already in the weight
        if self.disabled or name is None:
            return self.base_layer(x)  # W0 x + b
        scaling, p = self.configs[name].scaling, self.configs[name].dropout
        A, B = self.lora_A[name], self.lora_B[name]
        if backend.fast_paths_enabled():  # the same numbers, one op (lora_fused.py)
            base = self.base_layer
            return lora_linear(
                x, base.weight, base.bias, A.weight, B.weight, scaling, p, self.training
            )
        # BEGIN STUDENT: lora_forward
        return self.base_layer(x) + scaling * B(A(F.dropout(x, p, self.training)))
        # END STUDENT: lora_forward

    @no_grad()
    def merge(self, check_only: bool = False) -> None:
        """W0 <- W0 + scaling * B A for the active adapter (refuses non-finite results).

        ``check_only``: raise as merge would, change nothing (the model-level merge checks
        every layer before it changes any)."""
        if self.merged or self.active_adapter is None:
            return
        # BEGIN STUDENT: merge
        merged = self.base_layer.weight.data + self.delta_weight()
        # END STUDENT: merge
        if not bool(np.all(np.isfinite(backend.to_numpy(merged)))):
            raise FloatingPointError(
                f"merging adapter {self.active_adapter!r} would put non-finite values in the "
                "weight; the adapter is damaged (NaN or inf in A or B), nothing was changed"
            )
        if check_only:
            return
        self.base_layer.weight.data = merged
        self.merged_adapter = self.active_adapter

    @no_grad()
    def unmerge(self) -> None:
        """W0 <- W - scaling * B A: the base weight back (to rounding)."""
        if not self.merged:
            return
        # BEGIN STUDENT: unmerge
        self.base_layer.weight.data = self.base_layer.weight.data - self.delta_weight(
            self.merged_adapter
        )
        # END STUDENT: unmerge
        self.merged_adapter = None

    def extra_repr(self):
        return (
            f"adapters={list(self.configs)}, active={self.active_adapter!r}, merged={self.merged}"
        )


# ---- the model-level API ---------------------------------------------------------


def _matches(module_name: str, targets) -> bool:
    """PEFT's rule: a target matches the full name or a dotted suffix of it."""
    return any(module_name == t or module_name.endswith("." + t) for t in targets)


def lora_layers(model: Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def inject_lora(
    model: Module, config: LoRAConfig | None = None, adapter_name: str = "default", generator=None
) -> Module:
    """Wrap every Linear whose name matches ``config.target_modules`` in a LoRALinear,
    add adapter ``adapter_name`` to it, make it active, and freeze everything else
    (``mark_only_lora_as_trainable`` with ``config.bias``). Returns ``model``."""
    config = config or LoRAConfig()
    wrapped = tuple(f"{n}." for n in lora_layers(model))  # A, B and W0 inside are not targets
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, (Linear, LoRALinear)) and not n.startswith(wrapped)
    ]
    unmatched = [t for t in config.target_modules if not any(_matches(n, [t]) for n in names)]
    if unmatched:
        raise ValueError(
            f"inject_lora: target_modules {unmatched} match no Linear layer. "
            f"The model's Linear layers are: {sorted({n.rsplit('.', 1)[-1] for n in names})} "
            f"(full names like {names[:3]})"
        )
    before = snapshot(model)
    # layers = {name: LoRALinear} for each Linear in `names` that a target matches (``_matches``),
    # wrapped once (a LoRALinear already there is kept) and put in the model under its name.
    # BEGIN STUDENT: inject_lora
    chosen = [n for n in names if _matches(n, config.target_modules)]
    layers = {}
    for name in chosen:
        layer = model.get_submodule(name)
        if not isinstance(layer, LoRALinear):
            layer = LoRALinear(layer)
            model.set_submodule(name, layer)
        layers[name] = layer
    # END STUDENT: inject_lora
    for name, layer in layers.items():  # add the adapter to each wrapped layer
        try:
            layer.add_adapter(adapter_name, config, generator)
        except ValueError as err:
            restore(model, before)  # all or nothing
            raise ValueError(f"inject_lora on {name!r}: {err}") from None
    set_adapter(model, adapter_name)
    mark_only_lora_as_trainable(model, config.bias)
    return model


def snapshot(model: Module) -> tuple[dict, dict]:
    """What inject_lora changes: requires_grad flags, the LoRA layers, their adapters."""
    flags = {id(p): p.requires_grad for p in model.parameters()}
    layers = {
        path: (layer.active_adapter, set(layer.configs))
        for path, layer in lora_layers(model).items()
    }
    return flags, layers


def restore(model: Module, before: tuple[dict, dict]) -> None:
    """Put ``model`` back as it was at ``snapshot``: for an inject_lora that failed part way."""
    flags, layers = before
    for path, layer in lora_layers(model).items():
        if path not in layers:  # wrapped since: put the plain Linear back
            model.set_submodule(path, layer.base_layer)
            continue
        active, names = layers[path]
        for name in set(layer.configs) - names:
            layer.delete_adapter(name)
        layer.active_adapter = active
    for p in model.parameters():
        if id(p) in flags:
            p.requires_grad_(flags[id(p)])


def set_adapter(model: Module, name: str) -> None:
    """Make adapter ``name`` the active one in every LoRA layer (task switching).

    A layer that does not hold ``name`` (the adapters target different modules)
    computes with W0 alone, as in PEFT, rather than keeping another task's adapter.
    """
    layers = lora_layers(model)
    if not any(name in layer.configs for layer in layers.values()):
        known = sorted({n for layer in layers.values() for n in layer.configs})
        raise KeyError(f"no adapter named {name!r}; the model has {known}")
    if any(layer.merged and layer.merged_adapter != name for layer in layers.values()):
        raise RuntimeError("set_adapter on a merged model: unmerge(model) first")
    for layer in layers.values():
        layer.active_adapter = name if name in layer.configs else None


def delete_adapter(model: Module, name: str) -> None:
    """Remove adapter ``name`` from every layer that holds it (KeyError if none does)."""
    layers = lora_layers(model).values()
    if not any(name in layer.configs for layer in layers):
        known = sorted({n for layer in layers for n in layer.configs})
        raise KeyError(f"delete_adapter: no adapter named {name!r}; the model has {known}")
    for layer in (layer for layer in layers if name in layer.configs):
        layer.delete_adapter(name)


@contextlib.contextmanager
def disable_adapters(model: Module):
    """Inside this block the model computes with W0 alone (the base model)."""
    layers = lora_layers(model).values()
    if any(layer.merged for layer in layers):
        raise RuntimeError("disable_adapters on a merged model: unmerge(model) first")
    previous = [layer.disabled for layer in layers]
    for layer in layers:
        layer.disabled = True
    try:
        yield model
    finally:
        for layer, flag in zip(layers, previous):
            layer.disabled = flag


def mark_only_lora_as_trainable(model: Module, bias: str = "none") -> None:
    """Freeze every parameter except LoRA's A and B (and biases, as ``bias`` says)."""
    if bias not in BIAS_MODES:
        raise ValueError(
            f"mark_only_lora_as_trainable: bias={bias!r}; expected one of {BIAS_MODES}"
        )
    lora_bias_names = {f"{n}.base_layer.bias" for n in lora_layers(model)}
    # BEGIN STUDENT: mark_trainable
    for name, p in model.named_parameters():
        trainable = ".lora_A." in name or ".lora_B." in name
        if name.endswith("bias"):
            trainable = bias == "all" or (bias == "lora_only" and name in lora_bias_names)
        p.requires_grad_(trainable)
    # END STUDENT: mark_trainable


def _check_merge(layers: dict) -> None:
    """All or nothing: every layer is checked (finite W0 + dW) before any changes."""
    for path, layer in layers.items():
        try:
            layer.merge(check_only=True)
        except FloatingPointError as err:
            raise FloatingPointError(f"merge: {path}: {err} in any layer") from None


def merge(model: Module) -> Module:
    layers = lora_layers(model)
    _check_merge(layers)
    for layer in layers.values():
        layer.merge()
    return model


def unmerge(model: Module) -> Module:
    for layer in lora_layers(model).values():
        layer.unmerge()
    return model


def merge_and_unload(model: Module) -> Module:
    """Merge the active adapter and put the plain Linear layers back: a model with no LoRA left."""
    _check_merge(lora_layers(model))
    for name, layer in lora_layers(model).items():
        layer.merge()
        model.set_submodule(name, layer.base_layer)
    return model
