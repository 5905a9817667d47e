"""Every fast twin (minilora/fast/) against the formula it replaces (README, "Formulas in
the core, speed in one place").

The formulas (``F.gelu``, ``F.layer_norm`` and ``F.attention`` in functional.py; their
bodies are ``op.plain``) read as the math; the twins in minilora/fast/, which run by
default, reuse buffers and sum rows as BLAS products. For the same inputs and the same
output gradient, both must give the same forward and the same gradient for every input,
to ``TOL`` of the largest term of the result, the term magnitudes
  computed here in float64 from absolute values (for a sum a + b, |a| + |b|):
  ``TOL = 1e-12`` in float64 (about 4,500 ulps), ``1e-5`` in float32 (about 80
  ulps). The two versions round one formula in another order: a few roundings per
  element, each at most an ulp of the largest term (measured: under 2 ulps), while a
  wrong formula is off by a whole term.

Each formula is also gradchecked in float64 here (``op.plain``); test_functional.py
gradchecks the public ops, which run the twins by default. The switch that picks one is
tested in tests/test_fast_path_switch.py; the LoRA layer's twin in tests/test_lora_fused.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import SEEDS, arrays, check_grads, distinct, leaf, on, shapes, to_host

import minilora as ml
from minilora import functional as F
from minilora.fast import attention as fast_attention
from minilora.fast import norms, sums


@pytest.fixture(autouse=True, scope="module")
def many_blocks():
    """Blocks of at most 5 numbers and chunks of one query row, so that small shapes run the
    twins over many blocks and attention's corner skipping over many chunks."""
    saved = sums.BLOCK_ELEMENTS, fast_attention.ROWS_PER_CHUNK
    sums.BLOCK_ELEMENTS, fast_attention.ROWS_PER_CHUNK = 5, 1
    yield
    sums.BLOCK_ELEMENTS, fast_attention.ROWS_PER_CHUNK = saved


@pytest.mark.parametrize(("rows", "row_size"), [(0, 4), (1, 1), (7, 1), (10, 3), (33, 2)])
def test_row_blocks_cover_every_row_once(rows, row_size):
    blocks = sums.row_blocks(rows, row_size)
    covered = [r for start, stop in blocks for r in range(start, stop)]
    assert covered == list(range(rows))
    sizes = [(stop - start) * row_size for start, stop in blocks if stop > start]
    assert all(0 < size <= max(5, row_size) for size in sizes)


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


# ---- GELU -------------------------------------------------------------------------------------
@given(shape=shapes(), dtype=DTYPES, seed=SEEDS, data=st.data())
def test_gelu_fast_matches_plain(shape, dtype, seed, data, device):
    """out = 0.5 x (1 + t): terms up to |x|. The slope 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 +
    3 * 0.044715 x^2): terms up to 1 + 0.5 |x| c (1 + 3 * 0.044715 x^2), times |g|."""
    x = data.draw(arrays(shape, -4.0, 4.0)).astype(dtype)
    (out_p, (gx_p,)), (out_f, (gx_f,)), g = both(
        F.gelu.plain, norms.gelu, [x], dtype, device, np.random.default_rng(seed)
    )
    x64 = x.astype(np.float64)
    assert_close(out_f, out_p, dtype, largest(x64))
    slope_terms = 1.0 + 0.5 * np.abs(x64) * GELU_C * (1.0 + 3 * 0.044715 * x64**2)
    assert_close(gx_f, gx_p, dtype, largest(np.abs(g) * slope_terms))


