"""Checkers for the notebooks' exercises, and the ``minilora exercises`` sub-command.

Every exercise in ``notebooks/`` asks for a plain NumPy function (so the answer
can be written in any framework and graded against the golden vectors), and is
followed by a "check your answer" cell::

    from minilora.teach.exercises import check_matmul_backward
    check_matmul_backward(matmul_backward)

A checker calls the learner's function on fixed inputs (the golden vectors of
``minilora/teach/golden/v2`` and a few hand-picked cases) and compares each output
with the reference. On success it prints one line and returns True; on failure
it raises :class:`ExerciseError` (an ``AssertionError``, so nbgrader counts it)
naming the output, the shapes, the largest difference and, where it can tell,
the likely fault: a transposed matrix, a missing factor, a wrong sign. An
exercise still holding the student version's ``raise NotImplementedError()``
makes its check raise NotImplementedError, saying which function to write.

Command line (``minilora exercises ...``)::

    minilora exercises strip NOTEBOOK OUT     # the student version (no solutions)
    minilora exercises golden OUT_DIR         # write the golden vectors
    minilora exercises execute NOTEBOOK...    # run notebooks in place, keep outputs
"""

from __future__ import annotations

import os

import numpy as np


class ExerciseError(AssertionError):
    """A learner's answer differs from the reference; the message says how."""


# ---- hints on or off -----------------------------------------------------------------------

_HIDE_HINTS: bool | None = None  # None: follow the environment variable


def hide_hints(hide: bool | None = True) -> None:
    """Leave the "Hint:" lines (which give the formula) out of every message, for graded work.

    ``hide_hints(True)`` hides them, ``hide_hints(False)`` shows them, ``hide_hints(None)``
    follows the environment variable ``MINILORA_HIDE_HINTS`` (set to 1 to hide; the default
    shows them). The "Likely fault:" line, which names the mistake but not the answer, stays.
    """
    global _HIDE_HINTS
    _HIDE_HINTS = hide


def hints_hidden() -> bool:
    if _HIDE_HINTS is not None:
        return _HIDE_HINTS
    return os.environ.get("MINILORA_HIDE_HINTS", "").strip().lower() not in ("", "0", "false", "no")


def _message(what: str, fault: str = "", hint: str = "") -> str:
    """The one message format: what is wrong, at most one "Likely fault:" line, then the hint."""
    fault = f"\nLikely fault: {fault.rstrip('.')}." if fault else ""
    hint = f"\nHint: {hint}" if hint and not hints_hidden() else ""
    return f"{what}{fault}{hint}"


def _fail(what: str, fault: str = "", hint: str = ""):
    raise ExerciseError(_message(what, fault, hint))


class _Wrong(Exception):
    """One output differs: ``what`` says how, ``fault`` is the shape-based guess (or "")."""

    def __init__(self, what: str, fault: str = ""):
        super().__init__(what)
        self.what, self.fault = what, fault


# ---- comparing one output ----------------------------------------------------------------


def _diagnose(got: np.ndarray, want: np.ndarray) -> str:
    """A guess at the fault, in words: transposed, scaled by a factor, wrong sign, zeros."""
    close = lambda a, b: a.shape == b.shape and np.allclose(a, b, rtol=1e-6, atol=1e-9)
    if got.ndim == 2 and got.shape != want.shape and close(got.T, want):
        return "your result is the transpose of the answer (check the order of a matmul, or a .T)"
    if got.shape != want.shape:
        return ""
    if got.ndim == 2 and got.shape[0] == got.shape[1] and close(got.T, want):
        return "your result is the transpose of the answer (check the order of a matmul, or a .T)"
    if not np.any(got) and np.any(want):
        return "your result is all zeros"
    if close(got, -want):
        return "your result has the wrong sign"
    dot = float(np.vdot(got, want))
    if dot and np.any(want):
        c = dot / float(np.vdot(want, want))
        if close(got, c * want):
            return (
                f"your result is {c:.4g} times the answer: a missing or extra factor "
                "(a scaling like alpha / r, a 1/n of a mean, a 2 from a square)"
            )
    return ""


def _host(x):
    """A Tensor's or a CuPy array's values on the CPU; anything else as it is.

    Only a Tensor is unwrapped: an array's own ``.data`` is a buffer, not its values.
    """
    from minilora import backend
    from minilora.tensor import Tensor

    x = x.data if isinstance(x, Tensor) else x
    return backend.to_numpy(x) if backend.get_array_module_or_none(x) is not None else x


def _compare(function: str, output: str, got, want) -> float:
    """max|got - want| if ``got`` passes the golden tolerance rule, else raise _Wrong.

    The rule is the golden manifest's, stated once in ``minilora.teach.golden.TOLERANCE``:
    max|got - want| <= atol + rtol * max|want|, with the tolerance of the dtype ``got``
    was computed in (float32 answers get float32's; everything else float64's).
    """
    from minilora.teach.golden import within

    want = np.asarray(want, dtype=np.float64)
    if got is None:
        raise _Wrong(f"{function}: {output} is None", "you forgot to return it")
    try:
        got = np.asarray(_host(got))
        dtype = "float32" if got.dtype in (np.float32, np.float16) else "float64"
        got = got.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise _Wrong(f"{function}: {output} is not an array of numbers ({err})") from None
    fault = _diagnose(got, want)
    if got.shape != want.shape:
        raise _Wrong(f"{function}: {output} has shape {got.shape}, expected {want.shape}", fault)
    if not np.all(np.isfinite(got)):
        raise _Wrong(f"{function}: {output} contains NaN or inf", fault)
    ok, largest = within(got, want, dtype)
    if ok:
        return largest
    diff = np.abs(got - want)
    index = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    raise _Wrong(
        f"{function}: {output} is wrong: the largest difference is {diff.max():.3g} at index "
        f"{tuple(int(i) for i in index)} (yours {got[index]:.6g}, expected {want[index]:.6g})",
        fault,
    )


