"""Fused neural-network ops: linear, softmax, cross-entropy, layer norm, GELU, dropout, embedding.

Each could be composed from the primitives in ``ops.py``; written as one op,
its backward is a short closed-form expression a learner can derive on paper,
and it allocates a few arrays instead of a dozen. Each is gradchecked in the
tests like any primitive.

Layer norm and GELU are written twice (README, "Plain math first, fast path
beside it"): ``layer_norm_plain`` and ``gelu_plain`` as the formulas read, then
``layer_norm_fast`` and ``gelu_fast``, which build their results in place. The
public ``layer_norm`` and ``gelu`` run the fast one, or the plain one under
``minilora.fast_paths(False)``. Attention and the causal mask (written the same
way) live in ``attention.py``; the dropout mask in ``creation.py``; this module
offers them too, as ``attention``, ``causal_mask`` and ``dropout_mask``.
"""

from __future__ import annotations

import math

from minilora import backend
from minilora.attention import attention, causal_mask  # noqa: F401  (F.attention, F.causal_mask)
from minilora.broadcasting import operands
from minilora.creation import dropout_mask
from minilora.ops import mm
from minilora.tensor import Tensor, make_result


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, with W of shape (out_features, in_features) as in PyTorch.

    Backward, with G = dL/dy flattened to rows: dL/dx = G W, dL/dW = G^T x,
    dL/db = sum of G's rows. A frozen W (requires_grad False) skips the
    G^T x product entirely: this is where adapter training saves its time.
    """
    x, weight = operands(x, weight, "linear")
    if bias is not None:
        operands(x, bias, "linear")  # one device, one float dtype
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(
            f"linear: input's last dim is {x.shape[-1]} but weight {weight.shape} "
            f"expects in_features={weight.shape[-1]}"
        )
    # All leading dims folded into rows: one large matrix product, not a batch of
    # small ones (2-3x faster for (B, T, C) inputs with NumPy's BLAS).
    x_rows = x.data.reshape(-1, x.shape[-1])  # (N, in)
    out = mm(x_rows, weight.data.T)  # (N, out)
    if bias is not None:
        out += bias.data
    out = out.reshape(*x.shape[:-1], weight.shape[0])
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(g):
        rows = g.reshape(-1, g.shape[-1])  # (N, out)
        gx = mm(rows, weight.data).reshape(x.shape) if x.requires_grad else None
        gw = mm(rows.T, x_rows) if weight.requires_grad else None
        if bias is None:
            return gx, gw
        return gx, gw, rows.sum(axis=0) if bias.requires_grad else None

    return make_result(out, parents, backward, "linear")


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """s = exp(x - max) / sum exp(x - max); dL/dx = s * (g - sum(g * s))."""
    # BEGIN STUDENT: softmax
    xp = backend.get_array_module(x.data)
    e = xp.exp(x.data - x.data.max(axis=axis, keepdims=True))
    out = e / e.sum(axis=axis, keepdims=True)

    def backward(g):
        return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)

    return make_result(out, (x,), backward, "softmax")
    # END STUDENT: softmax


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """x - logsumexp(x); dL/dx = g - softmax(x) * sum(g)."""
    xp = backend.get_array_module(x.data)
    shifted = x.data - x.data.max(axis=axis, keepdims=True)
    out = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))

    def backward(g):
        return (g - xp.exp(out) * g.sum(axis=axis, keepdims=True),)

    return make_result(out, (x,), backward, "log_softmax")


def cross_entropy(logits: Tensor, targets, ignore_index: int = -100) -> Tensor:
    """Mean of -log softmax(logits)[target] over positions whose target is not ``ignore_index``.

    logits: (..., C); targets: integer class indices of shape (...). Fused with
    log-softmax, the gradient is (softmax(logits) - onehot(target)) / count.
    When every target is ignored the loss is 0 and so is the gradient.
    """
    t = targets.data if isinstance(targets, Tensor) else targets
    xp = backend.get_array_module(logits.data)
    t = xp.asarray(t)
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class indices, got {t.dtype}")
    if t.shape != logits.shape[:-1]:
        raise ValueError(
            f"cross_entropy: targets of shape {t.shape} do not match logits {logits.shape} "
            "(expected the logits' shape without its last, class, dimension)"
        )
    classes = logits.shape[-1]
    z = logits.data.reshape(-1, classes)
    t = t.reshape(-1)
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= classes))
    if bool(bad.any()):
        raise IndexError(
            f"cross_entropy: target {int(t[bad][0])} is outside [0, {classes}) "
            f"(and is not ignore_index={ignore_index})"
        )
    safe_t = xp.where(valid, t, 0)
    shifted = z - z.max(axis=1, keepdims=True)
    log_norm = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    picked = (shifted[xp.arange(len(t)), safe_t] - log_norm[:, 0]) * valid
    count = max(int(valid.sum()), 1)
    out = xp.asarray(-picked.sum() / count, dtype=logits.dtype)

    def backward(g):
        grad = xp.exp(shifted - log_norm)  # softmax
        grad[xp.arange(len(t)), safe_t] -= 1.0
        grad *= (valid * (g / count))[:, None].astype(grad.dtype)
        return (grad.reshape(logits.shape),)

    return make_result(out, (logits,), backward, "cross_entropy")


def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5) -> Tensor:
    """Normalise the last axis to zero mean, unit variance, then scale by ``weight``, add ``bias``.

    ``layer_norm_fast``, or ``layer_norm_plain`` with the fast paths off.
    """
    if backend.fast_paths_enabled():
        return layer_norm_fast(x, weight, bias, eps)
    return layer_norm_plain(x, weight, bias, eps)


def layer_norm_plain(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5
) -> Tensor:
    """mu = mean(x), var = mean((x - mu)^2), xhat = (x - mu) / sqrt(var + eps), out = xhat w + b.

    Means over the last axis; w = 1 without a weight, b = 0 without a bias. With
    G = dL/dxhat = g w, the backward is

        dL/dx = (G - mean(G) - xhat mean(G xhat)) / sqrt(var + eps)
        dL/dw = sum of g xhat,   dL/db = sum of g       (sums over every axis but the last)
    """
    for param in (weight, bias):
        if param is not None:
            operands(x, param, "layer_norm")  # one device, one float dtype
    # BEGIN STUDENT: layer_norm
    xp = backend.get_array_module(x.data)
    mu = x.data.mean(axis=-1, keepdims=True)
    var = ((x.data - mu) ** 2).mean(axis=-1, keepdims=True)
    sigma = xp.sqrt(var + eps)
    xhat = (x.data - mu) / sigma
    w = 1.0 if weight is None else weight.data
    b = 0.0 if bias is None else bias.data
    out = xhat * w + b
    parents = tuple(t for t in (x, weight, bias) if t is not None)

    def backward(g):
        lead = tuple(range(g.ndim - 1))  # every axis but the last
        G = g * w  # dL/dxhat
        gx = G - G.mean(axis=-1, keepdims=True) - xhat * (G * xhat).mean(axis=-1, keepdims=True)
        grads = [gx / sigma if x.requires_grad else None]
        if weight is not None:
            grads.append((g * xhat).sum(axis=lead) if weight.requires_grad else None)
        if bias is not None:
            grads.append(g.sum(axis=lead) if bias.requires_grad else None)
        return tuple(grads)

    return make_result(out, parents, backward, "layer_norm")
    # END STUDENT: layer_norm


def layer_norm_fast(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5
) -> Tensor:
    """``layer_norm_plain`` in blocks of rows on every core, times rstd = 1/sigma.

    The same formulas (dL/dx = rstd (G - mean(G) - xhat mean(G xhat))), rounded in
    another order: equal to the plain version to a few ulps. Its means and sums are
    products with a vector of ones (``backend.sum_last``, ``backend.sum_rows``), about 5x
    faster than NumPy's own on rows this short. It keeps each row's mean and
    rstd for the backward, which rebuilds xhat from them (the same bits), instead of a
    buffer the size of x. The blocks run on ``backend.cpu_threads()`` threads
    (``backend.for_row_blocks``). A stub in the student package (it would give
    ``layer_norm`` away), where the fast paths are off.
    """
    for param in (weight, bias):
        if param is not None:
            operands(x, param, "layer_norm")  # one device, one float dtype
    if x.data.size == 0:
        return layer_norm_plain(x, weight, bias, eps)
    # BEGIN ANSWER: layer_norm
    xp = backend.get_array_module(x.data)
    xs = _rows(x.data)
    rows, n = xs.shape
    out = xp.empty_like(xs)
    mean = xp.empty((rows, 1), dtype=xs.dtype)
    rstd = xp.empty((rows, 1), dtype=xs.dtype)

    def normalised(i, j):  # xhat of rows i..j: the same bits in the forward and the backward
        xhat = xs[i:j] - mean[i:j]
        xhat *= rstd[i:j]
        return xhat

    def normalise_rows(i, j):
        mean[i:j] = backend.sum_last(xs[i:j], 1.0 / n)
        xhat = xs[i:j] - mean[i:j]  # centred
        rstd[i:j] = 1.0 / xp.sqrt(backend.sum_last(xhat * xhat, 1.0 / n) + eps)
        xhat *= rstd[i:j]  # the same operations as normalised(i, j)
        if weight is not None:
            xp.multiply(xhat, weight.data, out=out[i:j])
        else:
            out[i:j] = xhat
        if bias is not None:
            out[i:j] += bias.data

    backend.for_row_blocks(normalise_rows, rows, n, xp)
    parents = tuple(t for t in (x, weight, bias) if t is not None)

    def backward(g):
        g = _rows(g)
        gx = xp.empty_like(xs) if x.requires_grad else None
        want_w = weight is not None and weight.requires_grad
        partial_w = {}  # {first row of a block: its sum of g * xhat}, added up in order

        def gradient_rows(i, j):
            xhat = normalised(i, j)
            g_xhat = g[i:j] * xhat
            if want_w:
                partial_w[i] = backend.sum_rows(g_xhat)
            if gx is None:
                return
            w = None if weight is None else weight.data
            gxhat = g[i:j] if w is None else g[i:j] * w  # G = dL/dxhat = g w
            block = gx[i:j]  # mean(G xhat) = mean(g xhat w), a product with w:
            xp.multiply(xhat, backend.sum_last(g_xhat, 1.0 / n, w), out=block)
            xp.subtract(gxhat, block, out=block)  # G - xhat mean(G xhat)
            block -= backend.sum_last(g[i:j], 1.0 / n, w)  # mean(G)
            block *= rstd[i:j]

        backend.for_row_blocks(gradient_rows, rows, n, xp)
        grads = [gx.reshape(x.shape) if gx is not None else None]
        if weight is not None:
            grads.append(sum(partial_w[i] for i in sorted(partial_w)) if want_w else None)
        if bias is not None:
            grads.append(backend.sum_rows(g) if bias.requires_grad else None)
        return tuple(grads)

    return make_result(out.reshape(x.shape), parents, backward, "layer_norm")
    # END ANSWER: layer_norm


_GELU_C = math.sqrt(2.0 / math.pi)


def gelu(x: Tensor) -> Tensor:
    """GELU in GPT-2's tanh form: ``gelu_fast``, or ``gelu_plain`` with the fast paths off."""
    return gelu_fast(x) if backend.fast_paths_enabled() else gelu_plain(x)


