"""Fast twins of ``functional.layer_norm`` and ``functional.gelu``: in place, in blocks of rows.

Both run the formulas of functional.py, grouped to build each result in a buffer it
owns, a block of rows at a time (``sums.row_blocks``) so that each pass stays in the
cache, with row sums as BLAS products (``sums.sum_last``). Equal to the formulas to a
few ulps (tests/test_fast_paths.py).
"""

from __future__ import annotations

from minilora import backend
from minilora.functional import GELU_C, check_params
from minilora.functional import gelu as plain_gelu
from minilora.functional import layer_norm as plain_layer_norm
from minilora.tensor import Tensor, make_result

from .sums import as_rows, row_blocks, sum_last, sum_rows, sum_squares


def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5) -> Tensor:
    """``functional.layer_norm`` times rstd = 1/sigma, keeping each row's mean and rstd.

    The same formulas (dL/dx = rstd (G - mean(G) - xhat mean(G xhat))), rounded in another
    order. The backward rebuilds xhat from the mean and rstd (the same bits as the forward's)
    instead of keeping a buffer the size of x.
    """
    check_params(x, (weight, bias), "layer_norm")
    if x.data.size == 0:
        return plain_layer_norm.plain(x, weight, bias, eps)
    # BEGIN ANSWER: layer_norm
    xp = backend.get_array_module(x.data)
    xs = as_rows(x.data)
    rows, n = xs.shape
    w = None if weight is None else weight.data
    out = xp.empty_like(xs)
    mean = sum_last(xs, 1.0 / n)  # (rows, 1), one matrix-vector product
    rstd = xp.empty_like(mean)
    blocks = row_blocks(rows, n, xp)
    for i, j in blocks:  # xhat, then xhat w + b, built in out a block of rows at a time
        block = out[i:j]
        xp.subtract(xs[i:j], mean[i:j], out=block)  # centred
        rstd[i:j] = 1.0 / xp.sqrt(sum_squares(block, 1.0 / n) + eps)
        block *= rstd[i:j]  # xhat, the same operations as the backward's
        if w is not None:
            block *= w
        if bias is not None:
            block += bias.data
    parents = tuple(t for t in (x, weight, bias) if t is not None)

    def backward(g):
        g = as_rows(g)
        gx = xp.empty_like(xs) if x.requires_grad else None
        want_w = weight is not None and weight.requires_grad
        gw = 0.0
        xhat, g_xhat = (xp.empty_like(xs[: blocks[0][1]]) for _ in range(2))  # scratch
        for i, j in blocks:
            xh, gxh, gi = xhat[: j - i], g_xhat[: j - i], g[i:j]
            xp.subtract(xs[i:j], mean[i:j], out=xh)  # xhat: the same bits as the forward's
            xh *= rstd[i:j]
            xp.multiply(gi, xh, out=gxh)
            if want_w:
                gw = gw + sum_rows(gxh)
            if gx is None:
                continue
            block = gx[i:j]  # G - xhat mean(G xhat) - mean(G), G = dL/dxhat = g w
            if w is None:
                block[...] = gi
            else:
                xp.multiply(gi, w, out=block)
            xh *= sum_last(gxh, 1.0 / n, w)  # mean(G xhat) = mean(g xhat w), a product with w
            block -= xh
            block -= sum_last(gi, 1.0 / n, w)  # mean(G)
            block *= rstd[i:j]
        grads = [gx.reshape(x.shape) if gx is not None else None]
        if weight is not None:
            grads.append(gw if want_w else None)
        if bias is not None:
            grads.append(sum_rows(g) if bias.requires_grad else None)
        return tuple(grads)

    return make_result(out.reshape(x.shape), parents, backward, "layer_norm")
    # END ANSWER: layer_norm


def _gelu_tanh(xp, u):
    """t = tanh(c (u + 0.044715 u^3)), grouped as tanh(c u (1 + 0.044715 u^2)), in one buffer."""
    t = xp.multiply(u, u)
    t *= 0.044715
    t += 1.0
    t *= u
    t *= GELU_C
    return xp.tanh(t, out=t)


def gelu(x: Tensor) -> Tensor:
    """``functional.gelu`` keeping nothing for backward but x (as PyTorch's GELU).

    The tanh's argument grouped as c (a (1 + 0.044715 a^2)); the backward computes t again
    from the input instead of keeping it (one tanh more, one buffer the size of the MLP's
    hidden layer less).
    """
    xp = backend.get_array_module(x.data)
    if x.data.size == 0:
        return plain_gelu.plain(x)
    a = as_rows(x.data)
    out = xp.empty_like(a)
    blocks = row_blocks(a.shape[0], a.shape[1], xp)
    for i, j in blocks:
        t = _gelu_tanh(xp, a[i:j])
        t += 1.0
        xp.multiply(t, a[i:j], out=out[i:j])
        out[i:j] *= 0.5

    def backward(g):
        g = as_rows(g)
        slope = xp.empty_like(a)
        for i, j in blocks:
            # d/da = 0.5 (1 + t) + 0.5 a (1 - t^2) c (1 + 3 * 0.044715 a^2), built in place
            u, s = a[i:j], slope[i:j]
            t = _gelu_tanh(xp, u)
            xp.multiply(u, u, out=s)
            s *= 3 * 0.044715 * 0.5 * GELU_C
            s += 0.5 * GELU_C
            s *= u
            one_minus_t2 = t * t
            xp.subtract(1.0, one_minus_t2, out=one_minus_t2)
            s *= one_minus_t2
            s += 0.5
            t *= 0.5
            s += t
            s *= g[i:j]
        return (slope.reshape(x.shape),)

    return make_result(out.reshape(x.shape), (x,), backward, "gelu")
