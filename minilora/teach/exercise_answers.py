"""The answers the notebooks' checkers compare with: every case's right outputs, the known wrong
answers (one fault each) and the hints, computed from the golden vectors and the reference.

This is the only place where the checkers' formulas live. ``answers(name)`` is what a checker
gets (through ``recorded.answers``); the student package holds no formula, only these answers
recorded as data (``recorded.py``, written by ``minilora course make``), so this module, the
golden cases and the golden vectors are left out of it.

For an exercise graded by ``checking._check`` (a plain NumPy function of arrays) the answer is
``{"cases": [(inputs, right outputs, {fault: wrong outputs or None})], "hints": {...}}``; for
the others it holds what that checker compares with (greedy_decode's tokens, the reference's
training losses and weights, ...).
"""

from __future__ import annotations

import numpy as np

# ---- the golden cases and fresh ones -----------------------------------------------------


def _golden_cases(name: str) -> list[tuple[dict, dict]]:
    """[(inputs, outputs)] of the shipped golden case ``name``."""
    from minilora.teach.golden import case_arguments, load_golden

    manifest, arrays = load_golden()
    entry = next(e for e in manifest["cases"] if e["name"] == name)
    outputs = {s["name"]: arrays[s["key"]] for s in entry["outputs"]}
    return [(case_arguments(entry, arrays), outputs)]


def _fresh_case(name: str, seed: int, **overrides) -> tuple[dict, dict]:
    """A golden case's reference on new inputs (another seed, some inputs replaced)."""
    from minilora.teach.golden_cases import golden_cases

    case = next(c for c in golden_cases() if c.name == name)
    inputs = {**case.make_inputs(np.random.default_rng(seed)), **overrides}
    return inputs, case.reference(inputs, "cpu")


def _reference(case: str):
    from minilora.teach.golden_cases import golden_cases

    return next(c for c in golden_cases() if c.name == case).reference


def _unscaled(case: str) -> dict:
    """Known wrong answers of a LoRA case: {fault: fn(inputs) -> outputs}, the scaling wrong."""
    reference = _reference(case)
    # the reference scales by alpha / r: alpha = c * r makes it scale by c
    scaled = lambda c, i: reference({**i, "alpha": c * int(i["r"])}, "cpu")
    return {
        "the scaling alpha / r is missing (you used 1)": lambda i: scaled(1.0, i),
        "you scaled by alpha / sqrt(r) (rsLoRA), not alpha / r": lambda i: scaled(
            float(i["alpha"]) / np.sqrt(int(i["r"])), i
        ),
        "you scaled by r / alpha, not alpha / r": lambda i: scaled(int(i["r"]) / i["alpha"], i),
    }


# ---- notebook 1 ----------------------------------------------------------------------------


def _matmul_backward():
    hints = {
        "grad_a": "grad_a has a's shape (n, k): g is (n, m), so multiply g by b transposed.",
        "grad_b": "grad_b has b's shape (k, m): a transposed times g.",
    }
    return hints, [_fresh_case("matmul_backward", 15)], {}


def _unbroadcast():
    rng = np.random.default_rng(7)
    extra = []
    for shape in [(4,), (2, 1, 4), (), (2, 3, 4), (1, 3, 1)]:
        grad = rng.standard_normal((2, 3, 4))
        target = grad.sum(axis=tuple(range(3 - len(shape))))  # the axes broadcasting added
        for i, n in enumerate(shape):
            if n == 1:
                target = target.sum(axis=i, keepdims=True)
        extra.append(({"grad": grad, "shape": shape}, {"grad_x": target.reshape(shape)}))
    hint = (
        "sum over the leading axes broadcasting added, then over the axes where `shape` "
        "has a 1 (keepdims=True), so the result has exactly `shape`."
    )

    def leading_only(i):
        g = np.asarray(i["grad"])
        return {"grad_x": g.sum(axis=tuple(range(g.ndim - len(i["shape"]))))}

    from minilora.teach.exercise_inputs import ONLY_LEADING

    return {"grad_x": hint}, extra, {ONLY_LEADING: leading_only}


