"""Modules: containers of Parameters that compose, in PyTorch's conventions.

A ``Module`` finds its parameters and sub-modules by looking at its own
attributes, in the order they were assigned, so names come out as in PyTorch
(``blocks.0.attn.q_proj.weight``) and state dicts map one to one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from minilora import backend, checks
from minilora import functional as F
from minilora.creation import default_generator
from minilora.tensor import Tensor


class Parameter(Tensor):
    """A leaf Tensor that a Module owns and an optimizer may train (requires_grad by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data.data if isinstance(data, Tensor) else data)
        self.requires_grad_(requires_grad)


class Module:
    """Base class: subclasses assign Parameters and Modules as attributes and define ``forward``."""

    training: bool = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- walking the tree --------------------------------------------------------
    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self):
        return [m for _, m in self.named_children()]

    def named_modules(self, prefix: str = ""):
        """This module and every module inside it, with dotted names ("" for self)."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def named_parameters(self, prefix: str = ""):
        """Every Parameter once (a shared one under its first name), with dotted names."""
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, value in vars(module).items():
                if isinstance(value, Parameter) and id(value) not in seen:
                    seen.add(id(value))
                    yield (f"{module_name}.{name}" if module_name else name), value

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def get_submodule(self, path: str) -> Module:
        module = self
        for part in filter(None, path.split(".")):
            child = getattr(module, part, None)
            if not isinstance(child, Module):
                raise KeyError(f"no sub-module {part!r} in {path!r}")
            module = child
        return module

    def set_submodule(self, path: str, new: Module) -> None:
        parent_path, _, name = path.rpartition(".")
        parent = self.get_submodule(parent_path)
        if not isinstance(getattr(parent, name, None), Module):
            raise KeyError(f"no sub-module at {path!r}")
        setattr(parent, name, new)

    # ---- modes and devices --------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for module in self.modules():
            module.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, flag: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def to(self, device: str | None = None, dtype=None) -> Module:
        """Move (and/or cast) every parameter in place; returns self."""
        for p in self.parameters():
            data = p.data if dtype is None else p.data.astype(dtype)
            p.data = data if device is None else backend.to_device(data, device)
            p.grad = None
        return self

    # ---- state -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Name -> array (sharing memory with the parameters)."""
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict, strict: bool = True) -> tuple[list, list]:
        """Copy arrays into the parameters; returns (missing, unexpected) names.

        With ``strict`` any missing or unexpected key, and always any shape
        mismatch, raises a KeyError that lists them all.
        """
        own = dict(self.named_parameters())
        missing, unexpected = checks.state_dict_fits(self, own, state, strict)
        for name, p in own.items():
            if name in state:
                value = state[name]  # a Tensor or an array (an array's .data is not its values)
                value = backend.to_numpy(value.data if isinstance(value, Tensor) else value)
                p.data = backend.to_device(np.array(value, dtype=p.dtype), p.device)
        return missing, unexpected

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self.named_children():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + ("\n)" if len(lines) > 1 else ")")

    def extra_repr(self) -> str:
        return ""


class Linear(Module):
    """y = x W^T + b with W of shape (out_features, in_features), as in PyTorch.

    Initialised as PyTorch does: W and b ~ U(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, generator=None):
        rng = generator if generator is not None else default_generator()
        bound = 1.0 / math.sqrt(in_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(
            rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype)
        )
        self.bias = (
            Parameter(rng.uniform(-bound, bound, out_features).astype(dtype)) if bias else None
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        bias = self.bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}"


class Embedding(Module):
    """A lookup table: row i is the vector of token (or position) i. Initialised N(0, 1)."""

    def __init__(self, num_embeddings, embedding_dim, dtype=np.float32, generator=None):
        rng = generator if generator is not None else default_generator()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(rng.standard_normal((num_embeddings, embedding_dim)).astype(dtype))

    def forward(self, indices) -> Tensor:
        return F.embedding(self.weight, indices)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Normalise the last axis, then scale by ``weight`` (ones) and shift by ``bias`` (zeros)."""

    def __init__(self, dim, eps=1e-5, bias=True, dtype=np.float32):
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim, dtype=dtype))
        self.bias = Parameter(np.zeros(dim, dtype=dtype)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    """Inverted dropout with probability ``p`` while training; the identity in eval mode."""

    def __init__(self, p: float = 0.0):
        checks.probability(p, "Dropout")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class ModuleList(Module):
    """A list of modules, named "0", "1", ... like PyTorch's."""

    def __init__(self, modules=()):
        for i, module in enumerate(modules):
            setattr(self, str(i), module)

    def __len__(self):
        return sum(1 for _ in self.named_children())

    def __iter__(self):
        return iter(self.children())

    def __getitem__(self, i: int) -> Module:
        return getattr(self, str(range(len(self))[i]))

    def append(self, module: Module) -> None:
        setattr(self, str(len(self)), module)


class ModuleDict(Module):
    """Modules under string keys (used for named adapters)."""

    def __init__(self, modules: dict | None = None):
        for name, module in (modules or {}).items():
            self[name] = module

    def __setitem__(self, name: str, module: Module) -> None:
        if not name.isidentifier():
            raise ValueError(f"ModuleDict: name {name!r} must be a Python identifier")
        setattr(self, name, module)

    def __getitem__(self, name: str) -> Module:
        if name not in self:
            raise KeyError(f"no module {name!r}; have {self.keys()}")
        return getattr(self, name)

    def __delitem__(self, name: str) -> None:
        self[name]  # a clear KeyError if absent
        delattr(self, name)

    def __contains__(self, name) -> bool:
        return isinstance(vars(self).get(name), Module)

    def keys(self) -> list[str]:
        return [n for n, _ in self.named_children()]

    def __len__(self):
        return len(self.keys())


# ---- counting (PEFT's print_trainable_parameters; minilora.lora re-exports these) ----


@dataclass
class ParameterCount:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)

    def __str__(self):  # the line PEFT's print_trainable_parameters prints
        return (
            f"trainable params: {self.trainable:,d} || all params: {self.total:,d} "
            f"|| trainable%: {self.percent:.4f}"
        )


def count_parameters(model: Module) -> ParameterCount:
    params = model.parameters()
    return ParameterCount(
        sum(p.size for p in params if p.requires_grad), sum(p.size for p in params)
    )


def print_trainable_parameters(model: Module) -> None:
    print(count_parameters(model))
