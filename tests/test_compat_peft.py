"""PEFT's adapters into minilora (``compat`` extra): saved by PEFT on a GPT-2 checkpoint saved
by transformers, imported by ``minilora.interop.hf.import_gpt2``, with PEFT's logits; bfloat16
files exactly; the adapters minilora cannot represent refused. The other direction and the
GPT-2 checkpoints: tests/test_compat_torch.py."""

from __future__ import annotations

import numpy as np
import pytest
from hf_compat import (  # the compat extra's libraries (a skip without them) and shared checks
    F64_TOL,
    compare,
    gpt2_model,
    our_logits,
    peft,
    quiet,  # noqa: F401  (autouse fixture)
    report_largest,  # noqa: F401  (autouse fixture)
    token_ids,
    torch,
    torch_logits,
    transformers,
)

from minilora.interop import hf
from minilora.interop.adapters import load_adapter
from minilora.work import io

# (options, float64 tolerance). With alpha_pattern, mlp.c_proj's scaling 3/2 differs from the
# adapter's 8/2: minilora has one scaling per adapter, so B absorbs the ratio 3/8 and, stored
# in float32 like every adapter, is rounded once (relative 6e-8): equal to float32 precision.
PEFT_ADAPTERS = [
    (dict(r=2, lora_alpha=5, target_modules=["c_attn"]), F64_TOL),
    (
        dict(r=3, lora_alpha=4, target_modules=["c_attn", "c_proj", "c_fc"], use_rslora=True),
        F64_TOL,
    ),
    (
        dict(
            r=2,
            lora_alpha=8,
            target_modules=["c_attn", "mlp.c_proj"],
            layers_to_transform=[1],
            alpha_pattern={"c_proj": 3},
        ),
        1e-6,
    ),
]


def peft_adapter(tmp_path, options, seed=0):
    """A GPT-2 checkpoint and a PEFT adapter for it (B random), both saved by their libraries."""
    theirs = gpt2_model(2, 4, 20, seed=seed)
    theirs.save_pretrained(tmp_path / "gpt2", safe_serialization=True)
    config = peft.LoraConfig(task_type="CAUSAL_LM", fan_in_fan_out=True, **options)
    model = peft.get_peft_model(theirs, config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(tmp_path / "adapter")
    return model.eval()


@pytest.mark.parametrize("options,f64_tol", PEFT_ADAPTERS)
def test_peft_adapter_imports_with_peft_logits(tmp_path, options, f64_tol, record_property):
    theirs = peft_adapter(tmp_path, options)
    hf.import_gpt2(tmp_path / "gpt2", tmp_path / "ours", adapter=tmp_path / "adapter")
    ours, _, _ = io.load_model(tmp_path / "ours")
    load_adapter(ours, tmp_path / "ours" / hf.ADAPTER_SUBDIR)
    ours.eval()
    ids = token_ids(17, 24, seed=4)
    compare(
        "PEFT adapter -> minilora",
        "float32",
        our_logits(ours, ids),
        torch_logits(theirs, ids),
        record_property,
    )
    theirs.double()
    ours.to(dtype=np.float64)
    check = "PEFT adapter -> minilora" + (" (alpha_pattern)" if "alpha_pattern" in options else "")
    compare(
        check, "float64", our_logits(ours, ids), torch_logits(theirs, ids), record_property, f64_tol
    )


def test_peft_adapter_saved_in_bfloat16_imports_exactly(tmp_path, record_property):
    """NumPy has no bfloat16: minilora widens it to float32 itself, bit for bit as torch."""
    from safetensors import safe_open

    theirs = peft_adapter(tmp_path, dict(r=2, lora_alpha=4, target_modules=["c_attn", "c_fc"]))
    theirs.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    weights = tmp_path / "bf16" / "adapter_model.safetensors"
    with safe_open(weights, framework="pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}
    assert saved and all(t.dtype == torch.bfloat16 for t in saved.values())
    ours = io.load_arrays(weights)
    assert set(ours) == set(saved)
    for key, t in saved.items():
        assert ours[key].dtype == np.float32
        assert ours[key].tobytes() == t.float().numpy().tobytes(), key  # exact
    hf.import_gpt2(tmp_path / "gpt2", tmp_path / "ours", adapter=tmp_path / "bf16")
    model, _, _ = io.load_model(tmp_path / "ours")
    load_adapter(model, tmp_path / "ours" / hf.ADAPTER_SUBDIR)
    # PEFT in float32 with the same (bfloat16-rounded) adapter on the float32 base
    base = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2")
    reference = peft.PeftModel.from_pretrained(base, tmp_path / "bf16").float().eval()
    ids = token_ids(17, 24, seed=5)
    compare(
        "PEFT bfloat16 adapter -> minilora",
        "float32",
        our_logits(model.eval(), ids),
        torch_logits(reference, ids),
        record_property,
    )


def test_peft_adapters_we_cannot_convert_are_refused(tmp_path):
    peft_adapter(
        tmp_path / "dora", dict(r=2, lora_alpha=4, target_modules=["c_attn"], use_dora=True)
    )
    with pytest.raises(io.CheckpointError, match="'use_dora' is True: DoRA"):
        hf.import_gpt2(tmp_path / "dora" / "gpt2", tmp_path / "a", tmp_path / "dora" / "adapter")
    # c_attn of rank 4 with a B that is not block-structured, beside c_proj of rank 2
    peft_adapter(
        tmp_path / "ranks",
        dict(r=2, lora_alpha=4, target_modules=["c_attn", "c_proj"], rank_pattern={"c_attn": 4}),
    )
    with pytest.raises(io.CheckpointError, match="per-module ranks"):
        hf.import_gpt2(tmp_path / "ranks" / "gpt2", tmp_path / "b", tmp_path / "ranks" / "adapter")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
