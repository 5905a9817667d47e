"""LoRA injected into a small GPT: the paper's section 4 claims, as property tests.

Random model sizes, ranks, alphas, inits and target sets; expected values come
from the base model itself, from NumPy, or from the paper's formulas.

Tolerances for merged against unmerged logits, relative to max |logits|, with B
random and scaled so that dW = s B A is about as large as W0 (a trained update):
float64 1e-12 and float32 1e-5. Merging re-associates (W0 + s B A) x against
W0 x + s B (A x), which changes only the rounding; over 400 random cases the
worst was 5e-16 (float64) and 2.3e-7 (float32), so the margins are 2000x and
40x, while a wrong merge (a lost s, B A transposed, the wrong adapter) moves the
logits by O(1) of their scale.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilora import functional, ops
from minilora import lora as L
from minilora.fast import attention as fast_attention
from minilora.fast import lora as fast_lora
from minilora.nn import Linear
from minilora.optim import AdamW
from minilora.tensor import no_grad
from minilora.transformer import GPT, GPTConfig

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc_in", "fc_out")
SEEDS = st.integers(0, 2**32 - 1)
MERGE_RTOL = {np.float64: 1e-12, np.float32: 1e-5}


@st.composite
def cases(draw, min_T=1):
    """A small GPT, a LoRAConfig for it, a batch of token ids and a seeded Generator."""
    d_model = draw(st.sampled_from([8, 10, 12, 14, 16]))
    gpt = GPTConfig(
        vocab_size=draw(st.integers(11, 17)),
        block_size=8,
        n_layer=draw(st.integers(1, 2)),
        n_head=2,
        d_model=d_model,
    )
    targets = tuple(sorted(draw(st.sets(st.sampled_from(TARGETS), min_size=1))))
    config = L.LoRAConfig(
        r=draw(st.integers(1, d_model)),  # every target has min(d_in, d_out) = d_model
        alpha=draw(st.floats(0.5, 64.0)),
        dropout=draw(st.sampled_from([0.0, 0.1, 0.5])),
        target_modules=targets,
        init=draw(st.sampled_from(["kaiming", "gaussian"])),
        use_rslora=draw(st.booleans()),
    )
    rng = np.random.default_rng(draw(SEEDS))
    idx = rng.integers(0, gpt.vocab_size, (2, draw(st.integers(min_T, 8))))
    return gpt, config, idx, rng


def make_gpt(gpt_config, seed, dtype=np.float32):
    return GPT(gpt_config, generator=np.random.default_rng(seed)).to(dtype=dtype)


def logits(model, idx):
    with no_grad():
        return model(idx)[0].data.copy()


def adapted_names(gpt_config, targets):
    """The module paths LoRA should wrap, spelled out from the GPT's layout."""
    where = {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "o_proj": "attn"}
    return {
        f"blocks.{i}.{where.get(t, 'mlp')}.{t}" for i in range(gpt_config.n_layer) for t in targets
    }


def assert_merge_close(actual, expected, dtype):
    atol = MERGE_RTOL[dtype] * np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


def randomize_B(model, rng, size=0.02):
    """Random nonzero B for every adapter, scaled so that dW = s B A has entries of about
    ``size``, like W0's (a trained update of W0's size, not one that swamps it)."""
    for layer in L.lora_layers(model).values():
        for name, config in layer.configs.items():
            A, B = layer.lora_A[name].weight, layer.lora_B[name].weight
            rms_A = float(np.sqrt(np.mean(A.data.astype(np.float64) ** 2)))
            std = size / (config.scaling * np.sqrt(config.r) * rms_A)
            B.data = rng.normal(0.0, std, B.shape).astype(B.dtype)


# ---- proof 1: dW = B A = 0 at the start ----------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(case=cases(), dtype=st.sampled_from([np.float32, np.float64]))
def test_injection_leaves_the_logits_unchanged_bit_for_bit(case, dtype):
    gpt_config, config, idx, rng = case
    model = make_gpt(gpt_config, 0, dtype)
    before = model(idx)[0].data.copy()
    L.inject_lora(model, config, generator=rng)
    assert set(L.lora_layers(model)) == adapted_names(gpt_config, config.target_modules)
    for layer in L.lora_layers(model).values():
        A = layer.lora_A["default"].weight.data
        assert A.dtype == dtype and A.shape == (config.r, layer.in_features) and np.any(A)
        if config.init == "kaiming":  # U(-1/sqrt(d_in), 1/sqrt(d_in))
            assert np.abs(A).max() <= 1 / math.sqrt(layer.in_features)
        assert not np.any(layer.lora_B["default"].weight.data)  # B = 0
    model.train()  # adapter dropout is active: still B (A x') = 0 exactly
    assert np.array_equal(model(idx)[0].data, before)
    assert np.array_equal(logits(model.eval(), idx), before)