def _as_tuple(result, n: int, function: str, names) -> tuple:
    if n == 1:
        return (result,)
    if not isinstance(result, (tuple, list)) or len(result) != n:
        _fail(f"{function} must return {n} values ({', '.join(names)}), got {result!r}"[:300])
    return tuple(result)


def _passed(function: str, cases: int, largest: float) -> bool:
    print(
        f"Correct: {function} matches the reference on {cases} case{'s' * (cases > 1)} "
        f"(largest difference {largest:.1e})."
    )
    return True


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


def _unscaled(case: str) -> dict:
    """Known wrong answers of a LoRA case: {fault: fn(inputs) -> outputs}, the scaling wrong."""
    from minilora.teach.golden_cases import golden_cases

    reference = next(c for c in golden_cases() if c.name == case).reference
    # the reference scales by alpha / r: alpha = c * r makes it scale by c
    scaled = lambda c, i: reference({**i, "alpha": c * int(i["r"])}, "cpu")
    return {
        "the scaling alpha / r is missing (you used 1)": lambda i: scaled(1.0, i),
        "you scaled by alpha / sqrt(r) (rsLoRA), not alpha / r": lambda i: scaled(
            float(i["alpha"]) / np.sqrt(int(i["r"])), i
        ),
        "you scaled by r / alpha, not alpha / r": lambda i: scaled(int(i["r"]) / i["alpha"], i),
    }


def _describe(inputs: dict) -> str:
    """The inputs by name with their shapes (arrays) or values (numbers, shapes)."""
    parts = []
    for k, v in inputs.items():
        if isinstance(v, np.ndarray) and v.ndim:
            parts.append(f"{k} {tuple(v.shape)}")
        elif isinstance(v, (int, float, str, tuple, list, np.number, np.ndarray)):
            parts.append(f"{k} = {v!r}")
        else:
            parts.append(f"{k} (a {type(v).__name__})")
    return ", ".join(parts)


def _crash_fault(err: Exception) -> str:
    """A guess from NumPy's own error message, for a function that raised."""
    text = str(err)
    if "matmul" in text or "not aligned" in text or "core dimension" in text:
        return (
            "a matrix product whose inner sizes do not match: an operand needs (or must lose) "
            "a .T; compare the shapes above with the sizes each product needs"
        )
    if "broadcast" in text:
        return (
            "two arrays of different shapes were added or multiplied element-wise: one of "
            "them was built with the wrong shape (a product in the wrong order, or transposed)"
        )
    if "reshape" in text:
        return "your result has the wrong number of elements for the shape it must take"
    if isinstance(err, (IndexError, np.exceptions.AxisError)):
        return "an index or axis that the array does not have"
    return ""


def _call(name: str, fn, args: dict, crash=None):
    """``fn(*args)``; a stub says 'not implemented', any other exception becomes a diagnosis."""
    try:
        return fn(*args.values())
    except NotImplementedError:  # the student version's stub: say so, as nbgrader does
        raise NotImplementedError(
            f"{name}: not implemented yet: replace `raise NotImplementedError()` in the "
            "exercise cell with your code"
        ) from None
    except Exception as err:  # the learner's code crashed: explain it with the shapes
        fault = (crash(err, args) if crash else "") or _crash_fault(err)
        code = getattr(fn, "__code__", None)
        lines, where = [], err.__traceback__
        while where is not None:  # the deepest line in the learner's own file
            if code is not None and where.tb_frame.f_code.co_filename == code.co_filename:
                lines.append(where.tb_lineno)
            where = where.tb_next
        line = f" (line {lines[-1]} of your cell)" if lines else ""
        _fail(
            f"{name} raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            f"{line}\nwhen called with {_describe(args)}",
            fault,
        )


def _check(name: str, fn, outputs, hints: dict, extra=(), variants=None, crash=None) -> bool:
    """Run ``fn`` on golden case ``name`` (and ``extra`` cases); compare every output.

    ``variants`` ({fault: fn(inputs) -> outputs}) are known wrong answers: when the
    learner's output matches one, the message names that fault (and only that one).
    ``crash(err, inputs) -> fault`` guesses the fault of an exception raised inside ``fn``.
    """
    if not callable(fn):
        _fail(f"pass your function itself, e.g. check_...({name}), not {fn!r}")
    cases = _golden_cases(name) + list(extra)
    largest = 0.0
    for inputs, want in cases:
        args = {k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}
        got = _as_tuple(_call(name, fn, args, crash), len(outputs), name, outputs)
        for out, value in zip(outputs, got):
            try:
                diff = _compare(name, out, value, want[out])
            except _Wrong as wrong:
                fault = wrong.fault
                for named, variant in (variants or {}).items():
                    try:
                        _compare(name, out, value, variant(inputs)[out])
                    except (_Wrong, ValueError, KeyError):
                        continue
                    fault = named
                    break
                _fail(f"{wrong.what}.", fault, hints.get(out, ""))
            largest = max(largest, diff)
    return _passed(name, len(cases), largest)


# ---- notebook 1: autograd ----------------------------------------------------------------


