"""The golden cases: fixed inputs (drawn from a seed) and the engine function that answers them.

Each case is registered with ``@case(...)``; its reference runs minilora's engine on
NumPy or CuPy (``device``), so ``minilora.teach.golden.reproduce`` can hold the engine to the
stored vectors on any device. ``minilora.teach.golden`` writes and reads the files.
"""

from __future__ import annotations

import numpy as np

from minilora.teach.golden_spec import (  # noqa: F401  (DTYPE, GoldenCase: the public names)
    _CASES,
    DTYPE,
    NB1,
    NB2,
    NB5,
    GoldenCase,
    _lora_inputs,
    _n,
    _np,
    _t,
    case,
)


def golden_cases() -> list[GoldenCase]:
    """Every golden case, in the order the manifest lists them."""
    return list(_CASES)


# ---- the cases: each reference is minilora's engine, on any device ---------------------------


@case(
    "matmul_backward",
    seed=101,
    signature="matmul_backward(a, b, g) -> (grad_a, grad_b)",
    formula="y = a @ b; grad_a = g @ b^T, grad_b = a^T @ g",
    function="minilora.ops.matmul (backward)",
    inputs=lambda rng: {"a": _n(rng, 3, 4), "b": _n(rng, 4, 5), "g": _n(rng, 3, 5)},
    exercise=NB1,
)
def ref_matmul_backward(i, device):
    a, b = _t(i["a"], device, True), _t(i["b"], device, True)
    (a @ b).backward(_t(i["g"], device))
    return {"grad_a": _np(a.grad), "grad_b": _np(b.grad)}


@case(
    "unbroadcast",
    seed=102,
    signature="unbroadcast(grad, shape) -> grad_x",
    formula="sum grad over the axes that broadcasting added or stretched, to get `shape`",
    function="minilora.ops.unbroadcast (through add's backward)",
    inputs=lambda rng: {"grad": _n(rng, 2, 3, 4), "shape": (3, 1)},
    exercise=NB1,
)
def ref_unbroadcast(i, device):
    # x of `shape` plus a zero tensor of grad's shape: x's gradient is the answer
    x = _t(np.zeros(tuple(i["shape"])), device, True)
    (x + _t(np.zeros(np.shape(i["grad"])), device)).backward(_t(i["grad"], device))
    return {"grad_x": _np(x.grad)}


@case(
    "softmax_backward",
    seed=103,
    signature="softmax_backward(x, g) -> grad_x",
    formula="s = softmax(x) over the last axis; grad_x = s * (g - sum(g * s, last axis))",
    function="minilora.functional.softmax (backward)",
    inputs=lambda rng: {"x": 2 * _n(rng, 4, 6), "g": _n(rng, 4, 6)},
    exercise=NB1,
)
def ref_softmax_backward(i, device):
    from minilora import functional as F

    x = _t(i["x"], device, True)
    F.softmax(x, axis=-1).backward(_t(i["g"], device))
    return {"grad_x": _np(x.grad)}


@case(
    "layer_norm_backward",
    seed=104,
    signature="layer_norm_backward(x, g, eps) -> grad_x",
    formula="xhat = (x - mean) / sqrt(var + eps) over the last axis (no weight, no bias); "
    "grad_x = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps)",
    function="minilora.functional.layer_norm (backward)",
    inputs=lambda rng: {"x": 1.5 + 2 * _n(rng, 4, 8), "g": _n(rng, 4, 8), "eps": 1e-5},
    exercise=NB1,
)
def ref_layer_norm_backward(i, device):
    from minilora import functional as F

    x = _t(i["x"], device, True)
    F.layer_norm(x, None, None, float(i["eps"])).backward(_t(i["g"], device))
    return {"grad_x": _np(x.grad)}