@given(shape=shapes(), data=st.data())
def test_gelu_plain_gradcheck(shape, data, device):
    check_grads(F.gelu.plain, [data.draw(arrays(shape, -4.0, 4.0))], device)


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
    xhat: terms sum of |g xhat|. dL/db = sum of g: terms sum of |g| (the fast version sums
    as a product with a vector of ones, sums.sum_rows)."""
    x = data.draw(arrays(shape)).astype(dtype)
    w = data.draw(arrays(shape[-1:])).astype(dtype) if with_weight else None
    b = data.draw(arrays(shape[-1:])).astype(dtype) if with_bias else None
    arrs = [a for a in (x, w, b) if a is not None]
    plain = layer_norm_of(with_weight, with_bias, F.layer_norm.plain)
    fast = layer_norm_of(with_weight, with_bias, norms.layer_norm)
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
        assert_close(grads_f[-1], grads_p[-1], dtype, largest(np.abs(g).sum(axis=lead)))


@pytest.mark.parametrize("with_weight, with_bias", PARAMS)
@given(shape=shapes(min_dims=1, max_dims=3), data=st.data())
def test_layer_norm_plain_gradcheck(with_weight, with_bias, shape, data, device):
    """Rows spread over [-2, 2] keep the variance far from 0 (rstd bounded)."""
    x = data.draw(distinct(shape, per_row=True))
    params = [data.draw(arrays(shape[-1:])) for flag in (with_weight, with_bias) if flag]
    check_grads(layer_norm_of(with_weight, with_bias, F.layer_norm.plain), [x, *params], device)


# ---- the sums that the twins use (fast/sums.py) ---------------------------------------------
@given(shape=shapes(min_dims=1, max_dims=3, min_side=0), dtype=DTYPES, data=st.data())
def test_sum_last_and_sum_rows_equal_numpy_sums(shape, dtype, data):
    """Products with a vector of ones: NumPy's sums to TOL of the sum of |terms|."""
    a = data.draw(arrays(shape)).astype(dtype)
    scale = data.draw(st.sampled_from([1.0, 0.25, 1 / 3]))
    fast = sums.sum_last(a, scale)
    assert fast.shape == (*shape[:-1], 1) and fast.dtype == a.dtype
    terms = np.abs(a.astype(np.float64)).sum(axis=-1, keepdims=True) * scale
    assert_close(
        fast, a.sum(axis=-1, keepdims=True) * np.asarray(scale, dtype), dtype, largest(terms)
    )
    w = data.draw(arrays(shape[-1:])).astype(dtype)  # weights: (a * w).sum(-1), as layer norm's
    terms = np.abs(a.astype(np.float64) * w).sum(axis=-1, keepdims=True) * scale
    expected = (a * w).sum(axis=-1, keepdims=True) * np.asarray(scale, dtype)
    assert_close(sums.sum_last(a, scale, w), expected, dtype, largest(terms))
    rows = a.reshape(math.prod(shape[:-1]), shape[-1])
    assert_close(sums.sum_rows(rows), rows.sum(axis=0), dtype, largest(np.abs(rows).sum(axis=0)))
    squares = sums.sum_squares(rows, scale)  # layer norm's variance: no a * a array
    assert squares.shape == (rows.shape[0], 1) and squares.dtype == a.dtype
    expected = (rows * rows).sum(axis=-1, keepdims=True) * np.asarray(scale, dtype)
    assert_close(squares, expected, dtype, largest((rows.astype(np.float64) ** 2).sum(-1) * scale))


# ---- attention -------------------------------------------------------------------------------
@st.composite
def attention_cases(draw):
    """q (..., T, D), k and v (..., S, D), a hidden mask (T, S) or (..., T, S): causal with
    S - T cached keys, causal with left padding (the first keys hidden from every query;
    where they cover all a query may see, a fully hidden row), random (fully hidden rows
    included), or none."""
    lead = draw(shapes(0, 2, max_side=3))
    T, extra, D = draw(st.integers(1, 4)), draw(st.integers(0, 3)), draw(st.integers(1, 4))
    S = T + extra
    q = draw(arrays((*lead, T, D)))
    k, v = draw(arrays((*lead, S, D))), draw(arrays((*lead, S, D)))
    kind = draw(st.sampled_from(["causal", "padding", "random", "none"]))
    mask_shape = draw(st.sampled_from([(T, S), (*lead, T, S)]))
    rng = np.random.default_rng(draw(SEEDS))
    causal = np.triu(np.ones((T, S), dtype=bool), k=S - T + 1)
    if kind == "causal":
        hidden = np.broadcast_to(causal, mask_shape)
    elif kind == "padding":  # pad[...] keys hidden at the start, per matrix of the mask
        pad = rng.integers(0, S + 1, mask_shape[:-2])[..., None, None]
        hidden = causal | (np.arange(S) < pad)
    elif kind == "random":
        hidden = rng.random(mask_shape) < 0.5
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


