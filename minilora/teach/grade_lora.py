"""The grader's checks of the LoRA layer: lora_init, lora_forward (merge, unmerge: grade_merge.py).

Shapes are non-square (d_in 7, d_out 5, r 3) and alpha / r is not 1, so a transposed weight,
a missing scaling or a swapped order each show their own symptom; rsLoRA (alpha / sqrt(r))
catches a scaling written out as alpha / r. Dropout is checked with B not zero, in training
and in evaluation, on a layer where B A is invertible on its input (d_in = r = 3): the output
then tells where the mask was applied. Merge and unmerge are checked layer by layer and through
the model API (``lora.merge(model)``, which first asks every layer for its merged weight) on a
GPT with two adapters. Every check runs in float32 too.
"""

from __future__ import annotations

import numpy as np
from grade_tools import (
    ALPHA,
    D_IN,
    D_OUT,
    HARD_CODED,
    SHAPES,
    Check,
    R,
    check_dtype,
    close,
    diagnose,
    fail,
    tiny_gpt,
    tokens,
)
from grade_tools import lora_layer as _layer
from grade_tools import lora_parts as _parts

# ---- lora_init ---------------------------------------------------------------------------


def _init_layer(init, seed=1, d_in=64, d_out=48, r=8):
    from minilora.lora import LoRAConfig, LoRALinear
    from minilora.nn import Linear

    rng = np.random.default_rng(seed)
    layer = LoRALinear(Linear(d_in, d_out, generator=rng))
    layer.add_adapter("default", LoRAConfig(r=r, alpha=16, init=init), generator=rng)
    return layer.lora_A["default"].weight.data, layer.lora_B["default"].weight.data


def check_init_b_zero_a_random():
    for init in ("kaiming", "gaussian"):
        A, B = _init_layer(init)
        if A.shape != (8, 64) or B.shape != (48, 8):
            fail(f"A {A.shape} and B {B.shape}; expected A (r, d_in) = (8, 64), B (48, 8)")
        check_dtype(A, np.float32, "A")
        check_dtype(B, np.float32, "B")
        if not np.all(B == 0):
            fail("B is not zero: with B = 0, dW = B A = 0 and the model starts as the base model")
        if np.all(A == 0):
            fail(
                "A is zero too: with A = B = 0 both gradients vanish (dL/dB = G (A x)^T = 0, "
                "dL/dA = B^T G x^T = 0), a saddle point: nothing ever trains. A is random"
            )
        if len(np.unique(A)) < A.size // 2:
            fail("A has too few distinct values: draw each entry at random (from the generator)")
        top, std = float(np.abs(A).max()), float(A.std())
        if init == "kaiming" and not (top <= 1 / 8 and std > 0.06):
            fault = (
                " (the bound 1/sqrt(d_out) = 0.144: kaiming's bound uses d_in)"
                if 0.13 < top <= 1 / np.sqrt(48)
                else " (a normal draw: init='kaiming' is uniform)"
                if top > 0.2 and std < 0.2
                else ""
            )
            fail(
                f"init='kaiming': A should be U(-1/sqrt(d_in), 1/sqrt(d_in)) = U(-0.125, "
                f"0.125); got values in [{A.min():.3g}, {A.max():.3g}]{fault}"
            )
        if init == "gaussian" and not 0.1 < std < 0.15:
            fault = (
                "; std 1/sqrt(r) = 0.354: the std is 1/r"
                if 0.3 < std < 0.4
                else "; std 1: the std is 1/r"
                if 0.85 < std < 1.15
                else "; a uniform draw: follow config.init ('gaussian': normal)"
                if top <= 0.126
                else ""
            )
            fail(f"init='gaussian': A should be N(0, 1/r^2), std 0.125; got std {std:.3g}{fault}")


def check_init_seeded():
    """The same generator seed gives the same A; another seed another A."""
    from minilora.lora import LoRAConfig, inject_lora

    unseeded = (
        "A is not drawn from the generator passed in (`rng`): the same seed must give "
        "the same A (np.random or a new default_rng() ignores it)"
    )
    for init in ("kaiming", "gaussian"):
        A1, A2, A3 = _init_layer(init, 7)[0], _init_layer(init, 7)[0], _init_layer(init, 8)[0]
        if not np.array_equal(A1, A2):
            fail(f"init={init!r}: {unseeded}")
        if np.array_equal(A1, A3):
            fail(f"init={init!r}: two seeds gave the same A: draw A from `rng`, not a fixed seed")
    As = []
    for _ in range(2):
        model = tiny_gpt()
        inject_lora(model, LoRAConfig(r=2, alpha=4), generator=np.random.default_rng(3))
        As.append(model.blocks[0].attn.q_proj.lora_A["default"].weight.data.copy())
    if not np.array_equal(*As):
        fail(f"inject_lora(..., generator=default_rng(3)) twice: {unseeded}")