# ---- proof 2: while B = 0 only B moves ---------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(case=cases(min_T=2), weight_decay=st.sampled_from([0.0, 0.01]))
def test_first_step_moves_only_B_and_the_second_moves_A(case, weight_decay):
    gpt_config, config, idx, rng = case
    model = make_gpt(gpt_config, 1)
    L.inject_lora(model, config, generator=rng)
    model.eval()  # no dropout: the same function at both steps
    targets = rng.integers(0, gpt_config.vocab_size, idx.shape)
    layers = L.lora_layers(model).values()
    As = [layer.lora_A["default"].weight for layer in layers]
    Bs = [layer.lora_B["default"].weight for layer in layers]
    lr = 1e-2
    opt = AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    model(idx, targets)[1].backward()
    for A, B in zip(As, Bs):
        assert A.grad is not None and not np.any(A.grad)  # dL/dA = s (G B)^T X = 0
        assert np.any(B.grad)  # dL/dB = s G^T (X A^T) != 0
    A0, B0 = [A.data.copy() for A in As], [B.data.copy() for B in Bs]
    opt.step()
    for A, a0, B, b0 in zip(As, A0, Bs, B0):
        # the gradient moves A by nothing; decoupled weight decay only scales it
        assert np.array_equal(A.data, a0 * (1 - lr * weight_decay))
        assert not np.array_equal(B.data, b0)

    A1 = [A.data.copy() for A in As]
    opt.zero_grad()
    model(idx, targets)[1].backward()
    opt.step()
    for A, a1 in zip(As, A1):
        assert np.any(A.grad) and not np.array_equal(A.data, a1 * (1 - lr * weight_decay))


# ---- proof 4: frozen weights cost no gradient and no optimizer state ---------------------------
class CountingMM:
    """Wraps ops.mm (and the copies functional and the fast twins imported) and records the shape
    of every product that computes a weight gradient: a 2-D product neither of whose operands is a
    parameter. (dL/dx = G W multiplies by a parameter; dL/dW = G^T X multiplies two
    activations; attention's products are 4-D.)"""

    def __init__(self, params):
        self.params = [p.data for p in params]
        self.shapes = Counter()

    def __call__(self, x, y):
        out = x @ y
        is_param = any(np.may_share_memory(a, w) for a in (x, y) for w in self.params)
        if out.ndim == 2 and not is_param:
            self.shapes[out.shape] += 1
        return out


def backward_products(model, idx, targets):
    loss = model(idx, targets)[1]
    counter = CountingMM(model.parameters())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ops, "mm", counter)
        mp.setattr(functional, "mm", counter)  # functional did `from minilora.ops import mm`
        mp.setattr(fast_lora, "mm", counter)  # and so did the fused LoRA layer (the fast twin)
        mp.setattr(fast_attention, "mm", counter)
        loss.backward()
    return counter.shapes


@settings(max_examples=40, deadline=None)
@given(case=cases(min_T=2))
def test_frozen_weights_get_no_gradient_no_product_and_no_optimizer_state(case):
    gpt_config, config, idx, rng = case
    targets = rng.integers(0, gpt_config.vocab_size, idx.shape)
    linear_shapes = Counter(
        m.weight.shape for m in make_gpt(gpt_config, 2).modules() if isinstance(m, Linear)
    )
    assert sum(linear_shapes.values()) == 6 * gpt_config.n_layer

    full = make_gpt(gpt_config, 2).train()  # full fine-tuning: every weight trains
    # one weight-gradient product per Linear plus one for the tied LM head (vocab, d_model)
    expected_full = linear_shapes + Counter({(gpt_config.vocab_size, gpt_config.d_model): 1})
    assert backward_products(full.eval(), idx, targets) == expected_full

    model = L.inject_lora(make_gpt(gpt_config, 2), config, generator=rng).eval()
    layers = L.lora_layers(model)
    products = backward_products(model, idx, targets)
    expected = Counter()  # only dL/dA (r, d_in) and dL/dB (d_out, r), once per adapted layer
    for layer in layers.values():
        expected[(config.r, layer.in_features)] += 1
        expected[(layer.out_features, config.r)] += 1
    assert products == expected
    # full fine-tuning: 6 L + 1 weight-gradient products; LoRA: none of them, 2 small ones per layer
    assert sum(expected_full.values()) == 6 * gpt_config.n_layer + 1

    lora_params = {id(layer.lora_A["default"].weight) for layer in layers.values()}
    lora_params |= {id(layer.lora_B["default"].weight) for layer in layers.values()}
    for name, p in model.named_parameters():
        if id(p) in lora_params:
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name

    opt = AdamW(model.parameters(), lr=1e-3)
    opt.step()
    trainable = sum(p.size for p in model.parameters() if p.requires_grad)
    assert set(opt.state) == lora_params
    assert opt.state_bytes() == 2 * 4 * trainable  # m and v, float32, for A and B only


