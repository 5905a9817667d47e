"""minilora: LoRA (Hu et al. 2021, arXiv 2106.09685) from scratch on a tiny autograd engine."""

from minilora import functional, ops, optim
from minilora.backend import cuda_available
from minilora.creation import arange, manual_seed, ones, rand, randn, tensor, zeros
from minilora.gradcheck import gradcheck
from minilora.pretrained import load_pretrained
from minilora.tensor import Tensor, is_grad_enabled, no_grad

__version__ = "0.1.0"

__all__ = [
    "Tensor",
    "arange",
    "cuda_available",
    "functional",
    "gradcheck",
    "is_grad_enabled",
    "load_pretrained",
    "manual_seed",
    "no_grad",
    "ones",
    "ops",
    "optim",
    "rand",
    "randn",
    "tensor",
    "zeros",
]
