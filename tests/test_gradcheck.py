"""The gradient checker must pass correct backwards and catch wrong ones.

A checker that never fails proves nothing, so each wrong backward below is
built on purpose with ``make_result`` (the same way the engine builds its ops)
and ``gradcheck`` must raise ``GradcheckError`` naming the input, the index and
both values.
"""

from __future__ import annotations

import numpy as np
import pytest
from strategies import ATOL, EPS, RTOL, leaf

import minilora as ml
from minilora import ops
from minilora.gradcheck import GradcheckError, gradcheck
from minilora.tensor import make_result

MODES = ["elementwise", "direction"]


def square(x):
    """x ** 2 with the right backward, 2 g x."""
    return make_result(x.data * x.data, (x,), lambda g: (2.0 * g * x.data,), "square")


def wrong_square(x):
    """x ** 2 with a wrong backward: g x (the factor 2 forgotten)."""
    return make_result(x.data * x.data, (x,), lambda g: (g * x.data,), "wrong_square")


def wrong_add(a, b):
    """a + b whose backward forgets to sum b's gradient over broadcast rows."""
    return make_result(a.data + b.data, (a, b), lambda g: (g, g[0]), "wrong_add")


def check(fn, inputs, mode, **kwargs):
    return gradcheck(fn, inputs, eps=EPS, atol=ATOL, rtol=RTOL, mode=mode, **kwargs)


def inputs_for(device, *shapes):
    rng = np.random.default_rng(0)
    return [leaf(rng.uniform(0.5, 2.0, size=s), device) for s in shapes]


@pytest.mark.parametrize("mode", [*MODES, "auto"])
def test_passes_on_correct_backwards(mode, device):
    (x,) = inputs_for(device, (3, 4))
    assert check(square, [x], mode) is True
    assert check(lambda a: ops.tanh(a) @ ops.transpose(a), [x], mode) is True


@pytest.mark.parametrize("mode", MODES)
def test_raises_on_a_wrong_backward(mode, device):
    (x,) = inputs_for(device, (3, 4))
    with pytest.raises(GradcheckError, match="wrong_square"):
        check(wrong_square, [x], mode)


@pytest.mark.parametrize("mode", MODES)
def test_catches_a_missing_broadcast_sum(mode, device):
    a, b = inputs_for(device, (3, 4), (4,))
    with pytest.raises(GradcheckError):
        check(wrong_add, [a, b], mode)
    b.requires_grad = False  # a's gradient alone is right
    assert check(wrong_add, [a, b], mode)


def test_elementwise_message_names_input_index_and_both_values(device):
    a, b = inputs_for(device, (2, 3), (2, 3))
    with pytest.raises(GradcheckError) as info:
        check(lambda p, q: p * 3.0 + wrong_square(q), [a, b], "elementwise", seed=7)
    message = str(info.value)
    # the first wrong element: R[0, 0] * x vs 2 R[0, 0] x, R the seed-7 projection
    r = np.random.default_rng(7).standard_normal((2, 3))[0, 0]
    x = b.numpy()[0, 0]
    assert "input 1 (shape (2, 3)) at index (0, 0)" in message
    assert f"backward gives {r * x:.10g}" in message
    numeric = float(message.split("central difference gives ")[1].split(" ")[0])
    assert numeric == pytest.approx(2 * r * x, rel=1e-6)


def test_direction_message_names_inputs_and_both_values(device):
    (x,) = inputs_for(device, (30, 30))
    with pytest.raises(GradcheckError) as info:
        check(wrong_square, [x], "direction", name="my_op")
    message = str(info.value)
    assert "gradcheck of my_op along a random direction over inputs [0]" in message
    predicted = float(message.split("backward gives ")[1].split(",")[0])
    numeric = float(message.split("central difference gives ")[1].split(" ")[0])
    assert predicted == pytest.approx(numeric / 2, rel=1e-6)  # the lost factor of 2


def test_auto_mode_switches_to_a_direction_for_big_inputs(device):
    (small,) = inputs_for(device, (3, 3))
    (big,) = inputs_for(device, (30, 30))
    with pytest.raises(GradcheckError, match="at index"):
        check(wrong_square, [small], "auto")
    with pytest.raises(GradcheckError, match="random direction"):
        check(wrong_square, [big], "auto", max_elements=400)


def test_inputs_are_restored_and_grads_cleared(device):
    (x,) = inputs_for(device, (3, 2))
    before = x.numpy().copy()
    for mode in MODES:
        check(square, [x], mode)
    np.testing.assert_array_equal(x.numpy(), before)
    assert x.grad is None


def test_float32_inputs_are_refused(device):
    x = ml.tensor(np.ones((2, 2), dtype=np.float32), device=device, requires_grad=True)
    with pytest.raises(TypeError, match="input 0 is float32; use float64"):
        gradcheck(square, [x])


def test_bad_arguments(device):
    (x,) = inputs_for(device, (2,))
    with pytest.raises(ValueError, match="nothing to check"):
        gradcheck(square, [leaf(np.ones(2), device, requires_grad=False)])
    with pytest.raises(ValueError, match="mode='sideways'"):
        gradcheck(square, [x], mode="sideways")
    with pytest.raises(TypeError, match="expected a Tensor"):
        gradcheck(lambda t: t.numpy(), [x])


def test_gradcheck_error_is_an_assertion_error():
    assert issubclass(GradcheckError, AssertionError)
