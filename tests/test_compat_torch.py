"""minilora.interop.hf against the real thing: transformers' GPT-2, PEFT's LoRA (``compat`` extra).

Every model is built offline with random weights (no hub downloads). Checked:
GPT-2 checkpoints written by ``save_pretrained`` import into minilora with the
same logits and the same greedy continuation; our exports load in
``GPT2LMHeadModel.from_pretrained`` with no missing or unexpected keys and the
same logits; our adapters load in ``PeftModel.from_pretrained`` (unmerged and
merged) and PEFT's adapters import into minilora, with the same logits.

The largest differences seen are printed at the end of the run (and recorded
as junit properties): the README quotes them.
"""

from __future__ import annotations

import numpy as np
import pytest
from hf_compat import (  # the compat extra's libraries (a skip without them) and shared checks
    compare,
    gpt2_model,
    our_logits,
    our_model,
    peft,
    quiet,  # noqa: F401  (autouse fixture)
    report_largest,  # noqa: F401  (autouse fixture)
    token_ids,
    torch,
    torch_logits,
    transformers,
)

from minilora.interop import hf
from minilora.lora import LoRAConfig, inject_lora, lora_layers, merge_and_unload
from minilora.tensor import no_grad
from minilora.work.data import CharTokenizer

# (layers, heads, width): head sizes 3, 5, 4, 8, 1
SHAPES = [(1, 4, 12), (2, 4, 20), (3, 2, 8), (2, 2, 16), (1, 3, 3)]


@pytest.mark.parametrize("n_layer,n_head,n_embd", SHAPES)
def test_gpt2_checkpoint_imports_with_transformers_logits_and_greedy_tokens(
    tmp_path, n_layer, n_head, n_embd, record_property
):
    theirs = gpt2_model(n_layer, n_head, n_embd, seed=n_layer * 100 + n_embd)
    theirs.save_pretrained(tmp_path / "gpt2", safe_serialization=True)
    ours, _ = hf.load_gpt2(tmp_path / "gpt2")
    ids = token_ids(17, 24)
    compare(
        "GPT-2 checkpoint -> minilora",
        "float32",
        our_logits(ours, ids),
        torch_logits(theirs, ids),
        record_property,
    )
    theirs.double()
    ours.to(dtype=np.float64)
    compare(
        "GPT-2 checkpoint -> minilora",
        "float64",
        our_logits(ours, ids),
        torch_logits(theirs, ids),
        record_property,
    )
    prompt = ids[:, :8]
    with torch.no_grad():
        expected = theirs.generate(
            torch.tensor(prompt),
            attention_mask=torch.ones(prompt.shape, dtype=torch.long),
            max_new_tokens=12,
            do_sample=False,
            pad_token_id=0,
        ).numpy()
    np.testing.assert_array_equal(ours.generate(prompt, 12, temperature=0), expected)


