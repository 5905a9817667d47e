"""What do the learned updates look like? Section 7 of the LoRA paper.

Hu et al. 2021 (arXiv 2106.09685, v2) ask three questions about dW = B A:

* 7.2, Eq. 4, **subspace similarity**: do adapters trained with different ranks
  (or seeds) learn the same directions? With U_A the right-singular vectors of
  A (the rows of ``Vh`` in ``svd(A)``),

      phi(A1, A2, i, j) = ||U_A1[:i]^T U_A2[:j]||_F^2 / min(i, j)   in [0, 1],

  1 when one top subspace contains the other, 0 when they are orthogonal.
* 7.3, Table 7, **amplification**: project W onto dW's top-r singular
  directions, ||U^T W V^T||_F, and compare with the same projection onto W's own
  top directions and onto a random matrix's. A small value means dW points
  where W is weak; ||dW||_F / ||U^T W V^T||_F is the amplification factor.
* **update spectrum** (our addition, in the spirit of section 7): how many
  directions does dW really use? Singular values, numerical rank, and the
  entropy-based effective rank of Roy & Vetterli (2007).

Every function accepts NumPy or CuPy arrays (or anything with ``.data`` holding
one, such as a Tensor or Parameter, or ``.weight``, such as a Linear layer),
computes in float64 on the array's own device, and returns Python floats and
NumPy arrays.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from minilora import backend

# --------------------------------------------------------------------------- helpers


def _as_array(x, name: str = "x"):
    """The NumPy/CuPy array behind ``x``: an array as is, else ``x.weight`` / ``x.data``."""
    if isinstance(x, (list, tuple)):
        return np.asarray(x, dtype=np.float64)
    if backend.get_array_module_or_none(x) is None and hasattr(x, "weight"):
        x = x.weight  # a Linear layer: its weight Parameter
    if backend.get_array_module_or_none(x) is None and hasattr(x, "data"):
        x = x.data  # a Tensor / Parameter: its array
    if backend.get_array_module_or_none(x) is None:
        raise TypeError(
            f"{name}: expected a numpy or cupy array (or a Tensor/Parameter holding one), "
            f"got {type(x).__name__}"
        )
    return x


def _matrix(x, name: str):
    """``x`` as a finite 2-D float64 array on its own device."""
    a = _as_array(x, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(a.shape)} ({a.ndim}-D)")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(a.shape)}")
    xp = backend.get_array_module(a)
    a = a.astype(xp.float64, copy=False)
    if not bool(xp.isfinite(a).all()):
        raise ValueError(f"{name} contains NaN or inf; its SVD is undefined")
    return a


def _same_device(*named):
    """The array module shared by all ``(name, array)`` pairs, or a TypeError."""
    modules = {name: backend.get_array_module(a) for name, a in named}
    if len(set(modules.values())) > 1:
        where = ", ".join(f"{n} on {'cpu' if m is np else 'cuda'}" for n, m in modules.items())
        raise TypeError(f"arrays must be on one device, got {where}; move one with .to(device)")
    return next(iter(modules.values()))


def _check_index(name: str, value, n: int, what: str) -> int:
    """``value`` as an int in [1, n], or a ValueError saying what the range means."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not 1 <= value <= n:
        raise ValueError(f"{name}={value} is out of range: expected 1 <= {name} <= {n}, {what}")
    return int(value)


def _room(name: str, a) -> str:
    """How many right-singular vectors ``a`` has, in words, for error messages."""
    return f"the number of singular vectors of {name}, min(rows, cols) of shape {tuple(a.shape)}"


def _rtol(shape, dtype) -> float:
    """Default relative tolerance for "zero" singular values: max(d, k) * eps of the dtype.

    The eps is the *input's* (float32 for a float32 B @ A), as in
    ``numpy.linalg.matrix_rank``: rounding in float32 leaves singular values near
    1e-7 * s_max that float64's eps would wrongly count as rank.
    """
    eps = np.finfo(dtype).eps if np.issubdtype(dtype, np.floating) else np.finfo(np.float64).eps
    return float(max(shape) * eps)


