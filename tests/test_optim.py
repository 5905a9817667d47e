"""Optimizers against hand-written NumPy references, state only for trainable parameters,
gradient clipping, and the learning-rate schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minilora.nn import Parameter
from minilora.optim import SGD, AdamW, clip_grad_norm, cosine_lr


def make_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(shape).astype(dtype)) for shape in ((3, 4), (5,), (2, 2))]


def grad_sequence(params, steps=3, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(steps)]


def run(optimizer, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.copy()
        optimizer.step()
    return [p.data.copy() for p in params]


# ---- AdamW ------------------------------------------------------------------------------------


def adamw_reference(p, grads, lr, b1, b2, eps, wd):
    """PyTorch's documented AdamW, step by step, in plain NumPy."""
    p = p.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        p = p - lr * wd * p  # decoupled weight decay, before the Adam update
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize(
    "lr, betas, eps, wd",
    [
        (1e-3, (0.9, 0.999), 1e-8, 0.0),
        (0.1, (0.8, 0.95), 1e-8, 0.1),
        (0.05, (0.5, 0.9), 0.3, 0.5),  # a large eps: its place in the formula matters
    ],
)
def test_adamw_matches_reference(lr, betas, eps, wd):
    params = make_params()
    initial = [p.data.copy() for p in params]
    grads = grad_sequence(params)
    opt = AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    final = run(opt, params, grads)
    assert opt.step_count == 3
    for i, (p0, p3) in enumerate(zip(initial, final)):
        expected = adamw_reference(p0, [g[i] for g in grads], lr, *betas, eps, wd)
        np.testing.assert_allclose(p3, expected, rtol=1e-12, atol=1e-14)


def test_adamw_first_step_moves_each_element_by_lr():
    # m_hat / sqrt(v_hat) = g / |g| at t = 1: every element moves by lr against its gradient
    # (eps must be > 0; 1e-300 is far below float64's resolution next to these |g|)
    p = Parameter(np.array([1.0, -2.0, 3.0]))
    opt = AdamW([p], lr=0.01, eps=1e-300, weight_decay=0.0)
    p.grad = np.array([5.0, -0.001, 0.2])
    opt.step()
    np.testing.assert_allclose(p.data, [0.99, -1.99, 2.99], rtol=1e-14)


def test_adamw_float32_keeps_dtype_and_matches_reference():
    params = make_params(np.float32)
    initial = [p.data.copy() for p in params]
    grads = grad_sequence(params)
    opt = AdamW(params, lr=0.01, weight_decay=0.1)
    final = run(opt, params, grads)
    for i, (p0, p3) in enumerate(zip(initial, final)):
        assert p3.dtype == np.float32
        assert opt.state[id(params[i])]["m"].dtype == np.float32
        expected = adamw_reference(
            p0, [g[i].astype(np.float64) for g in grads], 0.01, 0.9, 0.999, 1e-8, 0.1
        )
        np.testing.assert_allclose(p3, expected, rtol=1e-5, atol=1e-6)


def test_param_groups_have_their_own_hyperparameters():
    a, b = make_params()[:2]
    a0, b0 = a.data.copy(), b.data.copy()
    grads = grad_sequence([a, b])
    opt = AdamW(
        [{"params": [a], "weight_decay": 0.5}, {"params": [b], "lr": 0.2}],
        lr=0.01,
        weight_decay=0.0,
    )
    run(opt, [a, b], grads)
    np.testing.assert_allclose(
        a.data, adamw_reference(a0, [g[0] for g in grads], 0.01, 0.9, 0.999, 1e-8, 0.5), rtol=1e-12
    )
    np.testing.assert_allclose(
        b.data, adamw_reference(b0, [g[1] for g in grads], 0.2, 0.9, 0.999, 1e-8, 0.0), rtol=1e-12
    )
    opt.set_lr(0.123)
    assert [g["lr"] for g in opt.param_groups] == [0.123, 0.123]


def test_parameter_without_grad_is_skipped():
    a, b = make_params()[:2]
    b0 = b.data.copy()
    opt = AdamW([a, b], lr=0.1)
    a.grad = np.ones_like(a.data)
    opt.step()
    np.testing.assert_array_equal(b.data, b0)
    assert id(b) not in opt.state and id(a) in opt.state


# ---- SGD --------------------------------------------------------------------------------------


def sgd_reference(p, grads, lr, momentum, wd):
    """PyTorch's SGD (dampening 0, no Nesterov) in plain NumPy."""
    p = p.copy()
    buf = None
    for g in grads:
        d = g + wd * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + d
            d = buf
        p = p - lr * d
    return p


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_sgd_matches_reference(momentum, wd):
    params = make_params()
    initial = [p.data.copy() for p in params]
    grads = grad_sequence(params)
    opt = SGD(params, lr=0.1, momentum=momentum, weight_decay=wd)
    final = run(opt, params, grads)
    for i, (p0, p3) in enumerate(zip(initial, final)):
        expected = sgd_reference(p0, [g[i] for g in grads], 0.1, momentum, wd)
        np.testing.assert_allclose(p3, expected, rtol=1e-12, atol=1e-14)
    # momentum is the only state SGD keeps
    assert (len(opt.state) > 0) == bool(momentum)


def test_sgd_plain_step_by_hand():
    p = Parameter(np.array([1.0, 2.0]))
    opt = SGD([p], lr=0.5)
    p.grad = np.array([0.2, -4.0])
    opt.step()
    np.testing.assert_allclose(p.data, [0.9, 4.0])


# ---- state only for trainable parameters --------------------------------------------------------


