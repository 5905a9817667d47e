"""Checkers for the notebooks' exercises, and the ``minilora exercises`` sub-command.

Every exercise in ``notebooks/`` asks for a plain NumPy function (so the answer
can be written in any framework and graded against the golden vectors), and is
followed by a "check your answer" cell::

    from minilora.teach.exercises import check_matmul_backward
    check_matmul_backward(matmul_backward)

A checker calls the learner's function on fixed inputs (the golden vectors of
``minilora/teach/golden/v1`` and a few hand-picked cases) and compares each output
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

import numpy as np


class ExerciseError(AssertionError):
    """A learner's answer differs from the reference; the message says how."""


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


def _compare(function: str, output: str, got, want, hint: str = "", rtol=1e-7, atol=1e-9):
    """Raise ExerciseError unless ``got`` matches ``want``; the message names the fault."""
    want = np.asarray(want, dtype=np.float64)
    if got is None:
        raise ExerciseError(f"{function}: {output} is None: did you forget to return it?")
    try:
        got = _host(got)
        got = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ExerciseError(f"{function}: {output} is not an array of numbers ({err})") from None
    hint = f"\nHint: {hint}" if hint else ""
    fault = _diagnose(got, want)
    fault = f"\nLikely fault: {fault}." if fault else ""
    if got.shape != want.shape:
        raise ExerciseError(
            f"{function}: {output} has shape {got.shape}, expected {want.shape}.{fault}{hint}"
        )
    if not np.all(np.isfinite(got)):
        raise ExerciseError(f"{function}: {output} contains NaN or inf.{hint}")
    diff = np.abs(got - want)
    if np.all(diff <= atol + rtol * np.abs(want)):
        return float(diff.max()) if diff.size else 0.0
    index = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    raise ExerciseError(
        f"{function}: {output} is wrong: the largest difference is {diff.max():.3g} at index "
        f"{tuple(int(i) for i in index)} (yours {got[index]:.6g}, expected {want[index]:.6g})."
        f"{fault}{hint}"
    )


def _as_tuple(result, n: int, function: str, names) -> tuple:
    if n == 1:
        return (result,)
    if not isinstance(result, (tuple, list)) or len(result) != n:
        raise ExerciseError(
            f"{function} must return {n} values ({', '.join(names)}), got {result!r}"[:300]
        )
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


def _check(name: str, fn, outputs, hints: dict, extra=(), variants=None, **tol) -> bool:
    """Run ``fn`` on golden case ``name`` (and ``extra`` cases); compare every output.

    ``variants`` ({fault: fn(inputs) -> outputs}) are known wrong answers: when the
    learner's output matches one, the message names that fault.
    """
    if not callable(fn):
        raise ExerciseError(f"pass your function itself, e.g. check(...)({name}), not {fn!r}")
    cases = _golden_cases(name) + list(extra)
    largest = 0.0
    for inputs, want in cases:
        args = {k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}
        try:
            got = fn(*args.values())
        except NotImplementedError:  # the student version's stub: say so, as nbgrader does
            raise NotImplementedError(
                f"{name}: not implemented yet: replace `raise NotImplementedError()` in the "
                "exercise cell with your code"
            ) from None
        got = _as_tuple(got, len(outputs), name, outputs)
        for out, value in zip(outputs, got):
            try:
                diff = _compare(name, out, value, want[out], hints.get(out, ""), **tol)
            except ExerciseError as err:
                for fault, variant in (variants or {}).items():
                    try:
                        _compare(name, out, value, variant(inputs)[out])
                    except (ExerciseError, ValueError, KeyError):
                        continue
                    raise ExerciseError(f"{err}\nLikely fault: {fault}.") from None
                raise
            largest = max(largest, diff)
    return _passed(name, len(cases), largest)


# ---- notebook 1: autograd ----------------------------------------------------------------


def check_matmul_backward(matmul_backward) -> bool:
    """``matmul_backward(a, b, g) -> (grad_a, grad_b)`` for y = a @ b and dL/dy = g."""
    hints = {
        "grad_a": "grad_a has a's shape (n, k): g is (n, m), so multiply g by b transposed.",
        "grad_b": "grad_b has b's shape (k, m): a transposed times g.",
    }
    extra = [_fresh_case("matmul_backward", 15)]
    return _check("matmul_backward", matmul_backward, ("grad_a", "grad_b"), hints, extra)


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
    return _check("unbroadcast", unbroadcast, ("grad_x",), {"grad_x": hint}, extra)


def check_softmax_backward(softmax_backward) -> bool:
    """``softmax_backward(x, g) -> grad_x`` for s = softmax(x) over the last axis."""
    hint = "grad_x = s * (g - sum(g * s, axis=-1, keepdims=True)) with s = softmax(x)."
    extra = [_fresh_case("softmax_backward", 16)]
    return _check("softmax_backward", softmax_backward, ("grad_x",), {"grad_x": hint}, extra)


