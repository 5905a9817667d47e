"""minilora: LoRA (Hu et al. 2021, arXiv 2106.09685) from scratch on a tiny autograd engine.

``import minilora`` loads the subject only: the engine (backend, tensor, ops,
functional, creation, gradcheck), the model (nn, transformer, optim) and the
method (lora), and installs the faster twins of a few ops (``minilora.fast``).
What stands on it loads when first used: ``minilora.work`` (data, tasks,
training, the shipped base models), ``minilora.paper`` (the paper's tables and
section 7), ``minilora.interop`` (PEFT and GPT-2 files) and ``minilora.teach``
(exercises, golden vectors, the course kit).
"""

import importlib
from pathlib import Path

from minilora import functional, lora, nn, ops, optim, transformer
from minilora._version import __version__
from minilora.backend import cuda_available, fast_paths
from minilora.creation import arange, manual_seed, ones, rand, randn, tensor, zeros
from minilora.gradcheck import gradcheck
from minilora.tensor import Tensor, is_grad_enabled, no_grad

# The faster twins of a few ops (minilora/fast/), which the student package leaves out. The
# folder itself is looked for, not the module: an editable install of the reference would
# otherwise lend its minilora.fast to a student package found first on the path.
if (Path(__file__).parent / "fast" / "__init__.py").is_file():
    importlib.import_module("minilora.fast").install()

# Loaded on first use (PEP 562), so that importing the engine stays light.
_LAZY = {"load_pretrained": "minilora.work.pretrained"}
_SUBPACKAGES = ("work", "paper", "interop", "teach")


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"minilora.{name}")
    raise AttributeError(f"module 'minilora' has no attribute {name!r}")


__all__ = [
    "__version__",
    "Tensor",
    "arange",
    "cuda_available",
    "fast_paths",
    "functional",
    "gradcheck",
    "is_grad_enabled",
    "load_pretrained",
    "lora",
    "manual_seed",
    "nn",
    "no_grad",
    "ones",
    "ops",
    "optim",
    "rand",
    "randn",
    "tensor",
    "transformer",
    "zeros",
]
