"""LoRALinear against the paper's formulas (section 4); bad configurations refused.

Every expected value is computed here in plain NumPy from the paper's
equations, never with minilora's own code. With rows X (n x k) as inputs,
H = X W0^T + b + s X A^T B^T and G = dL/dH (n x d):

    dL/dB = s G^T (X A^T)      (d x r)
    dL/dA = s (G B)^T X        (r x k)
    dL/dX = G W0 + s (G B) A   (n x k)

with s = alpha / r (alpha / sqrt(r) for rsLoRA). The loss is L = sum(H * R)
for a fixed random R, so G = R exactly.

Tolerances. In float64 minilora and NumPy evaluate the same products, at most
summed in another order, so they agree to a few ulps of the largest term:
``F64_RTOL = 1e-12`` of the magnitude of the terms leaves a margin of 1000x
while any wrong factor (a lost s, r instead of sqrt(r), a transposed B) is
off by O(1). float32 is compared with a float64 reference at 1e-5 of the
terms' magnitude (float32 rounds at 6e-8; these sums have at most 16 terms).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minilora as ml
from minilora.gradcheck import gradcheck
from minilora.lora import LoRAConfig, LoRALinear, inject_lora, lora_layers
from minilora.nn import Linear, Module
from minilora.tensor import Tensor, no_grad
from minilora.transformer import GPT, GPTConfig

F64_RTOL = 1e-12
F32_RTOL = 1e-5
SEEDS = st.integers(0, 2**32 - 1)


def scaling(alpha, r, rslora):
    """The paper's s = alpha / r; rsLoRA's alpha / sqrt(r)."""
    return alpha / math.sqrt(r) if rslora else alpha / r


@st.composite
def layer_cases(draw, dtype=np.float64):
    """A LoRALinear with random shape, rank, alpha, init, and a random nonzero B."""
    d_in, d_out = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    r = draw(st.integers(1, min(d_in, d_out)))
    config = LoRAConfig(
        r=r,
        alpha=draw(st.floats(0.25, 64.0)),
        use_rslora=draw(st.booleans()),
        init=draw(st.sampled_from(["kaiming", "gaussian"])),
        target_modules=("layer",),
    )
    rng = np.random.default_rng(draw(SEEDS))
    bias = draw(st.booleans())
    layer = LoRALinear(Linear(d_in, d_out, bias=bias, dtype=dtype, generator=rng))
    layer.add_adapter("default", config, generator=rng)
    assert not np.any(layer.lora_B["default"].weight.data)  # B starts at zero
    layer.lora_B["default"].weight.data = rng.normal(0.0, 1.0, (d_out, r)).astype(dtype)
    lead = draw(st.sampled_from([(), (2,), (2, 3)]))  # rows, or batches of rows
    x = rng.uniform(-1.0, 1.0, (*lead, draw(st.integers(1, 5)), d_in)).astype(dtype)
    return layer, config, x, rng


def parts(layer, name="default"):
    W0 = layer.base_layer.weight.data.astype(np.float64)
    b = layer.base_layer.bias
    b = np.zeros(W0.shape[0]) if b is None else b.data.astype(np.float64)
    A = layer.lora_A[name].weight.data.astype(np.float64)
    B = layer.lora_B[name].weight.data.astype(np.float64)
    return W0, b, A, B


def numpy_forward(W0, b, A, B, s, X):
    """Eq. 3 with rows as inputs: H = X W0^T + b + s (X A^T) B^T."""
    return X @ W0.T + b + s * (X @ A.T) @ B.T


def assert_close(actual, expected, rtol, scale):
    """|actual - expected| <= rtol * scale elementwise, scale = the magnitude of the terms."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * max(scale, 1e-30))


def term_scale(W0, b, A, B, s, X):
    """The magnitude of the largest term of H: errors are relative to it, not to H."""
    ax = np.abs(X)
    return float(
        (ax @ np.abs(W0).T).max() + np.abs(b).max() + s * ((ax @ np.abs(A).T) @ np.abs(B).T).max()
    )


# ---- proof 3: the forward and the gradients are the paper's -----------------------------
@settings(max_examples=100, deadline=None)
@given(case=layer_cases(), dtype=st.sampled_from([np.float64, np.float32]))
def test_forward_is_W0x_plus_b_plus_scaled_BAx(case, dtype):
    layer, config, x, _ = case
    layer.to(dtype=dtype)
    W0, b, A, B = parts(layer)
    s = scaling(config.alpha, config.r, config.use_rslora)
    assert layer.configs["default"].scaling == pytest.approx(s, rel=1e-15)
    x = x.astype(dtype)
    out = layer(Tensor(x))
    assert out.dtype == dtype and out.shape == (*x.shape[:-1], W0.shape[0])
    X = x.astype(np.float64)
    expected = numpy_forward(W0, b, A, B, s, X)
    rtol = F64_RTOL if dtype == np.float64 else F32_RTOL
    assert_close(out.data, expected, rtol, term_scale(W0, b, A, B, s, X))


