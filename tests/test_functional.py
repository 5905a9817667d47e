"""Property tests for the fused ops in ``minilora.functional``.

Same recipe as ``test_ops.py``: random shapes and axes, the forward against a
plain NumPy formula, the backward gradchecked in float64 element by element.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    SEEDS,
    arrays,
    assert_forward,
    check_grads,
    distinct,
    leaf,
    on,
    shapes,
    to_host,
)

from minilora import functional as F


# ---- NumPy references --------------------------------------------------------------
def np_log_softmax(x, axis=-1):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def np_gelu(x):  # GPT-2's tanh approximation
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def np_layer_norm(x, weight, bias, eps=1e-5):
    xhat = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return xhat * (1.0 if weight is None else weight) + (0.0 if bias is None else bias)


# ---- linear ---------------------------------------------------------------------------
@pytest.mark.parametrize("with_bias", [True, False])
@given(
    lead=shapes(0, 3, max_side=4),
    io=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    data=st.data(),
)
def test_linear(with_bias, lead, io, data, device):
    """y = x W^T + b for x of shape (..., in): 1-D to 4-D inputs."""
    n_in, n_out = io
    x = data.draw(arrays((*lead, n_in)))
    w = data.draw(arrays((n_out, n_in)))
    arrs = [x, w] + ([data.draw(arrays((n_out,)))] if with_bias else [])
    expected = x @ w.T + (arrs[2] if with_bias else 0.0)
    assert_forward(F.linear(*[leaf(a, device) for a in arrs]), expected)
    check_grads(F.linear, arrs, device)


# ---- softmax family ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(shape=shapes(min_dims=1), data=st.data())
def test_softmax_and_log_softmax(name, shape, data, device):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = data.draw(arrays(shape, -4.0, 4.0))
    expected = np_log_softmax(x, axis)
    expected = np.exp(expected) if name == "softmax" else expected
    op = getattr(F, name)
    assert_forward(op(leaf(x, device), axis=axis), expected)
    check_grads(lambda t: op(t, axis=axis), [x], device)


@st.composite
def classification(draw, ignore_index):
    """Logits (..., C) and integer targets (...), some of them ``ignore_index``."""
    shape = draw(shapes(min_dims=1, max_dims=3))
    classes = shape[-1]
    logits = draw(arrays(shape, -3.0, 3.0))
    rng = np.random.default_rng(draw(SEEDS))
    targets = rng.integers(0, classes, size=shape[:-1])
    ignored = rng.random(shape[:-1]) < draw(st.sampled_from([0.0, 0.3, 1.0]))
    return logits, np.where(ignored, ignore_index, targets)


@pytest.mark.parametrize("ignore_index", [-100, 0])
@given(data=st.data())
def test_cross_entropy(ignore_index, data, device):
    """Mean over the positions not ignored; all ignored gives loss 0 and gradient 0."""
    logits, targets = data.draw(classification(ignore_index), label="problem")
    rows, flat_t = np_log_softmax(logits).reshape(-1, logits.shape[-1]), targets.reshape(-1)
    valid = flat_t != ignore_index
    picked = rows[np.arange(len(flat_t)), np.where(valid, flat_t, 0)]
    expected = -picked[valid].sum() / max(valid.sum(), 1)
    t = on(device, targets)
    assert_forward(F.cross_entropy(leaf(logits, device), t, ignore_index=ignore_index), expected)
    check_grads(lambda z: F.cross_entropy(z, t, ignore_index=ignore_index), [logits], device)
    if not valid.any():
        z = leaf(logits, device)
        F.cross_entropy(z, t, ignore_index=ignore_index).backward()
        assert not to_host(z.grad).any()


def test_cross_entropy_matches_hand_computation(device):
    logits = leaf(np.array([[0.0, math.log(3.0)], [2.0, 2.0]]), device)
    loss = F.cross_entropy(logits, on(device, np.array([1, 0])))
    # -log(3/4) and -log(1/2), averaged
    assert loss.item() == pytest.approx((math.log(4 / 3) + math.log(2)) / 2, rel=1e-12)


# ---- layer norm ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "with_weight, with_bias", [(True, True), (True, False), (False, True), (False, False)]
)
@given(shape=shapes(min_dims=1, max_dims=3), data=st.data())
def test_layer_norm(with_weight, with_bias, shape, data, device):
    """Rows spread over [-2, 2] keep the variance far from 0 (rstd bounded)."""
    x = data.draw(distinct(shape, per_row=True))
    w = data.draw(arrays(shape[-1:])) if with_weight else None
    b = data.draw(arrays(shape[-1:])) if with_bias else None
    arrs = [a for a in (x, w, b) if a is not None]

    def fn(*ts):
        ts = iter(ts)
        x_t = next(ts)
        return F.layer_norm(x_t, next(ts) if with_weight else None, next(ts) if with_bias else None)

    assert_forward(fn(*[leaf(a, device) for a in arrs]), np_layer_norm(x, w, b))
    check_grads(fn, arrs, device)


# ---- gelu, dropout, embedding ---------------------------------------------------------------
@given(shape=shapes(), data=st.data())
def test_gelu(shape, data, device):
    x = data.draw(arrays(shape, -4.0, 4.0))
    assert_forward(F.gelu(leaf(x, device)), np_gelu(x))
    check_grads(F.gelu, [x], device)


@given(shape=shapes(), p=st.sampled_from([0.1, 0.5, 0.9]), seed=SEEDS, data=st.data())
def test_dropout_gradient_is_the_mask(shape, p, seed, data, device):
    """Training: out = x * mask / (1 - p), and d(out)/dx is that same scaled mask."""
    x_np = data.draw(arrays(shape, 0.5, 2.0))
    keep = (np.random.default_rng(seed).random(shape) >= p) / (1.0 - p)
    x = leaf(x_np, device)
    out = F.dropout(x, p, generator=np.random.default_rng(seed))
    assert_forward(out, x_np * keep)
    out.backward(on(device, np.ones(shape)))
    np.testing.assert_array_equal(to_host(x.grad), keep)
    # a generator seeded afresh on every call draws the same mask each time
    check_grads(lambda t: F.dropout(t, p, generator=np.random.default_rng(seed)), [x_np], device)


def test_dropout_drops_about_p(device):
    x = leaf(np.ones(20_000), device)
    out = to_host(F.dropout(x, 0.3, generator=np.random.default_rng(0)).data)
    assert abs((out == 0).mean() - 0.3) < 0.02
    np.testing.assert_allclose(np.unique(out), [0.0, 1 / 0.7])


@pytest.mark.parametrize("p, training", [(0.0, True), (0.5, False), (0.0, False)])
def test_dropout_identity_in_eval_or_p0(p, training, device):
    x = leaf(np.random.default_rng(0).standard_normal((3, 4)), device)
    out = F.dropout(x, p, training=training)
    assert out is x
    (out * 2.0).sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), np.full((3, 4), 2.0))


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_bad_p(p, device):
    with pytest.raises(ValueError, match=r"dropout: p="):
        F.dropout(leaf(np.ones(3), device), p)


@given(
    rows=st.integers(1, 6), dim=st.integers(1, 4), idx_shape=shapes(0, 2, max_side=4), seed=SEEDS
)
def test_embedding_repeated_indices(rows, dim, idx_shape, seed, device):
    """Rows picked several times receive the sum of their gradients."""
    rng = np.random.default_rng(seed)
    weight = rng.uniform(-2, 2, size=(rows, dim))
    indices = rng.integers(0, rows, size=idx_shape)
    flat = indices.reshape(-1)
    if flat.size >= 2:
        flat[-1] = flat[0]  # at least one repeat
    idx = on(device, indices)
    assert_forward(F.embedding(leaf(weight, device), idx), weight[indices])
    check_grads(lambda w: F.embedding(w, idx), [weight], device)
    w = leaf(weight, device)
    F.embedding(w, idx).sum().backward()
    counts = np.bincount(flat, minlength=rows)[:, None] * np.ones(dim)
    np.testing.assert_array_equal(to_host(w.grad), counts)


def test_causal_mask(device):
    mask = to_host(F.causal_mask(3, device=device))
    np.testing.assert_array_equal(mask, [[False, True, True], [False, False, True], [False] * 3])
    # 2 new queries after 2 cached positions: query t sees keys 0 .. 2 + t
    mask = to_host(F.causal_mask(2, 4, device=device))
    np.testing.assert_array_equal(mask, [[False, False, False, True], [False] * 4])
    assert F.causal_mask(2, 4, device=device) is F.causal_mask(2, 4, device=device)  # made once


# ---- attention ------------------------------------------------------------------------
def np_attention(q, k, v, hidden):
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    scores = np.where(hidden, np.finfo(scores.dtype).min, scores)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


@given(
    lead=shapes(0, 2, max_side=3),
    tsd=st.tuples(st.integers(1, 4), st.integers(0, 3), st.integers(1, 4)),
    mask_kind=st.sampled_from(["causal", "random", "none"]),
    data=st.data(),
)
def test_attention(lead, tsd, mask_kind, data, device):
    """softmax(Q K^T / sqrt(D), hidden excluded) V, with causal, random (rows fully
    hidden included: padding) or no masks, and the mask broadcast over lead dims."""
    T, extra, D = tsd
    S = T + extra  # keys: a cache of `extra` earlier positions plus the T new ones
    q = data.draw(arrays((*lead, T, D)))
    k, v = data.draw(arrays((*lead, S, D))), data.draw(arrays((*lead, S, D)))
    if mask_kind == "causal":
        hidden = np.triu(np.ones((T, S), dtype=bool), k=S - T + 1)
    elif mask_kind == "random":
        hidden = np.random.default_rng(data.draw(SEEDS)).random((T, S)) < 0.5
    else:
        hidden = np.zeros((T, S), dtype=bool)
    mask = on(device, hidden)
    assert_forward(
        F.attention(leaf(q, device), leaf(k, device), leaf(v, device), mask),
        np_attention(q, k, v, hidden),
    )
    check_grads(lambda q, k, v: F.attention(q, k, v, mask), [q, k, v], device)


# ---- large logits, per-row key padding (issue 32) -----------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_and_log_softmax_on_large_logits(name, dtype, device):
    """Rows offset by 1e4, -1e4 and 3e4: exp overflows past 88 (float32) and 709 (float64),
    so only the max shift keeps the results finite. Both ops are unchanged by adding one
    number to a row, so the expected values are the float64 formulas on the rows as stored
    with their offsets taken off (exact: the two numbers are within a factor of 2); with
    L = sum(out * R) the gradients are s (R - sum(R s)) and R - s sum(R). Kills
    tools/mutants.py's ``softmax_without_max_shift`` and ``log_softmax_without_max_shift``."""
    rng = np.random.default_rng(7)
    offsets = np.array([[1e4], [-1e4], [3e4], [0.0]])
    x = (rng.uniform(-4.0, 4.0, (4, 6)) + offsets).astype(dtype)
    near_zero = x.astype(np.float64) - offsets
    log_s = near_zero - np.log(np.exp(near_zero).sum(-1, keepdims=True))
    s = np.exp(log_s)
    R = rng.standard_normal(x.shape).astype(dtype)
    t = leaf(x, device)
    out = getattr(F, name)(t)
    (out * leaf(R, device, requires_grad=False)).sum().backward()
    R = R.astype(np.float64)
    if name == "softmax":
        expected, grad = s, s * (R - (R * s).sum(-1, keepdims=True))
    else:
        expected, grad = log_s, R - s * R.sum(-1, keepdims=True)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out.numpy(), expected, rtol=tol, atol=tol)
    np.testing.assert_allclose(to_host(t.grad), grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("fast", [True, False])
def test_attention_with_left_padding_per_row_equals_attention_over_the_real_keys(fast, device):
    """A (B, 1, 1, S) mask hides row b's first pad[b] keys (left padding, on the key axis),
    or'ed with the causal mask: row b's real queries get what attention over its real keys
    alone gives (the NumPy reference on the unpadded slice, causal mask only). B H = 320
    (T, S) matrices, so the fast path runs them in two slabs of batch rows, each of which
    must take its own rows of the mask. Kills tools/mutants.py's
    ``attention_fast_mask_first_slab`` (the first slab's mask rows used for every slab)."""
    import minilora as ml

    B, H, T, D = 4, 80, 16, 4
    pad = np.array([0, 3, 7, 12])
    rng = np.random.default_rng(8)
    q, k, v = (rng.standard_normal((B, H, T, D)) for _ in range(3))
    key_padding = np.arange(T)[None, :] < pad[:, None]  # (B, S), True at padding
    hidden = np.triu(np.ones((T, T), dtype=bool), k=1) | key_padding[:, None, None, :]
    with ml.fast_paths(fast):
        out = F.attention(leaf(q, device), leaf(k, device), leaf(v, device), on(device, hidden))
    for b, p in enumerate(pad):
        real, causal = slice(p, T), np.triu(np.ones((T - p, T - p), dtype=bool), k=1)
        alone = np_attention(q[b, :, real], k[b, :, real], v[b, :, real], causal)
        np.testing.assert_allclose(out.numpy()[b, :, real], alone, rtol=1e-12, atol=1e-12)