def _right_singular_vectors(a):
    """Rows of ``Vh`` in ``svd(a)``: min(rows, cols) orthonormal rows, strongest first."""
    xp = backend.get_array_module(a)
    return xp.linalg.svd(a, full_matrices=False)[2]


# --------------------------------------------------------------------------- 7.2


def subspace_similarity(A1, A2, i: int, j: int) -> float:
    """phi(A1, A2, i, j) of section 7.2, Eq. 4: how much the top-i right-singular
    subspace of A1 overlaps the top-j one of A2.

    A1 (r1 x k) and A2 (r2 x k) are LoRA ``A`` matrices of the same layer (same
    k = d_in). With U1 = rows of Vh from ``svd(A1)`` (and U2 likewise),

        phi = ||U1[:i] U2[:j]^T||_F^2 / min(i, j)

    i.e. the squared cosines of the principal angles between the two subspaces,
    averaged over the smaller one. 1 means one subspace contains the other; for
    independent random subspaces E[phi] = max(i, j) / k.
    """
    a1, a2 = _matrix(A1, "A1"), _matrix(A2, "A2")
    _same_device(("A1", a1), ("A2", a2))
    if a1.shape[1] != a2.shape[1]:
        raise ValueError(
            f"A1 and A2 must have the same number of columns k (the layer's input size), "
            f"got A1 {tuple(a1.shape)} and A2 {tuple(a2.shape)}"
        )
    u1, u2 = _right_singular_vectors(a1), _right_singular_vectors(a2)
    i = _check_index("i", i, u1.shape[0], _room("A1", a1))
    j = _check_index("j", j, u2.shape[0], _room("A2", a2))
    overlap = u1[:i] @ u2[:j].T  # (i, j): cosines between directions
    return float((overlap**2).sum()) / min(i, j)


def subspace_similarity_grid(A1, A2, max_i: int | None = None, max_j: int | None = None):
    """phi(A1, A2, i, j) for every i = 1..max_i, j = 1..max_j (Figures 3 and 4).

    Returns a NumPy array of shape (max_i, max_j) whose entry [i-1, j-1] is
    phi(A1, A2, i, j). The SVDs are computed once and the squared overlaps
    summed cumulatively along both axes, so the grid costs one (max_i x max_j)
    product instead of max_i * max_j SVD pairs. ``None`` means all directions.
    """
    a1, a2 = _matrix(A1, "A1"), _matrix(A2, "A2")
    xp = _same_device(("A1", a1), ("A2", a2))
    if a1.shape[1] != a2.shape[1]:
        raise ValueError(
            f"A1 and A2 must have the same number of columns k (the layer's input size), "
            f"got A1 {tuple(a1.shape)} and A2 {tuple(a2.shape)}"
        )
    u1, u2 = _right_singular_vectors(a1), _right_singular_vectors(a2)
    n1, n2 = u1.shape[0], u2.shape[0]
    max_i = n1 if max_i is None else _check_index("max_i", max_i, n1, _room("A1", a1))
    max_j = n2 if max_j is None else _check_index("max_j", max_j, n2, _room("A2", a2))
    sq = (u1[:max_i] @ u2[:max_j].T) ** 2  # (max_i, max_j) squared cosines
    cum = xp.cumsum(xp.cumsum(sq, axis=0), axis=1)  # cum[i-1, j-1] = ||U1[:i] U2[:j]^T||_F^2
    cum = backend.to_numpy(cum)
    sizes = np.minimum.outer(np.arange(1, max_i + 1), np.arange(1, max_j + 1))
    return cum / sizes


# --------------------------------------------------------------------------- 7.3


@dataclass(frozen=True)
class Amplification:
    """Table 7 for one layer and one r. U, V are top-r singular vectors (U: d x r,
    V^T: r x k as rows of Vh); the paper writes the projection U^T W V^T.

    The three Table 7 columns all project W, with U, V taken from:
      w_norm       dW                      (column "dWq": 0.32 at r=4, 1.90 at r=64)
      w_top_norm   W itself                (column "Wq": 21.67 / 37.71)
      random_norm  a seeded random Gaussian matrix (column "Random": 0.02 / 0.33)
    random_expected = r ||W||_F / sqrt(d k) is sqrt(E[random_norm^2]), exact for any W.
    dw_norm = ||U^T dW V^T||_F is the part of dW its top r directions hold.
    factor = dw_fro / w_norm is the amplification factor (6.91 / 0.32 = about 21.5).
    """

    r: int
    w_norm: float
    w_top_norm: float
    random_norm: float
    random_expected: float
    dw_norm: float
    w_fro: float
    dw_fro: float
    factor: float