@settings(max_examples=100, deadline=None)
@given(case=layer_cases())
def test_gradients_are_the_closed_forms(case):
    layer, config, x, rng = case
    W0, b, A, B = parts(layer)
    s = scaling(config.alpha, config.r, config.use_rslora)
    xt = Tensor(x, requires_grad=True)
    out = layer(xt)
    R = rng.normal(size=out.shape)  # L = sum(H * R), so G = dL/dH = R
    (out * Tensor(R)).sum().backward()

    k, d = x.shape[-1], W0.shape[0]
    X, G = x.reshape(-1, k), R.reshape(-1, d)  # rows
    dB = s * G.T @ (X @ A.T)
    dA = s * (G @ B).T @ X
    dX = G @ W0 + s * (G @ B) @ A
    gA = layer.lora_A["default"].weight.grad
    gB = layer.lora_B["default"].weight.grad
    assert gA.shape == A.shape and gB.shape == B.shape and xt.grad.shape == x.shape
    ag, aX = np.abs(G), np.abs(X)
    assert_close(gB, dB, F64_RTOL, s * (ag.T @ (aX @ np.abs(A).T)).max())
    assert_close(gA, dA, F64_RTOL, s * ((ag @ np.abs(B)).T @ aX).max())
    scale_x = (ag @ np.abs(W0)).max() + s * ((ag @ np.abs(B)) @ np.abs(A)).max()
    assert_close(xt.grad.reshape(-1, k), dX, F64_RTOL, scale_x)
    # W0 and b are frozen: no gradient at all, not even a zero array
    assert layer.base_layer.weight.grad is None
    assert layer.base_layer.bias is None or layer.base_layer.bias.grad is None


@settings(max_examples=40, deadline=None)
@given(case=layer_cases())
def test_lora_linear_passes_gradcheck_in_float64(case):
    layer, _, x, _ = case
    A = layer.lora_A["default"].weight
    B = layer.lora_B["default"].weight
    xt = Tensor(x, requires_grad=True)
    # gradcheck perturbs A.data and B.data in place, so the layer sees every perturbation
    assert gradcheck(lambda x_, a_, b_: layer(x_), [xt, A, B], name="LoRALinear")


def test_gradcheck_catches_a_wrong_scaling():
    """The gradcheck above can fail: a layer whose backward misses s is caught."""
    rng = np.random.default_rng(0)
    layer = LoRALinear(Linear(4, 3, dtype=np.float64, generator=rng))
    layer.add_adapter("default", LoRAConfig(r=2, alpha=6.0), generator=rng)
    B = layer.lora_B["default"].weight
    B.data = rng.normal(size=B.shape)

    def wrong(x_, b_):  # the forward adds s B A x three times, the backward once
        out = layer(x_)
        return out + Tensor((out.data - layer.base_layer(x_).data) * 2.0)

    with pytest.raises(AssertionError):
        gradcheck(wrong, [Tensor(rng.normal(size=(2, 4)), requires_grad=True), B])


# ---- seeded injection draws from its own generator only --------------------------------------


def test_seeded_injection_leaves_the_global_generator_where_it_was():
    """inject_lora(..., generator=g) draws A from g alone; B = 0 draws nothing. (Before
    0.x, B was a Linear whose random start, drawn from the global generator and then
    zeroed, moved the global random state: the next dropout mask changed.)"""
    model = GPT(
        GPTConfig(vocab_size=5, block_size=4, n_layer=2, n_head=1, d_model=4),
        generator=np.random.default_rng(0),
    )
    ml.manual_seed(123)
    expected = np.random.default_rng(123).random(3)  # the global generator's next draws
    inject_lora(model, LoRAConfig(r=2), generator=np.random.default_rng(7))
    np.testing.assert_array_equal(ml.creation.default_generator().random(3), expected)
    for layer in lora_layers(model).values():
        assert not np.any(layer.lora_B["default"].weight.data)  # B = 0


