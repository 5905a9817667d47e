"""Which Linear layers a target names: PEFT's rule, the full name or a dotted suffix, never a
match across a name boundary (issue 32)."""

from __future__ import annotations

import pytest
from test_lora import _gpt

from minilora.lora import LoRAConfig, inject_lora, lora_layers
from minilora.transformer import GPTConfig


# ---- target names: the full name or a dotted suffix, never across a name boundary ----------
@pytest.mark.parametrize("target", ["proj", "_proj", "q_pro", "ttn.q_proj", "0.attn.q_pro"])
def test_a_target_never_matches_across_a_name_boundary(target):
    """PEFT's rule: a target matches a module's full name or a suffix that starts after a
    dot. "proj" is not "q_proj", "q_pro" is not a name at all: each is refused and nothing
    is wrapped. Kills tools/mutants.py's ``target_plain_suffix`` (``endswith(t)``, which
    wraps every ``*_proj`` for "proj") and ``target_substring`` (``t in name``)."""
    model = _gpt(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=8), 13)
    with pytest.raises(ValueError, match=f"target_modules \\['{target}'\\] match no Linear"):
        inject_lora(model, LoRAConfig(r=2, target_modules=(target,)))
    assert not lora_layers(model)


@pytest.mark.parametrize(
    "target, layers",
    [
        ("q_proj", [0, 1]),
        ("attn.q_proj", [0, 1]),
        ("1.attn.q_proj", [1]),
        ("blocks.0.attn.q_proj", [0]),
    ],
)
def test_a_target_matches_the_full_name_or_a_dotted_suffix(target, layers):
    model = _gpt(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=8), 14)
    inject_lora(model, LoRAConfig(r=2, target_modules=(target,)))
    assert list(lora_layers(model)) == [f"blocks.{i}.attn.q_proj" for i in layers]