@pytest.mark.parametrize("rows_per_chunk", [1, 2])
@given(
    case=attention_cases(),
    dropout_p=st.sampled_from([0.0, 0.3]),
    requires_grad=st.sampled_from([[True, True, True], [False, True, True], [True, False, False]]),
    dtype=DTYPES,
    seed=SEEDS,
)
def test_attention_fast_matches_plain(
    rows_per_chunk, case, dropout_p, requires_grad, dtype, seed, device
):
    """The fast version scales Q by 1 / sqrt(D) before the product, sums P's rows as a
    product with a vector of ones (sums.sum_last), normalises P V instead of P, takes
    rowsum(dP P) as rowsum(G out) and skips the hidden corner chunk by chunk (of 1 or 2
    query rows here), so everything is compared to the largest term (dropout too: one
    seed, one mask M). The forward P M V: terms P |V| / (1 - p); dV = (P M)^T G: terms
    P^T |G| / (1 - p). dS = P (dP - rowsum(dP P)), dP = (G V^T) M, so the terms are
    |dS| <= P (|G| |V|^T + rowsum(|G| |V|^T P)) / (1 - p), then |dS| |K| / sqrt(D) for
    dQ = dS K / sqrt(D) and dK = dS^T Q / sqrt(D)."""
    q, k, v, hidden = case
    mask = on(device, hidden)
    saved, fast_attention.ROWS_PER_CHUNK = fast_attention.ROWS_PER_CHUNK, rows_per_chunk
    try:
        (out_p, grads_p), (out_f, grads_f), g = both(
            attention_of(F.attention.plain, mask, dropout_p),
            attention_of(fast_attention.attention, mask, dropout_p),
            [q, k, v],
            dtype,
            device,
            np.random.default_rng(seed),
            requires_grad,
            seed,
        )
    finally:
        fast_attention.ROWS_PER_CHUNK = saved
    for gf, gp, r in zip(grads_f, grads_p, requires_grad):
        assert (gf is None) == (gp is None) == (not r)
    q64, k64, v64 = (a.astype(dtype).astype(np.float64) for a in (q, k, v))
    P = np_probs(q64, k64, hidden)
    assert_close(out_f, out_p, dtype, largest(P @ np.abs(v64)) / (1.0 - dropout_p))
    if requires_grad[2]:
        PT = np.swapaxes(P, -1, -2)
        assert_close(grads_f[2], grads_p[2], dtype, largest(PT @ np.abs(g)) / (1.0 - dropout_p))
    dP = np.abs(g) @ np.swapaxes(np.abs(v64), -1, -2) / (1.0 - dropout_p)
    dS = P * (dP + (dP * P).sum(-1, keepdims=True)) / math.sqrt(q.shape[-1])
    if requires_grad[0]:
        assert_close(grads_f[0], grads_p[0], dtype, largest(dS @ np.abs(k64)))
    if requires_grad[1]:
        assert_close(grads_f[1], grads_p[1], dtype, largest(np.swapaxes(dS, -1, -2) @ np.abs(q64)))