def check_matmul_backward(matmul_backward) -> bool:
    """``matmul_backward(a, b, g) -> (grad_a, grad_b)`` for y = a @ b and dL/dy = g."""
    hints = {
        "grad_a": "grad_a has a's shape (n, k): g is (n, m), so multiply g by b transposed.",
        "grad_b": "grad_b has b's shape (k, m): a transposed times g.",
    }
    crash = lambda err, i: (
        "a matrix product whose inner sizes do not match: with a (n, k), b (k, m) and "
        "g (n, m), each gradient has its input's shape and only one product of g with "
        "b or a (one of them transposed) gives it"
        if "matmul" in str(err) else ""
    )  # fmt: skip
    extra = [_fresh_case("matmul_backward", 15)]
    return _check(
        "matmul_backward", matmul_backward, ("grad_a", "grad_b"), hints, extra, crash=crash
    )


def _unbroadcast_leading_only(i) -> dict:
    g = np.asarray(i["grad"])
    return {"grad_x": g.sum(axis=tuple(range(g.ndim - len(i["shape"]))))}


def check_unbroadcast(unbroadcast) -> bool:
    """``unbroadcast(grad, shape) -> grad_x``: grad summed back to an input of ``shape``."""
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
    only_leading = (
        "you summed only the leading axes that broadcasting added; an axis where `shape` "
        "has a 1 was stretched too and must be summed (keepdims=True)"
    )

    def crash(err, i):
        if "reshape" in str(err) and 1 in tuple(i["shape"]):
            return only_leading
        return ""

    variants = {only_leading: _unbroadcast_leading_only}
    return _check("unbroadcast", unbroadcast, ("grad_x",), {"grad_x": hint}, extra, variants, crash)


def check_softmax_backward(softmax_backward) -> bool:
    """``softmax_backward(x, g) -> grad_x`` for s = softmax(x) over the last axis."""
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
        "you returned s * g: the term - s * sum(g * s) (the normalisation's share) is "
        "missing": lambda i: {"grad_x": s_of(i["x"]) * i["g"]},
    }
    extra = [_fresh_case("softmax_backward", 16)]
    return _check(
        "softmax_backward", softmax_backward, ("grad_x",), {"grad_x": hint}, extra, variants
    )


def check_layer_norm_backward(layer_norm_backward) -> bool:
    """``layer_norm_backward(x, g, eps) -> grad_x`` for layer norm without weight and bias."""
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
        "x, which adds the terms - mean(g) - xhat * mean(g * xhat)": lambda i: ln(i, terms=False),
    }
    extra = [_fresh_case("layer_norm_backward", 17, eps=1e-3)]
    return _check(
        "layer_norm_backward", layer_norm_backward, ("grad_x",), {"grad_x": hint}, extra, variants
    )


# ---- notebook 2: the LoRA layer ----------------------------------------------------------

_SHAPES = (
    "W0 is (d_out, d_in), A is (r, d_in), B is (d_out, r) (PyTorch's convention) and the "
    "rows of x are inputs, so every weight enters a product with x transposed (x @ W.T)"
)


def _lora_crash(err, i) -> str:
    if "matmul" in str(err) or "broadcast" in str(err):
        shapes = ", ".join(
            f"{k} {tuple(np.shape(v))}"
            for k, v in i.items()
            if k in ("x", "W0", "W", "A", "B", "G")
        )
        return f"a weight used without (or with an extra) .T: {_SHAPES}; here {shapes}"
    return ""