def gelu_plain(x: Tensor) -> Tensor:
    """out = 0.5 x (1 + t), t = tanh(c (x + 0.044715 x^3)), c = sqrt(2/pi).

    By the product and chain rules, with dt/dx = (1 - t^2) c (1 + 3 * 0.044715 x^2):

        dout/dx = 0.5 (1 + t) + 0.5 x dt/dx
    """
    xp = backend.get_array_module(x.data)
    a = x.data
    t = xp.tanh(_GELU_C * (a + 0.044715 * a**3))
    out = 0.5 * a * (1.0 + t)

    def backward(g):
        dt_dx = (1.0 - t**2) * _GELU_C * (1.0 + 3 * 0.044715 * a**2)
        return (g * (0.5 * (1.0 + t) + 0.5 * a * dt_dx),)

    return make_result(out, (x,), backward, "gelu")


def _rows(a):
    """``a`` as a 2-D array of rows (its last axis), a view when it can be."""
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


def _gelu_tanh(xp, u):
    """t = tanh(c (u + 0.044715 u^3)), grouped as tanh(c u (1 + 0.044715 u^2)), in one buffer."""
    t = xp.multiply(u, u)
    t *= 0.044715
    t += 1.0
    t *= u
    t *= _GELU_C
    return xp.tanh(t, out=t)