def test_state_only_for_trainable_parameters():
    rng = np.random.default_rng(0)
    params = [Parameter(rng.standard_normal((4, 3)).astype(np.float32)) for _ in range(6)]
    for p in params[::2]:
        p.requires_grad_(False)
    frozen_before = [p.data.copy() for p in params[::2]]
    for p in params:
        p.grad = np.ones_like(p.data)  # even a stray gradient on a frozen one is ignored
    opt = AdamW(params, lr=0.1)
    assert [id(p) for p in opt.params] == [id(p) for p in params[1::2]]
    opt.step()
    assert set(opt.state) == {id(p) for p in params[1::2]}
    trainable_elements = sum(p.size for p in params[1::2])
    assert opt.state_bytes() == 2 * 4 * trainable_elements
    for p, before in zip(params[::2], frozen_before):
        np.testing.assert_array_equal(p.data, before)
    opt.zero_grad()
    assert all(p.grad is None for p in params[1::2])


def test_no_trainable_parameter_raises():
    frozen = [Parameter(np.zeros(3), requires_grad=False)]
    with pytest.raises(ValueError, match="no parameter"):
        AdamW(frozen)
    with pytest.raises(ValueError, match="no parameter"):
        SGD(frozen)
    with pytest.raises(ValueError):
        SGD([])


# ---- gradient clipping --------------------------------------------------------------------------


def test_clip_grad_norm_scales_to_max_norm():
    params = make_params()
    grads = grad_sequence(params, steps=1)[0]
    for p, g in zip(params, grads):
        p.grad = g * 10
    norm = np.sqrt(sum(float(((g * 10) ** 2).sum()) for g in grads))
    returned = clip_grad_norm(params, max_norm=1.0)
    assert returned == pytest.approx(norm, rel=1e-12)  # the norm before clipping
    after = np.sqrt(sum(float((p.grad**2).sum()) for p in params))
    assert after == pytest.approx(1.0, rel=1e-5)
    for p, g in zip(params, grads):  # the direction is unchanged
        np.testing.assert_allclose(p.grad, g * 10 / norm, rtol=1e-5)


def test_clip_grad_norm_leaves_small_gradients_alone():
    params = make_params()
    grads = grad_sequence(params, steps=1)[0]
    for p, g in zip(params, grads):
        p.grad = g.copy()
    norm = np.sqrt(sum(float((g**2).sum()) for g in grads))
    assert clip_grad_norm(params, max_norm=norm * 2) == pytest.approx(norm, rel=1e-12)
    for p, g in zip(params, grads):
        np.testing.assert_array_equal(p.grad, g)


def test_clip_grad_norm_hand_example_and_missing_grads():
    a = Parameter(np.array([3.0, 0.0]))
    b = Parameter(np.array([[4.0]]))
    c = Parameter(np.array([1.0]))  # no gradient: ignored
    a.grad, b.grad = np.array([3.0, 0.0]), np.array([[4.0]])
    assert clip_grad_norm([a, b, c], 2.5) == pytest.approx(5.0)
    np.testing.assert_allclose(a.grad, [1.5, 0.0], rtol=1e-6)
    np.testing.assert_allclose(b.grad, [[2.0]], rtol=1e-6)
    assert c.grad is None
    assert clip_grad_norm([c], 1.0) == 0.0


# ---- learning-rate schedule ---------------------------------------------------------------------


def test_cosine_lr_values():
    max_lr, min_lr, warmup, total = 1.0, 0.1, 10, 110
    lrs = [cosine_lr(s, max_lr, warmup, total, min_lr) for s in range(total + 5)]
    # linear warm-up: equal increments, reaching the peak
    warm = np.array(lrs[: warmup + 1])
    np.testing.assert_allclose(np.diff(warm[:warmup]), max_lr / warmup, rtol=1e-12)
    assert lrs[0] == pytest.approx(max_lr / warmup)
    assert lrs[warmup] == pytest.approx(max_lr)
    assert max(lrs) == pytest.approx(max_lr)
    # cosine decay: the midpoint is halfway between max and min, then min at the end
    assert lrs[warmup + (total - warmup) // 2] == pytest.approx((max_lr + min_lr) / 2)
    quarter = warmup + (total - warmup) // 4
    expected_quarter = min_lr + (max_lr - min_lr) * (1 + math.cos(math.pi / 4)) / 2
    assert lrs[quarter] == pytest.approx(expected_quarter)
    assert lrs[total] == pytest.approx(min_lr)
    assert lrs[total + 4] == pytest.approx(min_lr)
    decay = np.array(lrs[warmup:])
    assert np.all(np.diff(decay) <= 1e-15)  # never rises after the peak
    assert min(lrs) >= min_lr - 1e-15


def test_cosine_lr_without_warmup():
    assert cosine_lr(0, 0.5, 0, 100) == pytest.approx(0.5)
    assert cosine_lr(50, 0.5, 0, 100) == pytest.approx(0.25)
    assert cosine_lr(100, 0.5, 0, 100) == pytest.approx(0.0)


def test_a_group_lr_scale_multiplies_its_rate_at_start_and_at_every_set_lr():
    a, b = make_params()[:2]
    opt = AdamW([{"params": [a]}, {"params": [b], "lr_scale": 4.0}], lr=1e-2)
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 4e-2]
    opt.set_lr(3e-3)
    assert [g["lr"] for g in opt.param_groups] == [3e-3, pytest.approx(1.2e-2)]
    with pytest.raises(ValueError, match=r"param group 1.*lr_scale"):
        AdamW([{"params": [a]}, {"params": [b], "lr_scale": -1.0}], lr=1e-2)