@pytest.mark.parametrize("n_layer,n_head,n_embd", SHAPES[:3])
def test_our_export_loads_in_transformers_with_no_missing_keys(
    tmp_path, n_layer, n_head, n_embd, record_property
):
    ours = our_model(n_layer, n_head, n_embd, seed=n_embd)
    hf.save_gpt2(ours, tmp_path / "hf", CharTokenizer("abcdefghijklmnopq"))
    theirs, info = transformers.GPT2LMHeadModel.from_pretrained(
        tmp_path / "hf", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"] and not info["error_msgs"], info
    theirs.eval()
    ids = token_ids(17, 24, seed=1)
    compare(
        "minilora -> GPT2LMHeadModel",
        "float32",
        our_logits(ours, ids),
        torch_logits(theirs, ids),
        record_property,
    )
    theirs.double()
    ours.to(dtype=np.float64)
    compare(
        "minilora -> GPT2LMHeadModel",
        "float64",
        our_logits(ours, ids),
        torch_logits(theirs, ids),
        record_property,
    )


ADAPTERS = [
    (("q_proj", "v_proj"), False),
    (("q_proj", "k_proj", "v_proj", "o_proj", "fc_in", "fc_out"), False),
    (("v_proj", "o_proj", "fc_out"), True),
]


@pytest.mark.parametrize("targets,rslora", ADAPTERS)
def test_our_adapter_loads_in_peft_unmerged_and_merged(tmp_path, targets, rslora, record_property):
    ours = our_model(seed=5)
    rng = np.random.default_rng(6)
    inject_lora(
        ours, LoRAConfig(r=2, alpha=5.0, target_modules=targets, use_rslora=rslora), generator=rng
    )
    for layer in lora_layers(ours).values():
        B = layer.lora_B["default"].weight
        B.data = rng.normal(0.0, 0.5, B.shape).astype(np.float32)
    ours.eval()
    hf.save_gpt2(ours, tmp_path / "hf")
    base = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf")
    theirs = peft.PeftModel.from_pretrained(base, tmp_path / "hf" / hf.ADAPTER_SUBDIR).eval()
    ids = token_ids(17, 24, seed=2)
    unmerged = our_logits(ours, ids)
    check = "minilora adapter -> PeftModel"
    compare(check, "float32", unmerged, torch_logits(theirs, ids), record_property)
    with no_grad():
        merged_model = merge_and_unload(ours)
    compare(
        check + " (ours merged)",
        "float32",
        our_logits(merged_model, ids),
        torch_logits(theirs, ids),
        record_property,
    )
    theirs_merged = theirs.merge_and_unload()
    compare(
        check + " (both merged)",
        "float32",
        our_logits(merged_model, ids),
        torch_logits(theirs_merged, ids),
        record_property,
    )
    # PEFT's merged weights are ours, fused and transposed into GPT-2's layout
    expected = hf.to_gpt2_state(merged_model)
    for key, value in theirs_merged.state_dict().items():
        if key in expected:
            np.testing.assert_allclose(value.numpy(), expected[key], rtol=0, atol=1e-6, err_msg=key)
    theirs_merged.double()
    merged_model.to(dtype=np.float64)
    compare(
        check + " (both merged)",
        "float64",
        our_logits(merged_model, ids),
        torch_logits(theirs_merged, ids),
        record_property,
    )


def test_our_adapter_in_peft_float64(tmp_path, record_property):
    ours = our_model(seed=7)
    rng = np.random.default_rng(8)
    inject_lora(
        ours,
        LoRAConfig(r=3, alpha=4.0, target_modules=("q_proj", "v_proj", "fc_in")),
        generator=rng,
    )
    for layer in lora_layers(ours).values():
        B = layer.lora_B["default"].weight
        B.data = rng.normal(0.0, 0.5, B.shape).astype(np.float32)
    ours.eval()
    hf.save_gpt2(ours, tmp_path / "hf")
    base = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf")
    theirs = peft.PeftModel.from_pretrained(base, tmp_path / "hf" / hf.ADAPTER_SUBDIR).eval()
    theirs.double()
    ours.to(dtype=np.float64)
    ids = token_ids(17, 24, seed=3)
    compare(
        "minilora adapter -> PeftModel",
        "float64",
        our_logits(ours, ids),
        torch_logits(theirs, ids),
        record_property,
    )


def test_each_of_two_named_adapters_loads_in_peft(tmp_path, record_property):
    """Adapter "default" on q_proj, "b" on v_proj: each exported alone computes what ours does with
    only that adapter active (set_adapter leaves the other's layers without one)."""
    from minilora.lora import set_adapter

    ours = our_model(seed=9)
    rng = np.random.default_rng(10)
    inject_lora(ours, LoRAConfig(r=2, alpha=3.0, target_modules=("q_proj",)), generator=rng)
    inject_lora(ours, LoRAConfig(r=3, alpha=5.0, target_modules=("v_proj",)), "b", generator=rng)
    for layer in lora_layers(ours).values():
        for name in layer.lora_B.keys():
            B = layer.lora_B[name].weight
            B.data = rng.normal(0.0, 0.5, B.shape).astype(np.float32)
    ours.eval()
    ids = token_ids(17, 24, seed=6)
    for name in ("b", "default"):
        hf.save_gpt2(ours, tmp_path / name, adapter_name=name)
        base = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / name)
        theirs = peft.PeftModel.from_pretrained(base, tmp_path / name / hf.ADAPTER_SUBDIR).eval()
        set_adapter(ours, name)
        compare(
            "minilora named adapter -> PeftModel",
            "float32",
            our_logits(ours, ids),
            torch_logits(theirs, ids),
            record_property,
        )


def test_shipped_char_small_exports_with_the_same_logits_and_text(tmp_path, record_property):
    """The real (tiny) pretrained model through `minilora export-hf`, logits up to ~15."""
    from minilora.cli import main
    from minilora.work.pretrained import PRETRAINED_DIR, load_pretrained

    if not (PRETRAINED_DIR / "char-small" / "model.safetensors").is_file():
        pytest.skip("the shipped char-small model is not in this checkout")
    assert main(["export-hf", "char-small", str(tmp_path / "hf")]) == 0
    ours, tokenizer, _ = load_pretrained("char-small")
    ours.eval()
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    assert hf.load_gpt2(tmp_path / "hf")[1].chars == tokenizer.chars
    ids = tokenizer.encode("The Python language reference describes the syntax")[None]
    # float32 rounding grows with the logits' size (|logit| up to ~15 here): 5e-5 absolute
    compare(
        "char-small -> GPT2LMHeadModel",
        "float32",
        our_logits(ours, ids),
        torch_logits(theirs, ids),
        record_property,
        tol=5e-5,
    )
    theirs.double()
    ours.to(dtype=np.float64)
    compare(
        "char-small -> GPT2LMHeadModel",
        "float64",
        our_logits(ours, ids),
        torch_logits(theirs, ids),
        record_property,
    )
    with torch.no_grad():
        expected = theirs.generate(
            torch.tensor(ids),
            attention_mask=torch.ones(ids.shape, dtype=torch.long),
            max_new_tokens=30,
            do_sample=False,
            pad_token_id=0,
        ).numpy()
    assert tokenizer.decode(ours.generate(ids, 30, temperature=0)[0]) == tokenizer.decode(
        expected[0]
    )
