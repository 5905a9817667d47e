"""Properties of minilora.paper.analysis (LoRA paper section 7).

Property tests draw seeds and sizes with Hypothesis (derandomized by the "ci"
profile of conftest.py) and build matrices with NumPy's generator. The
statistical tests use fixed seeds, so every run sees the same numbers; their
tolerances are stated next to the expectation they check.
"""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minilora as ml
from minilora import backend
from minilora.nn import Linear
from minilora.paper.analysis import (
    amplification,
    direction_profile,
    expected_random_norm,
    subspace_similarity,
    subspace_similarity_grid,
    update_spectrum,
)

SEEDS = st.integers(0, 2**32 - 1)


def gaussian(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def orthogonal(rng, n):
    """A random orthogonal n x n matrix (QR of a Gaussian)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def well_conditioned(rng, n):
    """Q1 diag(s) Q2 with s in [0.5, 2]: invertible, condition number <= 4."""
    return orthogonal(rng, n) @ np.diag(rng.uniform(0.5, 2.0, n)) @ orthogonal(rng, n)


@st.composite
def lora_pair(draw):
    """Two A matrices (r1 x k, r2 x k) with ranks possibly above k, and valid i, j."""
    k = draw(st.integers(2, 16))
    r1, r2 = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    a1, a2 = gaussian(draw(SEEDS), r1, k), gaussian(draw(SEEDS), r2, k)
    i = draw(st.integers(1, min(r1, k)))
    j = draw(st.integers(1, min(r2, k)))
    return a1, a2, i, j


# --------------------------------------------------------------------------- phi (7.2)


@given(lora_pair())
def test_phi_is_in_unit_interval_and_symmetric(pair):
    a1, a2, i, j = pair
    phi = subspace_similarity(a1, a2, i, j)
    assert isinstance(phi, float)
    assert -1e-12 <= phi <= 1 + 1e-12
    assert phi == pytest.approx(subspace_similarity(a2, a1, j, i), abs=1e-12)


@given(SEEDS, st.integers(1, 8), st.integers(8, 16))
def test_phi_of_a_matrix_with_itself_is_one(seed, r, k):
    a = gaussian(seed, r, k)
    for i in range(1, r + 1):
        assert subspace_similarity(a, a, i, i) == pytest.approx(1.0, abs=1e-10)


@given(lora_pair(), st.sampled_from([1e-3, -0.5, 7.0, 1e3]))
def test_phi_ignores_scaling(pair, c):
    a1, a2, i, j = pair
    assert subspace_similarity(c * a1, a2, i, j) == pytest.approx(
        subspace_similarity(a1, a2, i, j), abs=1e-8
    )


@given(lora_pair(), SEEDS)
def test_phi_ignores_orthogonal_mixing_of_rows(pair, seed):
    # Q A = (Q U) S Vh has the same right-singular vectors: every (i, j) is kept.
    a1, a2, i, j = pair
    q = orthogonal(np.random.default_rng(seed), a1.shape[0])
    assert subspace_similarity(q @ a1, a2, i, j) == pytest.approx(
        subspace_similarity(a1, a2, i, j), abs=1e-8
    )


@given(SEEDS, st.integers(1, 8), st.integers(1, 8), st.integers(9, 16))
def test_phi_of_the_whole_row_space_ignores_invertible_mixing(seed, r1, r2, k):
    # M A has the same row space as A, so phi at i = r1 (all of A's directions)
    # is unchanged. For i < r1 it is not: M reorders which directions are "top".
    rng = np.random.default_rng(seed)
    a1, a2 = rng.standard_normal((r1, k)), rng.standard_normal((r2, k))
    m = well_conditioned(rng, r1)
    for j in range(1, r2 + 1):
        assert subspace_similarity(m @ a1, a2, r1, j) == pytest.approx(
            subspace_similarity(a1, a2, r1, j), abs=1e-8
        )


def test_phi_of_top_directions_does_change_under_invertible_mixing():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 16))
    m = np.diag([1.0, 1.0, 1.0, 50.0])  # make the last row dominant
    assert subspace_similarity(m @ a, a, 1, 1) < 0.9


@given(lora_pair())
def test_grid_equals_the_pointwise_function(pair):
    a1, a2, _, _ = pair
    grid = subspace_similarity_grid(a1, a2)
    assert isinstance(grid, np.ndarray) and grid.dtype == np.float64
    n1, n2 = min(a1.shape), min(a2.shape)
    assert grid.shape == (n1, n2)
    for i in range(1, n1 + 1):
        for j in range(1, n2 + 1):
            assert grid[i - 1, j - 1] == pytest.approx(subspace_similarity(a1, a2, i, j), abs=1e-12)
    sub = subspace_similarity_grid(a1, a2, max_i=1, max_j=n2)
    np.testing.assert_allclose(sub, grid[:1], atol=1e-12)


def test_random_subspaces_expectation():
    # U1[:i] (k x i) and U2[:j] (k x j) of independent Gaussian A's span uniformly
    # random subspaces: E[U U^T] = (i/k) I, so E||U1[:i]^T U2[:j]||_F^2 =
    # tr((i/k) I (j/k) I) = i j / k and E[phi] = i j / (k min(i, j)) = max(i, j) / k.
    # k = 64, r = 8, 400 draws: the mean's standard error is at most ~0.003 over
    # the grid, so 0.012 is a 4-sigma tolerance (grid values range 1/64 to 1/8).
    k, r, draws = 64, 8, 400
    rng = np.random.default_rng(2106_09685)
    total = np.zeros((r, r))
    for _ in range(draws):
        total += subspace_similarity_grid(rng.standard_normal((r, k)), rng.standard_normal((r, k)))
    sizes = np.arange(1, r + 1)
    expected = np.maximum.outer(sizes, sizes) / k
    np.testing.assert_allclose(total / draws, expected, atol=0.012)


def test_phi_errors_name_the_argument():
    a = np.ones((4, 8)) + np.eye(4, 8)
    with pytest.raises(ValueError, match=r"A1 must be a 2-D matrix, got shape \(8,\)"):
        subspace_similarity(np.ones(8), a, 1, 1)
    with pytest.raises(ValueError, match=r"same number of columns k.*\(4, 8\).*\(4, 9\)"):
        subspace_similarity(a, np.ones((4, 9)), 1, 1)
    with pytest.raises(ValueError, match=r"i=0 is out of range: expected 1 <= i <= 4"):
        subspace_similarity(a, a, 0, 1)
    with pytest.raises(ValueError, match=r"j=5 is out of range: expected 1 <= j <= 4"):
        subspace_similarity(a, a, 1, 5)
    with pytest.raises(ValueError, match=r"i=9 .* 1 <= i <= 3"):  # 3 rows < k: 3 directions
        subspace_similarity(a[:3], a, 9, 1)
    with pytest.raises(ValueError, match="i must be an integer"):
        subspace_similarity(a, a, 1.0, 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        subspace_similarity(a * np.nan, a, 1, 1)
    with pytest.raises(ValueError, match=r"max_j=7 is out of range"):
        subspace_similarity_grid(a, a, max_j=7)
    with pytest.raises(TypeError, match="numpy or cupy array"):
        subspace_similarity("A", a, 1, 1)


def test_accepts_tensors_parameters_and_layers():
    a1, a2 = gaussian(1, 4, 8), gaussian(2, 3, 8)
    expected = subspace_similarity(a1, a2, 2, 3)
    t1 = ml.tensor(a1.astype(np.float32))  # float32 in, float64 inside
    layer = Linear(8, 3, bias=False)
    assert subspace_similarity(t1, a2, 2, 3) == pytest.approx(expected, abs=1e-6)
    assert subspace_similarity(a1.tolist(), a2, 2, 3) == pytest.approx(expected, abs=1e-12)
    layer.weight.data = a2.astype(np.float32)  # a Linear: its .weight.data is used
    assert subspace_similarity(a1, layer, 2, 3) == pytest.approx(expected, abs=1e-6)


# --------------------------------------------------------------------------- amplification (7.3)


@st.composite
def weight_and_rank(draw):
    d, k = draw(st.integers(2, 12)), draw(st.integers(2, 12))
    return gaussian(draw(SEEDS), d, k), draw(st.integers(1, min(d, k)))


@given(weight_and_rank())
def test_amplification_of_ws_own_top_part(wr):
    # dW = U_r S_r V_r^T of W: dW's directions are W's, so U^T W V^T = diag(s_1..s_r)
    # and every projected norm is sqrt(s_1^2 + ... + s_r^2); nothing is amplified.
    w, r = wr
    u, s, vh = np.linalg.svd(w, full_matrices=False)
    dw = (u[:, :r] * s[:r]) @ vh[:r]
    top = math.sqrt(float((s[:r] ** 2).sum()))
    res = amplification(w, dw, r)
    assert res.r == r
    assert res.w_norm == pytest.approx(top, abs=1e-8)
    assert res.w_top_norm == pytest.approx(top, abs=1e-8)
    assert res.dw_norm == pytest.approx(top, abs=1e-8)
    assert res.dw_fro == pytest.approx(top, abs=1e-8)
    assert res.factor == pytest.approx(1.0, abs=1e-8)


@given(weight_and_rank(), SEEDS, st.sampled_from([1e-3, 2.0, -5.0]))
def test_amplification_factor_definition(wr, seed, c):
    w, r = wr
    dw = gaussian(seed, *w.shape)
    res = amplification(w, dw, r)
    assert res.w_fro == pytest.approx(float(np.linalg.norm(w)), rel=1e-12)
    assert res.dw_fro == pytest.approx(float(np.linalg.norm(dw)), rel=1e-12)
    assert res.factor == pytest.approx(res.dw_fro / res.w_norm, rel=1e-12)
    assert res.w_norm <= res.w_top_norm + 1e-9  # W's own top-r directions hold the most of W
    assert res.dw_norm <= res.dw_fro + 1e-9
    scaled = amplification(w, c * dw, r)  # directions unchanged, ||dW|| times |c|
    assert scaled.w_norm == pytest.approx(res.w_norm, rel=1e-8, abs=1e-10)
    assert scaled.factor == pytest.approx(abs(c) * res.factor, rel=1e-8)


def test_random_column_expectation():
    # Top-r singular vectors of a Gaussian matrix are uniformly random frames:
    # E[U U^T] = (r/d) I, E[V V^T] = (r/k) I, independent, so
    # E||U^T W V^T||_F^2 = r^2 ||W||_F^2 / (d k) for any fixed W.
    # 600 seeds: the mean's relative standard error is ~2.5% for this W, so 10%
    # is a 4-sigma tolerance.
    rng = np.random.default_rng(7)
    d, k, r = 24, 16, 3
    w = rng.standard_normal((d, k)) * np.linspace(3.0, 0.1, k)  # an uneven spectrum
    dw = rng.standard_normal((d, r)) @ rng.standard_normal((r, k))
    squares = [amplification(w, dw, r, seed=s).random_norm ** 2 for s in range(600)]
    expected = amplification(w, dw, r).random_expected
    assert expected == pytest.approx(r * np.linalg.norm(w) / math.sqrt(d * k), rel=1e-12)
    assert np.mean(squares) == pytest.approx(expected**2, rel=0.10)


def test_random_column_is_seeded():
    w, dw = gaussian(0, 10, 8), gaussian(1, 10, 8)
    assert amplification(w, dw, 2, seed=3) == amplification(w, dw, 2, seed=3)
    assert (
        amplification(w, dw, 2, seed=3).random_norm != amplification(w, dw, 2, seed=4).random_norm
    )


def test_table7_random_column_matches_its_expectation():
    # GPT-3 layer 48, Wq: d = k = 12288, ||Wq||_F = 61.95. The paper's single
    # random draws print 0.02 (r = 4) and 0.33 (r = 64); r ||W|| / sqrt(dk) gives
    # 0.0202 and 0.3227. Its factors: 6.91 / 0.32 = 21.6 (r = 4), 3.57 / 1.90 = 1.9.
    assert round(expected_random_norm(12288, 12288, 4, 61.95), 2) == 0.02
    assert expected_random_norm(12288, 12288, 64, 61.95) == pytest.approx(0.33, abs=0.01)


def test_amplification_errors():
    w = gaussian(0, 6, 4)
    with pytest.raises(ValueError, match=r"same shape.*W \(6, 4\) and dW \(4, 6\)"):
        amplification(w, w.T, 1)
    with pytest.raises(ValueError, match=r"r=0 is out of range: expected 1 <= r <= 4"):
        amplification(w, w, 0)
    with pytest.raises(ValueError, match=r"r=5 is out of range: expected 1 <= r <= 4"):
        amplification(w, w, 5)
    with pytest.raises(ValueError, match=r"dW must be a 2-D matrix, got shape \(6, 4, 1\)"):
        amplification(w, w[..., None], 1)
    with pytest.raises(ValueError, match="all zeros"):
        amplification(w, np.zeros_like(w), 1)
    rank1 = np.outer(gaussian(1, 6), gaussian(2, 4))
    with pytest.warns(UserWarning, match="exceeds the numerical rank"):
        amplification(w, rank1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        amplification(w, rank1, 1)


# ------------------------------------------------------------- where dW's directions lie


@given(seed=SEEDS, d=st.integers(2, 9), k=st.integers(2, 9), data=st.data())
def test_direction_profile_of_an_update_built_on_ws_own_directions(seed, d, k, data):
    """dW made of W's last r right directions puts all its mass there; of its first r, there."""
    r = data.draw(st.integers(1, min(d, k)))
    rng = np.random.default_rng(seed)
    q1, _ = np.linalg.qr(rng.standard_normal((d, d)))
    q2, _ = np.linalg.qr(rng.standard_normal((k, k)))
    s = np.linspace(3.0, 1.0, min(d, k))  # distinct singular values: a well-defined order
    w = q1[:, : len(s)] @ np.diag(s) @ q2[:, : len(s)].T
    for where in ("first", "last"):
        cols = slice(0, r) if where == "first" else slice(len(s) - r, len(s))
        dw = q1[:, cols] @ np.diag(rng.uniform(1, 2, r)) @ q2[:, cols].T
        p = direction_profile(w, dw, r)
        expected = np.zeros(k)
        expected[cols] = 1.0
        np.testing.assert_allclose(p, expected, atol=1e-9, err_msg=where)


@given(seed=SEEDS, d=st.integers(1, 9), k=st.integers(1, 9), data=st.data())
def test_direction_profile_is_a_split_of_r_over_ws_basis(seed, d, k, data):
    r = data.draw(st.integers(1, min(d, k)))
    p = direction_profile(gaussian(seed, d, k), gaussian(seed + 1, d, k), r)
    assert p.shape == (k,) and p.dtype == np.float64
    assert np.all(p >= -1e-12) and np.all(p <= 1 + 1e-12)
    assert p.sum() == pytest.approx(r, rel=1e-12)


def test_direction_profile_errors():
    w = gaussian(0, 6, 4)
    with pytest.raises(ValueError, match=r"same shape.*W \(6, 4\) and dW \(4, 6\)"):
        direction_profile(w, w.T, 1)
    with pytest.raises(ValueError, match=r"r=5 is out of range: expected 1 <= r <= 4"):
        direction_profile(w, w, 5)


# --------------------------------------------------------------------------- spectrum


@given(SEEDS, st.integers(3, 12), st.integers(3, 12), st.sampled_from([np.float64, np.float32]))
def test_rank_3_update_has_numerical_rank_3(seed, d, k, dtype):
    rng = np.random.default_rng(seed)
    b, a = rng.standard_normal((d, 3)), rng.standard_normal((3, k))
    spec = update_spectrum((b @ a).astype(dtype))  # float32 rounding must not add rank
    assert spec.numerical_rank == 3
    assert spec.singular_values.shape == (min(d, k),)
    assert np.all(np.diff(spec.singular_values) <= 0)
    assert 1.0 <= spec.effective_rank <= 3.0 + 1e-6
    assert 1.0 <= spec.stable_rank <= 3.0 + 1e-9


@pytest.mark.parametrize("n", [1, 2, 7, 32])
def test_identity_has_effective_rank_n(n):
    spec = update_spectrum(np.eye(n))
    assert spec.effective_rank == pytest.approx(n, rel=1e-12)
    assert spec.numerical_rank == n
    assert spec.stable_rank == pytest.approx(n, rel=1e-12)
    assert spec.energy_rank(1.0) == n


def test_spectrum_edge_cases():
    rank1 = np.outer(np.arange(1.0, 5.0), np.arange(1.0, 4.0))
    assert update_spectrum(rank1).effective_rank == pytest.approx(1.0, abs=1e-6)
    zero = update_spectrum(np.zeros((3, 5)))  # dW = B A with B = 0, as at initialisation
    assert (zero.numerical_rank, zero.effective_rank, zero.stable_rank) == (0, 0.0, 0.0)
    assert zero.energy_rank() == 0
    spec = update_spectrum(np.diag([10.0, 1.0, 0.1]))
    assert spec.numerical_rank == 3
    assert update_spectrum(np.diag([10.0, 1.0, 0.1]), threshold=0.05).numerical_rank == 2
    assert spec.energy_rank(0.9) == 1 and spec.energy_rank(0.999) == 2
    with pytest.raises(ValueError, match="threshold"):
        update_spectrum(np.eye(2), threshold=-1.0)
    with pytest.raises(ValueError, match="fraction"):
        spec.energy_rank(0.0)


# --------------------------------------------------------------------------- GPU parity


@pytest.mark.gpu
def test_cupy_inputs_give_numpy_results():
    cupy = pytest.importorskip("cupy")
    if not backend.cuda_available():
        pytest.skip("CuPy is installed but no CUDA device is visible")
    a1, a2 = gaussian(0, 8, 32), gaussian(1, 6, 32)
    w, dw = gaussian(2, 32, 24), gaussian(3, 32, 4) @ gaussian(4, 4, 24)
    g = cupy.asarray

    phi = subspace_similarity(g(a1), g(a2), 3, 5)
    assert isinstance(phi, float)
    assert phi == pytest.approx(subspace_similarity(a1, a2, 3, 5), abs=1e-10)
    grid = subspace_similarity_grid(g(a1), g(a2))
    assert isinstance(grid, np.ndarray)
    np.testing.assert_allclose(grid, subspace_similarity_grid(a1, a2), atol=1e-10)

    cpu, gpu = amplification(w, dw, 4, seed=5), amplification(g(w), g(dw), 4, seed=5)
    for field in ("w_norm", "w_top_norm", "random_norm", "dw_norm", "w_fro", "dw_fro", "factor"):
        assert isinstance(getattr(gpu, field), float)
        assert getattr(gpu, field) == pytest.approx(getattr(cpu, field), rel=1e-8), field

    spec_cpu, spec_gpu = update_spectrum(dw), update_spectrum(g(dw))
    np.testing.assert_allclose(
        spec_gpu.singular_values, spec_cpu.singular_values, rtol=1e-10, atol=1e-12
    )
    assert spec_gpu.numerical_rank == spec_cpu.numerical_rank == 4
    assert spec_gpu.effective_rank == pytest.approx(spec_cpu.effective_rank, rel=1e-10)

    with pytest.raises(TypeError, match="one device"):
        subspace_similarity(g(a1), a2, 1, 1)