def check_layer_norm_backward(layer_norm_backward) -> bool:
    """``layer_norm_backward(x, g, eps) -> grad_x`` for layer norm without weight and bias."""
    hint = (
        "with xhat = (x - mean) / sqrt(var + eps) (var without Bessel's correction): "
        "grad_x = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps), means over the "
        "last axis."
    )
    extra = [_fresh_case("layer_norm_backward", 17, eps=1e-3)]
    return _check("layer_norm_backward", layer_norm_backward, ("grad_x",), {"grad_x": hint}, extra)


# ---- notebook 2: the LoRA layer ----------------------------------------------------------


def check_lora_forward(lora_forward) -> bool:
    """``lora_forward(x, W0, b, A, B, alpha, r) -> h = x W0^T + b + (alpha/r) x A^T B^T``."""
    hint = "h = x @ W0.T + b + (alpha / r) * (x @ A.T) @ B.T (Eq. 3, rows of x are inputs)."
    extra = [_fresh_case("lora_forward", 11, alpha=16.0, r=3)]
    variants = _unscaled("lora_forward")
    return _check("lora_forward", lora_forward, ("h",), {"h": hint}, extra, variants)


def check_lora_grads(lora_backward) -> bool:
    """``lora_backward(x, W0, A, B, G, alpha, r) -> (grad_x, grad_A, grad_B)``, G = dL/dh."""
    s = "s = alpha / r"
    hints = {
        "grad_x": f"grad_x = G @ W0 + s * (G @ B) @ A, {s}: both paths reach x.",
        "grad_A": f"grad_A = s * (G @ B).T @ x, shape (r, d_in), {s}.",
        "grad_B": f"grad_B = s * G.T @ (x @ A.T), shape (d_out, r), {s}.",
    }
    extra = [_fresh_case("lora_backward", 12, alpha=16.0, r=3)]
    outputs, variants = ("grad_x", "grad_A", "grad_B"), _unscaled("lora_backward")
    return _check("lora_backward", lora_backward, outputs, hints, extra, variants)


def check_merge(merge_weight, unmerge_weight=None) -> bool:
    """``merge_weight(W0, A, B, alpha, r) -> W`` (and optionally ``unmerge_weight``)."""
    hint = "W = W0 + (alpha / r) * B @ A: B is (d_out, r), A is (r, d_in)."
    extra = [_fresh_case("merge_weight", 13, alpha=16.0, r=3)]
    _check("merge_weight", merge_weight, ("W",), {"W": hint}, extra, _unscaled("merge_weight"))
    if unmerge_weight is not None:
        hint = "W0 = W - (alpha / r) * B @ A."
        _check("unmerge_weight", unmerge_weight, ("W0",), {"W0": hint})
    return True


def check_lora_param_count(lora_param_count) -> bool:
    """``lora_param_count(n_layer, d_model, r, n_adapted) -> |Theta| = 2 L_hat d_model r``."""
    hint = (
        "each adapted d_model x d_model matrix gets A (r x d_model) and B (d_model x r); "
        "L_hat = n_adapted * n_layer matrices are adapted (section 5.1)."
    )
    extra = []
    for n_layer, d_model, r, n in [(12, 768, 4, 4), (2, 64, 1, 1), (24, 1024, 8, 2)]:
        args = {"n_layer": n_layer, "d_model": d_model, "r": r, "n_adapted": n}
        extra.append((args, {"count": 2 * n * n_layer * d_model * r}))
    return _check(
        "lora_param_count", lora_param_count, ("count",), {"count": hint}, extra, rtol=0, atol=0
    )


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
        got = exact_match(list(predictions), list(answers))
        if got is None or not np.isclose(float(got), want):
            raise ExerciseError(
                f"exact_match({predictions!r}, {answers!r}) returned {got!r}, expected {want}."
                f"\nHint: {hint}"
            )
    return _passed("exact_match", len(cases), 0.0)


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
        want, got = opt.state_bytes(), adamw_state_bytes(model)
        if got != want:
            what = "with LoRA (base frozen)" if lora else "fully trainable"
            ratio = f" ({got / want:.3g} times the answer)" if got and want else ""
            raise ExerciseError(
                f"adamw_state_bytes on a small GPT {what}: you said {got!r}, AdamW holds "
                f"{want} bytes{ratio}.\nHint: {hint}"
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
    extra = [_fresh_case("subspace_similarity", 14, i=2, j=2)]
    return _check("subspace_similarity", subspace_similarity, ("phi",), {"phi": hint}, extra)


EXERCISES = {
    "01_autograd": ["matmul_backward", "unbroadcast", "softmax_backward", "layer_norm_backward"],
    "02_lora_layer": ["lora_forward", "lora_grads", "merge", "lora_param_count"],
    "04_finetune_and_merge": ["exact_match", "adamw_state_bytes"],
    "05_understanding_updates": ["subspace_similarity"],
}


def add_cli(subparsers) -> dict:
    """Add ``minilora exercises {strip,golden,execute}``; return {name: handler}."""
    from minilora.teach.notebook_tools import add_cli as add

    return add(subparsers)