# ---- proof 5 (whole model): merge, unmerge, merge_and_unload ------------------------------------
@settings(max_examples=50, deadline=None)
@given(case=cases(), dtype=st.sampled_from([np.float64, np.float32]))
def test_merged_model_equals_unmerged_and_unmerge_restores_W0(case, dtype):
    gpt_config, config, idx, rng = case
    model = L.inject_lora(make_gpt(gpt_config, 3, dtype), config, generator=rng).eval()
    randomize_B(model, rng)
    W0 = {n: layer.base_layer.weight.data.copy() for n, layer in L.lora_layers(model).items()}
    unmerged = logits(model, idx)
    L.merge(model)
    assert all(layer.merged for layer in L.lora_layers(model).values())
    merged = logits(model, idx)
    assert_merge_close(merged, unmerged, dtype)
    for name, layer in L.lora_layers(model).items():  # dW != 0 was folded in
        assert not np.array_equal(layer.base_layer.weight.data, W0[name])

    L.unmerge(model)
    for name, layer in L.lora_layers(model).items():
        W = layer.base_layer.weight.data
        A, B = layer.lora_A["default"].weight.data, layer.lora_B["default"].weight.data
        dW_scale = layer.configs["default"].scaling * (np.abs(B) @ np.abs(A)).max()
        # W0 + dW - dW rounds twice at ulp(|W0| + |dW|): 4 ulps of room
        tol = 4 * np.finfo(dtype).eps * (np.abs(W0[name]).max() + dW_scale)
        np.testing.assert_allclose(W, W0[name], rtol=0, atol=tol)
    assert_merge_close(logits(model, idx), unmerged, dtype)

    L.merge(model)
    plain = L.merge_and_unload(model)
    assert not L.lora_layers(plain)
    assert not any(isinstance(m, L.LoRALinear) for m in plain.modules())
    assert [n for n, _ in plain.named_parameters()] == [
        n for n, _ in make_gpt(gpt_config, 3).named_parameters()
    ]
    assert np.array_equal(logits(plain, idx), merged)


def test_merging_a_model_with_nan_raises():
    gpt_config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8)
    model = L.inject_lora(make_gpt(gpt_config, 4), L.LoRAConfig(r=2))
    layer = model.blocks[0].attn.q_proj
    layer.lora_B["default"].weight.data[0, 0] = np.nan
    before = layer.base_layer.weight.data.copy()
    with pytest.raises(FloatingPointError):
        L.merge(model)
    assert np.array_equal(layer.base_layer.weight.data, before) and not layer.merged


def test_training_forward_through_a_merged_model_is_refused():
    gpt_config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8)
    model = L.merge(L.inject_lora(make_gpt(gpt_config, 5), L.LoRAConfig(r=2)))
    idx = np.array([[1, 2, 3]])
    with pytest.raises(RuntimeError, match="merged"):
        model(idx)
    assert logits(model, idx).shape == (1, 3, 11)


# ---- proof 6: which parameters train ---------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(case=cases(), bias=st.sampled_from(["none", "all", "lora_only"]))
def test_mark_only_lora_as_trainable(case, bias):
    gpt_config, config, _, rng = case
    model = L.inject_lora(make_gpt(gpt_config, 6), config, generator=rng)
    L.mark_only_lora_as_trainable(model, bias=bias)
    names = [n for n, _ in model.named_parameters()]
    adapted = adapted_names(gpt_config, config.target_modules)
    expected = {f"{m}.lora_{ab}.default.weight" for m in adapted for ab in "AB"}
    if bias == "all":  # every bias: Linear and LayerNorm
        expected |= {n for n in names if n.endswith(".bias")}
    elif bias == "lora_only":  # the biases of the adapted Linear layers only
        expected |= {f"{m}.base_layer.bias" for m in adapted}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    assert expected <= set(names)
    with pytest.raises(ValueError, match="bias='lora'"):
        L.mark_only_lora_as_trainable(model, bias="lora")


