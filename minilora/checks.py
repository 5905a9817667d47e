"""Argument checks of the engine and the model, out of the formulas' way.

Each op calls its check once, before its formula; a check returns the arguments it
normalises (axes, integer targets) or raises an error that names the op, the argument,
its value and what was expected. A learner can skip this file: nothing here is math.
(The checks of the adapters live with them, in the method's own files.)
"""

from __future__ import annotations

import builtins
import math
import numbers

import numpy as np

from minilora import backend

# ---- the engine: tensors and ops -------------------------------------------------------


def values(x):
    """The array inside a Tensor, or ``x`` itself (an array's own ``.data`` is its buffer)."""
    return x.data if hasattr(x, "_parents") else x


def real_dtype(data, dtype) -> np.dtype:
    """The dtype of ``data`` (an array, a list or a number), refusing non-numeric data."""
    is_array = backend.get_array_module_or_none(data) is not None
    try:
        given = data.dtype if is_array else np.asarray(data).dtype
    except ValueError as err:  # ragged nested lists
        raise ValueError(
            f"Tensor: data {repr(data)[:60]} is not a rectangular array of numbers ({err})"
        ) from None
    for what, dt in (("data " + repr(data)[:60], given), (f"dtype={dtype!r}", dtype)):
        if dt is not None and np.dtype(dt).kind not in "biuf":
            raise TypeError(
                f"Tensor: {what} has dtype {np.dtype(dt)}, which is not numeric; expected "
                "bool, integer or floating-point numbers"
            )
    return given


def seed_gradient(tensor, grad):
    """The gradient ``backward`` starts from: 1 for a one-element tensor, else ``grad``."""
    if not tensor.requires_grad:
        raise RuntimeError(
            "backward() called on a tensor that does not require grad: none of its inputs "
            "has requires_grad=True (or it was computed inside no_grad())"
        )
    xp = backend.get_array_module(tensor.data)
    if grad is None:
        if tensor.data.size != 1:
            raise RuntimeError(
                f"backward() on a non-scalar tensor of shape {tensor.shape} needs grad=, "
                "the gradient of the final scalar with respect to this tensor"
            )
        return xp.ones_like(tensor.data)
    grad = xp.asarray(values(grad), dtype=tensor.dtype)
    if grad.shape != tensor.shape:
        raise ValueError(
            f"backward(grad=...): grad has shape {grad.shape}, expected {tensor.shape}"
        )
    return grad


def axes(axis, ndim: int, op: str) -> tuple:
    """``axis`` (None, an int or a tuple) as sorted non-negative axes of an ``ndim``-dim tensor."""
    if axis is None:
        return tuple(range(ndim))
    given = (axis,) if isinstance(axis, int) else tuple(axis)
    for ax in given:
        if not -ndim <= ax < builtins.max(ndim, 1):
            raise ValueError(f"{op}: axis {ax} is out of range for a tensor with {ndim} dims")
    return tuple(sorted(ax % builtins.max(ndim, 1) for ax in given))


def exponent(value) -> None:
    if not np.isscalar(value):
        raise TypeError(f"pow: exponent must be a number, got {type(value).__name__}")


def matmul_shapes(a, b) -> None:
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul: inputs must be at least 2-D, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"matmul: inner dimensions differ: {a.shape} @ {b.shape} "
            f"(a's last dim {a.shape[-1]} must equal b's second-to-last {b.shape[-2]})"
        )


def reshaped(array, shape):
    """``array.reshape(shape)``, or a ValueError naming both shapes."""
    try:
        return array.reshape(shape)
    except (ValueError, TypeError):
        raise ValueError(
            f"reshape: cannot reshape {array.shape} ({array.size} elements) into {shape}; "
            "expected integer sizes whose product is the element count (one may be -1)"
        ) from None


def axis_pair(shape, axis1, axis2) -> None:
    for name, axis in (("axis1", axis1), ("axis2", axis2)):
        if not isinstance(axis, (int, np.integer)) or not -len(shape) <= axis < len(shape):
            raise ValueError(
                f"transpose: {name}={axis!r} is out of range for a tensor of shape {shape}; "
                f"expected an integer in [{-len(shape)}, {len(shape)})"
            )


def permutation(shape, order) -> tuple:
    """``order`` as a tuple that names each of the axes of ``shape`` once."""
    n = len(shape)
    order = (order,) if isinstance(order, (int, np.integer)) else tuple(order)
    in_range = all(isinstance(ax, (int, np.integer)) and -n <= ax < n for ax in order)
    if not in_range or sorted(ax % n for ax in order) != list(range(n)):
        raise ValueError(
            f"permute: axes {order} are not a permutation of the {n} axes of a tensor of "
            f"shape {shape}; expected each of 0..{n - 1} once (negative counts from the end)"
        )
    return order