def gelu_fast(x: Tensor) -> Tensor:
    """``gelu_plain`` in blocks of rows on every core, keeping nothing for backward but x.

    The same formulas, grouped differently (c (a (1 + 0.044715 a^2)) for the tanh's
    argument): equal to the plain version to a few ulps. Each block's temporaries stay
    in the cache, and the blocks run on ``backend.cpu_threads()`` threads
    (``backend.for_row_blocks``). The backward computes t again from the input instead
    of keeping it from the forward (one tanh more; one buffer the size of the MLP's
    hidden layer less per block, as PyTorch's GELU, which keeps its input only).
    """
    xp = backend.get_array_module(x.data)
    if x.data.size == 0:
        return gelu_plain(x)
    a = _rows(x.data)
    out = xp.empty_like(a)

    def forward_rows(i, j):
        t = _gelu_tanh(xp, a[i:j])
        t += 1.0
        xp.multiply(t, a[i:j], out=out[i:j])
        out[i:j] *= 0.5

    backend.for_row_blocks(forward_rows, a.shape[0], a.shape[1], xp)

    def backward(g):
        g = _rows(g)
        slope = xp.empty_like(a)

        def backward_rows(i, j):
            # d/da = 0.5 (1 + t) + 0.5 a (1 - t^2) c (1 + 3 * 0.044715 a^2), built in place
            u, s = a[i:j], slope[i:j]
            t = _gelu_tanh(xp, u)
            xp.multiply(u, u, out=s)
            s *= 3 * 0.044715 * 0.5 * _GELU_C
            s += 0.5 * _GELU_C
            s *= u
            one_minus_t2 = t * t
            xp.subtract(1.0, one_minus_t2, out=one_minus_t2)
            s *= one_minus_t2
            s += 0.5
            t *= 0.5
            s += t
            s *= g[i:j]

        backend.for_row_blocks(backward_rows, a.shape[0], a.shape[1], xp)
        return (slope.reshape(x.shape),)

    return make_result(out.reshape(x.shape), (x,), backward, "gelu")


