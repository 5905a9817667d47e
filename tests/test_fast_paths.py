"""Every fast path against its plain version, and the switch that picks one (README, "Plain
math first, fast path beside it").

The plain versions (``add_plain`` ... ``div_plain`` in broadcasting.py, ``gelu_plain`` and
``layer_norm_plain`` in functional.py, ``attention_plain`` in attention.py) read as the
formulas; the fast ones, the defaults, skip work or reuse buffers. For the same inputs
and the same output gradient, both must give the same forward and the same gradient
for every input:

* bit for bit where they do the same operations in the same order: add, sub, mul
  and div (forward and gradients), attention's forward and dV, layer norm's dL/db;
* otherwise to ``TOL`` of the largest term of the result, the term magnitudes
  computed here in float64 from absolute values (for a sum a + b, |a| + |b|):
  ``TOL = 1e-12`` in float64 (about 4,500 ulps), ``1e-5`` in float32 (about 80
  ulps). The two versions round one formula in another order: a few roundings per
  element, each at most an ulp of the largest term (measured: under 2 ulps), while a
  wrong formula is off by a whole term.

Each plain version is also gradchecked in float64 (test_functional.py and test_ops.py
gradcheck the public ops, which run the fast versions by default). Then the switch:
``minilora.fast_paths(False)`` as a call and as a ``with`` block, ``MINILORA_FAST_PATHS=0``,
each public op following it, and a whole GPT with the fast paths on and off.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    SEEDS,
    arrays,
    broadcastable_shapes,
    check_grads,
    distinct,
    divisors,
    leaf,
    on,
    shapes,
    to_host,
)

import minilora as ml
from minilora import attention as attn
from minilora import backend, broadcasting
from minilora import functional as F
from minilora.transformer import GPT, GPTConfig

TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
DTYPES = st.sampled_from([np.float64, np.float32])
GELU_C = math.sqrt(2.0 / math.pi)


# ---- running both versions ----------------------------------------------------------------
def run(op, arrays_, dtype, device, g, requires_grad=None, seed=None):
    """op(*leaves) and its backward for output gradient ``g``; returns out and each input's grad.

    With ``seed``, the global generator is reset just before the op (the same dropout mask).
    """
    requires_grad = requires_grad or [True] * len(arrays_)
    leaves = [leaf(a.astype(dtype), device, r) for a, r in zip(arrays_, requires_grad)]
    if seed is not None:
        ml.manual_seed(seed)
    out = op(*leaves)
    out.backward(on(device, g.astype(dtype)))
    grads = [None if t.grad is None else to_host(t.grad) for t in leaves]
    return to_host(out.data), grads


def both(plain, fast, arrays_, dtype, device, rng, requires_grad=None, seed=None):
    """(out, grads) of the plain version, of the fast one, and the random output gradient g."""
    probe = plain(*[leaf(a.astype(dtype), device) for a in arrays_])
    g = rng.standard_normal(probe.shape)
    return (
        run(plain, arrays_, dtype, device, g, requires_grad, seed),
        run(fast, arrays_, dtype, device, g, requires_grad, seed),
        g,
    )


def assert_same_bits(fast, plain, dtype):
    assert fast.dtype == plain.dtype == dtype and fast.shape == plain.shape
    assert np.array_equal(fast, plain), f"largest difference {np.abs(fast - plain).max()}"


def assert_close(fast, plain, dtype, scale):
    """|fast - plain| <= TOL[dtype] * scale, elementwise; scale = the largest term."""
    assert fast.dtype == plain.dtype == dtype and fast.shape == plain.shape
    worst = np.abs(fast.astype(np.float64) - plain.astype(np.float64)).max(initial=0.0)
    assert worst <= TOL[np.dtype(dtype)] * scale, (worst, scale)


def largest(x) -> float:
    return float(np.max(np.abs(x), initial=0.0))


# ---- add, sub, mul, div: the equal-shape shortcut, bit for bit ------------------------------
BINARY = {
    "add": (broadcasting.add_plain, broadcasting.add_fast, arrays),
    "sub": (broadcasting.sub_plain, broadcasting.sub_fast, arrays),
    "mul": (broadcasting.mul_plain, broadcasting.mul_fast, arrays),
    "div": (broadcasting.div_plain, broadcasting.div_fast, divisors),
}


@st.composite
def binary_shapes(draw):
    """Two broadcastable shapes (size-1 dims, different ranks), or one shape twice."""
    if draw(st.booleans()):
        shape = draw(shapes())
        return shape, shape
    return draw(broadcastable_shapes(2))


@pytest.mark.parametrize("name", BINARY)
@given(
    ab=binary_shapes(),
    requires_grad=st.sampled_from([[True, True], [True, False], [False, True]]),
    dtype=DTYPES,
    seed=SEEDS,
    data=st.data(),
)
def test_arithmetic_fast_equals_plain_bit_for_bit(
    name, ab, requires_grad, dtype, seed, data, device
):
    plain, fast, b_values = BINARY[name]
    a, b = data.draw(arrays(ab[0])), data.draw(b_values(ab[1]))
    rng = np.random.default_rng(seed)
    (out_p, grads_p), (out_f, grads_f), _ = both(
        plain, fast, [a, b], dtype, device, rng, requires_grad
    )
    assert_same_bits(out_f, out_p, dtype)
    for gf, gp, r in zip(grads_f, grads_p, requires_grad):
        assert (gf is None) == (gp is None) == (not r)
        if r:
            assert_same_bits(gf, gp, dtype)


@pytest.mark.parametrize("name", BINARY)
def test_arithmetic_names_the_op_and_the_shapes_that_do_not_broadcast(name, device):
    plain, fast, _ = BINARY[name]
    a, b = leaf(np.ones((2, 3)), device), leaf(np.ones((4,)), device)
    for version in (plain, fast):
        with pytest.raises(ValueError, match=rf"{name}: shapes \(2, 3\) and \(4,\) do not"):
            version(a, b)


@pytest.mark.parametrize("name", BINARY)
@given(ab=broadcastable_shapes(2), data=st.data())
def test_arithmetic_plain_gradcheck(name, ab, data, device):
    plain, _, b_values = BINARY[name]
    check_grads(plain, [data.draw(arrays(ab[0])), data.draw(b_values(ab[1]))], device)


# ---- GELU -------------------------------------------------------------------------------------
@given(shape=shapes(), dtype=DTYPES, seed=SEEDS, data=st.data())
def test_gelu_fast_matches_plain(shape, dtype, seed, data, device):
    """out = 0.5 x (1 + t): terms up to |x|. The slope 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 +
    3 * 0.044715 x^2): terms up to 1 + 0.5 |x| c (1 + 3 * 0.044715 x^2), times |g|."""
    x = data.draw(arrays(shape, -4.0, 4.0)).astype(dtype)
    (out_p, (gx_p,)), (out_f, (gx_f,)), g = both(
        F.gelu_plain, F.gelu_fast, [x], dtype, device, np.random.default_rng(seed)
    )
    x64 = x.astype(np.float64)
    assert_close(out_f, out_p, dtype, largest(x64))
    slope_terms = 1.0 + 0.5 * np.abs(x64) * GELU_C * (1.0 + 3 * 0.044715 * x64**2)
    assert_close(gx_f, gx_p, dtype, largest(np.abs(g) * slope_terms))


@given(shape=shapes(), data=st.data())
def test_gelu_plain_gradcheck(shape, data, device):
    check_grads(F.gelu_plain, [data.draw(arrays(shape, -4.0, 4.0))], device)


# ---- layer norm ------------------------------------------------------------------------------
PARAMS = [(True, True), (True, False), (False, True), (False, False)]


def layer_norm_of(with_weight, with_bias, version):
    def fn(x, *params):
        params = iter(params)
        weight = next(params) if with_weight else None
        return version(x, weight, next(params) if with_bias else None)

    return fn


@pytest.mark.parametrize("with_weight, with_bias", PARAMS)
@given(shape=shapes(min_dims=1, max_dims=3), dtype=DTYPES, seed=SEEDS, data=st.data())
def test_layer_norm_fast_matches_plain(with_weight, with_bias, shape, dtype, seed, data, device):
    """out = xhat w + b: terms |xhat w| and |b|. dL/dx = rstd (G - mean(G) - xhat mean(G
    xhat)), G = g w: terms rstd (|G| + mean|G| + |xhat| mean|G xhat|). dL/dw = sum of g
    xhat: terms sum of |g xhat|. dL/db = sum of g: the same sums in both, bit for bit."""
    x = data.draw(arrays(shape)).astype(dtype)
    w = data.draw(arrays(shape[-1:])).astype(dtype) if with_weight else None
    b = data.draw(arrays(shape[-1:])).astype(dtype) if with_bias else None
    arrs = [a for a in (x, w, b) if a is not None]
    plain = layer_norm_of(with_weight, with_bias, F.layer_norm_plain)
    fast = layer_norm_of(with_weight, with_bias, F.layer_norm_fast)
    (out_p, grads_p), (out_f, grads_f), g = both(
        plain, fast, arrs, dtype, device, np.random.default_rng(seed)
    )
    # the magnitudes, from the same centred values and variance both versions compute
    centred = x - x.mean(axis=-1, keepdims=True)
    var = (centred * centred).mean(axis=-1, keepdims=True).astype(np.float64)
    rstd = 1.0 / np.sqrt(var + 1e-5)
    xhat = np.abs(centred.astype(np.float64) * rstd)
    aw = 1.0 if w is None else np.abs(w.astype(np.float64))
    ab = 0.0 if b is None else np.abs(b.astype(np.float64))
    assert_close(out_f, out_p, dtype, largest(xhat * aw + ab))
    aG = np.abs(g) * aw
    terms = rstd * (aG + aG.mean(-1, keepdims=True) + xhat * (aG * xhat).mean(-1, keepdims=True))
    assert_close(grads_f[0], grads_p[0], dtype, largest(terms))
    lead = tuple(range(len(shape) - 1))
    if with_weight:
        assert_close(grads_f[1], grads_p[1], dtype, largest((np.abs(g) * xhat).sum(axis=lead)))
    if with_bias:
        assert_same_bits(grads_f[-1], grads_p[-1], dtype)


@pytest.mark.parametrize("with_weight, with_bias", PARAMS)
@given(shape=shapes(min_dims=1, max_dims=3), data=st.data())
def test_layer_norm_plain_gradcheck(with_weight, with_bias, shape, data, device):
    """Rows spread over [-2, 2] keep the variance far from 0 (rstd bounded)."""
    x = data.draw(distinct(shape, per_row=True))
    params = [data.draw(arrays(shape[-1:])) for flag in (with_weight, with_bias) if flag]
    check_grads(layer_norm_of(with_weight, with_bias, F.layer_norm_plain), [x, *params], device)


# ---- attention -------------------------------------------------------------------------------
@st.composite
def attention_cases(draw):
    """q (..., T, D), k and v (..., S, D), a hidden mask (T, S) or (..., T, S): causal with
    S - T cached keys, random (fully hidden rows included: padding), or none."""
    lead = draw(shapes(0, 2, max_side=3))
    T, extra, D = draw(st.integers(1, 4)), draw(st.integers(0, 3)), draw(st.integers(1, 4))
    S = T + extra
    q = draw(arrays((*lead, T, D)))
    k, v = draw(arrays((*lead, S, D))), draw(arrays((*lead, S, D)))
    kind = draw(st.sampled_from(["causal", "random", "none"]))
    mask_shape = draw(st.sampled_from([(T, S), (*lead, T, S)]))
    if kind == "causal":
        hidden = np.broadcast_to(np.triu(np.ones((T, S), dtype=bool), k=S - T + 1), mask_shape)
    elif kind == "random":
        hidden = np.random.default_rng(draw(SEEDS)).random(mask_shape) < 0.5
    else:
        hidden = np.zeros(mask_shape, dtype=bool)
    return q, k, v, np.ascontiguousarray(hidden)


def attention_of(version, hidden, dropout_p):
    return lambda q, k, v: version(q, k, v, hidden, dropout_p, True)


def np_probs(q, k, hidden):
    """P = softmax(Q K^T / sqrt(D), hidden excluded), in float64."""
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    scores = np.where(hidden, np.finfo(np.float64).min, scores)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@given(
    case=attention_cases(),
    dropout_p=st.sampled_from([0.0, 0.3]),
    requires_grad=st.sampled_from([[True, True, True], [False, True, True], [True, False, False]]),
    dtype=DTYPES,
    seed=SEEDS,
)
def test_attention_fast_matches_plain(case, dropout_p, requires_grad, dtype, seed, device):
    """The forward and dV = (P M)^T G: the same operations, bit for bit (dropout too: one
    seed, one mask M). dQ = dS K / sqrt(D) and dK = dS^T Q / sqrt(D): the fast version
    scales dS before the product. dS = P (dP - rowsum(dP P)), dP = (G V^T) M, so the
    terms are |dS| <= P (|G| |V|^T + rowsum(|G| |V|^T P)) / (1 - p), then |dS| |K| / sqrt(D)."""
    q, k, v, hidden = case
    mask = on(device, hidden)
    (out_p, grads_p), (out_f, grads_f), g = both(
        attention_of(attn.attention_plain, mask, dropout_p),
        attention_of(attn.attention_fast, mask, dropout_p),
        [q, k, v],
        dtype,
        device,
        np.random.default_rng(seed),
        requires_grad,
        seed,
    )
    assert_same_bits(out_f, out_p, dtype)
    for gf, gp, r in zip(grads_f, grads_p, requires_grad):
        assert (gf is None) == (gp is None) == (not r)
    if requires_grad[2]:
        assert_same_bits(grads_f[2], grads_p[2], dtype)
    q64, k64, v64 = (a.astype(dtype).astype(np.float64) for a in (q, k, v))
    P = np_probs(q64, k64, hidden)
    dP = np.abs(g) @ np.swapaxes(np.abs(v64), -1, -2) / (1.0 - dropout_p)
    dS = P * (dP + (dP * P).sum(-1, keepdims=True)) / math.sqrt(q.shape[-1])
    if requires_grad[0]:
        assert_close(grads_f[0], grads_p[0], dtype, largest(dS @ np.abs(k64)))
    if requires_grad[1]:
        assert_close(grads_f[1], grads_p[1], dtype, largest(np.swapaxes(dS, -1, -2) @ np.abs(q64)))


@given(case=attention_cases(), dropout_p=st.sampled_from([0.0, 0.3]), seed=SEEDS)
def test_attention_plain_gradcheck(case, dropout_p, seed, device):
    q, k, v, hidden = case
    mask = on(device, hidden)

    def fn(q, k, v):
        ml.manual_seed(seed)  # the same dropout mask on every evaluation
        return attn.attention_plain(q, k, v, mask, dropout_p, True)

    check_grads(fn, [q, k, v], device)


# ---- the switch ----------------------------------------------------------------------------
def test_switch_as_a_call_and_as_a_with_block_restores_the_previous_state():
    before = backend.fast_paths_enabled()
    try:
        ml.fast_paths(False)  # for the rest of the process
        assert not backend.fast_paths_enabled()
        with ml.fast_paths(True):
            assert backend.fast_paths_enabled()
            with ml.fast_paths(False):
                assert not backend.fast_paths_enabled()
            assert backend.fast_paths_enabled()
        assert not backend.fast_paths_enabled()  # the block restored the call's state
        ml.fast_paths(True)
        assert backend.fast_paths_enabled()
        with pytest.raises(KeyError), ml.fast_paths(False):
            raise KeyError("an error inside the block")
        assert backend.fast_paths_enabled()  # restored on the way out of an error too
    finally:
        ml.fast_paths(before)


@pytest.mark.parametrize(("env", "expected"), [("0", "False"), ("1", "True"), (None, "True")])
def test_environment_variable_sets_the_switch_at_import(env, expected):
    root = Path(__file__).resolve().parent.parent
    environ = {k: v for k, v in os.environ.items() if k != "MINILORA_FAST_PATHS"}
    if env is not None:
        environ["MINILORA_FAST_PATHS"] = env
    environ["PYTHONPATH"] = str(root)
    code = "import minilora.backend as b; print(b.fast_paths_enabled())"
    command = [sys.executable, "-c", code]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=environ, cwd=root)
    assert out.stdout.strip() == expected


def one_vector(device):
    return [leaf(np.linspace(-1.0, 1.0, 4), device)]


OPS = {  # public op, module, its versions' names, arguments
    "add": (broadcasting.add, broadcasting, "add", lambda d: one_vector(d) * 2),
    "sub": (broadcasting.sub, broadcasting, "sub", lambda d: one_vector(d) * 2),
    "mul": (broadcasting.mul, broadcasting, "mul", lambda d: one_vector(d) * 2),
    "div": (broadcasting.div, broadcasting, "div", lambda d: one_vector(d) * 2),
    "gelu": (F.gelu, F, "gelu", one_vector),
    "layer_norm": (F.layer_norm, F, "layer_norm", lambda d: one_vector(d) + [None, None]),
    "attention": (
        F.attention,
        attn,
        "attention",
        lambda d: [leaf(np.ones((2, 3)), d)] * 3 + [on(d, np.zeros((2, 2), dtype=bool))],
    ),
}


@pytest.mark.parametrize("name", OPS)
def test_each_public_op_runs_its_fast_version_unless_switched_off(name, monkeypatch, device):
    op, module, stem, args = OPS[name]
    calls = []
    for kind in ("plain", "fast"):
        real = getattr(module, f"{stem}_{kind}")
        monkeypatch.setattr(
            module, f"{stem}_{kind}", lambda *a, _r=real, _k=kind: calls.append(_k) or _r(*a)
        )
    op(*args(device))
    with ml.fast_paths(False):
        op(*args(device))
    op(*args(device))
    assert calls == ["fast", "plain", "fast"]


@st.composite
def gpt_cases(draw):
    """A small GPTConfig, a batch shape and a seed. d_model is at least 4: layer norm over
    2 or 3 numbers is ill-conditioned (rstd = 1 / |x1 - x2| amplifies a one-ulp difference)."""
    n_head = draw(st.integers(1, 2))
    config = GPTConfig(
        vocab_size=draw(st.integers(2, 12)),
        block_size=draw(st.integers(1, 6)),
        n_layer=draw(st.integers(1, 2)),
        n_head=n_head,
        d_model=n_head * draw(st.integers(4 // n_head, 4)),
        dropout=draw(st.sampled_from([0.0, 0.2])),
        bias=draw(st.booleans()),
    )
    B, T = draw(st.integers(1, 3)), draw(st.integers(1, config.block_size))
    return config, (B, T), draw(SEEDS)


GPT_TOL = {np.dtype(np.float64): 1e-11, np.dtype(np.float32): 1e-3}


@settings(max_examples=30, deadline=None)
@given(case=gpt_cases(), dtype=DTYPES)
def test_whole_gpt_same_loss_and_gradients_with_fast_paths_on_and_off(case, dtype, device):
    """Forward and backward of a random small GPT, weights redrawn large (attention far from
    uniform), dropout on with one seed. Differences of a few ulps in layer norm, GELU and
    attention pass through every layer after them, so the loss is compared to GPT_TOL
    relative (1e-11 in float64, 1e-3 in float32), the logits and every gradient to
    GPT_TOL of the largest logit and of the largest gradient of the model (measured
    over 1,500 random models: below 2e-14 in float64 and 1e-5 in float32)."""
    config, (B, T), seed = case
    rng = np.random.default_rng(seed)
    model = GPT(config, generator=rng).to(device=device, dtype=dtype)
    for p in model.parameters():
        p.data = on(device, to_host(p.data) + 0.5 * rng.standard_normal(p.shape).astype(dtype))
    idx, targets = rng.integers(0, config.vocab_size, (2, B, T))
    results = {}
    for fast in (True, False):
        model.zero_grad()
        with ml.fast_paths(fast):
            ml.manual_seed(seed)  # the same dropout masks
            logits, loss = model(idx, targets)
            loss.backward()
        grads = {n: to_host(p.grad) for n, p in model.named_parameters()}
        results[fast] = (loss.item(), to_host(logits.data), grads)
    (loss_f, logits_f, grads_f), (loss_p, logits_p, grads_p) = results[True], results[False]
    tol = GPT_TOL[np.dtype(dtype)]
    assert loss_f == pytest.approx(loss_p, rel=tol)
    np.testing.assert_allclose(logits_f, logits_p, rtol=0, atol=tol * largest(logits_p))
    scale = max(largest(g) for g in grads_p.values())
    for name, g in grads_f.items():
        assert g.dtype == dtype, name
        np.testing.assert_allclose(g, grads_p[name], rtol=0, atol=tol * scale, err_msg=name)