def check_lora_init(init_lora) -> bool:
    """``init_lora(d_in, d_out, r, rng) -> (A, B)``: A random, B = 0 (section 4.1).

    Checked: the shapes; B exactly zero, so a LoRALinear holding (A, B) gives the base
    layer's output bit for bit; A drawn from ``rng`` (reproducible, not constant, of
    rank r); and, when both are zero, that no gradient can flow (the saddle).
    """
    from minilora.lora import LoRAConfig, LoRALinear
    from minilora.nn import Linear
    from minilora.tensor import Tensor

    hint = (
        "A = rng.uniform(-1/sqrt(d_in), 1/sqrt(d_in), size=(r, d_in)) (loralib's Kaiming "
        "uniform) or rng.normal(0, 1/r, (r, d_in)); B = np.zeros((d_out, r))."
    )
    name = "init_lora"
    if not callable(init_lora):
        _fail(f"pass your function itself, e.g. check_lora_init(init_lora), not {init_lora!r}")
    d_in, d_out, r = 10, 7, 3
    args = {"d_in": d_in, "d_out": d_out, "r": r, "rng": np.random.default_rng(0)}
    A, B = _as_tuple(_call(name, init_lora, args), 2, name, ("A", "B"))
    A, B = (np.asarray(_host(v), dtype=np.float64) for v in (A, B))
    for label, got, want in (("A", A, (r, d_in)), ("B", B, (d_out, r))):
        if got.shape != want:
            swapped = (d_out, r) if label == "A" else (r, d_in)
            fault = "you returned (B, A): A and B are swapped" if got.shape == swapped else (
                f"{label} is transposed" if got.shape == want[::-1] else "")  # fmt: skip
            _fail(f"{name}: {label} has shape {got.shape}, expected {want}.", fault, hint)
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(B))):
        _fail(f"{name}: A or B contains NaN or inf.", "", hint)
    rng = np.random.default_rng(1)
    x, G = rng.standard_normal((5, d_in)), rng.standard_normal((5, d_out))
    s = 2.0 / r
    grad_A, grad_B = s * (G @ B).T @ x, s * G.T @ (x @ A.T)
    if not A.any() and not B.any():
        _fail(
            f"{name}: A and B are both zero: at (A, B) = (0, 0) the gradients are "
            f"|grad_A| = {np.abs(grad_A).max():.1e} and |grad_B| = {np.abs(grad_B).max():.1e}, "
            "so no gradient flows and training never leaves the start.",
            "both are zero, a saddle of the loss: A must start random (only B starts at zero)",
            hint,
        )
    if B.any():
        base = Linear(d_in, d_out, dtype=np.float64, generator=rng)
        h0 = base(Tensor(x)).data
        h = h0 + s * (x @ A.T) @ B.T
        fault = (
            "you zeroed A and drew B at random: the start is exact too, but A then gets "
            "no gradient at the first step; the paper (and loralib, PEFT) draw A and zero B"
            if not A.any() else
            "B is not zero, so dW = B A is not zero and the adapted model does not start as "
            "the pretrained one"
        )  # fmt: skip
        what = (
            f"{name}: A is zero and B is not (max |B| = {np.abs(B).max():.3g})."
            if not A.any() else
            f"{name}: B is not all zero (max |B| = {np.abs(B).max():.3g}): at the start the "
            f"layer's output differs from the base output by up to {np.abs(h - h0).max():.3g}."
        )  # fmt: skip
        _fail(
            what,
            fault,
            hint,
        )
    if np.linalg.matrix_rank(A) < r:
        _fail(
            f"{name}: A has rank {np.linalg.matrix_rank(A)}, expected r = {r} (A = {A[:2]}...).",
            "A is constant or its rows repeat: draw every entry independently from rng",
            hint,
        )
    again = np.asarray(_host(init_lora(d_in, d_out, r, np.random.default_rng(0))[0]))
    other = np.asarray(_host(init_lora(d_in, d_out, r, np.random.default_rng(5))[0]))
    if not np.array_equal(again, A) or np.array_equal(other, A):
        _fail(
            f"{name}: A is not a function of rng (same seed gives the same A: "
            f"{np.array_equal(again, A)}; another seed a different A: "
            f"{not np.array_equal(other, A)}).",
            "A is drawn from np.random or a fixed seed instead of the rng passed in",
            hint,
        )
    if not 1e-4 < float(np.std(A)) < 3.0:
        _fail(
            f"{name}: A's entries have standard deviation {np.std(A):.3g}; expected about "
            f"1/sqrt(3 d_in) = {1 / np.sqrt(3 * d_in):.3g} (Kaiming uniform) or 1/r.",
            "A's scale is far off (the first steps of B would be tiny or huge)",
            hint,
        )
    base = Linear(d_in, d_out, dtype=np.float64, generator=rng)
    layer = LoRALinear(base)
    layer.add_adapter("default", LoRAConfig(r=r, alpha=2.0))
    layer.lora_A["default"].weight.data, layer.lora_B["default"].weight.data = A, B
    if not np.array_equal(layer(Tensor(x)).data, base(Tensor(x)).data):  # pragma: no cover
        _fail(f"{name}: the LoRA layer's output is not the base output bit for bit.", "", hint)
    print(
        f"Correct: {name}: A {A.shape} random from rng, B {B.shape} zero; a LoRALinear holding "
        f"them gives the base output bit for bit; at step 0 |grad_A| = "
        f"{np.abs(grad_A).max():.0e} and |grad_B| = {np.abs(grad_B).max():.2g} (only B moves)."
    )
    return True


def check_lora_forward(lora_forward) -> bool:
    """``lora_forward(x, W0, b, A, B, alpha, r) -> h = x W0^T + b + (alpha/r) x A^T B^T``."""
    hint = "h = x @ W0.T + b + (alpha / r) * (x @ A.T) @ B.T (Eq. 3, rows of x are inputs)."
    extra = [_fresh_case("lora_forward", 11, alpha=16.0, r=3)]
    from minilora.teach.golden_cases import golden_cases

    ref = next(c for c in golden_cases() if c.name == "lora_forward").reference
    variants = {
        **_unscaled("lora_forward"),
        "the bias b is missing": lambda i: ref({**i, "b": 0 * i["b"]}, "cpu"),
        "the LoRA term (alpha / r) (x A^T) B^T is missing: you returned the base output": (
            lambda i: ref({**i, "B": 0 * i["B"]}, "cpu")
        ),
    }
    return _check("lora_forward", lora_forward, ("h",), {"h": hint}, extra, variants, _lora_crash)


def check_lora_grads(lora_backward) -> bool:
    """``lora_backward(x, W0, A, B, G, alpha, r) -> (grad_x, grad_A, grad_B)``, G = dL/dh."""
    s = "s = alpha / r"
    hints = {
        "grad_x": f"grad_x = G @ W0 + s * (G @ B) @ A, {s}: both paths reach x.",
        "grad_A": f"grad_A = s * (G @ B).T @ x, shape (r, d_in), {s}.",
        "grad_B": f"grad_B = s * G.T @ (x @ A.T), shape (d_out, r), {s}.",
    }
    extra = [_fresh_case("lora_backward", 12, alpha=16.0, r=3)]
    variants = {
        **_unscaled("lora_backward"),
        "grad_x misses the path through A and B (you kept only G @ W0)": lambda i: {
            "grad_x": i["G"] @ i["W0"]
        },
    }
    outputs = ("grad_x", "grad_A", "grad_B")
    return _check("lora_backward", lora_backward, outputs, hints, extra, variants, _lora_crash)