@case(
    "lora_forward",
    seed=201,
    signature="lora_forward(x, W0, b, A, B, alpha, r) -> h",
    formula="rows of x are inputs; h = x W0^T + b + (alpha / r) (x A^T) B^T (paper, Eq. 3)",
    function="minilora.fast.lora.lora_linear",
    inputs=_lora_inputs("x", "W0", "b", "A", "B", "alpha", "r"),
    exercise=NB2,
)
def ref_lora_forward(i, device):
    from minilora.fast.lora import lora_linear

    args = [_t(i[k], device) for k in ("x", "W0", "b", "A", "B")]
    return {"h": _np(lora_linear(*args, float(i["alpha"]) / int(i["r"])))}


@case(
    "lora_backward",
    seed=202,
    signature="lora_backward(x, W0, A, B, G, alpha, r) -> (grad_x, grad_A, grad_B)",
    formula="s = alpha / r, G = dL/dh; grad_x = G W0 + s (G B) A, grad_A = s (G B)^T x, "
    "grad_B = s G^T (x A^T)",
    function="minilora.fast.lora.lora_linear (backward)",
    inputs=_lora_inputs("x", "W0", "A", "B", "G", "alpha", "r"),
    exercise=NB2,
)
def ref_lora_backward(i, device):
    from minilora.fast.lora import lora_linear

    x, A, B = (_t(i[k], device, True) for k in ("x", "A", "B"))
    h = lora_linear(x, _t(i["W0"], device), None, A, B, float(i["alpha"]) / int(i["r"]))
    h.backward(_t(i["G"], device))
    return {"grad_x": _np(x.grad), "grad_A": _np(A.grad), "grad_B": _np(B.grad)}


def _lora_layer(W, A, B, alpha, r, device):
    """A LoRALinear holding W as its base weight and (A, B) as adapter "default"."""
    from minilora.lora import LoRAConfig, LoRALinear
    from minilora.nn import Linear

    d_out, d_in = np.shape(W)
    base = Linear(d_in, d_out, bias=False, dtype=DTYPE)
    base.weight.data = np.array(W, dtype=DTYPE)
    layer = LoRALinear(base.to(device))
    layer.add_adapter("default", LoRAConfig(r=int(r), alpha=float(alpha)))
    layer.lora_A["default"].weight.data = _t(A, device).data
    layer.lora_B["default"].weight.data = _t(B, device).data
    return layer


@case(
    "lora_layer_init",
    seed=206,
    signature="lora_layer_init(x, W0, b, A, G, alpha, r) -> (h, grad_x, grad_b, grad_A, grad_B)",
    formula="a LoRA layer as initialised: B = 0 (d_out x r), A given; h = x W0^T + b, equal "
    "to the base layer's output bit for bit in the implementation's own arithmetic; for "
    "G = dL/dh: grad_x = G W0, grad_b = sum of G over rows, grad_A = 0 exactly, "
    "grad_B = (alpha / r) G^T (x A^T); W0 is frozen and gets no gradient",
    function="minilora.lora.LoRALinear (add_adapter, then forward and backward)",
    inputs=_lora_inputs("x", "W0", "b", "A", "G", "alpha", "r"),
    exercise=NB2,
    no_gradient=("W0",),
)
def ref_lora_layer_init(i, device):
    return _layer_run(i, None, device)


@case(
    "lora_layer",
    seed=207,
    signature="lora_layer(x, W0, b, A, B, G, alpha, r) -> (h, grad_x, grad_b, grad_A, grad_B)",
    formula="s = alpha / r; h = x W0^T + b + s (x A^T) B^T; for G = dL/dh: "
    "grad_x = G W0 + s (G B) A, grad_b = sum of G over rows, grad_A = s (G B)^T x, "
    "grad_B = s G^T (x A^T); W0 is frozen and gets no gradient",
    function="minilora.lora.LoRALinear (forward and backward)",
    inputs=_lora_inputs("x", "W0", "b", "A", "B", "G", "alpha", "r"),
    exercise=NB2,
    no_gradient=("W0",),
)
def ref_lora_layer(i, device):
    return _layer_run(i, i["B"], device)