def check_init_model_unchanged_bit_for_bit():
    from minilora.lora import LoRAConfig, inject_lora
    from minilora.tensor import no_grad

    model, idx = tiny_gpt(), tokens()
    with no_grad():
        before = model(idx)[0].data.copy()
        inject_lora(model, LoRAConfig(r=4, alpha=8), generator=np.random.default_rng(0))
        after = model(idx)[0].data
    if not np.array_equal(before, after):
        fail(
            f"the injected model's logits differ from the base model's (by up to "
            f"{np.abs(after - before).max():.3g}): dW = B A must be exactly 0 at the start (B = 0)"
        )


# ---- lora_forward -------------------------------------------------------------------------


def _forward_faults(x, W0, b, A, B, s):
    base, delta = x @ W0.T + b, x @ A.T @ B.T
    return [
        (base + delta, "the scaling alpha/r is missing (h = W0 x + b + (alpha/r) B A x)"),
        (base + delta / s, "scaled by r/alpha: the scaling is alpha/r"),
        (base + ALPHA * delta, "scaled by alpha: the scaling is alpha/r"),
        (base, "the adapter's output is not added: h = base(x) + scaling * B(A(x))"),
        (s * delta, "the base layer's output W0 x + b is missing"),
        (x @ W0.T + s * delta, "the base layer's bias is missing: call base_layer(x)"),
    ]


def check_forward_eq3():
    from minilora.tensor import Tensor, no_grad

    layer = _layer()
    W0, b, A, B = _parts(layer)
    rng = np.random.default_rng(2)
    for shape in ((4, D_IN), (2, 3, D_IN)):
        x = rng.standard_normal(shape)
        with no_grad():
            got = layer(Tensor(x)).data
        want = x @ W0.T + b + (ALPHA / R) * (x @ A.T @ B.T)
        faults = _forward_faults(x, W0, b, A, B, ALPHA / R)
        diagnose(got, want, f"LoRALinear forward for x {shape} (Eq. 3)", faults)
    layer = _layer(np.float32)
    with no_grad():
        out = layer(Tensor(rng.standard_normal((4, D_IN)).astype(np.float32)))
    check_dtype(out, np.float32, "the output of a float32 LoRA layer")


def check_forward_rslora():
    from minilora.tensor import Tensor, no_grad

    layer = _layer(use_rslora=True)
    W0, b, A, B = _parts(layer)
    x = np.random.default_rng(3).standard_normal((4, D_IN))
    with no_grad():
        got = layer(Tensor(x)).data
    want = x @ W0.T + b + ALPHA / np.sqrt(R) * (x @ A.T @ B.T)
    diagnose(
        got,
        want,
        "forward with use_rslora (scaling alpha/sqrt(r))",
        [(x @ W0.T + b + ALPHA / R * (x @ A.T @ B.T), HARD_CODED)],
    )


def _is_dropped(got, full, p):
    """Every entry of ``got`` is 0 or full / (1 - p), and some are 0."""
    kept = np.isclose(got, full / (1 - p), rtol=1e-6, atol=1e-9)
    dropped = np.isclose(got, 0.0, atol=1e-9)
    return bool(np.all(kept | dropped) and dropped.any() and kept.any())