def check_merge(merge_weight, unmerge_weight=None) -> bool:
    """``merge_weight(W0, A, B, alpha, r) -> W`` (and optionally ``unmerge_weight``)."""
    hint = "W = W0 + (alpha / r) * B @ A: B is (d_out, r), A is (r, d_in)."

    def crash(err, i):
        if "broadcast" in str(err):
            return (
                "the update has the wrong shape: A.T @ B.T is (B A)^T, of shape (d_in, d_out); "
                "dW = B @ A has W0's shape (d_out, d_in)"
            )
        return _lora_crash(err, i)

    extra = [_fresh_case("merge_weight", 13, alpha=16.0, r=3)]
    variants = {
        **_unscaled("merge_weight"),
        "W0 is missing: you returned the update dW alone, not W0 + dW": lambda i: {
            "W": i["alpha"] / i["r"] * i["B"] @ i["A"]
        },
        "you subtracted the update (- instead of +): merging adds dW": lambda i: {
            "W": i["W0"] - i["alpha"] / i["r"] * i["B"] @ i["A"]
        },
    }
    _check("merge_weight", merge_weight, ("W",), {"W": hint}, extra, variants, crash)
    if unmerge_weight is not None:
        hint = "W0 = W - (alpha / r) * B @ A."
        extra = [_fresh_case("unmerge_weight", 14, alpha=16.0, r=3)]
        variants = {
            "you added the update (+ instead of -): unmerging subtracts dW": lambda i: {
                "W0": i["W"] + i["alpha"] / i["r"] * i["B"] @ i["A"]
            },
            **{
                f.replace("alpha / r", "alpha / r in the update"): v
                for f, v in _unscaled("unmerge_weight").items()
            },
        }
        _check("unmerge_weight", unmerge_weight, ("W0",), {"W0": hint}, extra, variants, crash)
    return True


def check_lora_param_count(lora_param_count) -> bool:
    """``lora_param_count(n_layer, d_model, r, n_adapted) -> |Theta| = 2 L_hat d_model r``."""
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
    return _check(
        "lora_param_count", lora_param_count, ("count",), {"count": hint}, extra, variants
    )


# ---- notebook 3: the GPT -----------------------------------------------------------------


def _tiny_gpt(seed: int = 0, scale: float | None = None):
    """A small random GPT (block_size 8, vocabulary 11). With ``scale``, every parameter is
    redrawn from N(0, scale^2): a fresh GPT's greedy text repeats one token, this one's varies."""
    from minilora.transformer import GPT, GPTConfig

    config = GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, d_model=16)
    model = GPT(config, generator=np.random.default_rng(seed))
    if scale is not None:
        rng = np.random.default_rng(seed)
        for p in model.parameters():
            p.data = (scale * rng.standard_normal(p.shape)).astype(p.data.dtype)
    return model


def _greedy_reference(model, prompt, n, crop=True, position=-1, append=True) -> np.ndarray:
    """Greedy decoding, and its typical mistakes (no crop, wrong position, no append)."""
    from minilora.tensor import no_grad

    ids, new = list(int(t) for t in prompt), []
    block = model.config.block_size
    with no_grad():
        for _ in range(n):
            context = (ids[-block:] if crop else ids) if append else list(prompt)[-block:]
            logits, _ = model(np.array(context, dtype=np.int64)[None, :])
            token = int(np.argmax(_host(logits)[0, position]))
            new.append(token)
            ids.append(token)
    return np.array(new, dtype=np.int64)


def check_greedy_decode(greedy_decode) -> bool:
    """``greedy_decode(model, prompt_ids, max_new_tokens) -> new_ids`` (temperature 0).

    Compared with ``model.generate(..., temperature=0)`` on a small random GPT
    (block_size 8): a prompt that fits with its continuation, then one that must slide.
    """
    name = "greedy_decode"
    hint = (
        "repeat max_new_tokens times: logits, _ = model(ids[-block_size:][None, :]); take "
        "np.argmax of the logits at the last position (logits.data[0, -1]), append it to ids; "
        "return only the new tokens."
    )
    if not callable(greedy_decode):
        _fail("pass your function itself, e.g. check_greedy_decode(greedy_decode)")
    model = _tiny_gpt(1, scale=0.7)
    block = model.config.block_size
    prompts = [(np.array([3, 1, 4], dtype=np.int64), 4), (np.array([2, 7, 1, 8, 2, 8]), 7)]
    for prompt, n in prompts:
        want = model.generate(prompt[None, :], n, temperature=0)[0, len(prompt) :]

        def crash(err, i, n=n, prompt=prompt):
            if "longer than block_size" in str(err):
                return (
                    f"the input grew past block_size = {block}: feed the model only the "
                    "last block_size tokens (ids[-block_size:])"
                )
            return ""

        args = {"model": model, "prompt_ids": prompt.copy(), "max_new_tokens": n}
        got = _call(name, greedy_decode, args, crash)
        what = f"{name}(prompt {prompt.tolist()}, max_new_tokens={n})"
        try:
            got = np.asarray(_host(got)).reshape(-1).astype(np.int64)
        except (TypeError, ValueError):
            _fail(f"{what} returned {got!r}, not a list of token ids.", "", hint)
        if np.array_equal(got, want):
            continue
        fault = ""
        if len(got) == len(prompt) + n and np.array_equal(got[len(prompt) :], want):
            fault = "you returned the prompt too: return only the new tokens"
        elif np.array_equal(got, _greedy_reference(model, prompt, n, position=0)):
            fault = (
                "you took the logits of the first position: the next token is predicted at "
                "the last one (logits[0, -1])"
            )
        elif np.array_equal(got, _greedy_reference(model, prompt, n, append=False)):
            fault = (
                "each step reads the prompt again: append every new token to the input "
                "before predicting the next one"
            )
        elif len(got) != n:
            fault = f"you returned {len(got)} tokens, max_new_tokens is {n}"
        elif not np.array_equal(
            got, np.asarray(greedy_decode(model, prompt.copy(), n)).reshape(-1)
        ):
            fault = "two calls give different tokens: you sample; greedy takes the argmax"
        _fail(f"{what} gave {got.tolist()}, expected {want.tolist()}.", fault, hint)
    print(
        f"Correct: {name} equals model.generate(temperature=0) on {len(prompts)} prompts "
        f"(one longer than block_size = {block} with its continuation)."
    )
    return True


