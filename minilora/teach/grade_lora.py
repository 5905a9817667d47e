"""The grader's checks of the LoRA parts: lora_init, lora_forward, merge, unmerge, inject_lora
(mark_trainable: grade_train.py). Shapes are non-square (d_in 7, d_out 5, r 3) and alpha / r
is not 1, so a transposed weight, a missing scaling or a swapped order each show their own
symptom.
"""

from __future__ import annotations

import numpy as np
from grade_tools import close, diagnose, fail, tiny_gpt, tokens

D_IN, D_OUT, R, ALPHA = 7, 5, 3, 6.0  # scaling alpha / r = 2
SHAPE_HINT = (
    "a shape error: A is (r, d_in) and B is (d_out, r), and a Linear computes x W^T; "
    "is a weight transposed or are A and B swapped?"
)


def _layer(dtype=np.float64, seed=0, set_ab=True, **config):
    from minilora.lora import LoRAConfig, LoRALinear
    from minilora.nn import Linear

    rng = np.random.default_rng(seed)
    base = Linear(D_IN, D_OUT, dtype=dtype, generator=rng)
    base.bias.data = rng.standard_normal(D_OUT).astype(dtype)
    layer = LoRALinear(base)
    layer.add_adapter("default", LoRAConfig(r=R, alpha=ALPHA, **config), generator=rng)
    if set_ab:
        layer.lora_A["default"].weight.data = rng.standard_normal((R, D_IN)).astype(dtype)
        layer.lora_B["default"].weight.data = rng.standard_normal((D_OUT, R)).astype(dtype)
    return layer


def _parts(layer):
    W0 = np.array(layer.base_layer.weight.data, dtype=np.float64)
    b = np.array(layer.base_layer.bias.data, dtype=np.float64)
    A = np.array(layer.lora_A["default"].weight.data, dtype=np.float64)
    B = np.array(layer.lora_B["default"].weight.data, dtype=np.float64)
    return W0, b, A, B


# ---- lora_init -------------------------------------------------------------------------------


def check_init_b_zero_a_random():
    from minilora.lora import LoRAConfig, LoRALinear
    from minilora.nn import Linear

    for init in ("kaiming", "gaussian"):
        rng = np.random.default_rng(1)
        layer = LoRALinear(Linear(64, 48, generator=rng))
        layer.add_adapter("default", LoRAConfig(r=8, alpha=16, init=init), generator=rng)
        A, B = layer.lora_A["default"].weight.data, layer.lora_B["default"].weight.data
        if A.shape != (8, 64) or B.shape != (48, 8):
            fail(f"A {A.shape} and B {B.shape}; expected A (r, d_in) = (8, 64), B (48, 8)")
        if A.dtype != np.float32 or B.dtype != np.float32:
            fail(f"A is {A.dtype} and B {B.dtype}: keep W0's dtype (float32)")
        if not np.all(B == 0):
            fail("B is not zero: with B = 0, dW = B A = 0 and the model starts as the base model")
        if np.all(A == 0):
            fail(
                "A is zero too: with A = B = 0 both gradients vanish (dL/dB = G (A x)^T = 0, "
                "dL/dA = B^T G x^T = 0), a saddle point: nothing ever trains. A is random"
            )
        if init == "kaiming" and not (np.abs(A).max() <= 1 / 8 and A.std() > 0.03):
            fail(
                f"init='kaiming': A should be U(-1/sqrt(d_in), 1/sqrt(d_in)) = U(-0.125, 0.125); "
                f"got values in [{A.min():.3g}, {A.max():.3g}]"
            )
        if init == "gaussian" and not 0.1 < A.std() < 0.15:
            fail(f"init='gaussian': A should be N(0, 1/r^2), std 0.125; got std {A.std():.3g}")
        if len(np.unique(A)) < A.size // 2:
            fail("A has too few distinct values: draw each entry at random (from the generator)")


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


# ---- lora_forward ----------------------------------------------------------------------------


def _forward_faults(x, W0, b, A, B, s):
    base = x @ W0.T + b
    delta = x @ A.T @ B.T
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


