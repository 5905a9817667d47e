"""The fused LoRA op (minilora.fast.lora.lora_linear) against Eq. 3 as LoRALinear writes it.

The fast path is the default only because these tests hold it equal to the plain
composition base(x) + s B A dropout(x): the forward bit for bit, the gradients to a few
roundings of their largest term (the tolerances of tests/test_lora.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import arrays, check_grads, leaf, shapes, to_host
from test_lora import F32_RTOL, F64_RTOL, SEEDS, assert_close, parts

import minilora as ml
from minilora import functional as F
from minilora.fast.lora import lora_linear
from minilora.lora import LoRAConfig, LoRALinear
from minilora.nn import Linear
from minilora.tensor import Tensor


# ---- the fast path: fast.lora.lora_linear against Eq. 3 as the layer writes it ----------------
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("dropout_p", [0.0, 0.4])
@given(
    lead=shapes(0, 2, max_side=3),
    dims=st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 3)),
    scaling=st.floats(0.25, 4.0),
    data=st.data(),
)
def test_lora_linear(with_bias, dropout_p, lead, dims, scaling, data, device):
    """W0 x + b + s B A dropout(x): equals the composed layers bit for bit (no dropout), and
    its gradients (the paper's formulas for dL/dA, dL/dB, dL/dX) pass gradcheck."""
    d_in, d_out, r = dims
    x, w = data.draw(arrays((*lead, d_in))), data.draw(arrays((d_out, d_in)))
    a, b = data.draw(arrays((r, d_in))), data.draw(arrays((d_out, r)))
    arrs = [x, w, a, b] + ([data.draw(arrays((d_out,)))] if with_bias else [])

    def fused(x, w, a, b, *bias):
        ml.manual_seed(7)  # the same dropout mask on every evaluation of gradcheck
        return lora_linear(x, w, bias[0] if bias else None, a, b, scaling, dropout_p, True)

    if dropout_p == 0.0:
        t = [leaf(v, device) for v in arrs]
        composed = F.linear(t[0], t[1], t[4] if with_bias else None)
        composed = composed + F.linear(F.linear(t[0], t[2]), t[3]) * scaling
        assert np.array_equal(to_host(fused(*t).data), to_host(composed.data))
    check_grads(fused, arrs, device)


def run_layer(layer, x, R, fast: bool, seed: int):
    """Forward and backward of L = sum(h * R) with the fast paths on or off.

    The seed is set just before the forward, so both paths draw the same dropout mask.
    Returns h and the gradients of x, A, B and the (trainable) bias.
    """
    for p in layer.parameters():
        p.grad = None
    xt = Tensor(x, requires_grad=True)
    with ml.fast_paths(fast):
        ml.manual_seed(seed)
        h = layer(xt)
        (h * Tensor(R)).sum().backward()
    bias = layer.base_layer.bias
    grads = {"x": xt.grad, "A": layer.lora_A["default"].weight.grad}
    grads["B"] = layer.lora_B["default"].weight.grad
    if bias is not None:
        grads["bias"] = bias.grad
    return h.data, grads


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
@settings(max_examples=50, deadline=None)
@given(
    dims=st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(1, 8)),
    lead=st.sampled_from([(1,), (3,), (2, 3), (1, 1, 4)]),
    alpha=st.floats(0.25, 32.0),
    dtype=st.sampled_from([np.float64, np.float32]),
    seed=SEEDS,
)
def test_fast_path_equals_eq3_as_written(with_bias, dropout_p, dims, lead, alpha, dtype, seed):
    """LoRALinear with the fast paths on (one fused op) and off (base + s B A dropout(x)).

    The forward is the same arithmetic in the same order: equal bit for bit, with
    dropout too (one seed, one mask). The backward applies s after the products
    instead of before, so the gradients agree to a few roundings of their largest
    term: F64_RTOL (1e-12) / F32_RTOL (1e-5) of the largest |term| of each gradient.
    """
    d_in, d_out, r = dims[0], dims[1], min(dims)  # r <= min(d_in, d_out)
    rng = np.random.default_rng(seed)
    layer = LoRALinear(Linear(d_in, d_out, bias=with_bias, dtype=dtype, generator=rng))
    config = LoRAConfig(r=r, alpha=alpha, dropout=dropout_p, target_modules=("layer",))
    layer.add_adapter("default", config, generator=rng)
    layer.lora_B["default"].weight.data = rng.normal(size=(d_out, r)).astype(dtype)
    if with_bias:
        layer.base_layer.bias.data = rng.normal(size=d_out).astype(dtype)
        layer.base_layer.bias.requires_grad_(True)  # bias="all": its gradient is compared too
    layer.train()
    x = rng.uniform(-1.0, 1.0, (*lead, d_in)).astype(dtype)
    R = rng.normal(size=(*lead, d_out)).astype(dtype)

    h_fast, g_fast = run_layer(layer, x, R, True, seed)
    h_plain, g_plain = run_layer(layer, x, R, False, seed)
    assert h_fast.dtype == h_plain.dtype == dtype
    assert np.array_equal(h_fast, h_plain)
    assert set(g_fast) == set(g_plain)
    rtol = F64_RTOL if dtype == np.float64 else F32_RTOL
    W0, _, A, B = parts(layer)
    s, aG, aX = config.scaling, np.abs(R.reshape(-1, d_out)), np.abs(x.reshape(-1, d_in))
    scales = {  # the largest term of each gradient (the paper's formulas, in absolute values)
        "x": (aG @ np.abs(W0)).max() + s * (aG @ np.abs(B) @ np.abs(A)).max() / (1 - dropout_p),
        "A": s * ((aG @ np.abs(B)).T @ aX).max() / (1 - dropout_p),
        "B": s * (aG.T @ (aX @ np.abs(A).T)).max() / (1 - dropout_p),
        "bias": aG.sum(axis=0).max(),
    }
    for name, g in g_fast.items():
        assert g.dtype == dtype and g.shape == g_plain[name].shape, name
        assert_close(g, g_plain[name], rtol, scales[name])