def _layer_run(i, B, device):
    """A LoRALinear on W0, b with A (and B, or its own zero init): outputs and gradients."""
    from minilora.lora import LoRAConfig, LoRALinear
    from minilora.nn import Linear

    d_out, d_in = np.shape(i["W0"])
    base = Linear(d_in, d_out, dtype=DTYPE)
    base.weight.data, base.bias.data = np.array(i["W0"]), np.array(i["b"])
    layer = LoRALinear(base.to(device))
    layer.add_adapter("default", LoRAConfig(r=int(i["r"]), alpha=float(i["alpha"])))
    A, Bw = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    A.data = _t(i["A"], device).data
    if B is not None:
        Bw.data = _t(B, device).data
    layer.base_layer.bias.requires_grad_(True)  # the bias's gradient is part of the case
    x = _t(i["x"], device, True)
    h = layer(x)
    h.backward(_t(i["G"], device))
    if layer.base_layer.weight.grad is not None:  # pragma: no cover - the engine's contract
        raise AssertionError("W0 received a gradient")
    grads = {"grad_x": x.grad, "grad_b": layer.base_layer.bias.grad, "grad_A": A.grad}
    return {"h": _np(h), **{k: _np(v) for k, v in grads.items()}, "grad_B": _np(Bw.grad)}


@case(
    "merge_weight",
    seed=203,
    signature="merge_weight(W0, A, B, alpha, r) -> W",
    formula="W = W0 + (alpha / r) B A",
    function="minilora.lora.LoRALinear.merge",
    inputs=_lora_inputs("W0", "A", "B", "alpha", "r"),
    exercise=NB2,
)
def ref_merge_weight(i, device):
    layer = _lora_layer(i["W0"], i["A"], i["B"], i["alpha"], i["r"], device)
    layer.merge()
    return {"W": _np(layer.base_layer.weight)}


@case(
    "unmerge_weight",
    seed=204,
    signature="unmerge_weight(W, A, B, alpha, r) -> W0",
    formula="W0 = W - (alpha / r) B A",
    function="minilora.lora.LoRALinear.unmerge",
    inputs=_lora_inputs("W", "A", "B", "alpha", "r"),
    exercise=NB2,
)
def ref_unmerge_weight(i, device):
    layer = _lora_layer(i["W"], i["A"], i["B"], i["alpha"], i["r"], device)
    layer.merged_adapter = "default"  # W already holds W0 + (alpha/r) B A
    layer.unmerge()
    return {"W0": _np(layer.base_layer.weight)}


@case(
    "lora_param_count",
    seed=205,
    signature="lora_param_count(n_layer, d_model, r, n_adapted) -> count",
    formula="|Theta| = 2 x L_hat x d_model x r with L_hat = n_adapted x n_layer (paper, 5.1)",
    function="minilora.paper.counting.lora_params",
    # n_adapted = 4 and r = 2 (the paper's Table 5 row Wq, Wk, Wv, Wo: 18M): with n_adapted = 2
    # ignoring n_adapted and dropping the factor 2 would give the same wrong number
    inputs=lambda rng: {"n_layer": 96, "d_model": 12288, "r": 2, "n_adapted": 4},
    exercise=NB2,
)
def ref_lora_param_count(i, device):
    from minilora.paper.counting import TARGETS, TransformerShape, lora_params

    shape = TransformerShape(int(i["n_layer"]), int(i["d_model"]))
    count = lora_params(shape, int(i["r"]), TARGETS[: int(i["n_adapted"])])
    return {"count": np.asarray(count, dtype=np.int64)}