# ---- notebook 4: fine-tuning -------------------------------------------------------------


def check_exact_match(exact_match) -> bool:
    """``exact_match(predictions, answers) -> float``: the fraction equal after strip()."""
    cases = [
        (["SELECT a FROM t", "x"], ["SELECT a FROM t", "y"], 0.5),
        ([" SELECT a FROM t\n", "SELECT b"], ["SELECT a FROM t", "SELECT b "], 1.0),
        (["select a from t"], ["SELECT a FROM t"], 0.0),
        (["a", "b", "c", "d"], ["a", "b", "c", "x"], 0.75),
    ]
    hint = (
        "compare each prediction with its answer after .strip() (surrounding spaces and "
        "newlines do not count; case does), and divide the hits by the number of answers."
    )
    for predictions, answers, want in cases:
        args = {"predictions": list(predictions), "answers": list(answers)}
        got = _call("exact_match", exact_match, args)
        try:
            ok = got is not None and np.isclose(float(got), want)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            fault = ""
            if got is None:
                fault = "you forgot to return the result"
            elif isinstance(got, (int, np.integer)) and not isinstance(got, bool):
                fault = "you returned the number of hits: divide by the number of answers"
            elif want == 1.0:
                fault = "surrounding spaces and newlines count in your comparison: .strip() both"
            elif want == 0.0:
                fault = "your comparison ignores case: SQL keywords must match exactly"
            _fail(
                f"exact_match({predictions!r}, {answers!r}) returned {got!r}, expected {want}.",
                fault,
                hint,
            )
    return _passed("exact_match", len(cases), 0.0)


def check_inject_lora(add_lora) -> bool:
    """``add_lora(model, targets, r, alpha, rng) -> model``: every Linear whose last name is in
    ``targets`` replaced by a LoRALinear with adapter "default" (rank r, alpha), and every
    parameter but the adapters' A and B frozen.

    Checked on a small GPT with two sets of targets: which layers were wrapped, their rank and
    alpha, which parameters train, the count 2 x L_hat x d_model x r, and the output at
    injection (the base model's, bit for bit).
    """
    from minilora.lora import lora_layers
    from minilora.tensor import no_grad

    name = "add_lora"
    hint = (
        "for each (path, module) in list(model.named_modules()): if it is a Linear and "
        "path.split('.')[-1] is in targets, layer = LoRALinear(module); "
        "layer.add_adapter('default', LoRAConfig(r=r, alpha=alpha), generator=rng); "
        "model.set_submodule(path, layer). Then p.requires_grad_('lora_' in n) for every "
        "(n, p) in model.named_parameters()."
    )
    if not callable(add_lora):
        _fail("pass your function itself, e.g. check_inject_lora(add_lora)")
    idx = np.array([[1, 2, 3, 4, 5]], dtype=np.int64)
    for targets, r, alpha in ((("q_proj", "v_proj"), 2, 4.0), (("fc_in",), 3, 16.0)):
        model = _tiny_gpt(1)
        with no_grad():
            before = _host(model(idx)[0])
        linears = [n for n, m in model.named_modules() if type(m).__name__ == "Linear"]
        expected = {n for n in linears if n.rsplit(".", 1)[-1] in targets}
        args = {"model": model, "targets": targets, "r": r, "alpha": alpha,
                "rng": np.random.default_rng(0)}  # fmt: skip
        what = f"{name}(model, targets={targets}, r={r}, alpha={alpha})"
        got = _call(name, add_lora, args)
        if got is not model:
            _fail(
                f"{what} returned {type(got).__name__}, not the model.",
                "you forgot `return model`" if got is None else "",
                hint,
            )
        wrapped = set(lora_layers(model))
        if wrapped != expected:
            missing, extra = sorted(expected - wrapped), sorted(wrapped - expected)
            fault = (
                "the model still holds the old layers: replace each one in the model with "
                "model.set_submodule(path, new_layer)" if not wrapped else
                "you matched names loosely (a substring or a prefix): compare the last part "
                "of the path, path.split('.')[-1], with the targets" if extra else
                "some targets were skipped"
            )  # fmt: skip
            _fail(f"{what}: LoRA layers missing at {missing}, unexpected at {extra}.", fault, hint)
        for path in expected:
            layer = model.get_submodule(path)
            config = layer.configs.get(layer.active_adapter)
            if config is None or config.r != r or float(config.alpha) != alpha:
                _fail(
                    f"{what}: {path} has adapter {layer.active_adapter!r} with config {config}.",
                    "the adapter's rank or alpha is not the r and alpha passed in",
                    hint,
                )
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        adapters = {n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}
        if trainable != adapters:
            still = sorted(trainable - adapters)
            frozen = sorted(adapters - trainable)
            fault = (
                "the base model is still trainable: freeze every parameter but A and B"
                if still else "A and B are frozen: only they must train"
            )  # fmt: skip
            _fail(
                f"{what}: trainable but should be frozen: {still[:4]}{' ...' * (len(still) > 4)}; "
                f"frozen but should train: {frozen[:4]}{' ...' * (len(frozen) > 4)}.",
                fault,
                hint,
            )
        with no_grad():
            after = _host(model(idx)[0])
        if not np.array_equal(after, before):
            _fail(
                f"{what}: the model's output changed at injection (largest change "
                f"{np.abs(after - before).max():.3g}).",
                "B does not start at zero, or a base weight was changed",
                hint,
            )
        count = sum(int(np.prod(p.shape)) for n, p in model.named_parameters() if n in adapters)
        d, L = model.config.d_model, model.config.n_layer
        d_out = 4 * d if targets == ("fc_in",) else d
        assert count == L * len(targets) * r * (d + d_out), count
    print(
        f"Correct: {name} wraps exactly the targeted Linear layers (two sets of targets), "
        "freezes everything else, and leaves the output unchanged bit for bit."
    )
    return True