def _projected_norm(u, w, vh, r: int) -> float:
    """||U[:, :r]^T W Vh[:r]^T||_F: W seen through r left and r right directions."""
    return float(_fro(u[:, :r].T @ w @ vh[:r].T))


def _fro(a) -> float:
    """Frobenius norm of a NumPy or CuPy array, as a Python float."""
    xp = backend.get_array_module(a)
    return float(xp.sqrt((a * a).sum()))


def _weight_and_update(W, dW):
    """(w, dw, xp): W and dW as float64 matrices of one shape on one device, and its module."""
    w, dw = _matrix(W, "W"), _matrix(dW, "dW")
    xp = _same_device(("W", w), ("dW", dw))
    if w.shape != dw.shape:
        raise ValueError(
            f"W and dW must have the same shape (dW is an update of W), "
            f"got W {tuple(w.shape)} and dW {tuple(dw.shape)}"
        )
    return w, dw, xp


def amplification(W, dW, r: int, seed: int = 0) -> Amplification:
    """Section 7.3 / Table 7: does dW amplify directions that W already has?

    U, V are the top-r left/right singular vectors of dW. ``w_norm`` =
    ||U^T W V^T||_F measures how much of W lies in dW's directions; compared
    with ||W||_F (and with W's own top directions, ``w_top_norm``) a small value
    says dW emphasises directions W does not. The paper's "Random" column
    replaces U, V by the top-r singular vectors of a random matrix: here a
    standard Gaussian matrix of W's shape drawn from ``numpy.random.default_rng(seed)``
    (on the CPU, so NumPy and CuPy runs agree). By rotation invariance those
    vectors are uniformly random, so E[random_norm^2] = (r/d)(r/k) ||W||_F^2.

    GPT-3 layer 48, Wq (d = k = 12288, ||Wq||_F = 61.95): r * 61.95 / 12288 is
    0.020 at r=4 and 0.323 at r=64, next to the paper's single draws 0.02 / 0.33.
    """
    raw_dw = _as_array(dW, "dW")
    w, dw, xp = _weight_and_update(W, raw_dw)
    d, k = w.shape
    r = _check_index("r", r, min(d, k), f"min(d, k) for W of shape {(d, k)}")
    u, s, vh = xp.linalg.svd(dw, full_matrices=False)
    s_max, s_r = float(s[0]), float(s[r - 1])
    if s_max == 0.0:
        raise ValueError("dW is all zeros (B = 0 at initialisation?): it has no directions")
    if s_r <= _rtol(dw.shape, raw_dw.dtype) * s_max:
        warnings.warn(
            f"r={r} exceeds the numerical rank of dW: its singular directions past the "
            f"rank are arbitrary, so w_norm depends on the SVD's choice of them",
            stacklevel=2,
        )
    w_norm = _projected_norm(u, w, vh, r)
    uw, _, vhw = xp.linalg.svd(w, full_matrices=False)
    g = xp.asarray(np.random.default_rng(seed).standard_normal((d, k)))
    ug, _, vhg = xp.linalg.svd(g, full_matrices=False)
    w_fro, dw_fro = _fro(w), _fro(dw)
    return Amplification(
        r=r,
        w_norm=w_norm,
        w_top_norm=_projected_norm(uw, w, vhw, r),
        random_norm=_projected_norm(ug, w, vhg, r),
        random_expected=expected_random_norm(d, k, r, w_fro),
        dw_norm=_projected_norm(u, dw, vh, r),
        w_fro=w_fro,
        dw_fro=dw_fro,
        factor=dw_fro / w_norm if w_norm > 0 else math.inf,
    )