# ---- proof 5 (one layer): merge, unmerge, and their guards ----------------------------------
@settings(max_examples=100, deadline=None)
@given(case=layer_cases(), dtype=st.sampled_from([np.float64, np.float32]))
def test_merged_layer_equals_unmerged_and_unmerge_restores_W0(case, dtype):
    layer, config, x, _ = case
    layer.to(dtype=dtype)
    x = Tensor(x.astype(dtype))
    W0_before = layer.base_layer.weight.data.copy()
    W0, b, A, B = parts(layer)
    s = scaling(config.alpha, config.r, config.use_rslora)
    with no_grad():
        unmerged = layer(x).data
    layer.merge()
    assert layer.merged
    W = layer.base_layer.weight.data
    rtol = F64_RTOL if dtype == np.float64 else F32_RTOL
    dW_scale = s * (np.abs(B) @ np.abs(A)).max()
    assert_close(W, W0 + s * B @ A, rtol, np.abs(W0).max() + dW_scale)  # W = W0 + s B A
    with no_grad():
        merged = layer(x).data
    assert_close(merged, unmerged, 4 * rtol, term_scale(W0, b, A, B, s, x.data.astype(np.float64)))
    layer.unmerge()
    assert not layer.merged
    # W0 + dW - dW: two roundings of size ulp(|W0| + |dW|)
    assert_close(layer.base_layer.weight.data, W0_before, rtol, np.abs(W0).max() + dW_scale)


def test_merge_with_nan_raises_and_leaves_the_weight_unchanged():
    rng = np.random.default_rng(1)
    layer = LoRALinear(Linear(5, 4, generator=rng))
    layer.add_adapter("default", LoRAConfig(r=2), generator=rng)
    B = layer.lora_B["default"].weight
    B.data = rng.normal(size=B.shape).astype(np.float32)
    B.data[1, 0] = np.nan
    before = layer.base_layer.weight.data.copy()
    with pytest.raises(FloatingPointError, match="non-finite"):
        layer.merge()
    assert np.array_equal(layer.base_layer.weight.data, before)
    assert not layer.merged


def test_forward_with_gradients_through_a_merged_layer_is_refused():
    rng = np.random.default_rng(2)
    layer = LoRALinear(Linear(5, 4, generator=rng))
    layer.add_adapter("default", LoRAConfig(r=2), generator=rng)
    B = layer.lora_B["default"].weight
    B.data = rng.normal(size=B.shape).astype(np.float32)
    x = Tensor(rng.normal(size=(3, 5)).astype(np.float32))
    with no_grad():
        unmerged = layer(x).data
    layer.merge()
    with pytest.raises(RuntimeError, match="merged"):
        layer(x)  # A and B would silently get no gradient
    with no_grad():
        np.testing.assert_allclose(layer(x).data, unmerged, rtol=1e-5, atol=1e-6)


# ---- proof 8: bad configurations are refused by name ------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"r": 0}, ["r=0", ">= 1"]),
        ({"r": -3}, ["r=-3"]),
        ({"r": 2.5}, ["r=2.5"]),
        ({"alpha": 0.0}, ["alpha=0.0", "> 0"]),
        ({"alpha": -4.0}, ["alpha=-4.0"]),
        ({"alpha": float("nan")}, ["alpha=nan"]),
        ({"dropout": 1.0}, ["dropout=1.0", "[0, 1)"]),
        ({"dropout": -0.1}, ["dropout=-0.1"]),
        ({"bias": "some"}, ["bias='some'", "lora_only"]),
        ({"init": "xavier"}, ["init='xavier'", "kaiming", "gaussian"]),
        ({"target_modules": ()}, ["target_modules"]),
    ],
)
def test_bad_config_values_raise_value_errors_naming_them(kwargs, words):
    with pytest.raises(ValueError) as info:
        LoRAConfig(**kwargs)
    for word in words:
        assert word in str(info.value)


@given(d_in=st.integers(1, 6), d_out=st.integers(1, 6), extra=st.integers(1, 4))
@settings(max_examples=20, deadline=None)
def test_rank_above_min_dimension_is_refused_with_the_limit(d_in, d_out, extra):
    limit = min(d_in, d_out)
    layer = LoRALinear(Linear(d_in, d_out))
    with pytest.raises(ValueError) as info:
        layer.add_adapter("default", LoRAConfig(r=limit + extra))
    assert f"r={limit + extra}" in str(info.value) and f"= {limit}" in str(info.value)
    layer.add_adapter("default", LoRAConfig(r=limit))  # the limit itself is allowed
    assert layer.lora_A["default"].weight.shape == (limit, d_in)
    assert layer.lora_B["default"].weight.shape == (d_out, limit)


TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc_in", "fc_out")


def _gpt(config, seed):
    return GPT(config, generator=np.random.default_rng(seed))


# ---- proof 8 (model level): ranks and targets that do not fit ---------------------------------
@settings(max_examples=10, deadline=None)
@given(
    d_model=st.sampled_from([8, 10, 12]), extra=st.integers(1, 5), target=st.sampled_from(TARGETS)
)
def test_inject_rank_above_limit_names_the_module_and_limit(d_model, extra, target):
    gpt_config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=d_model)
    model = _gpt(gpt_config, 8)
    with pytest.raises(ValueError) as info:
        inject_lora(model, LoRAConfig(r=d_model + extra, target_modules=(target,)))
    message = str(info.value)
    assert f"r={d_model + extra}" in message and f"= {d_model}" in message
    assert f"blocks.0.{'mlp' if target.startswith('fc') else 'attn'}.{target}" in message