def _answer_targets_reference(prompt, answer, ignore_index=-100, first=None):
    ids = np.concatenate([prompt, answer]).astype(np.int64)
    x, y = ids[:-1].copy(), ids[1:].copy()
    y[: (len(prompt) - 1) if first is None else first] = ignore_index
    return x, y


def _train_reference(model, optimizer, x, y, zero=True, step=True) -> float:
    if zero:
        optimizer.zero_grad()
    _, loss = model(x, y)
    loss.backward()
    if step:
        optimizer.step()
    return loss.item()


def _lora_model():
    from minilora.lora import LoRAConfig, inject_lora

    model = _tiny_gpt(2)
    config = LoRAConfig(r=2, alpha=4.0, target_modules=("q_proj", "v_proj"))
    return inject_lora(model, config, generator=np.random.default_rng(3))


def check_training_step(answer_targets, train_step=None) -> bool:
    """``answer_targets(prompt_ids, answer_ids) -> (x, y)`` with the loss on answer tokens
    only (y = -100 elsewhere), and ``train_step(model, optimizer, x, y) -> loss``.

    ``train_step`` is run for three steps on a small GPT with LoRA beside the reference
    (zero_grad, forward, backward, step) and must give the same losses and weights.
    """
    from minilora import optim

    name = "answer_targets"
    hint = (
        "ids = concatenate(prompt, answer); x = ids[:-1]; y = ids[1:] with y[:len(prompt) - 1] "
        "= -100 (position t predicts token t + 1, so the first answer token is predicted at "
        "position len(prompt) - 1)."
    )
    if not callable(answer_targets):
        _fail("pass your function itself, e.g. check_training_step(answer_targets, train_step)")
    for prompt, answer in (([5, 6, 7], [8, 9, 1]), ([4, 2, 2, 3, 5], [6, 1])):
        prompt, answer = np.array(prompt, dtype=np.int64), np.array(answer, dtype=np.int64)
        args = {"prompt_ids": prompt.copy(), "answer_ids": answer.copy()}
        got = _as_tuple(_call(name, answer_targets, args), 2, name, ("x", "y"))
        try:
            x, y = (np.asarray(_host(v)).astype(np.int64).reshape(-1) for v in got)
        except (TypeError, ValueError):
            _fail(f"{name} returned {got!r}, not two arrays of token ids.", "", hint)
        want_x, want_y = _answer_targets_reference(prompt, answer)
        if np.array_equal(x, want_x) and np.array_equal(y, want_y):
            continue
        ids, p = np.concatenate([prompt, answer]), len(prompt)
        fault = ""
        if len(x) == len(ids) or (len(y) == len(ids) and not np.array_equal(x, want_x)):
            fault = "y must be x shifted left by one: y[t] is the token after x[t] (x = ids[:-1])"
        elif not np.array_equal(x, want_x):
            fault = "x must be every token but the last (ids[:-1])"
        elif np.array_equal(y, ids[1:]):
            fault = (
                "the prompt tokens are in the loss: y must be -100 where the next token is "
                "still in the prompt"
            )
        elif np.array_equal(y, _answer_targets_reference(prompt, answer, first=p)[1]):
            fault = (
                f"off by one: you masked the first answer token too; it is predicted at "
                f"position {p - 1}, from the last prompt token"
            )
        elif np.array_equal(y, _answer_targets_reference(prompt, answer, first=p - 2)[1]):
            fault = (
                "off by one: one prompt token is still in the loss (mask positions 0 to "
                "len(prompt) - 2)"
            )
        elif np.all(y[p - 1 :] == -100) and np.any(y[: p - 1] != -100):
            fault = "you masked the answer and kept the prompt: it is the other way round"
        _fail(
            f"{name}(prompt {prompt.tolist()}, answer {answer.tolist()}) gave x = {x.tolist()}, "
            f"y = {y.tolist()}; expected x = {want_x.tolist()}, y = {want_y.tolist()}.",
            fault,
            hint,
        )
    if train_step is None:
        return _passed(name, 2, 0.0)
    name, hint = (
        "train_step",
        (
            "optimizer.zero_grad(); _, loss = model(x, y); loss.backward(); optimizer.step(); "
            "return loss.item()."
        ),
    )
    rng = np.random.default_rng(4)
    x = rng.integers(0, 11, (4, 6))
    y = np.where(np.arange(6) < 2, -100, rng.integers(0, 11, (4, 6)))
    runs = {}
    for label, fn in (("yours", train_step), ("reference", _train_reference)):
        model = _lora_model()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = optim.AdamW(params, lr=1e-2)
        losses, weights = [], []
        for _ in range(3):
            args = {"model": model, "optimizer": opt, "x": x.copy(), "y": y.copy()}
            loss = _call(name, fn, args) if label == "yours" else fn(*args.values())
            try:
                losses.append(float(_host(loss)))
            except (TypeError, ValueError):
                _fail(f"{name} returned {loss!r}, not the loss.", "return loss.item()", hint)
            weights.append([np.array(_host(p)) for p in params])
        runs[label] = (losses, weights)
    (l_you, w_you), (l_ref, w_ref) = runs["yours"], runs["reference"]
    for step in range(3):
        moved = max(float(np.abs(a - b).max()) for a, b in zip(w_you[step], w_ref[step]))
        if moved == 0 and np.isclose(l_you[step], l_ref[step]):
            continue
        fault = ""
        unchanged = all(np.array_equal(a, b) for a, b in zip(w_you[step], w_you[0]))
        start = [np.array(_host(p)) for p in _lora_model().parameters() if p.requires_grad]
        if all(np.array_equal(a, b) for a, b in zip(w_you[0], start)):
            fault = (
                "the weights did not move: call optimizer.step() after loss.backward() (and "
                "zero_grad() before backward, not between backward and step)"
            )
        elif step == 1 and not unchanged and np.isclose(l_you[0], l_ref[0]):
            fault = (
                "gradients accumulate from one step to the next: call optimizer.zero_grad() "
                "before loss.backward() (leaves add into .grad)"
            )
        elif not np.isclose(l_you[step], l_ref[step]):
            fault = "the loss you return is not this batch's loss before the step"
        _fail(
            f"{name}: after step {step + 1} your losses are "
            f"{np.round(l_you[: step + 1], 6).tolist()} and the weights differ by up to "
            f"{moved:.3g} from the reference's "
            f"(losses {np.round(l_ref[: step + 1], 6).tolist()}).",
            fault,
            hint,
        )
    return _passed("answer_targets and train_step", 5, 0.0)


