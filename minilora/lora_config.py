"""The configuration of a LoRA adapter: its rank, its scaling alpha / r, what it adapts.

``minilora.lora`` offers it as ``LoRAConfig``; it is saved with an adapter
(``to_dict``) under the key names Hugging Face PEFT uses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

INITS = ("kaiming", "gaussian")
BIAS_MODES = ("none", "all", "lora_only")


@dataclass
class LoRAConfig:
    """What to adapt and how.

    r: the rank of dW. alpha: dW is scaled by alpha / r (alpha / sqrt(r) with
    ``use_rslora``, rsLoRA's choice that keeps large ranks learning).
    dropout: dropout on the adapter's input. target_modules: names (or dotted
    name suffixes) of the Linear layers to adapt. init: "kaiming" (A ~
    U(-1/sqrt(d_in), 1/sqrt(d_in)), as loralib and PEFT) or "gaussian" (A ~
    N(0, 1/r^2), PEFT's Gaussian option; the paper says "random Gaussian").
    bias: which biases train, "none", "all" or "lora_only".
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple = ("q_proj", "v_proj")
    init: str = "kaiming"
    use_rslora: bool = False
    bias: str = "none"
    extra: dict = field(default_factory=dict)  # free-form, saved with the adapter

    def __post_init__(self):
        if isinstance(self.target_modules, str):
            self.target_modules = (self.target_modules,)
        self.target_modules = tuple(self.target_modules)
        real = (int, float, np.integer, np.floating)
        if isinstance(self.r, bool) or not isinstance(self.r, (int, np.integer)) or self.r < 1:
            raise ValueError(f"LoRAConfig: r={self.r!r} must be an integer >= 1")
        if not (isinstance(self.alpha, real) and 0 < self.alpha < math.inf):  # inf: NaN logits
            raise ValueError(f"LoRAConfig: alpha={self.alpha!r} must be a finite number > 0")
        if not (isinstance(self.dropout, real) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"LoRAConfig: dropout={self.dropout!r} must be a number in [0, 1)")
        if self.init not in INITS:
            raise ValueError(f"LoRAConfig: init={self.init!r}; expected one of {INITS}")
        if self.bias not in BIAS_MODES:
            raise ValueError(f"LoRAConfig: bias={self.bias!r}; expected one of {BIAS_MODES}")
        if not self.target_modules:
            raise ValueError("LoRAConfig: target_modules is empty; name at least one Linear")

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d