def check_forward_dropout():
    """Dropout p = 0.5 with B != 0 on a layer where B A is invertible on its input."""
    from minilora.tensor import Tensor, no_grad

    p, s = 0.5, ALPHA / 3
    layer = _layer(dropout=p, d_in=3, r=3, seed=4)
    W0, b, A, B = _parts(layer)
    x = np.random.default_rng(5).standard_normal((64, 3))
    base, M = x @ W0.T + b, s * B @ A  # the adapter's map x -> s B A x, of rank 3
    full = base + x @ M.T
    layer.eval()
    with no_grad():
        got = layer(Tensor(x)).data
    if not close(got, full):
        if _is_dropped(np.linalg.lstsq(M, (got - base).T, rcond=None)[0].T, x, p):
            fail(
                "dropout is applied in evaluation mode: pass self.training (dropout only "
                "while training)"
            )
        diagnose(got, full, "forward in eval mode with dropout")
    layer.train()
    with no_grad():
        got = layer(Tensor(x)).data
    delta = got - base
    if close(got, full):
        fail(
            "with dropout p = 0.5 in training the output is Eq. 3 without dropout: dropout is "
            "never applied; the adapter's input is dropout(x) (F.dropout(x, p, self.training))"
        )
    if _is_dropped(got, full, p):
        fail(
            "dropout is applied to the whole output: the base layer's path never drops; "
            "dropout goes on the adapter's input x only"
        )
    if _is_dropped(delta, x @ M.T, p):
        fail("dropout is applied to the adapter's output: it goes on the adapter's input x")
    u = np.linalg.lstsq(s * B, delta.T, rcond=None)[0].T  # what reached B: A(dropout(x))?
    if not close(u @ (s * B).T, delta, 1e-6, 1e-8):
        fail(
            "with dropout in training, base(x) is changed: dropout goes on the adapter's input "
            "x only, never on the base layer's path"
        )
    if _is_dropped(u, x @ A.T, p):
        fail("dropout is applied between A and B (to A(x)): it goes on the adapter's input x")
    xt = np.linalg.lstsq(M, delta.T, rcond=None)[0].T  # the adapter's input
    if not _is_dropped(xt, x, p):
        if _is_dropped(xt, x * (1 - p), p):
            fail("dropout's kept inputs are not rescaled by 1/(1 - p): use F.dropout")
        fail(
            "with dropout in training the adapter's input is not dropout(x): each entry must "
            "be 0 or x / (1 - p) (F.dropout(x, p, self.training))"
        )


def check_forward_b_zero_bit_for_bit():
    from minilora.tensor import Tensor, no_grad

    layer = _layer(dtype=np.float32, set_ab=True)
    layer.lora_B["default"].weight.data[...] = 0.0
    x = Tensor(np.random.default_rng(4).standard_normal((6, D_IN)).astype(np.float32))
    with no_grad():
        got, base = layer(x).data, layer.base_layer(x).data
    if not np.array_equal(got, base):
        fail("with B = 0 the output differs from base(x) (it must be equal bit for bit)")


def check_forward_gradients_reach_a_and_b():
    from minilora.tensor import Tensor

    layer = _layer()
    W0, b, A, B = _parts(layer)
    x = np.random.default_rng(5).standard_normal((4, D_IN))
    G = np.random.default_rng(6).standard_normal((4, D_OUT))
    out = layer(Tensor(x))
    if not out.requires_grad:
        fail(
            "the output records no gradient for A and B: compute with the layers (Tensors), "
            "not with .data"
        )
    out.backward(G)
    gA, gB = layer.lora_A["default"].weight.grad, layer.lora_B["default"].weight.grad
    if gA is None or gB is None:
        fail("A or B got no gradient: compute with the layers (Tensors), not with .data")
    if layer.base_layer.weight.grad is not None:
        fail("the frozen W0 got a gradient")
    s = ALPHA / R
    diagnose(gB, s * G.T @ (x @ A.T), "dL/dB through the forward")
    diagnose(gA, s * (G @ B).T @ x, "dL/dA through the forward")


CHECKS = {
    "lora_init": [
        Check("B zero, A random (kaiming, gaussian), float32", check_init_b_zero_a_random),
        Check("the same seed gives the same A", check_init_seeded),
        Check("injected model = base model, bit for bit", check_init_model_unchanged_bit_for_bit),
    ],
    "lora_forward": [
        Check("Eq. 3 with scaling alpha/r, dtype kept", check_forward_eq3, SHAPES),
        Check("rsLoRA scaling alpha/sqrt(r)", check_forward_rslora, SHAPES),
        Check("dropout on the adapter's input, in training only", check_forward_dropout, SHAPES),
        Check("B = 0 gives base(x) bit for bit", check_forward_b_zero_bit_for_bit, SHAPES),
        Check("gradients reach A and B, not W0", check_forward_gradients_reach_a_and_b, SHAPES),
    ],
}