def _softmax_backward():
    hint = "grad_x = s * (g - sum(g * s, axis=-1, keepdims=True)) with s = softmax(x)."

    def s_of(x):
        s = np.exp(x - x.max(-1, keepdims=True))
        return s / s.sum(-1, keepdims=True)

    def wrong_axis(i):
        s = np.exp(i["x"] - i["x"].max(0, keepdims=True))
        s /= s.sum(0, keepdims=True)
        return {"grad_x": s * (i["g"] - (i["g"] * s).sum(0, keepdims=True))}

    variants = {
        "the softmax (or the sum in its backward) is over the first axis, not the last "
        "(axis=-1)": wrong_axis,
        "you returned s * g: the normalisation's share of the derivative is missing (each "
        "output depends on every input of its row)": lambda i: {"grad_x": s_of(i["x"]) * i["g"]},
    }
    return {"grad_x": hint}, [_fresh_case("softmax_backward", 16)], variants


def _layer_norm_backward():
    hint = (
        "with xhat = (x - mean) / sqrt(var + eps) (var without Bessel's correction): "
        "grad_x = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps), means over the "
        "last axis."
    )

    def ln(i, ddof=0, terms=True):
        x, g = i["x"], i["g"]
        r = 1 / np.sqrt(x.var(-1, ddof=ddof, keepdims=True) + i["eps"])
        if not terms:
            return {"grad_x": g * r}
        xhat = (x - x.mean(-1, keepdims=True)) * r
        return {
            "grad_x": r
            * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
        }

    variants = {
        "you used the variance with Bessel's correction (ddof=1): layer norm divides by n": (
            lambda i: ln(i, ddof=1)
        ),
        "you treated mean and variance as constants (g / sqrt(var + eps)): both depend on "
        "x, which adds two more terms": lambda i: ln(i, terms=False),
    }
    extra = [_fresh_case("layer_norm_backward", 17, eps=1e-3)]
    return {"grad_x": hint}, extra, variants


# ---- notebook 2 ----------------------------------------------------------------------------


def _lora_forward():
    hint = "h = x @ W0.T + b + (alpha / r) * (x @ A.T) @ B.T (Eq. 3, rows of x are inputs)."
    ref = _reference("lora_forward")
    variants = {
        **_unscaled("lora_forward"),
        "the bias b is missing": lambda i: ref({**i, "b": 0 * i["b"]}, "cpu"),
        "the LoRA term (alpha / r) (x A^T) B^T is missing: you returned the base output": (
            lambda i: ref({**i, "B": 0 * i["B"]}, "cpu")
        ),
    }
    return {"h": hint}, [_fresh_case("lora_forward", 11, alpha=16.0, r=3)], variants


def _lora_backward():
    s = "s = alpha / r"
    hints = {
        "grad_x": f"grad_x = G @ W0 + s * (G @ B) @ A, {s}: both paths reach x.",
        "grad_A": f"grad_A = s * (G @ B).T @ x, shape (r, d_in), {s}.",
        "grad_B": f"grad_B = s * G.T @ (x @ A.T), shape (d_out, r), {s}.",
    }
    variants = {
        **_unscaled("lora_backward"),
        "grad_x misses the path through A and B (you kept only G @ W0)": lambda i: {
            "grad_x": i["G"] @ i["W0"]
        },
    }
    return hints, [_fresh_case("lora_backward", 12, alpha=16.0, r=3)], variants


def _merge_weight():
    hint = "W = W0 + (alpha / r) * B @ A: B is (d_out, r), A is (r, d_in)."
    variants = {
        **_unscaled("merge_weight"),
        "W0 is missing: you returned the update dW alone, not W0 + dW": lambda i: {
            "W": i["alpha"] / i["r"] * i["B"] @ i["A"]
        },
        "you subtracted the update (- instead of +): merging adds dW": lambda i: {
            "W": i["W0"] - i["alpha"] / i["r"] * i["B"] @ i["A"]
        },
    }
    return {"W": hint}, [_fresh_case("merge_weight", 13, alpha=16.0, r=3)], variants