def test_inject_unknown_target_lists_the_existing_modules():
    gpt_config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8)
    model = _gpt(gpt_config, 9)
    with pytest.raises(ValueError) as info:
        inject_lora(model, LoRAConfig(r=2, target_modules=("q_proj", "query")))
    message = str(info.value)
    assert "'query'" in message
    for name in TARGETS:
        assert name in message
    assert not lora_layers(model)  # nothing was wrapped


class TwoLinears(Module):
    def __init__(self):
        self.wide = Linear(8, 8)
        self.narrow = Linear(8, 2)  # min(8, 2) = 2: the rank limit


def test_failed_injection_leaves_the_model_as_it_was():
    model = TwoLinears()
    model.narrow.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="'narrow'.*r=4"):
        inject_lora(model, LoRAConfig(r=4, target_modules=("wide", "narrow")))
    assert not lora_layers(model)  # "wide" was wrapped first, and unwrapped again
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags

    gpt = inject_lora(
        _gpt(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8), 11),
        LoRAConfig(r=2, target_modules=("v_proj",)),
    )
    names = {n: p.requires_grad for n, p in gpt.named_parameters()}
    with pytest.raises(ValueError, match="already exists"):  # q_proj is new, v_proj is not
        inject_lora(gpt, LoRAConfig(r=3, target_modules=("q_proj", "v_proj", "fc_in")))
    assert {n: p.requires_grad for n, p in gpt.named_parameters()} == names
    assert list(lora_layers(gpt)) == ["blocks.0.attn.v_proj"]  # q_proj unwrapped again
    assert all(layer.active_adapter == "default" for layer in lora_layers(gpt).values())


def test_adapters_inside_a_lora_layer_are_not_targets():
    """An adapter may be named like a target; a second injection must not wrap A or B."""
    gpt = _gpt(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8), 12)
    inject_lora(gpt, LoRAConfig(r=2, target_modules=("q_proj",)), "q_proj")
    inject_lora(gpt, LoRAConfig(r=2, target_modules=("q_proj",)), "task_b")
    assert list(lora_layers(gpt)) == ["blocks.0.attn.q_proj"]
    with pytest.raises(ValueError) as info:
        inject_lora(gpt, LoRAConfig(r=2, target_modules=("query",)), "task_c")
    assert "base_layer" not in str(info.value) and "'q_proj'" in str(info.value)


def test_delta_weight_in_float64_for_the_analyses():
    """dW = (alpha/r) B A from the layer itself, in W0's dtype or in float64 (section 7)."""
    from minilora.paper.analysis import update_spectrum

    rng = np.random.default_rng(0)
    layer = LoRALinear(Linear(5, 7, dtype=np.float32, generator=rng))
    layer.add_adapter("default", LoRAConfig(r=2, alpha=1.0), generator=rng)
    layer.lora_B["default"].weight.data = rng.standard_normal((7, 2)).astype(np.float32)
    a, b = layer.lora_A["default"].weight.data, layer.lora_B["default"].weight.data
    dw = layer.delta_weight(dtype=np.float64)
    assert dw.dtype == np.float64 and dw.shape == (7, 5)
    np.testing.assert_allclose(dw, 0.5 * b.astype(np.float64) @ a.astype(np.float64), rtol=1e-12)
    assert layer.delta_weight().dtype == np.float32
    assert update_spectrum(dw).numerical_rank == 2


# ---- the adapter's dropout in eval mode ------------------------------------------------------
@pytest.mark.parametrize("fast", [True, False])
def test_adapter_dropout_is_off_in_eval_mode(fast):
    """With dropout 0.5 and the layer in eval mode, both paths compute Eq. 3 without
    dropout: the NumPy formula, to float64 round-off. Kills tools/mutants.py's
    ``lora_plain_dropout_in_eval`` (``F.dropout(x, p, True)`` in the plain path)."""
    from minilora import fast_paths

    rng = np.random.default_rng(15)
    layer = LoRALinear(Linear(6, 5, dtype=np.float64, generator=rng))
    layer.add_adapter("default", LoRAConfig(r=2, alpha=4.0, dropout=0.5), generator=rng)
    layer.lora_B["default"].weight.data = rng.standard_normal((5, 2))
    layer.eval()
    x = rng.standard_normal((3, 6))
    with fast_paths(fast):
        out = layer(Tensor(x)).data
    W0, b, A, B = parts(layer)
    expected = numpy_forward(W0, b, A, B, 2.0, x)  # s = alpha / r = 2
    assert_close(out, expected, F64_RTOL, term_scale(W0, b, A, B, 2.0, x))