def dropout(x: Tensor, p: float, training: bool = True, generator=None) -> Tensor:
    """Inverted dropout: zero each element with probability p, scale survivors by 1/(1-p).

    Off (the identity) when ``training`` is False or p == 0. The mask comes from
    ``dropout_mask`` (the same mask for a seed on every device).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p={p} must be in [0, 1)")
    if not training or p == 0.0:
        return x
    keep = dropout_mask(x.shape, p, x.dtype, x.device, generator)
    return make_result(x.data * keep, (x,), lambda g: (g * keep,), "dropout")


def embedding(weight: Tensor, indices) -> Tensor:
    """Rows of ``weight`` picked by integer ``indices``; backward scatter-adds into those rows."""
    idx = indices.data if isinstance(indices, Tensor) else indices
    xp = backend.get_array_module(weight.data)
    idx = xp.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got {idx.dtype}")
    rows = weight.shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= rows):
        raise IndexError(
            f"embedding: index {int(idx.max()) if int(idx.max()) >= rows else int(idx.min())} "
            f"is outside [0, {rows}) (the table has {rows} rows)"
        )
    out = weight.data[idx]

    def backward(g):
        grad = xp.zeros_like(weight.data)
        backend.scatter_add(grad, idx.reshape(-1), g.reshape(-1, weight.shape[-1]))
        return (grad,)

    return make_result(out, (weight,), backward, "embedding")
