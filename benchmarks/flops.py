"""Model FLOPs of one benchmark step: the formulas behind the GFLOP and %peak columns."""

from __future__ import annotations

from configs import LORA_R, LORA_TARGETS


def model_flops(spec: dict, mode: str, r: int = LORA_R) -> int:
    """Matmul FLOPs of one step (a multiply-add counts 2), after shared/PERFORMANCE.md.

    L = n_layer, C = d_model, V = vocab, T = context, tok = batch x T.

    N      = 12 L C^2 + V C : the weights of every matmul: q, k, v, o (4 C^2) and the
             MLP (8 C^2) per block, and the LM head (V x C, tied to the token
             embedding). Biases, LayerNorms and embedding lookups are no matmuls.
    N_lora = 2 L (2 r C)    : A (r x C) and B (C x r) on q_proj and v_proj of each block.
    attn   = 4 L T C tok    : Q K^T and att V, 2 T C FLOPs each per token and layer,
             over the full T x T square (neither engine skips the masked half).

    full   = 6 N tok + 3 attn
             forward 2 N tok + attn; backward: input gradients 2 N tok, weight
             gradients 2 N tok, and both operands' gradients of the two attention
             products, 2 attn. The embeddings train, so block 0 needs input
             gradients too.
    lora   = (4 N - 6 C^2) tok + (6 N_lora - 4 r C) tok + 3 attn - attn / (2 L)
             forward 2 (N + N_lora) tok + attn. Weight gradients for A and B
             only: 2 N_lora tok. Input gradients 2 (N + N_lora) tok except where
             the input needs none: block 0 reads the frozen embeddings, so its
             q_proj, k_proj, v_proj (3 C^2 weights, 6 C^2 tok) and its two A
             matrices (4 r C tok) get no input gradient; its keys need no gradient
             either (k_proj has no adapter), so the Q K^T backward skips dK there:
             2 T C tok = attn / (2 L). Both engines skip exactly these products
             (minilora's linear and matmul compute an operand's gradient only if
             it requires one, as torch.autograd does). PERFORMANCE.md's
             approximation (4 N - 6 C^2) tok + 6 N_lora tok + 3 attn is 0.6%
             (small) and 0.3% (medium) higher.
    infer_base, infer_merged = 2 N tok + attn
    infer_unmerged           = 2 (N + N_lora) tok + attn
    """
    L, C, V, T = spec["n_layer"], spec["d_model"], spec["vocab_size"], spec["block_size"]
    tok = spec["batch"] * T
    N = 12 * L * C * C + V * C
    n_lora = L * len(LORA_TARGETS) * 2 * r * C
    attn = 4 * L * T * C * tok
    if mode == "full":
        return 6 * N * tok + 3 * attn
    if mode == "lora":
        first_a = len(LORA_TARGETS) * 2 * r * C  # block 0's A input gradients, per token
        return (4 * N - 6 * C * C) * tok + (6 * n_lora - first_a) * tok + 3 * attn - attn // (2 * L)
    if mode == "infer_unmerged":
        return 2 * (N + n_lora) * tok + attn
    return 2 * N * tok + attn  # infer_base, infer_merged
