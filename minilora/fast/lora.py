"""Fast twin of ``LoRALinear.forward``: Eq. 3 as one op with the paper's gradients written out.

``LoRALinear.forward`` (lora.py) reads as the paper writes the layer,
``base(x) + scaling * B(A(dropout(x)))``: four engine ops, each with its own
backward, and three (N x d_out) arrays kept for the backward pass. This file
computes the same thing as one op. Its forward is the same arithmetic in the
same order, so its output equals the composition bit for bit
(tests/test_lora_fused.py holds it to that); its backward is the formulas of
section 4 of the paper, and it keeps only A z (N x r) for them.
"""

from __future__ import annotations

from minilora.broadcasting import operands
from minilora.creation import dropout_mask
from minilora.lora import LoRALinear
from minilora.ops import mm
from minilora.tensor import Tensor, make_result

from .sums import sum_rows


def forward(layer: LoRALinear, x: Tensor) -> Tensor:
    """``LoRALinear.forward`` with the adapter's sum as one op (``lora_linear``)."""
    name = layer.active_adapter
    if layer.merged or layer.disabled or name is None:
        return LoRALinear.forward.plain(layer, x)
    config, base = layer.configs[name], layer.base_layer
    A, B = layer.lora_A[name].weight, layer.lora_B[name].weight
    return lora_linear(
        x, base.weight, base.bias, A, B, config.scaling, config.dropout, layer.training
    )


def lora_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    lora_A: Tensor,
    lora_B: Tensor,
    scaling: float,
    dropout_p: float = 0.0,
    training: bool = False,
) -> Tensor:
    """h = x W0^T + b + s (z A^T) B^T with z = dropout(x): a LoRA layer as one op (paper, Eq. 3).

    With X the input rows, Z = dropout(X), G = dL/dH (rows) and s = alpha / r, the
    backward is the paper's (section 4.1, Eq. 3 differentiated):

        dL/dB = s G^T (Z A^T)        (d_out x r)
        dL/dA = s (G B)^T Z          (r x d_in)
        dL/dX = G W0 + s ((G B) A) * mask
        dL/dW0 = G^T X               only if W0 is trainable (never with LoRA)

    While B = 0, G B = 0 and so dL/dA = 0: at the first step only B moves. As one
    op it keeps just Z A^T (N x r) for backward, instead of three (N x d_out)
    intermediates; its forward is bit-for-bit the same arithmetic as the layers composed
    (dL/db, the sum of G's rows, is a product with a vector of ones: sums.sum_rows).
    """
    x, weight = operands(x, weight, "lora_linear")
    for t in (bias, lora_A, lora_B):
        if t is not None:
            operands(x, t, "lora_linear")
    r = lora_A.shape[0]
    if lora_A.shape[1] != x.shape[-1] or lora_B.shape != (weight.shape[0], r):
        raise ValueError(
            f"lora_linear: A {lora_A.shape} and B {lora_B.shape} do not fit an input with "
            f"{x.shape[-1]} features and W0 {weight.shape} (expected A (r, {x.shape[-1]}), "
            f"B ({weight.shape[0]}, r))"
        )
    # BEGIN ANSWER: lora_forward
    x_rows = x.data.reshape(-1, x.shape[-1])  # (N, d_in)
    keep = None
    if training and dropout_p > 0.0:
        keep = dropout_mask(x.shape, dropout_p, x.dtype, x.device).reshape(-1, x.shape[-1])
    z_rows = x_rows if keep is None else x_rows * keep
    out = mm(x_rows, weight.data.T)  # W0 x, (N, d_out)
    if bias is not None:
        out += bias.data
    za = mm(z_rows, lora_A.data.T)  # A z, (N, r): the only activation LoRA adds
    update = mm(za, lora_B.data.T)  # B A z, (N, d_out)
    update *= scaling
    out += update
    out = out.reshape(*x.shape[:-1], weight.shape[0])
    parents = (x, weight, lora_A, lora_B) if bias is None else (x, weight, lora_A, lora_B, bias)

    def backward(g):
        rows = g.reshape(-1, g.shape[-1])  # G, (N, d_out)
        gb_rows = mm(rows, lora_B.data)  # G B, (N, r)
        g_b = mm(rows.T, za) * scaling if lora_B.requires_grad else None
        g_a = mm(gb_rows.T, z_rows) * scaling if lora_A.requires_grad else None
        g_w = mm(rows.T, x_rows) if weight.requires_grad else None
        g_x = None
        if x.requires_grad:
            through_adapter = mm(gb_rows, lora_A.data)  # (G B) A, (N, d_in)
            through_adapter *= scaling
            if keep is not None:
                through_adapter *= keep
            g_x = mm(rows, weight.data)
            g_x += through_adapter  # in place: the same sum, one (N x d_in) array less
            g_x = g_x.reshape(x.shape)
        grads = (g_x, g_w, g_a, g_b)
        if bias is None:
            return grads
        return (*grads, sum_rows(rows) if bias.requires_grad else None)

    return make_result(out, parents, backward, "lora_linear")
    # END ANSWER: lora_forward
