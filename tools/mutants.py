"""The curated mutants of ``tools/mutate.py``: realistic one-line bugs in the core, by file.

Each entry names the file, its exact original text (it must occur there exactly once:
``tests/test_mutate.py`` checks this, so the list follows the code when it moves), the
bug that replaces it, the test files that should catch it (the code's own unit tests,
not a test far away that happens to crash), and what the bug would do. ``equivalent``,
when set, says why no test can tell the mutant from the original; such a mutant is
reported but not counted in the kill rate.

One list in one file beside the script (rather than a list inside each core module) keeps
the core free of test machinery; the entries are grouped by core file in the order of
the README's layout, so a new op adds its mutants under its file's heading. A mutant is
one bug, usually one line; where a line's text occurs twice, the original carries a few
neighbouring characters to make it unique.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str  # short, unique: what ``--only`` matches
    file: str  # relative to the repository root
    original: str  # occurs exactly once in ``file``
    mutated: str  # what replaces it
    tests: tuple  # test files (relative to the root) that should fail with the mutant in
    why: str  # the bug, in words
    equivalent: str = ""  # non-empty: why no test can see the difference


T_TENSOR = ("tests/test_tensor.py",)
T_OPS = ("tests/test_tensor.py", "tests/test_ops.py", "tests/test_fast_paths.py")
T_FUNCTIONAL = ("tests/test_functional.py", "tests/test_fast_paths.py")
T_NN = ("tests/test_nn.py",)
T_OPTIM = ("tests/test_optim.py",)
T_LORA = ("tests/test_lora.py", "tests/test_lora_model.py")
T_FUSED = ("tests/test_lora_fused.py", "tests/test_lora.py")
T_GPT = ("tests/test_transformer.py",)
T_GRADCHECK = ("tests/test_gradcheck.py",)

MUTANTS = [
    # ---- minilora/tensor.py ------------------------------------------------------------
    Mutant(
        "no_grad_exit_enables",
        "minilora/tensor.py",
        "_grad_enabled = self._previous",
        "_grad_enabled = True",
        T_TENSOR,
        "no_grad's exit turns gradients on instead of restoring the previous state (nested)",
    ),
    Mutant(
        "leaf_grad_overwritten",
        "minilora/tensor.py",
        "node.grad += g",
        "node.grad = g",
        T_TENSOR,
        "a leaf's .grad is overwritten by a second backward instead of accumulating",
    ),
    Mutant(
        "pending_grad_overwritten",
        "minilora/tensor.py",
        "pending[key] = parent_grad if key not in pending else pending[key] + parent_grad",
        "pending[key] = parent_grad",
        T_TENSOR,
        "a node used twice in one graph keeps only the last gradient flowing into it",
    ),
    Mutant(
        "graph_recorded_under_no_grad",
        "minilora/tensor.py",
        "if _grad_enabled and any(p.requires_grad for p in parents):",
        "if any(p.requires_grad for p in parents):",
        T_TENSOR,
        "ops record a graph inside no_grad()",
    ),
    Mutant(
        "retain_graph_inverted",
        "minilora/tensor.py",
        "if not retain_graph:",
        "if retain_graph:",
        T_TENSOR,
        "backward frees the graph exactly when asked to keep it",
    ),
    # ---- minilora/broadcasting.py ------------------------------------------------------
    Mutant(
        "unbroadcast_forgets_lead_axes",
        "minilora/broadcasting.py",
        "tuple(lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i]",
        "tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i]",
        T_OPS,
        "unbroadcast sums the stretched axes without the offset of the added leading ones",
    ),
    Mutant(
        "constant_keeps_float64",
        "minilora/broadcasting.py",
        "return Tensor(xp.asarray(x, dtype=like.dtype))",
        "return Tensor(xp.asarray(x))",
        T_OPS,
        "a Python number meeting a float32 tensor becomes a float64 operand",
    ),
    Mutant(
        "sub_plain_backward_sign",
        "minilora/broadcasting.py",
        "unbroadcast(-g, b.shape)",
        "unbroadcast(g, b.shape)",
        T_OPS,
        "d(a - b)/db = +g in the broadcasting (plain) path",
    ),
    Mutant(
        "sub_fast_backward_sign",
        "minilora/broadcasting.py",
        "-g if b.requires_grad else None",
        "g if b.requires_grad else None",
        T_OPS,
        "d(a - b)/db = +g in the same-shape (fast) path",
    ),
    Mutant(
        "mul_plain_wrong_factor",
        "minilora/broadcasting.py",
        "unbroadcast(g * b.data, a.shape)",
        "unbroadcast(g * a.data, a.shape)",
        T_OPS,
        "d(a b)/da = g a instead of g b in the broadcasting path",
    ),
    Mutant(
        "div_fast_forgets_one_over_b",
        "minilora/broadcasting.py",
        "-g_over_b * out if b.requires_grad else None",
        "-g * out if b.requires_grad else None",
        T_OPS,
        "d(a / b)/db = -g a / b instead of -g a / b^2 in the same-shape path",
    ),
    # ---- minilora/ops.py ----------------------------------------------------------------
    Mutant(
        "matmul_grad_b_reshaped_not_transposed",
        "minilora/ops.py",
        "gb = mm(a.data.reshape(-1, k).T, g.reshape(-1, m))",
        "gb = mm(a.data.reshape(k, -1), g.reshape(-1, m))",
        T_OPS,
        "dL/dB = reshape(A) G instead of A^T G (a reshape is not a transpose)",
    ),
    Mutant(
        "matmul_grad_a_untransposed",
        "minilora/ops.py",
        "ga = unbroadcast(mm(g, b.data.swapaxes(-1, -2)), a.shape)",
        "ga = unbroadcast(mm(g, b.data), a.shape)",
        T_OPS,
        "dL/dA = G B instead of G B^T (right for square symmetric B only)",
    ),
    Mutant(
        "mean_divides_by_every_element",
        "minilora/ops.py",
        "1.0 / builtins.max(count, 1)",
        "1.0 / builtins.max(a.size, 1)",
        T_OPS,
        "mean over some axes divides by the size of the whole tensor",
    ),
    Mutant(
        "max_ties_each_get_all",
        "minilora/ops.py",
        "share = winners / winners.sum(axis=axes, keepdims=True)",
        "share = winners",
        T_OPS,
        "tied maxima each receive the whole gradient instead of a share",
    ),
    Mutant(
        "sqrt_backward_times_out",
        "minilora/ops.py",
        "(g * 0.5 / out,)",
        "(g * 0.5 * out,)",
        T_OPS,
        "d sqrt(a) = 0.5 sqrt(a) instead of 0.5 / sqrt(a)",
    ),
    Mutant(
        "tanh_backward_not_squared",
        "minilora/ops.py",
        "(g * (1 - out * out),)",
        "(g * (1 - out),)",
        T_OPS,
        "d tanh = 1 - tanh instead of 1 - tanh^2",
    ),
    Mutant(
        "permute_backward_not_inverted",
        "minilora/ops.py",
        "inverse = tuple(np.argsort([ax % a.ndim for ax in axes]))",
        "inverse = tuple(ax % a.ndim for ax in axes)",
        T_OPS,
        "permute's backward applies the permutation again instead of its inverse",
    ),
    Mutant(
        "getitem_repeats_overwrite",
        "minilora/ops.py",
        "backend.scatter_add(grad, index, g)",
        "grad[index] = g",
        T_OPS,
        "an element picked twice by an index array gets one gradient, not both",
    ),
    Mutant(
        "where_backward_b_swapped",
        "minilora/ops.py",
        "xp.where(cond, zero, g), b.shape",
        "xp.where(cond, g, zero), b.shape",
        T_OPS,
        "where's 'else' input gets the gradient of the positions where the condition holds",
    ),
    Mutant(
        "concat_splits_at_sizes",
        "minilora/ops.py",
        "ends = np.cumsum([t.shape[axis] for t in tensors])[:-1].tolist()",
        "ends = [t.shape[axis] for t in tensors][:-1]",
        T_OPS,
        "concat's backward splits at the sizes instead of their running sums (3+ inputs)",
    ),
    # ---- minilora/functional.py --------------------------------------------------------
    Mutant(
        "softmax_without_max_shift",
        "minilora/functional.py",
        "e = xp.exp(x.data - x.data.max(axis=axis, keepdims=True))",
        "e = xp.exp(x.data)",
        T_FUNCTIONAL,
        "softmax without the max shift: exp overflows on large logits (NaN)",
    ),
    Mutant(
        "log_softmax_without_max_shift",
        "minilora/functional.py",
        "shifted = x.data - x.data.max(axis=axis, keepdims=True)",
        "shifted = x.data",
        T_FUNCTIONAL,
        "log-softmax without the max shift: log(sum(exp)) overflows on large logits",
    ),
    Mutant(
        "softmax_backward_forgets_s",
        "minilora/functional.py",
        "(out * (g - (g * out).sum(axis=axis, keepdims=True)),)",
        "(out * (g - g.sum(axis=axis, keepdims=True)),)",
        T_FUNCTIONAL,
        "softmax's backward subtracts sum(g) instead of sum(g s)",
    ),
    Mutant(
        "cross_entropy_counts_ignored",
        "minilora/functional.py",
        "count = max(int(valid.sum()), 1)",
        "count = max(len(t), 1)",
        T_FUNCTIONAL,
        "the mean loss divides by every position, ignored ones included",
    ),
    Mutant(
        "cross_entropy_grad_on_ignored",
        "minilora/functional.py",
        "grad *= (valid * (g / count))[:, None].astype(grad.dtype)",
        "grad *= (g / count).astype(grad.dtype)",
        T_FUNCTIONAL,
        "ignored positions (ignore_index) still send a gradient to their logits",
    ),
    Mutant(
        "layer_norm_plain_eps_outside_sqrt",
        "minilora/functional.py",
        "sigma = xp.sqrt(var + eps)",
        "sigma = xp.sqrt(var) + eps",
        T_FUNCTIONAL,
        "layer norm divides by sqrt(var) + eps instead of sqrt(var + eps)",
    ),
    Mutant(
        "layer_norm_fast_eps_outside_sqrt",
        "minilora/functional.py",
        "1.0 / xp.sqrt(backend.sum_last(xhat * xhat, 1.0 / n) + eps)",
        "1.0 / (xp.sqrt(backend.sum_last(xhat * xhat, 1.0 / n)) + eps)",
        T_FUNCTIONAL,
        "the fast layer norm puts eps outside the square root",
    ),
    Mutant(
        "layer_norm_backward_drops_xhat_term",
        "minilora/functional.py",
        "gx = G - G.mean(axis=-1, keepdims=True) - xhat * (G * xhat).mean(axis=-1, keepdims=True)",
        "gx = G - G.mean(axis=-1, keepdims=True)",
        T_FUNCTIONAL,
        "layer norm's dx forgets the variance's part, - xhat mean(G xhat)",
    ),
    Mutant(
        "gelu_plain_backward_forgets_3",
        "minilora/functional.py",
        "(1.0 + 3 * 0.044715 * a**2)",
        "(1.0 + 0.044715 * a**2)",
        T_FUNCTIONAL,
        "GELU's derivative of x^3 written as x^2 instead of 3 x^2",
    ),
    Mutant(
        "linear_bias_grad_mean",
        "minilora/functional.py",
        "rows.sum(axis=0) if bias.requires_grad else None\n\n    return make_result(out, parents",
        "rows.mean(axis=0) if bias.requires_grad else None\n\n    return make_result(out, parents",
        T_FUNCTIONAL + ("tests/test_nn.py",),
        "linear's bias gradient is the mean of the rows' gradients, not their sum",
    ),
    Mutant(
        "embedding_repeats_overwrite",
        "minilora/functional.py",
        "backend.scatter_add(grad, idx.reshape(-1), g.reshape(-1, weight.shape[-1]))",
        "grad[idx.reshape(-1)] = g.reshape(-1, weight.shape[-1])",
        T_FUNCTIONAL,
        "a token that occurs twice gets one gradient, not both",
    ),
    # ---- minilora/creation.py ----------------------------------------------------------
    Mutant(
        "dropout_mask_not_inverted",
        "minilora/creation.py",
        "keep = (generator.random(shape) >= p).astype(dtype) / dtype.type(1.0 - p)",
        "keep = (generator.random(shape) >= p).astype(dtype)",
        T_FUNCTIONAL + ("tests/test_nn.py",),
        "dropout zeroes but does not scale the survivors by 1 / (1 - p)",
    ),
    # ---- minilora/attention.py ---------------------------------------------------------
    Mutant(
        "causal_mask_hides_the_diagonal",
        "minilora/attention.py",
        "k=S - T + 1)",
        "k=S - T)",
        T_FUNCTIONAL + T_GPT,
        "off by one: a query cannot see its own key",
    ),
    Mutant(
        "causal_mask_ignores_the_cache",
        "minilora/attention.py",
        "k=S - T + 1)",
        "k=1)",
        T_FUNCTIONAL + T_GPT,
        "the causal mask forgets that the T queries are the last T of S positions",
    ),
    Mutant(
        "attention_plain_scale_one_over_d",
        "minilora/attention.py",
        "scale = 1.0 / math.sqrt(q.shape[-1])  # 1 / sqrt(D)",
        "scale = 1.0 / q.shape[-1]  # 1 / sqrt(D)",
        T_FUNCTIONAL,
        "scores scaled by 1 / D instead of 1 / sqrt(D) (plain path)",
    ),
    Mutant(
        "attention_fast_backward_forgets_scale",
        "minilora/attention.py",
        "block *= p\n            block *= scale",
        "block *= p",
        T_FUNCTIONAL,
        "dS misses the 1 / sqrt(D) of S = Q K^T / sqrt(D) (fast path)",
    ),
    Mutant(
        "attention_fast_mask_first_block",
        "minilora/attention.py",
        "xp.copyto(block, lowest, where=hidden_of[i:j])",
        "xp.copyto(block, lowest, where=hidden_of[: j - i])",
        T_FUNCTIONAL,
        "every block of (T, S) matrices takes the first block's rows of a per-row mask",
    ),
    Mutant(
        "attention_fast_mask_kept_in_backward",
        "minilora/attention.py",
        "xp.copyto(block, 0.0, where=hidden_of[i:j])",
        "pass",
        T_FUNCTIONAL,
        "a hidden score gets a gradient (it matters in a fully hidden row: padding)",
    ),
    # ---- minilora/nn.py -----------------------------------------------------------------
    Mutant(
        "strict_load_ignores_unexpected",
        "minilora/nn.py",
        "if mismatched or (strict and (missing or unexpected)):",
        "if mismatched or (strict and missing):",
        T_NN,
        "load_state_dict(strict=True) accepts a checkpoint with an unexpected key",
    ),
    Mutant(
        "shared_parameter_listed_twice",
        "minilora/nn.py",
        "if isinstance(value, Parameter) and id(value) not in seen:",
        "if isinstance(value, Parameter):",
        T_NN,
        "a tied weight is listed (counted, stepped) once per name",
    ),
    Mutant(
        "train_mode_not_propagated",
        "minilora/nn.py",
        "module.training = mode",
        "self.training = mode",
        T_NN,
        "train()/eval() switch the top module only: dropout below stays on in eval",
    ),
    Mutant(
        "load_keeps_checkpoint_dtype",
        "minilora/nn.py",
        "np.array(value, dtype=p.dtype)",
        "np.array(value)",
        T_NN,
        "a float64 checkpoint turns a float32 model's weights into float64",
    ),
    # ---- minilora/optim.py --------------------------------------------------------------
    Mutant(
        "adamw_no_bias_correction",
        "minilora/optim.py",
        "step_size = lr / (1 - b1**t)",
        "step_size = lr",
        T_OPTIM,
        "AdamW without the first moment's bias correction",
    ),
    Mutant(
        "adamw_eps_inside_sqrt",
        "minilora/optim.py",
        "denom = xp.sqrt(v)",
        "denom = xp.sqrt(v + eps)",
        T_OPTIM,
        "AdamW's eps inside the square root (and again outside) instead of outside only",
    ),
    Mutant(
        "adamw_decay_without_lr",
        "minilora/optim.py",
        "p.data *= 1 - lr * wd",
        "p.data *= 1 - wd",
        T_OPTIM,
        "decoupled weight decay not scaled by the learning rate",
    ),
    Mutant(
        "sgd_momentum_dampened",
        "minilora/optim.py",
        'state["momentum"] += g',
        'state["momentum"] += (1 - mu) * g',
        T_OPTIM,
        "SGD's momentum as an average (1 - mu) g instead of PyTorch's heavy ball",
    ),
    Mutant(
        "sgd_decay_sign",
        "minilora/optim.py",
        "g = p.grad + wd * p.data if wd else p.grad",
        "g = p.grad - wd * p.data if wd else p.grad",
        T_OPTIM,
        "SGD's weight decay grows the weights",
    ),
    Mutant(
        "clip_sums_norms",
        "minilora/optim.py",
        "total = math.sqrt(sum(float((g * g).sum()) for g in grads))",
        "total = sum(math.sqrt(float((g * g).sum())) for g in grads)",
        T_OPTIM,
        "gradient clipping uses the sum of per-tensor norms, not the joint norm",
    ),
    Mutant(
        "warmup_starts_at_zero",
        "minilora/optim.py",
        "return max_lr * (step + 1) / warmup",
        "return max_lr * step / warmup",
        T_OPTIM,
        "off by one: the first warm-up step has learning rate 0",
    ),
    Mutant(
        "decay_on_biases_and_norms",
        "minilora/work/train.py",
        '{"params": rest, "weight_decay": 0.0}',
        '{"params": rest, "weight_decay": config.weight_decay}',
        ("tests/test_train.py",),
        "weight decay on the wrong parameters: biases and norm gains decay too",
    ),
    # ---- minilora/lora_config.py, minilora/lora.py ------------------------------------
    Mutant(
        "scaling_alpha_not_over_r",
        "minilora/lora_config.py",
        "if self.use_rslora else self.r)",
        "if self.use_rslora else 1)",
        T_LORA,
        "the adapter is scaled by alpha instead of alpha / r (section 4.1)",
    ),
    Mutant(
        "target_plain_suffix",
        "minilora/lora.py",
        'return any(module_name == t or module_name.endswith("." + t) for t in targets)',
        "return any(module_name.endswith(t) for t in targets)",
        T_LORA,
        "target names match any suffix ('proj' wraps every *_proj), not PEFT's dotted one",
    ),
    Mutant(
        "target_substring",
        "minilora/lora.py",
        'return any(module_name == t or module_name.endswith("." + t) for t in targets)',
        "return any(t in module_name for t in targets)",
        T_LORA,
        "a target matches anywhere in a name ('q_pro' wraps q_proj)",
    ),
    Mutant(
        "b_not_zero_at_start",
        "minilora/lora.py",
        "B.weight.data = np.zeros_like(B.weight.data)",
        "B.weight.data = B.weight.data",
        T_LORA,
        "B keeps Linear's random start, so dW = B A is not 0 at the start",
    ),
    Mutant(
        "delta_weight_unscaled",
        "minilora/lora.py",
        "return (self.configs[name].scaling * (B @ A)).astype(",
        "return (B @ A).astype(",
        T_LORA,
        "merge adds B A instead of (alpha / r) B A",
    ),
    Mutant(
        "unmerge_adds",
        "minilora/lora.py",
        "self.base_layer.weight.data = self.base_layer.weight.data - self.delta_weight(",
        "self.base_layer.weight.data = self.base_layer.weight.data + self.delta_weight(",
        T_LORA,
        "unmerge adds dW a second time instead of subtracting it",
    ),
    Mutant(
        "lora_only_trains_every_bias",
        "minilora/lora.py",
        'trainable = bias == "all" or (bias == "lora_only" and name in lora_bias_names)',
        'trainable = bias != "none"',
        ("tests/test_lora_model.py", "tests/test_lora.py"),  # the model-level test first
        'bias="lora_only" trains every bias, not only those of the adapted layers',
    ),
    Mutant(
        "lora_plain_dropout_in_eval",
        "minilora/lora.py",
        "B(A(F.dropout(x, p, self.training)))",
        "B(A(F.dropout(x, p, True)))",
        T_LORA,
        "the adapter's dropout stays on in eval mode (plain path)",
    ),
    # ---- minilora/lora_fused.py ---------------------------------------------------------
    Mutant(
        "fused_grad_a_unscaled",
        "minilora/lora_fused.py",
        "g_a = mm(gb_rows.T, z_rows) * scaling",
        "g_a = mm(gb_rows.T, z_rows)",
        T_FUSED,
        "dL/dA misses the scaling alpha / r",
    ),
    Mutant(
        "fused_grad_a_ignores_dropout",
        "minilora/lora_fused.py",
        "g_a = mm(gb_rows.T, z_rows)",
        "g_a = mm(gb_rows.T, x_rows)",
        T_FUSED,
        "dL/dA uses the input before dropout instead of Z = dropout(X)",
    ),
    Mutant(
        "fused_grad_x_ignores_dropout",
        "minilora/lora_fused.py",
        "through_adapter *= keep",
        "pass",
        T_FUSED,
        "dL/dX through the adapter misses the dropout mask",
    ),
    # ---- minilora/transformer.py --------------------------------------------------------
    Mutant(
        "key_padding_ignored",
        "minilora/transformer.py",
        "hidden = hidden | key_padding[:, None, None, :]",
        "hidden = hidden",
        T_GPT,
        "attention reads the left padding of batched prompts (complete())",
    ),
    Mutant(
        "key_padding_on_query_axis",
        "minilora/transformer.py",
        "key_padding[:, None, None, :]",
        "key_padding[:, None, :, None]",
        T_GPT,
        "the padding mask hides padded queries instead of padded keys",
    ),
    Mutant(
        "heads_split_without_transpose",
        "minilora/transformer.py",
        "return t.reshape(B, T, H, C // H).transpose(1, 2)",
        "return t.reshape(B, H, T, C // H)",
        T_GPT,
        "heads split by a reshape alone: time and channels mixed across heads",
    ),
    Mutant(
        "mlp_reads_ln_1",
        "minilora/transformer.py",
        "return x + self.mlp(self.ln_2(x))",
        "return x + self.mlp(self.ln_1(x))",
        T_GPT,
        "the MLP normalises with the attention's LayerNorm",
    ),
    Mutant(
        "positions_ignore_the_cache",
        "minilora/transformer.py",
        "positions = xp.arange(start, start + T)",
        "positions = xp.arange(T)",
        T_GPT,
        "with a key/value cache every new token gets position 0",
    ),
    Mutant(
        "residual_init_not_scaled_by_depth",
        "minilora/transformer.py",
        "residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)",
        "residual_std = 0.02",
        T_GPT,
        "GPT-2's 1/sqrt(2 n_layer) scaling of the residual projections is lost",
    ),
    Mutant(
        "temperature_multiplies",
        "minilora/transformer.py",
        "logits = logits.astype(np.float64) / temperature",
        "logits = logits.astype(np.float64) * temperature",
        T_GPT,
        "sampling multiplies the logits by the temperature instead of dividing",
    ),
    # ---- minilora/gradcheck.py ----------------------------------------------------------
    Mutant(
        "gradcheck_one_sided_width",
        "minilora/gradcheck.py",
        "numeric = (up - down) / (2 * eps)\n            value",
        "numeric = (up - down) / eps\n            value",
        T_GRADCHECK,
        "the central difference divided by eps instead of 2 eps",
    ),
    Mutant(
        "gradcheck_leaves_the_input_moved",
        "minilora/gradcheck.py",
        "            data[index] = original\n",
        "",
        T_GRADCHECK,
        "elementwise gradcheck does not put each element back after perturbing it",
    ),
    Mutant(
        "gradcheck_direction_one_sided",
        "minilora/gradcheck.py",
        "inputs[i].data[...] = originals[i] - eps * direction[i]",
        "inputs[i].data[...] = originals[i]",
        T_GRADCHECK,
        "direction mode takes a one-sided difference but divides by 2 eps",
    ),
]
