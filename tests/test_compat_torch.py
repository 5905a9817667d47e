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

import contextlib
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the compat extra: pip install -e '.[compat]'")
transformers = pytest.importorskip(
    "transformers", reason="needs the compat extra: pip install -e '.[compat]'"
)
peft = pytest.importorskip("peft", reason="needs the compat extra: pip install -e '.[compat]'")

from minilora.interop import hf  # noqa: E402
from minilora.interop.adapters import load_adapter  # noqa: E402
from minilora.lora import LoRAConfig, inject_lora, lora_layers, merge_and_unload  # noqa: E402
from minilora.tensor import no_grad  # noqa: E402
from minilora.transformer import GPT, GPTConfig  # noqa: E402
from minilora.work import io  # noqa: E402
from minilora.work.data import CharTokenizer  # noqa: E402

F32_TOL, F64_TOL = 1e-5, 1e-10
LARGEST: dict = {}  # check -> largest |logit difference| seen, per dtype


@pytest.fixture(scope="module", autouse=True)
def report_largest(request):
    """Print the largest differences after the module's tests, even without ``-s``."""
    yield
    lines = ["largest |logit difference| against transformers / PEFT:"]
    lines += [f"  {check:<44} {dtype}: {value:.3e}" for (check, dtype), value in LARGEST.items()]
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + "\n".join(lines))


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        yield


def compare(check, dtype, ours, theirs, record_property=None, tol=None):
    diff = float(np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64)).max())
    LARGEST[check, dtype] = max(diff, LARGEST.get((check, dtype), 0.0))
    if record_property is not None:
        record_property(f"{check} {dtype}", diff)
    tol = tol or (F32_TOL if dtype == "float32" else F64_TOL)
    assert diff <= tol, f"{check} ({dtype}): largest logit difference {diff:.3e} > {tol:g}"


def torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def our_logits(model, ids):
    with no_grad():
        return model(ids)[0].numpy()


def randomize_torch(model, seed):
    """Every parameter random (biases, LayerNorm scales too), so that no mix-up hides."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model


def gpt2_model(n_layer, n_head, n_embd, vocab=17, n_positions=24, seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        vocab_size=vocab,
        n_positions=n_positions,
        bos_token_id=None,
        eos_token_id=None,
    )
    return randomize_torch(transformers.GPT2LMHeadModel(config), seed).eval()


def our_model(n_layer=2, n_head=4, n_embd=20, vocab=17, n_positions=24, seed=0):
    rng = np.random.default_rng(seed)
    config = GPTConfig(
        vocab_size=vocab, block_size=n_positions, n_layer=n_layer, n_head=n_head, d_model=n_embd
    )
    model = GPT(config, generator=rng)
    for _, p in model.named_parameters():
        p.data = p.data + rng.normal(0.0, 0.3, p.shape).astype(np.float32)
    return model.eval()


def token_ids(vocab, length, seed=0, batch=2):
    return np.random.default_rng(seed).integers(0, vocab, (batch, length))


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
