"""Checkers for notebooks 2 and 4: the LoRA layer (initialisation, Eq. 3, its gradients, merge),
the paper's parameter count, and injecting adapters into a model. The answers they compare with
come from ``recorded.answers``; the formulas are not here."""

from __future__ import annotations

import numpy as np

from minilora.teach.checking import _as_tuple, _call, _check, _fail, _host, tiny_gpt
from minilora.teach.recorded import answers, hint_of

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

    Checked: the shapes; B exactly zero, so dW = B A = 0 and the adapted layer starts as the
    base layer bit for bit; A drawn from ``rng`` (reproducible, not constant, of rank r); and,
    when both are zero, that no gradient can flow (the saddle).
    """
    name = "init_lora"
    hint = hint_of(name)
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
    if not A.any() and not B.any():
        _fail(
            f"{name}: A and B are both zero: at (A, B) = (0, 0) the gradient of A has the "
            "factor B and the gradient of B the factor A, so both are zero, no gradient flows "
            "and training never leaves the start.",
            "both are zero, a saddle of the loss: A must start random (only B starts at zero)",
            hint,
        )
    if B.any():
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
            f"{name}: B is not all zero (max |B| = {np.abs(B).max():.3g}): dW = B A is "
            f"{np.abs(B @ A).max():.3g} at most, not 0."
        )  # fmt: skip
        _fail(what, fault, hint)
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
    print(
        f"Correct: {name}: A {A.shape} random from rng, B {B.shape} zero, so dW = B A = 0 and "
        "the layer starts as the base layer bit for bit; at step 0 only B gets a gradient (A's "
        "has the factor B = 0)."
    )
    return True


def check_lora_forward(lora_forward) -> bool:
    """``lora_forward(x, W0, b, A, B, alpha, r) -> h = x W0^T + b + (alpha/r) x A^T B^T``."""
    return _check("lora_forward", lora_forward, ("h",), answers("lora_forward"), _lora_crash)


def check_lora_grads(lora_backward) -> bool:
    """``lora_backward(x, W0, A, B, G, alpha, r) -> (grad_x, grad_A, grad_B)``, G = dL/dh."""
    outputs = ("grad_x", "grad_A", "grad_B")
    return _check("lora_backward", lora_backward, outputs, answers("lora_backward"), _lora_crash)


def check_merge(merge_weight, unmerge_weight=None) -> bool:
    """``merge_weight(W0, A, B, alpha, r) -> W`` (and optionally ``unmerge_weight``)."""

    def crash(err, i):
        if "broadcast" in str(err):
            return (
                "the update has the wrong shape: A.T @ B.T is (B A)^T, of shape (d_in, d_out); "
                "dW = B @ A has W0's shape (d_out, d_in)"
            )
        return _lora_crash(err, i)

    _check("merge_weight", merge_weight, ("W",), answers("merge_weight"), crash)
    if unmerge_weight is not None:
        _check("unmerge_weight", unmerge_weight, ("W0",), answers("unmerge_weight"), crash)
    return True


def check_lora_param_count(lora_param_count) -> bool:
    """``lora_param_count(n_layer, d_model, r, n_adapted) -> |Theta| = 2 L_hat d_model r``."""
    return _check("lora_param_count", lora_param_count, ("count",), answers("lora_param_count"))


# ---- notebook 4: injecting adapters --------------------------------------------------------


def check_inject_lora(add_lora) -> bool:
    """``add_lora(model, targets, r, alpha, rng) -> model``: every Linear whose last name is in
    ``targets`` replaced by a LoRALinear with adapter "default" (rank r, alpha), and every
    parameter but the adapters' A and B frozen.

    Checked on a small GPT with two sets of targets: which layers were wrapped, their rank and
    alpha, which parameters train, and the output at injection (the base model's, bit for
    bit).
    """
    from minilora.lora import lora_layers
    from minilora.tensor import no_grad

    name = "add_lora"
    hint = hint_of(name)
    if not callable(add_lora):
        _fail("pass your function itself, e.g. check_inject_lora(add_lora)")
    idx = np.array([[1, 2, 3, 4, 5]], dtype=np.int64)
    for targets, r, alpha in ((("q_proj", "v_proj"), 2, 4.0), (("fc_in",), 3, 16.0)):
        model = tiny_gpt(1)
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
    print(
        f"Correct: {name} wraps exactly the targeted Linear layers (two sets of targets), "
        "freezes everything else, and leaves the output unchanged bit for bit."
    )
    return True