def _unmerge_weight():
    hint = "W0 = W - (alpha / r) * B @ A."
    variants = {
        "you added the update (+ instead of -): unmerging subtracts dW": lambda i: {
            "W0": i["W"] + i["alpha"] / i["r"] * i["B"] @ i["A"]
        },
        **{
            f.replace("alpha / r", "alpha / r in the update"): v
            for f, v in _unscaled("unmerge_weight").items()
        },
    }
    return {"W0": hint}, [_fresh_case("unmerge_weight", 14, alpha=16.0, r=3)], variants


def _lora_param_count():
    hint = (
        "each adapted d_model x d_model matrix gets A (r x d_model) and B (d_model x r); "
        "L_hat = n_adapted * n_layer matrices are adapted (section 5.1)."
    )
    extra = []
    for n_layer, d_model, r, n in [(12, 768, 4, 3), (2, 64, 1, 1), (24, 1024, 8, 2)]:
        args = {"n_layer": n_layer, "d_model": d_model, "r": r, "n_adapted": n}
        extra.append((args, {"count": 2 * n * n_layer * d_model * r}))
    count = lambda f: lambda i: {"count": f(i["n_layer"], i["d_model"], i["r"], i["n_adapted"])}
    variants = {
        "n_adapted is ignored: you counted one adapted matrix per layer": count(
            lambda L, d, r, n: 2 * L * d * r
        ),
        "the factor 2 is missing: each adapted matrix has two factors, A and B": count(
            lambda L, d, r, n: n * L * d * r
        ),
        "n_layer is ignored: every one of the n_layer layers is adapted": count(
            lambda L, d, r, n: 2 * n * d * r
        ),
        "r is ignored: A has r rows and B has r columns": count(lambda L, d, r, n: 2 * n * L * d),
        "you counted full matrices (d_model^2), not the low-rank factors": count(
            lambda L, d, r, n: n * L * d * d
        ),
    }
    return {"count": hint}, extra, variants


# ---- notebook 5 ----------------------------------------------------------------------------


def _subspace_similarity():
    hint = (
        "take the right-singular vectors (rows of Vh from np.linalg.svd(A, "
        "full_matrices=False)), keep the top i of A1 and top j of A2, and return "
        "||U1 U2^T||_F^2 / min(i, j)."
    )

    def phi(i, norm=None):
        def top(A, n):
            return np.linalg.svd(A, full_matrices=False)[2][:n]

        U1, U2 = top(i["A1"], i["i"]), top(i["A2"], i["j"])
        return {"phi": np.sum((U1 @ U2.T) ** 2) / (norm or min(i["i"], i["j"]))}

    variants = {
        "you divided by max(i, j), not min(i, j)": lambda i: phi(i, max(i["i"], i["j"])),
        "the normalisation 1 / min(i, j) is missing": lambda i: phi(i, 1),
    }
    extra = [_fresh_case("subspace_similarity", 14, i=2, j=2)]
    return {"phi": hint}, extra, variants


ARRAY_EXERCISES = {
    "matmul_backward": _matmul_backward,
    "unbroadcast": _unbroadcast,
    "softmax_backward": _softmax_backward,
    "layer_norm_backward": _layer_norm_backward,
    "lora_forward": _lora_forward,
    "lora_backward": _lora_backward,
    "merge_weight": _merge_weight,
    "unmerge_weight": _unmerge_weight,
    "lora_param_count": _lora_param_count,
    "subspace_similarity": _subspace_similarity,
}


def _array_answers(name: str) -> dict:
    hints, extra, variants = ARRAY_EXERCISES[name]()
    cases = []
    for inputs, want in _golden_cases(name) + list(extra):
        wrong = {}
        for fault, variant in variants.items():
            try:
                wrong[fault] = variant(inputs)
            except (ValueError, IndexError):  # a wrong answer that cannot be formed here
                wrong[fault] = None
        cases.append((inputs, want, wrong))
    return {"cases": cases, "hints": hints}


def answers(name: str) -> dict:
    """What the checker of exercise ``name`` compares with (module docstring)."""
    if name in ARRAY_EXERCISES:
        return _array_answers(name)
    from minilora.teach.exercise_answers_model import MODEL_EXERCISES

    return MODEL_EXERCISES[name]()


def names() -> list[str]:
    from minilora.teach.exercise_answers_model import MODEL_EXERCISES

    return [*ARRAY_EXERCISES, *MODEL_EXERCISES]