def direction_profile(W, dW, r: int) -> np.ndarray:
    """Where dW's input directions lie among W's (section 7.3, in the spirit of Figure 8).

    With V the top-r right singular vectors of dW (r x k) and v_1..v_k those of W, strongest
    first (a full basis: past W's rank, its null space), returns p (k,) with

        p[i] = ||V v_i||^2,   0 <= p[i] <= 1,   sum(p) = r,

    the share of dW's r-dimensional input subspace along W's i-th direction. Unrelated
    subspaces give r / k on average; mass at the start means dW reads what W already reads
    most, mass at the end that it reads directions W does not emphasise.
    """
    w, dw, xp = _weight_and_update(W, dW)
    r = _check_index("r", r, min(w.shape), f"min(d, k) for W of shape {tuple(w.shape)}")
    v = _right_singular_vectors(dw)[:r]  # (r, k)
    basis = xp.linalg.svd(w, full_matrices=True)[2]  # (k, k): rows v_1..v_k
    return backend.to_numpy(((v @ basis.T) ** 2).sum(axis=0)).astype(np.float64)


def expected_random_norm(d: int, k: int, r: int, w_fro: float) -> float:
    """sqrt(E||U^T W V^T||_F^2) for uniformly random r-frames U (d x r), V (k x r).

    E[U U^T] = (r/d) I and E[V V^T] = (r/k) I, independent, so
    E tr(U^T W V V^T W^T U) = (r/d)(r/k) ||W||_F^2, whatever W's spectrum.
    """
    return r * w_fro / math.sqrt(d * k)


# --------------------------------------------------------------------------- spectrum


@dataclass(frozen=True)
class Spectrum:
    """The singular values of an update and three ways to say how many matter.

    singular_values  descending, NumPy float64.
    numerical_rank   how many exceed ``threshold * s_max`` (the matrix_rank rule).
    effective_rank   Roy & Vetterli (2007): exp(H(p)) with p = s / sum(s) and
                     H the Shannon entropy (natural log). n for identity(n), 1 for
                     rank 1, between 1 and the rank otherwise; 0 for a zero matrix.
    stable_rank      ||dW||_F^2 / ||dW||_2^2 = sum(s^2) / s_max^2 (0 for zero).
    threshold        the relative tolerance used for numerical_rank.
    """

    singular_values: np.ndarray
    numerical_rank: int
    effective_rank: float
    stable_rank: float
    threshold: float

    def energy_rank(self, fraction: float = 0.9) -> int:
        """The fewest directions holding ``fraction`` of ||dW||_F^2 (0 for a zero matrix)."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction={fraction} must be in (0, 1]")
        energy = np.cumsum(self.singular_values**2)
        if energy.size == 0 or energy[-1] == 0.0:
            return 0
        return int(np.searchsorted(energy, fraction * energy[-1] * (1 - 1e-12)) + 1)


def update_spectrum(dW, threshold: float | None = None) -> Spectrum:
    """Singular values and rank measures of an update dW (for LoRA, rank <= r).

    ``threshold`` is relative to the largest singular value; ``None`` uses
    max(d, k) * eps of dW's dtype (float32's eps for a float32 B @ A), the rule
    of ``numpy.linalg.matrix_rank``.
    """
    raw = _as_array(dW, "dW")
    dw = _matrix(raw, "dW")
    if threshold is None:
        threshold = _rtol(dw.shape, raw.dtype)
    elif not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold={threshold} must be a finite number >= 0 (relative to s_max)")
    xp = backend.get_array_module(dw)
    s = backend.to_numpy(xp.linalg.svd(dw, compute_uv=False)).astype(np.float64)
    s_max, total = (float(s[0]), float(s.sum())) if s.size else (0.0, 0.0)
    if s_max == 0.0:
        return Spectrum(s, 0, 0.0, 0.0, float(threshold))
    p = s[s > 0] / total
    entropy = float(-(p * np.log(p)).sum())
    return Spectrum(
        singular_values=s,
        numerical_rank=int((s > threshold * s_max).sum()),
        effective_rank=math.exp(entropy),
        stable_rank=float((s**2).sum()) / s_max**2,
        threshold=float(threshold),
    )