@case(
    "subspace_similarity",
    seed=501,
    signature="subspace_similarity(A1, A2, i, j) -> phi",
    formula="U1, U2 = rows of Vh in svd(A1), svd(A2); "
    "phi = ||U1[:i] U2[:j]^T||_F^2 / min(i, j) (paper, 7.2, Eq. 4)",
    function="minilora.paper.analysis.subspace_similarity",
    inputs=lambda rng: {"A1": _n(rng, 8, 32), "A2": _n(rng, 16, 32), "i": 3, "j": 5},
    exercise=NB5,
)
def ref_subspace_similarity(i, device):
    from minilora.paper.analysis import subspace_similarity

    phi = subspace_similarity(_t(i["A1"], device), _t(i["A2"], device), int(i["i"]), int(i["j"]))
    return {"phi": np.asarray(phi, dtype=DTYPE)}


@case(
    "gelu",
    seed=901,
    signature="gelu(x, g) -> (y, grad_x)",
    formula="y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (GPT-2's form); grad_x = g dy/dx",
    function="minilora.functional.gelu",
    inputs=lambda rng: {"x": 2 * _n(rng, 5, 7), "g": _n(rng, 5, 7)},
)
def ref_gelu(i, device):
    from minilora import functional as F

    x = _t(i["x"], device, True)
    y = F.gelu(x)
    y.backward(_t(i["g"], device))
    return {"y": _np(y), "grad_x": _np(x.grad)}


@case(
    "cross_entropy",
    seed=902,
    signature="cross_entropy(logits, targets) -> (loss, grad_logits)",
    formula="mean over targets != -100 of -log softmax(logits)[target]; "
    "grad_logits = (softmax(logits) - onehot(target)) / count",
    function="minilora.functional.cross_entropy",
    inputs=lambda rng: {
        "logits": 2 * _n(rng, 6, 9),
        "targets": np.array([3, 0, -100, 8, 5, 3], dtype=np.int64),
    },
)
def ref_cross_entropy(i, device):
    from minilora import functional as F
    from minilora.backend import to_device

    logits = _t(i["logits"], device, True)
    loss = F.cross_entropy(logits, to_device(np.asarray(i["targets"]), device))
    loss.backward()
    return {"loss": _np(loss), "grad_logits": _np(logits.grad)}


@case(
    "attention",
    seed=903,
    signature="attention(q, k, v, g) -> (out, grad_q, grad_k, grad_v)",
    formula="causal: out = softmax(q k^T / sqrt(D), key j > query i hidden) v; "
    "gradients for dL/dout = g",
    function="minilora.functional.attention",
    inputs=lambda rng: {k: _n(rng, 2, 5, 4) for k in ("q", "k", "v", "g")},
)
def ref_attention(i, device):
    from minilora import functional as F

    q, k, v = (_t(i[n], device, True) for n in "qkv")
    out = F.attention(q, k, v, F.causal_mask(q.shape[-2], device=device))
    out.backward(_t(i["g"], device))
    return {"out": _np(out), "grad_q": _np(q.grad), "grad_k": _np(k.grad), "grad_v": _np(v.grad)}


@case(
    "layer_norm",
    seed=904,
    signature="layer_norm(x, weight, bias, g, eps) -> (y, grad_x, grad_weight, grad_bias)",
    formula="y = xhat * weight + bias over the last axis; gradients for dL/dy = g",
    function="minilora.functional.layer_norm",
    inputs=lambda rng: {
        "x": _n(rng, 4, 8),
        "weight": 1 + 0.3 * _n(rng, 8),
        "bias": _n(rng, 8),
        "g": _n(rng, 4, 8),
        "eps": 1e-5,
    },
)
def ref_layer_norm(i, device):
    from minilora import functional as F

    x, w, b = (_t(i[n], device, True) for n in ("x", "weight", "bias"))
    y = F.layer_norm(x, w, b, float(i["eps"]))
    y.backward(_t(i["g"], device))
    grads = {"grad_x": x.grad, "grad_weight": w.grad, "grad_bias": b.grad}
    return {"y": _np(y), **{k: _np(v) for k, v in grads.items()}}