def check_forward_rslora_and_dropout():
    from minilora.tensor import Tensor, no_grad

    layer = _layer(use_rslora=True)
    W0, b, A, B = _parts(layer)
    x = np.random.default_rng(3).standard_normal((4, D_IN))
    with no_grad():
        got = layer(Tensor(x)).data
    s = ALPHA / np.sqrt(R)
    want = x @ W0.T + b + s * (x @ A.T @ B.T)
    diagnose(
        got,
        want,
        "forward with use_rslora (scaling alpha/sqrt(r))",
        [
            (
                x @ W0.T + b + ALPHA / R * (x @ A.T @ B.T),
                "the scaling is hard-coded as alpha/r: use the config's scaling",
            ),
        ],
    )
    layer = _layer(dropout=0.5)
    layer.lora_B["default"].weight.data[...] = 0.0
    layer.train()
    with no_grad():
        got = layer(Tensor(x)).data
    if not close(got, x @ W0.T + b):
        fail(
            "with B = 0 and dropout the output is not base(x): dropout goes on the adapter's "
            "input only, never on the base layer's path"
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
    layer(Tensor(x)).backward(G)
    gA, gB = layer.lora_A["default"].weight.grad, layer.lora_B["default"].weight.grad
    if gA is None or gB is None:
        fail("A or B got no gradient: compute with the layers (Tensors), not with .data")
    if layer.base_layer.weight.grad is not None:
        fail("the frozen W0 got a gradient")
    s = ALPHA / R
    diagnose(gB, s * G.T @ (x @ A.T), "dL/dB through the forward")
    diagnose(gA, s * (G @ B).T @ x, "dL/dA through the forward")


# ---- merge / unmerge ---------------------------------------------------------------------------


def check_merge_weight():
    layer = _layer()
    W0, b, A, B = _parts(layer)
    s = ALPHA / R
    dW = layer.delta_weight()
    diagnose(
        dW,
        s * B @ A,
        "delta_weight() = (alpha/r) B A",
        [
            (B @ A, "the scaling alpha/r is missing"),
            ((s * B @ A).T, "transposed: dW = B A"),
        ],
    )
    layer.merge()
    diagnose(
        layer.base_layer.weight.data,
        W0 + s * B @ A,
        "W after merge",
        [
            (W0 + B @ A, "the scaling alpha/r is missing: W = W0 + (alpha/r) B A"),
            (W0 - s * B @ A, "merge subtracted dW: W = W0 + dW"),
            (W0, "merge left W0 unchanged"),
        ],
    )


def check_merge_equivalence():
    from minilora.tensor import Tensor, no_grad

    layer = _layer(dtype=np.float32)
    x = Tensor(np.random.default_rng(7).standard_normal((5, D_IN)).astype(np.float32))
    with no_grad():
        before = layer(x).data.copy()
        layer.merge()
        after = layer(x).data
    if not layer.merged:
        fail("after merge() the layer does not say it is merged")
    if not np.allclose(after, before, rtol=1e-5, atol=1e-5):
        fail(
            f"the merged layer's output differs from the unmerged one by up to "
            f"{np.abs(after - before).max():.3g}"
        )


def check_unmerge_restores_w0():
    layer = _layer(dtype=np.float32)
    W0, b, A, B = _parts(layer)
    s = ALPHA / R
    layer.merge()
    layer.unmerge()
    W = np.array(layer.base_layer.weight.data, dtype=np.float64)
    if layer.merged:
        fail("after unmerge() the layer still says it is merged")
    diagnose(
        W,
        W0,
        "W after merge then unmerge",
        [
            (W0 + 2 * s * B @ A, "unmerge added dW again: W0 = W - (alpha/r) B A (a minus sign)"),
            (W0 + s * B @ A, "unmerge left the merged W: subtract dW"),
            (W0 + s * B @ A - B @ A, "unmerge forgot the scaling alpha/r"),
        ],
        rtol=1e-5,
        atol=1e-5,
    )


def check_unmerge_cycles():
    layer = _layer(dtype=np.float32)
    W0 = layer.base_layer.weight.data.copy()
    for _ in range(5):
        layer.merge()
        layer.unmerge()
    if not np.allclose(layer.base_layer.weight.data, W0, atol=1e-5):
        fail("five merge/unmerge cycles moved W0: unmerge must subtract exactly what merge added")


# ---- inject_lora / mark_trainable ------------------------------------------------------------


def _lora_names(model):
    from minilora.lora import LoRALinear

    return sorted(n for n, m in model.named_modules() if isinstance(m, LoRALinear))


def check_inject_targets():
    from minilora.lora import LoRAConfig, inject_lora

    model = tiny_gpt(n_layer=3)
    w0 = {n: p.data.copy() for n, p in model.named_parameters()}
    inject_lora(model, LoRAConfig(r=4, alpha=8, target_modules=("q_proj", "v_proj")))
    want = sorted(f"blocks.{i}.attn.{t}" for i in range(3) for t in ("q_proj", "v_proj"))
    got = _lora_names(model)
    if got != want:
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        fail(
            f"wrapped {len(got)} layers; missing {missing[:3]}, extra {extra[:3]}: wrap every "
            "Linear that a target names (its name or a dotted suffix of it), no other"
        )
    for n in want:
        key = f"{n}.base_layer.weight"
        if key not in w0 and not np.array_equal(
            model.get_submodule(n).base_layer.weight.data, w0[f"{n}.weight"]
        ):
            fail(f"{n}: the wrapped layer's W0 changed; wrap the model's own Linear")


def check_inject_suffix_and_twice():
    from minilora.lora import LoRAConfig, LoRALinear, inject_lora

    model = tiny_gpt(n_layer=2)
    inject_lora(model, LoRAConfig(r=2, alpha=4, target_modules=("blocks.1.attn.q_proj",)))
    if _lora_names(model) != ["blocks.1.attn.q_proj"]:
        fail(f"target 'blocks.1.attn.q_proj' wrapped {_lora_names(model)}: match the full name")
    inject_lora(model, LoRAConfig(r=2, alpha=4, target_modules=("q_proj",)), "second")
    layer = model.get_submodule("blocks.1.attn.q_proj")
    if not isinstance(
        layer.base_layer, type(model.get_submodule("blocks.0.attn.k_proj"))
    ) or isinstance(layer.base_layer, LoRALinear):
        fail("a LoRALinear was wrapped again: keep the one that is there, add the adapter to it")


def check_inject_counts_and_bit_for_bit():
    from minilora.lora import LoRAConfig, count_parameters, inject_lora
    from minilora.tensor import no_grad

    n_layer, d_model, r = 3, 16, 4
    model, idx = tiny_gpt(n_layer=n_layer, d_model=d_model), tokens()
    with no_grad():
        before = model(idx)[0].data.copy()
    inject_lora(model, LoRAConfig(r=r, alpha=8))
    want = 2 * (2 * n_layer) * d_model * r  # |Theta| = 2 x L_hat x d_model x r
    got = count_parameters(model).trainable
    if got != want:
        fail(
            f"{got} trainable parameters; the paper's 2 x L_hat x d_model x r = 2 x {2 * n_layer} "
            f"x {d_model} x {r} = {want}"
        )
    with no_grad():
        after = model(idx)[0].data
    if not np.array_equal(before, after):
        fail("the injected model's logits differ from the base model's (dW = 0 at the start)")


CHECKS = {
    "lora_init": [
        ("B zero, A random (kaiming, gaussian)", check_init_b_zero_a_random, ""),
        ("injected model = base model, bit for bit", check_init_model_unchanged_bit_for_bit, ""),
    ],
    "lora_forward": [
        ("Eq. 3 with scaling alpha/r", check_forward_eq3, SHAPE_HINT),
        (
            "rsLoRA scaling; dropout on the adapter only",
            check_forward_rslora_and_dropout,
            SHAPE_HINT,
        ),
        ("B = 0 gives base(x) bit for bit", check_forward_b_zero_bit_for_bit, SHAPE_HINT),
        ("gradients reach A and B, not W0", check_forward_gradients_reach_a_and_b, SHAPE_HINT),
    ],
    "merge": [
        ("W = W0 + (alpha/r) B A", check_merge_weight, SHAPE_HINT),
        ("merged output = unmerged output", check_merge_equivalence, SHAPE_HINT),
    ],
    "unmerge": [
        ("unmerge restores W0", check_unmerge_restores_w0, ""),
        ("five merge/unmerge cycles", check_unmerge_cycles, ""),
    ],
    "inject_lora": [
        ("every target wrapped, nothing else", check_inject_targets, ""),
        ("dotted names; no double wrapping", check_inject_suffix_and_twice, ""),
        ("2 x L_hat x d_model x r; dW = 0 bit for bit", check_inject_counts_and_bit_for_bit, ""),
    ],
}