@pytest.mark.parametrize("rows_per_chunk", [1, 2, 3])
@given(case=attention_cases())
def test_row_chunks_cover_the_rows_and_skip_only_hidden_keys(rows_per_chunk, case):
    """Each chunk (r0, r1, c0, c1, dead): the chunks cover the query rows once, in order; c1
    grows; keys from c1 on are hidden from every row of the chunk in every matrix, keys
    before c0 from none; a chunk with a fully hidden row (in some matrix) is ``dead`` and
    reaches every key, as the formula's uniform weights do."""
    q, k, _, hidden = case
    T, S = q.shape[-2], k.shape[-2]
    saved, fast_attention.ROWS_PER_CHUNK = fast_attention.ROWS_PER_CHUNK, rows_per_chunk
    try:
        chunks = fast_attention.row_chunks(hidden, T, S)
    finally:
        fast_attention.ROWS_PER_CHUNK = saved
    assert [r for r0, r1, *_ in chunks for r in range(r0, r1)] == list(range(T))
    assert all(a[3] < b[3] for a, b in zip(chunks, chunks[1:]))
    h = np.broadcast_to(hidden, (*hidden.shape[:-2], T, S)).reshape(-1, T, S)
    for r0, r1, c0, c1, dead in chunks:
        rows = h[:, r0:r1]
        assert 0 <= c0 <= c1 <= S and c1 >= 1
        assert dead == bool(rows.all(axis=-1).any())
        assert rows[..., c1:].all() and not rows[..., :c0].any()
        if dead:
            assert c1 == S


def test_attention_on_heads_of_a_model_in_chunks():
    """The model's heads are transposed views of its (B, T, H, D) projections: the fast
    version takes them without a copy and lays its output and gradients out as they are
    (so joining the heads again is a view), and, in chunks of 16 query rows under a causal
    mask with 2 cached keys, equals the formula (float32, to TOL of the largest term)."""
    B, T, S, H, D = 2, 40, 42, 3, 8
    rng = np.random.default_rng(5)

    def heads(n):
        return rng.uniform(-2, 2, (B, n, H, D)).astype(np.float32).transpose(0, 2, 1, 3)

    q, k, v = heads(T), heads(S), heads(S)
    g = rng.standard_normal((B, H, T, D)).astype(np.float32)
    hidden = F.causal_mask(T, S)
    results = {}
    saved, fast_attention.ROWS_PER_CHUNK = fast_attention.ROWS_PER_CHUNK, 16
    try:
        assert len(fast_attention.row_chunks(hidden, T, S)) == 3
        for name, version in (("plain", F.attention.plain), ("fast", fast_attention.attention)):
            leaves = [ml.tensor(a, requires_grad=True) for a in (q, k, v)]
            out = version(*leaves, hidden)
            out.backward(g)
            results[name] = (out.data, *(t.grad for t in leaves))
    finally:
        fast_attention.ROWS_PER_CHUNK = saved
    q64, k64, v64, g64 = (np.abs(a.astype(np.float64)) for a in (q, k, v, g))
    P = np_probs(q.astype(np.float64), k.astype(np.float64), hidden)
    dP = g64 @ np.swapaxes(v64, -1, -2)
    dS = P * (dP + (dP * P).sum(-1, keepdims=True)) / math.sqrt(D)
    terms = (P @ v64, dS @ k64, np.swapaxes(dS, -1, -2) @ q64, np.swapaxes(P, -1, -2) @ g64)
    for plain, fast, term in zip(results["plain"], results["fast"], terms):
        assert_close(fast, plain, np.float32, largest(term))
    out, gq, gk, gv = results["fast"]
    for array in (out, gq, gk, gv):  # (B, H, n, D) views of (B, n, H, D) arrays
        assert array.swapaxes(1, 2).flags.c_contiguous


@given(case=attention_cases(), dropout_p=st.sampled_from([0.0, 0.3]), seed=SEEDS)
def test_attention_plain_gradcheck(case, dropout_p, seed, device):
    q, k, v, hidden = case
    mask = on(device, hidden)

    def fn(q, k, v):
        ml.manual_seed(seed)  # the same dropout mask on every evaluation
        return F.attention.plain(q, k, v, mask, dropout_p, True)

    check_grads(fn, [q, k, v], device)
