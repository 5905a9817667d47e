"""The PyTorch grader of the golden vectors (minilora.teach.torch_grader) passes a correct
loralib-style LoRA layer and fails deliberately wrong ones, each on the check that names the fault.

Needs torch (the ``compat`` extra, installed in CI); skipped cleanly without it.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch", reason="torch is missing: pip install 'minilora[compat]'")

from minilora.teach.torch_grader import grade, main  # noqa: E402


class LoRALinear(torch.nn.Module):
    """A LoRA layer written from the paper and the golden manifest alone (loralib's names)."""

    def __init__(self, in_features, out_features, r, lora_alpha, zero_b=True, scale=True):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features), False)
        self.bias = torch.nn.Parameter(torch.zeros(out_features), False)
        bound = 1 / math.sqrt(in_features)
        self.lora_A = torch.nn.Parameter(torch.empty(r, in_features).uniform_(-bound, bound))
        B = torch.zeros(out_features, r) if zero_b else torch.randn(out_features, r)
        self.lora_B = torch.nn.Parameter(B)
        self.scaling = lora_alpha / r if scale else 1.0

    def forward(self, x):
        base = torch.nn.functional.linear(x, self.weight, self.bias)
        return base + self.scaling * (x @ self.lora_A.T) @ self.lora_B.T


class BNotZero(LoRALinear):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, zero_b=False, **kwargs)


class NoScaling(LoRALinear):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, scale=False, **kwargs)


class W0Trainable(LoRALinear):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight.requires_grad_(True)


class Transposed(LoRALinear):
    def forward(self, x):
        base = torch.nn.functional.linear(x, self.weight, self.bias)
        return base + self.scaling * (x @ self.lora_A.T) @ self.lora_B.T.flip(0)


def _failed(layer_class):
    return {check for check, ok, _ in grade(layer_class) if not ok}


def test_a_correct_torch_layer_passes_every_check():
    rows = grade(LoRALinear)
    assert rows and all(ok for _, ok, _ in rows), [r for r in rows if not r[1]]
    assert len(rows) >= 14  # two cases, outputs, gradients, init and frozen-W0 checks


@pytest.mark.parametrize(
    "wrong, fails",
    [
        (BNotZero, "lora_layer_init: B starts at zero"),
        (NoScaling, "lora_layer: grad_A"),
        (W0Trainable, "lora_layer: W0 gets no gradient"),
        (Transposed, "lora_layer: h"),
    ],
    ids=["B-not-zero", "no-alpha-over-r", "W0-trainable", "B-flipped"],
)
def test_a_wrong_torch_layer_fails_on_the_named_check(wrong, fails):
    failed = _failed(wrong)
    assert fails in failed, failed


def test_the_command_exits_1_on_a_wrong_layer(capsys):
    assert main([f"{__name__}:LoRALinear"]) == 0
    assert main([f"{__name__}:BNotZero"]) == 1
    assert "FAIL  lora_layer_init: B starts at zero" in capsys.readouterr().out