def check_adamw_state_bytes(adamw_state_bytes) -> bool:
    """``adamw_state_bytes(model) -> int``: bytes of AdamW's moments for the trainable params.

    Checked against the bytes an AdamW optimizer really holds after one step, on a small
    GPT with LoRA (frozen base) and on the same GPT fully trainable.
    """
    from minilora import optim
    from minilora.lora import LoRAConfig, inject_lora
    from minilora.transformer import GPT, GPTConfig

    hint = (
        "AdamW keeps two arrays (m and v) the size of each *trainable* parameter "
        "(p.requires_grad); frozen ones cost nothing. Bytes = 2 * sum(p.data.nbytes)."
    )
    config = GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, d_model=8)
    for lora in (True, False):
        model = GPT(config, generator=np.random.default_rng(0))
        if lora:
            inject_lora(model, LoRAConfig(r=2, alpha=4), generator=np.random.default_rng(1))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = optim.AdamW(params, lr=1e-3)
        _, loss = model(np.zeros((1, 4), dtype=np.int64), np.zeros((1, 4), dtype=np.int64))
        loss.backward()
        opt.step()
        want = opt.state_bytes()
        got = _call("adamw_state_bytes", adamw_state_bytes, {"model": model})
        if got != want:
            what = "with LoRA (base frozen)" if lora else "fully trainable"
            everything = 2 * sum(p.data.nbytes for p in model.parameters())
            fault = (
                "you counted every parameter: frozen ones have no AdamW state"
                if lora and got == everything else
                f"your count is {got / want:.3g} times the answer: AdamW keeps two moments, "
                "m and v, of 4 bytes per float32 number"
                if isinstance(got, (int, float, np.number)) and got and want else ""
            )  # fmt: skip
            _fail(
                f"adamw_state_bytes on a small GPT {what}: you said {got!r}, AdamW holds "
                f"{want} bytes.",
                fault,
                hint,
            )
    return _passed("adamw_state_bytes", 2, 0.0)


# ---- notebook 5: understanding the updates -----------------------------------------------


def check_subspace_similarity(subspace_similarity) -> bool:
    """``subspace_similarity(A1, A2, i, j) -> phi`` of section 7.2, Eq. 4."""
    hint = (
        "take the right-singular vectors (rows of Vh from np.linalg.svd(A, "
        "full_matrices=False)), keep the top i of A1 and top j of A2, and return "
        "||U1 U2^T||_F^2 / min(i, j)."
    )

    def phi(i, norm=None, left=False):
        def top(A, n):
            u, _, vh = np.linalg.svd(A, full_matrices=False)
            return u[:, :n].T if left else vh[:n]

        U1, U2 = top(i["A1"], i["i"]), top(i["A2"], i["j"])
        return {"phi": np.sum((U1 @ U2.T) ** 2) / (norm or min(i["i"], i["j"]))}

    def crash(err, i):
        if "matmul" in str(err) or "broadcast" in str(err):
            return (
                "you used the left-singular vectors (U, columns of length r), which A1 "
                f"{i['A1'].shape} and A2 {i['A2'].shape} do not share: compare the rows of Vh "
                "(length k, the input directions)"
            )
        return ""

    variants = {
        "you divided by max(i, j), not min(i, j)": lambda i: phi(i, max(i["i"], i["j"])),
        "the normalisation 1 / min(i, j) is missing": lambda i: phi(i, 1),
    }
    extra = [_fresh_case("subspace_similarity", 14, i=2, j=2)]
    return _check(
        "subspace_similarity", subspace_similarity, ("phi",), {"phi": hint}, extra, variants, crash
    )


EXERCISES = {
    "01_autograd": ["matmul_backward", "unbroadcast", "softmax_backward", "layer_norm_backward"],
    "02_lora_layer": ["lora_init", "lora_forward", "lora_grads", "merge", "lora_param_count"],
    "03_tiny_gpt": ["greedy_decode"],
    "04_finetune_and_merge": ["exact_match", "inject_lora", "training_step", "adamw_state_bytes"],
    "05_understanding_updates": ["subspace_similarity"],
}


def add_cli(subparsers) -> dict:
    """Add ``minilora exercises {strip,golden,execute}``; return {name: handler}."""
    from minilora.teach.notebook_tools import add_cli as add

    return add(subparsers)
