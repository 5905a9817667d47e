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
from minilora.backend import fast_twin
from minilora.creation import default_generator
from minilora.lora_config import BIAS_MODES, INITS, LoRAConfig  # noqa: F401
from minilora.nn import (  # noqa: F401
    Linear,
    Module,
    ModuleDict,
    Parameter,
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
        self.check_new_adapter(name, config)
        rng = generator if generator is not None else default_generator()
        dtype = self.base_layer.weight.dtype
        # Linear draws a start that the init below replaces; kept, so that a seed gives the A
        # of every recorded run (minilora/paper/records)
        A = Linear(self.in_features, config.r, bias=False, dtype=dtype, generator=rng)  # (r, d_in)
        # BEGIN STUDENT: lora_init
        if config.init == "kaiming":  # U(-1/sqrt(d_in), 1/sqrt(d_in)), kaiming_uniform(a=sqrt(5))
            bound = 1.0 / math.sqrt(self.in_features)
            a = rng.uniform(-bound, bound, A.weight.shape)
        else:  # the paper's "random Gaussian", with PEFT's std 1/r
            a = rng.normal(0.0, 1.0 / config.r, A.weight.shape)
        A.weight.data = a.astype(dtype)
        B = zeros_linear(config.r, self.out_features, dtype)  # (d_out, r): B = 0, so dW = B A = 0
        # END STUDENT: lora_init
        device = self.base_layer.weight.device
        self.lora_A[name], self.lora_B[name] = A.to(device), B.to(device)
        self.configs[name] = config
        self.active_adapter = name

    def check_new_adapter(self, name: str, config: LoRAConfig) -> None:
        """A new name, and a rank no larger than min(d_in, d_out) (a larger one adds nothing)."""
        if name in self.lora_A:
            raise ValueError(f"adapter {name!r} already exists; delete it first")
        limit = min(self.in_features, self.out_features)
        if config.r > limit:
            raise ValueError(
                f"LoRA rank r={config.r} is larger than min(in_features, out_features) = "
                f"min({self.in_features}, {self.out_features}) = {limit}"
            )

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

    @fast_twin
    def forward(self, x: Tensor) -> Tensor:
        """h = W0 x + b + (alpha / r) B A dropout(x): the paper's Eq. 3 (section 4.1).

        W0 (``base_layer``) is frozen; A and B are the adapter's two Linear layers
        without bias. While B = 0 (its initialisation), h is the base layer's output
        bit for bit. Its fast twin (minilora/fast/lora.py) computes the same sum as one
        op, bit for bit in the forward, keeping less memory for the backward.
        """
        if self.merged or self.disabled or self.active_adapter is None:
            self.check_not_training_merged()
            return self.base_layer(x)  # W0 x + b (W0 + dW once merged)
        config = self.configs[self.active_adapter]
        A, B = self.lora_A[self.active_adapter], self.lora_B[self.active_adapter]
        scaling, p = config.scaling, config.dropout
        # BEGIN STUDENT: lora_forward
        return self.base_layer(x) + scaling * B(A(F.dropout(x, p, self.training)))
        # END STUDENT: lora_forward

    def check_not_training_merged(self) -> None:
        """A merged layer gives A and B no gradient: refuse a forward that would train them."""
        name = self.merged_adapter
        if name and is_grad_enabled() and self.lora_A[name].weight.requires_grad:
            raise RuntimeError(
                "forward with gradients through a merged LoRA layer: A and B would get no "
                "gradient. Call unmerge(model) before training, or run inference under "
                "no_grad()."
            )

    @no_grad()
    def merge(self) -> None:
        """W0 <- W0 + scaling * B A for the active adapter (refuses non-finite results)."""
        if not self.merged and self.active_adapter is not None:
            self.base_layer.weight.data = self.merged_weight()
            self.merged_adapter = self.active_adapter

    def merged_weight(self):
        """W0 + dW for the active adapter (what ``merge`` writes), checked finite."""
        # BEGIN STUDENT: merge
        merged = self.base_layer.weight.data + self.delta_weight()
        # END STUDENT: merge
        if not bool(np.all(np.isfinite(backend.to_numpy(merged)))):
            raise FloatingPointError(
                f"merging adapter {self.active_adapter!r} would put non-finite values in the "
                "weight; the adapter is damaged (NaN or inf in A or B), nothing was changed"
            )
        return merged

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
    (``mark_only_lora_as_trainable`` with ``config.bias``). Returns ``model``.

    All or nothing: if any layer refuses the adapter, the model is left as it was.
    """
    config = config or LoRAConfig()
    names = linear_names(model, config.target_modules)  # every Linear; each target matches one
    with all_or_nothing(model):
        # layers = {name: LoRALinear} for each Linear in `names` that a target matches
        # (``_matches``), wrapped once (a LoRALinear already there is kept) and put in the model.
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
        for name, layer in layers.items():
            with errors_named(f"inject_lora on {name!r}"):
                layer.add_adapter(adapter_name, config, generator)
    set_adapter(model, adapter_name)
    mark_only_lora_as_trainable(model, config.bias)
    return model


def linear_names(model: Module, targets) -> list[str]:
    """The names of the model's Linear layers (a LoRALinear counts as one, its insides do not),
    checking that every target matches at least one of them."""
    wrapped = tuple(f"{n}." for n in lora_layers(model))  # A, B and W0 inside are not targets
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, (Linear, LoRALinear)) and not n.startswith(wrapped)
    ]
    unmatched = [t for t in targets if not any(_matches(n, [t]) for n in names)]
    if unmatched:
        raise ValueError(
            f"inject_lora: target_modules {unmatched} match no Linear layer. "
            f"The model's Linear layers are: {sorted({n.rsplit('.', 1)[-1] for n in names})} "
            f"(full names like {names[:3]})"
        )
    return names


@contextlib.contextmanager
def errors_named(where: str):
    """Re-raise a ValueError with ``where`` in front of its message."""
    try:
        yield
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


@contextlib.contextmanager
def all_or_nothing(model: Module):
    """Undo what the block did to the model's LoRA layers and trainable flags if it raises."""
    before = snapshot(model)
    try:
        yield
    except BaseException:
        restore(model, before)
        raise


def snapshot(model: Module) -> tuple[dict, dict]:
    """What inject_lora changes: requires_grad flags, the LoRA layers, their adapters."""
    flags = {id(p): p.requires_grad for p in model.parameters()}
    layers = {path: (m.active_adapter, set(m.configs)) for path, m in lora_layers(model).items()}
    return flags, layers


def restore(model: Module, before: tuple[dict, dict]) -> None:
    """Put ``model`` back as it was at ``snapshot``."""
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


def merge(model: Module) -> Module:
    """W0 <- W0 + dW in every LoRA layer; all or nothing: each layer's W0 + dW is checked
    finite before any layer changes."""
    layers = lora_layers(model)
    for path, layer in layers.items():
        check_mergeable(path, layer)
    for layer in layers.values():
        layer.merge()
    return model


def check_mergeable(path: str, layer: LoRALinear) -> None:
    if layer.merged or layer.active_adapter is None:
        return
    try:
        layer.merged_weight()
    except FloatingPointError as err:
        raise FloatingPointError(f"merge: {path}: {err} in any layer") from None


def unmerge(model: Module) -> Module:
    for layer in lora_layers(model).values():
        layer.unmerge()
    return model


def merge_and_unload(model: Module) -> Module:
    """Merge the active adapter and put the plain Linear layers back: a model with no LoRA left."""
    merge(model)
    for name, layer in lora_layers(model).items():
        model.set_submodule(name, layer.base_layer)
    return model


def zeros_linear(in_features: int, out_features: int, dtype) -> Linear:
    """A bias-free Linear whose weight is zero, made without drawing a random number."""
    layer = Linear.__new__(Linear)
    layer.in_features, layer.out_features = in_features, out_features
    layer.weight, layer.bias = Parameter(np.zeros((out_features, in_features), dtype=dtype)), None
    return layer