# ---- proof 7: |Theta| = 2 x L_hat x d_model x r ----------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    n_layer=st.integers(1, 4),
    half_d=st.integers(2, 24),
    targets=st.sampled_from([("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "o_proj")]),
    r_frac=st.floats(0.0, 1.0),
)
def test_count_parameters_follows_the_papers_formula(n_layer, half_d, targets, r_frac):
    d_model = 2 * half_d
    r = max(1, round(r_frac * d_model))
    gpt_config = GPTConfig(vocab_size=13, block_size=8, n_layer=n_layer, n_head=2, d_model=d_model)
    model = make_gpt(gpt_config, 7)
    base_total = sum(p.size for p in model.parameters())
    L.inject_lora(model, L.LoRAConfig(r=r, target_modules=targets))
    L_hat = len(targets) * n_layer
    count = L.count_parameters(model)
    assert count.trainable == 2 * L_hat * d_model * r
    assert count.total == base_total + count.trainable
    text = str(count)
    m = re.fullmatch(
        r"trainable params: ([\d,]+) \|\| all params: ([\d,]+) \|\| trainable%: (\d+\.\d+)", text
    )
    assert m, text
    assert int(m[1].replace(",", "")) == count.trainable
    assert int(m[2].replace(",", "")) == count.total
    assert float(m[3]) == pytest.approx(100 * count.trainable / count.total, abs=1e-4)


def test_count_parameters_string_matches_peft():
    count = L.ParameterCount(trainable=294_912, total=125_000_000)
    assert (
        str(count) == "trainable params: 294,912 || all params: 125,000,000 || trainable%: 0.2359"
    )


# ---- proof 9: named adapters and task switching -------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(case=cases(min_T=3), targets_b=st.sets(st.sampled_from(TARGETS), min_size=1))
def test_named_adapters_switch_tasks_on_one_base(case, targets_b):
    gpt_config, config_a, idx, rng = case
    config_b = L.LoRAConfig(r=1, alpha=3.0, target_modules=tuple(sorted(targets_b)))
    model = make_gpt(gpt_config, 10).eval()
    base = logits(model, idx)
    L.inject_lora(model, config_a, "task_a", generator=rng)
    L.inject_lora(model, config_b, "task_b", generator=rng)
    model.eval()  # new LoRA layers start in training mode (adapter dropout on), as in PyTorch
    randomize_B(model, rng)

    # each task's outputs, from a model that holds that adapter alone (the same A and B)
    def alone(name, config):
        single = L.inject_lora(make_gpt(gpt_config, 10), config, name).eval()
        for path, layer in L.lora_layers(single).items():
            twin = model.get_submodule(path)
            for part in ("lora_A", "lora_B"):
                getattr(layer, part)[name].weight.data = getattr(twin, part)[name].weight.data
        return logits(single, idx)

    expected = {"task_a": alone("task_a", config_a), "task_b": alone("task_b", config_b)}
    assert not np.array_equal(expected["task_a"], expected["task_b"])
    for name in ["task_a", "task_b", "task_a", "task_b"]:
        L.set_adapter(model, name)
        assert np.array_equal(logits(model, idx), expected[name]), name
        with L.disable_adapters(model):
            assert np.array_equal(logits(model, idx), base)
        assert np.array_equal(logits(model, idx), expected[name]), name

    L.set_adapter(model, "task_a")
    L.merge(model)  # deployment: W0 + s B A for task_a, then back and over to task_b
    assert_merge_close(logits(model, idx), expected["task_a"], np.float32)
    L.unmerge(model)
    L.set_adapter(model, "task_b")
    assert_merge_close(logits(model, idx), expected["task_b"], np.float32)

    L.delete_adapter(model, "task_b")
    assert all("task_b" not in layer.configs for layer in L.lora_layers(model).values())
    assert not any("task_b" in n for n, _ in model.named_parameters())
    with pytest.raises(KeyError, match="task_b"):
        L.set_adapter(model, "task_b")
    L.set_adapter(model, "task_a")
    assert_merge_close(logits(model, idx), expected["task_a"], np.float32)


def test_merging_a_model_with_nan_in_its_last_layer_changes_no_layer():
    """Kills the mutant merge_without_checking_every_layer (tools/mutants.py): each layer's
    W0 + dW is checked before any layer changes, so a NaN in the last LoRA layer leaves
    the layers before it unmerged too (not half a model merged)."""
    gpt_config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=8)
    model = L.inject_lora(make_gpt(gpt_config, 4), L.LoRAConfig(r=2))
    layers = L.lora_layers(model)
    rng = np.random.default_rng(5)
    for layer in layers.values():  # B != 0, so a merged layer's weight would change
        B = layer.lora_B["default"].weight
        B.data = rng.normal(size=B.shape).astype(B.dtype)
    last_path, last = list(layers.items())[-1]
    last.lora_B["default"].weight.data[0, 0] = np.nan
    before = {path: layer.base_layer.weight.data.copy() for path, layer in layers.items()}
    with pytest.raises(FloatingPointError, match=re.escape(last_path)):
        L.merge(model)
    for path, layer in layers.items():
        assert not layer.merged, path
        assert np.array_equal(layer.base_layer.weight.data, before[path]), path
