"""The grader's checks of merge and unmerge, layer by layer and through the model API.

``lora.merge(model)`` first asks every layer for its merged weight (so a layer that cannot be
merged leaves the model unchanged), then merges: a ``merged_weight`` that writes into the layer
adds dW twice. The model has two adapters, the second active and rsLoRA (alpha / sqrt(r)), so a
merge of the wrong adapter and a scaling written out as alpha / r show. float32 stays float32.
"""

from __future__ import annotations

import numpy as np
from grade_tools import (
    ALPHA,
    D_IN,
    HARD_CODED,
    SHAPES,
    Check,
    check_dtype,
    diagnose,
    fail,
    tiny_gpt,
    tokens,
)
from grade_tools import lora_layer as _layer
from grade_tools import lora_parts as _parts

# ---- merge ------------------------------------------------------------------------------------


def check_merge_weight():
    layer = _layer()
    W0, b, A, B = _parts(layer)
    s = ALPHA / 3
    diagnose(
        layer.delta_weight(),
        s * B @ A,
        "delta_weight() = (alpha/r) B A",
        [(B @ A, "the scaling alpha/r is missing"), ((s * B @ A).T, "transposed: dW = B A")],
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
            (
                W0 + 2 * s * B @ A,
                "dW was added twice: merged_weight must return W0 + dW as a new "
                "array without writing it into the layer (merge writes it)",
            ),
        ],
    )


def check_merge_dtypes():
    layer = _layer(dtype=np.float32)
    W0, b, A, B = _parts(layer)
    check_dtype(layer.delta_weight(), np.float32, "delta_weight() of a float32 layer")
    d64 = layer.delta_weight(dtype=np.float64)
    check_dtype(d64, np.float64, "delta_weight(dtype=np.float64) (section 7's analyses)")
    diagnose(d64, ALPHA / 3 * B @ A, "delta_weight(dtype=np.float64)", rtol=1e-12, atol=1e-12)
    layer.merge()
    check_dtype(layer.base_layer.weight, np.float32, "W after merging a float32 layer")


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


def lora_gpt(seed=0):
    """A float32 GPT with adapter 'default' (r 4) and 'second' (r 2, rsLoRA, active) on q and
    v, every B drawn at random: the model, tokens, {layer name: (W0, dW of 'second' (rsLoRA),
    the same with alpha/r, dW of 'default')} in float64, and its logits before merging."""
    from minilora.lora import LoRAConfig, inject_lora, lora_layers
    from minilora.tensor import no_grad

    model, idx = tiny_gpt(seed), tokens(seed)
    rng = np.random.default_rng(seed)
    inject_lora(model, LoRAConfig(r=4, alpha=8), generator=rng)
    inject_lora(model, LoRAConfig(r=2, alpha=8, use_rslora=True), "second", generator=rng)
    expected = {}
    for name, layer in lora_layers(model).items():
        for adapter in ("default", "second"):
            B = layer.lora_B[adapter].weight
            B.data = (0.3 * rng.standard_normal(B.shape)).astype(np.float32)
        W0, _, A, B = _parts(layer, "second")
        _, _, A1, B1 = _parts(layer, "default")
        expected[name] = (W0, 8 / np.sqrt(2) * B @ A, 8 / 2 * B @ A, 8 / 4 * B1 @ A1)
    with no_grad():
        logits = model(idx)[0].data.copy()
    return model, idx, expected, logits


def check_merge_model():
    from minilora import lora
    from minilora.tensor import no_grad

    model, idx, expected, before = lora_gpt()
    lora.merge(model)
    for name, layer in lora.lora_layers(model).items():
        W0, dW, unscaled, default = expected[name]
        W = layer.base_layer.weight.data
        what = f"lora.merge(model): W of {name} (adapter 'second', rsLoRA, active)"
        check_dtype(W, np.float32, what)
        diagnose(
            W,
            W0 + dW,
            what,
            [
                (W0 + unscaled, HARD_CODED),
                (
                    W0 + 2 * dW,
                    "dW was added twice: lora.merge(model) first asks every layer for its "
                    "merged_weight() (the check before any layer changes); it must not write "
                    "into the layer",
                ),
                (
                    W0 + default,
                    "merged adapter 'default', not the active one (delta_weight's `name`)",
                ),
            ],
            rtol=1e-5,
            atol=1e-6,
        )
    with no_grad():
        after = model(idx)[0].data
    if not np.allclose(after, before, rtol=1e-4, atol=1e-4):
        fail(
            f"after lora.merge(model) the logits moved by up to {np.abs(after - before).max():.3g}"
        )


# ---- unmerge ----------------------------------------------------------------------------------

SAVED = (
    (
        "AttributeError",
        "",
        "unmerge may rely only on what the reference merge leaves: W = W0 + "
        "delta_weight(merged_adapter) and self.merged_adapter (graded alone, merge saves no copy "
        "of W0): compute W0 = W - dW",
    ),
    ("KeyError", "", "unmerge the adapter that is merged: self.merged_adapter"),
) + SHAPES


def check_unmerge_restores_w0():
    layer = _layer(dtype=np.float32)
    W0, b, A, B = _parts(layer)
    s = ALPHA / 3
    layer.merge()
    layer.unmerge()
    if layer.merged:
        fail("after unmerge() the layer still says it is merged")
    check_dtype(layer.base_layer.weight, np.float32, "W0 after unmerging a float32 layer")
    diagnose(
        layer.base_layer.weight.data,
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


def check_unmerge_model():
    from minilora import lora
    from minilora.tensor import no_grad

    model, idx, expected, before = lora_gpt(1)
    lora.merge(model)
    lora.unmerge(model)
    for name, layer in lora.lora_layers(model).items():
        W0, dW, unscaled, default = expected[name]
        what = f"lora.unmerge(model): W of {name} (adapter 'second', rsLoRA)"
        check_dtype(layer.base_layer.weight, np.float32, what)
        if layer.merged:
            fail(f"{what}: the layer still says it is merged")
        diagnose(
            layer.base_layer.weight.data,
            W0,
            what,
            [
                (W0 + dW - unscaled, HARD_CODED),
                (W0 + dW, "unmerge left the merged W"),
                (
                    W0 + dW - default,
                    "unmerge subtracted adapter 'default', not the merged one "
                    "(self.merged_adapter)",
                ),
            ],
            rtol=1e-5,
            atol=1e-5,
        )
    with no_grad():
        after = model(idx)[0].data
    if not np.allclose(after, before, rtol=1e-4, atol=1e-4):
        fail(
            f"after merge and unmerge the logits moved by up to {np.abs(after - before).max():.3g}"
        )


CHECKS = {
    "merge": [
        Check("W = W0 + (alpha/r) B A", check_merge_weight, SHAPES),
        Check("dtypes: float32 kept, float64 on request", check_merge_dtypes, SHAPES),
        Check("merged output = unmerged output", check_merge_equivalence, SHAPES),
        Check("lora.merge(model): rsLoRA, second adapter", check_merge_model, SHAPES),
    ],
    "unmerge": [
        Check("unmerge restores W0, float32 kept", check_unmerge_restores_w0, SAVED),
        Check("five merge/unmerge cycles", check_unmerge_cycles, SAVED),
        Check("lora.unmerge(model): rsLoRA, second adapter", check_unmerge_model, SAVED),
    ],
}