def split_sizes(length: int, sizes) -> list[int]:
    """``sizes`` (a list, or a number of equal pieces) as piece lengths that add up to length."""
    if isinstance(sizes, int):
        if sizes <= 0 or length % sizes:
            raise ValueError(f"split: cannot cut length {length} into {sizes} equal pieces")
        return [length // sizes] * sizes
    if builtins.sum(sizes) != length:
        raise ValueError(
            f"split: sizes {list(sizes)} add up to {builtins.sum(sizes)}, not {length}"
        )
    return list(sizes)


# ---- the fused ops -----------------------------------------------------------------------


def linear_shapes(x, weight) -> None:
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(
            f"linear: input's last dim is {x.shape[-1]} but weight {weight.shape} "
            f"expects in_features={weight.shape[-1]}"
        )


def class_targets(logits, targets, ignore_index: int):
    """``targets`` as an integer array of logits' shape without its last axis, each a class."""
    xp = backend.get_array_module(logits.data)
    t = xp.asarray(values(targets))
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class indices, got {t.dtype}")
    if t.shape != logits.shape[:-1]:
        raise ValueError(
            f"cross_entropy: targets of shape {t.shape} do not match logits {logits.shape} "
            "(expected the logits' shape without its last, class, dimension)"
        )
    classes = logits.shape[-1]
    bad = (t != ignore_index) & ((t < 0) | (t >= classes))
    if bool(bad.any()):
        raise IndexError(
            f"cross_entropy: target {int(t[bad][0])} is outside [0, {classes}) "
            f"(and is not ignore_index={ignore_index})"
        )
    return t


def row_indices(weight, indices):
    """``indices`` as an integer array whose every entry is a row of ``weight``."""
    xp = backend.get_array_module(weight.data)
    idx = xp.asarray(values(indices))
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got {idx.dtype}")
    rows = weight.shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= rows):
        raise IndexError(
            f"embedding: index {int(idx.max()) if int(idx.max()) >= rows else int(idx.min())} "
            f"is outside [0, {rows}) (the table has {rows} rows)"
        )
    return idx


def probability(p, what: str) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{what}: p={p} must be in [0, 1)")


# ---- the model ---------------------------------------------------------------------------


def state_dict_fits(module, own: dict, state: dict, strict: bool) -> tuple[list, list]:
    """(missing, unexpected) keys; a KeyError listing every problem if they may not load:
    any shape mismatch, and with ``strict`` any missing or unexpected key."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)}, model {own[k].shape}"
        for k in own
        if k in state and tuple(state[k].shape) != own[k].shape
    ]
    if mismatched or (strict and (missing or unexpected)):
        lines = [f"load_state_dict into {type(module).__name__} failed:"]
        if missing:
            lines.append(f"  missing keys: {missing}")
        if unexpected:
            lines.append(f"  unexpected keys: {unexpected}")
        if mismatched:
            lines.append(f"  shape mismatches: {mismatched}")
        raise KeyError("\n".join(lines))
    return missing, unexpected


def gpt_config(config) -> None:
    for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model"):
        if not isinstance(getattr(config, name), int) or getattr(config, name) < 1:
            raise ValueError(f"GPTConfig.{name}={getattr(config, name)!r}: expected an int >= 1")
    if config.d_model % config.n_head:
        raise ValueError(
            f"GPTConfig: d_model={config.d_model} is not divisible by n_head={config.n_head}"
        )
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"GPTConfig.dropout={config.dropout}: expected a value in [0, 1)")


def token_ids(idx, start: int, block_size: int):
    """``idx`` as a (batch, time) array that fits the context after ``start`` cached tokens."""
    idx = values(idx)
    if getattr(idx, "ndim", None) != 2:
        raise ValueError(
            f"GPT: idx has shape {getattr(idx, 'shape', type(idx).__name__)}; expected token "
            "ids of shape (batch, time), e.g. ids[None, :] for one sequence"
        )
    if start + idx.shape[1] > block_size:
        raise ValueError(
            f"GPT: a sequence of {start + idx.shape[1]} tokens is longer than "
            f"block_size={block_size}"
        )
    return idx


def sampling(max_new_tokens, temperature, top_k) -> None:
    """Refuse what would silently do nothing or sample nonsense (negative lengths, NaN, ...)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)):
        raise TypeError(f"generate: max_new_tokens={max_new_tokens!r}; expected an integer >= 0")
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens={max_new_tokens!r}; expected an integer >= 0")
    if not (isinstance(temperature, (int, float, np.number)) and 0 <= temperature < math.inf):
        raise ValueError(
            f"generate: temperature={temperature!r}; expected a finite number >= 0 (0 is greedy)"
        )
    if top_k is not None and (
        isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1
    ):
        raise ValueError(f"generate: top_k={top_k!r}; expected None or an integer >= 1")


# ---- the optimizers ------------------------------------------------------------------------
# What each hyperparameter may be: anything else is refused by name at construction
# (a negative lr climbs the loss, a NaN one turns every weight into NaN, beta >= 1 never forgets).
RULES = {
    "lr": (lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    "momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": (lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    "eps": (lambda v: 0 < v < math.inf, "a finite number > 0"),
    "beta": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "lr_scale": (lambda v: 0 < v < math.inf, "a finite number > 0"),
}


def hyperparameter(owner: str, name: str, value) -> None:
    """Raise ValueError naming ``name`` and ``value`` unless the value is allowed."""
    ok, expected = RULES["beta" if name.startswith("betas") else name]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not ok(value):
        raise ValueError(f"{owner}: {name}={value!r}; expected {expected}")


def param_group(owner: str, group: dict, names) -> None:
    """Every hyperparameter of ``group`` named in ``names`` (betas: a pair of betas)."""
    for name in names:
        if name != "betas":
            hyperparameter(owner, name, group[name])
            continue
        betas = group[name]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{owner}: betas={betas!r}; expected a pair (beta1, beta2)")
        for j, beta in enumerate(betas):
            hyperparameter(owner, f"betas[{j}]", beta)
