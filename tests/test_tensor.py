"""The Tensor and its graph: gradient semantics, dtypes, seeding, errors, frozen weights."""

from __future__ import annotations

import numpy as np
import pytest
from strategies import leaf, on, to_host

import minilora as ml
from minilora import functional as F
from minilora import ops


def values(shape, seed=0):
    """float64 values in [0.5, 2): safe for every op (log, sqrt, div), no ties for max."""
    return np.random.default_rng(seed).uniform(0.5, 2.0, size=shape)


# ---- gradient semantics ------------------------------------------------------------
def test_gradients_accumulate_across_backward_calls(device):
    x = leaf([1.0, -2.0, 3.0], device)
    (x * x).sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), [2.0, -4.0, 6.0])
    (x * x).sum().backward()  # a second graph: the gradient adds up (doubles)
    np.testing.assert_array_equal(to_host(x.grad), [4.0, -8.0, 12.0])
    x.grad = None  # how to start afresh
    (x * x).sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), [2.0, -4.0, 6.0])


def test_retain_graph_allows_a_second_backward(device):
    x = leaf([1.0, 2.0], device)
    y = (ops.exp(x) * x).sum()
    y.backward(retain_graph=True)
    once = to_host(x.grad).copy()
    y.backward()
    np.testing.assert_allclose(to_host(x.grad), 2 * once, rtol=1e-15)


def test_second_backward_without_retain_graph_is_an_error(device):
    x = leaf([1.0, 2.0], device)
    y = (x * 3.0).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()
    np.testing.assert_array_equal(to_host(x.grad), [3.0, 3.0])  # not silently changed


def test_only_leaves_keep_grad_and_each_owns_its_buffer(device):
    a, b = leaf([1.0, 2.0], device), leaf([3.0, 4.0], device)
    hidden = a + b
    hidden.sum().backward()
    assert hidden.grad is None and not hidden.is_leaf and a.is_leaf
    a.grad += 1.0  # a's buffer is its own, not shared with b's
    np.testing.assert_array_equal(to_host(b.grad), [1.0, 1.0])


def test_shared_input_gets_every_path(device):
    x = leaf([2.0], device)
    y = x * x + x * 3.0 + ops.exp(x * 0.0)  # d/dx = 2x + 3
    y.sum().backward()
    np.testing.assert_allclose(to_host(x.grad), [7.0])


def test_deep_graph_does_not_hit_the_recursion_limit(device):
    x = leaf([0.5], device)
    y = x
    for _ in range(5000):  # 5000 nodes deep, Python's recursion limit is 1000
        y = y + x
    y.sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), [5001.0])
    np.testing.assert_array_equal(y.numpy(), [5001 * 0.5])


# ---- no_grad and detach ---------------------------------------------------------------
def test_no_grad_records_no_graph(device):
    x = leaf([1.0, 2.0], device)
    with ml.no_grad():
        assert not ml.is_grad_enabled()
        y = ops.exp(x) * 2.0 + x
    assert ml.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf and y._parents == () and y._backward is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_as_decorator_and_after_an_exception(device):
    @ml.no_grad()
    def double(t):
        """Doubles."""
        return t * 2.0

    x = leaf([1.0], device)
    assert not double(x).requires_grad
    assert double.__name__ == "double" and double.__doc__ == "Doubles."
    assert ml.is_grad_enabled()
    with pytest.raises(ZeroDivisionError), ml.no_grad():
        raise ZeroDivisionError
    assert ml.is_grad_enabled()
    assert (x * 2.0).requires_grad


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_detach(dtype, device):
    x = leaf(np.array([1.0, 2.0], dtype=dtype), device)
    d = (x * 2.0).detach()
    assert not d.requires_grad and d.is_leaf and d.dtype == dtype
    np.testing.assert_array_equal(d.numpy(), [2.0, 4.0])
    assert x.sum().detach().dtype == dtype  # also for a full reduction (a 0-d result)
    (x * x.detach()).sum().backward()  # the detached factor is a constant
    np.testing.assert_array_equal(to_host(x.grad), [1.0, 2.0])


def test_item_and_numpy(device):
    x = leaf([[1.5, 2.0]], device)
    total = x.sum()
    assert total.item() == 3.5 and isinstance(total.item(), float)
    for t in (x, total, ops.exp(x[0, 0]), x * 2.0):
        assert isinstance(t.numpy(), np.ndarray)
    assert total.numpy().shape == () and x.numpy().shape == (1, 2)
    assert ml.tensor([[2.0]], device=device).item() == 2.0
    with pytest.raises(ValueError, match="one element"):
        x.item()


def test_zero_dim_leaves_get_array_gradients(device):
    x = leaf(np.array(0.5), device)
    ops.exp(x * 2.0).backward()
    assert type(x.grad) is type(x.data) and x.grad.shape == ()
    assert x.grad.item() == pytest.approx(2 * np.exp(1.0))


# ---- dtypes ------------------------------------------------------------------------------
# Every op, as fn(device, *tensors), and the shapes of its float inputs.
OP_CASES = {
    "add": (lambda d, a, b: a + b, [(2, 3), (3,)]),
    "sub": (lambda d, a, b: a - b, [(2, 3), (1, 3)]),
    "mul": (lambda d, a, b: a * b, [(2, 3), (3,)]),
    "div": (lambda d, a, b: a / b, [(2, 3), (3,)]),
    "neg": (lambda d, a: -a, [(2, 3)]),
    "pow": (lambda d, a: a**1.5, [(2, 3)]),
    "matmul": (lambda d, a, b: a @ b, [(4, 2, 3), (3, 5)]),
    "sum": (lambda d, a: ops.sum(a), [(2, 3)]),
    "mean": (lambda d, a: ops.mean(a, axis=1), [(2, 3)]),
    "max": (lambda d, a: ops.max(a, axis=1), [(2, 3)]),
    "exp": (lambda d, a: ops.exp(a), [(2, 3)]),
    "log": (lambda d, a: ops.log(a), [(2, 3)]),
    "sqrt": (lambda d, a: ops.sqrt(a), [(2, 3)]),
    "tanh": (lambda d, a: ops.tanh(a), [(2, 3)]),
    "relu": (lambda d, a: ops.relu(a - 1.0), [(2, 3)]),
    "getitem": (lambda d, a: a[1:, on(d, [0, 0, 2])], [(2, 3)]),
    "reshape": (lambda d, a: a.reshape(3, 2), [(2, 3)]),
    "transpose": (lambda d, a: a.transpose(), [(2, 3)]),
    "permute": (lambda d, a: a.permute(1, 0), [(2, 3)]),
    "concat": (lambda d, a, b: ops.concat([a, b], axis=1), [(2, 3), (2, 2)]),
    "stack": (lambda d, a, b: ops.stack([a, b], axis=1), [(2, 3), (2, 3)]),
    "split": (lambda d, a: ops.split(a, [1, 2])[1], [(2, 3)]),
    "where": (lambda d, a, b: ops.where(on(d, [True, False, True]), a, b), [(2, 3), (3,)]),
    "masked_fill": (lambda d, a: a.masked_fill(on(d, [True, False, True]), -1e9), [(2, 3)]),
    "linear": (lambda d, x, w, b: F.linear(x, w, b), [(2, 3), (4, 3), (4,)]),
    "softmax": (lambda d, a: F.softmax(a), [(2, 3)]),
    "log_softmax": (lambda d, a: F.log_softmax(a, axis=0), [(2, 3)]),
    "cross_entropy": (lambda d, a: F.cross_entropy(a, on(d, [0, 2])), [(2, 3)]),
    "layer_norm": (lambda d, x, w, b: F.layer_norm(x, w, b), [(2, 3), (3,), (3,)]),
    "gelu": (lambda d, a: F.gelu(a), [(2, 3)]),
    "dropout": (lambda d, a: F.dropout(a, 0.5), [(2, 3)]),
    "embedding": (lambda d, w: F.embedding(w, on(d, [[0, 0], [1, 0]])), [(2, 3)]),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", OP_CASES)
def test_dtype_is_preserved(name, dtype, device):
    """float32 in gives float32 out and float32 gradients (no silent promotion), float64 too."""
    fn, input_shapes = OP_CASES[name]
    inputs = [leaf(values(s, i).astype(dtype), device) for i, s in enumerate(input_shapes)]
    out = fn(device, *inputs)
    assert out.dtype == dtype and out.device == device
    (out * out).sum().backward()
    for i, t in enumerate(inputs):
        assert t.grad is not None and t.grad.dtype == dtype, f"{name}: gradient of input {i}"
        assert t.grad.shape == t.shape and type(t.grad) is type(t.data)


def test_tensor_dtype_defaults(device):
    assert ml.tensor([1.0, 2.0], device=device).dtype == np.float32
    assert ml.tensor(3.0, device=device).dtype == np.float32
    assert ml.tensor([1, 2], device=device).dtype.kind == "i"
    assert ml.tensor(np.zeros(2), device=device).dtype == np.float64  # arrays keep theirs
    assert ml.zeros(2, 3, device=device).dtype == np.float32


# ---- seeding ---------------------------------------------------------------------------------
def test_manual_seed_repeats_bit_for_bit(device):
    ml.manual_seed(1234)
    first = [ml.randn(3, 4, device=device).numpy(), ml.rand(5, device=device).numpy()]
    ml.manual_seed(1234)
    again = [ml.randn(3, 4, device=device).numpy(), ml.rand(5, device=device).numpy()]
    for a, b in zip(first, again):
        assert a.dtype == b.dtype == np.float32 and a.tobytes() == b.tobytes()
    assert ml.randn(3, 4).numpy().tobytes() != first[0].tobytes()  # the stream moved on


def test_generator_argument_is_independent_of_the_global_seed(device):
    ml.manual_seed(0)
    plain = ml.randn(4).numpy()
    ml.manual_seed(0)
    own = ml.randn(4, device=device, generator=np.random.default_rng(9)).numpy()
    assert ml.randn(4).numpy().tobytes() == plain.tobytes()  # the global stream was not used
    again = ml.randn(4, device=device, generator=np.random.default_rng(9)).numpy()
    assert own.tobytes() == again.tobytes()
    on_cpu = ml.randn(4, device="cpu", generator=np.random.default_rng(9)).numpy()
    assert own.tobytes() == on_cpu.tobytes()  # the same numbers on every device


# ---- errors that name the problem ----------------------------------------------------------
@pytest.mark.parametrize("op", [ops.add, ops.sub, ops.mul, ops.div])
def test_shapes_that_do_not_broadcast(op, device):
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4,\) do not broadcast"):
        op(leaf(values((2, 3)), device), leaf(values((4,)), device))


def test_matmul_inner_dimension_mismatch(device):
    a, b = leaf(values((2, 3)), device), leaf(values((4, 5)), device)
    with pytest.raises(ValueError, match=r"inner dimensions differ: \(2, 3\) @ \(4, 5\)"):
        a @ b
    with pytest.raises(ValueError, match="at least 2-D"):
        ops.matmul(leaf(values((3,)), device), b)
    with pytest.raises(ValueError, match="batch dimensions"):
        ops.matmul(leaf(values((2, 2, 3)), device), leaf(values((3, 3, 1)), device))


def test_backward_errors(device):
    x = leaf(values((2, 2)), device)
    with pytest.raises(RuntimeError, match=r"non-scalar tensor of shape \(2, 2\) needs grad="):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), expected \(2, 2\)"):
        (x * 2.0).backward(on(device, np.ones(3)))
    with pytest.raises(RuntimeError, match="does not require grad"):
        leaf(values((2,)), device, requires_grad=False).sum().backward()


def test_requires_grad_on_an_integer_tensor(device):
    with pytest.raises(TypeError, match="floating-point"):
        ml.tensor([1, 2, 3], device=device, requires_grad=True)
    with pytest.raises(TypeError, match="int64"):
        ml.arange(3, device=device).requires_grad_()


MIXED = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "matmul": lambda a, b: a @ b,
    "where": lambda a, b: ops.where(a.data > 1, a, b),
    "linear weight": lambda a, b: F.linear(a, b),
    "linear bias": lambda a, b: F.linear(a, ml.tensor(b.data.astype(a.dtype)), b[0]),
    "concat": lambda a, b: ops.concat([a, b]),
    "stack": lambda a, b: ops.stack([a, b]),
    "layer_norm": lambda a, b: F.layer_norm(a, b[0], None),
}


@pytest.mark.parametrize("name", MIXED)
def test_mixing_float32_and_float64_is_an_error(name, device):
    a = leaf(values((3, 3)).astype(np.float32), device)
    b = leaf(values((3, 3)), device)
    with pytest.raises(TypeError, match="float32 and float64"):
        MIXED[name](a, b)


def test_cross_entropy_bad_targets(device):
    logits = leaf(values((2, 3)), device)
    with pytest.raises(IndexError, match=r"target 5 is outside \[0, 3\)"):
        F.cross_entropy(logits, on(device, [0, 5]))
    with pytest.raises(IndexError, match=r"target -1 is outside \[0, 3\)"):
        F.cross_entropy(logits, on(device, [-1, 0]))
    with pytest.raises(TypeError, match="integer class indices"):
        F.cross_entropy(logits, on(device, [0.0, 1.0]))
    with pytest.raises(ValueError, match=r"targets of shape \(3,\) do not match"):
        F.cross_entropy(logits, on(device, [0, 1, 2]))


def test_embedding_index_out_of_range(device):
    table = leaf(values((4, 2)), device)
    with pytest.raises(IndexError, match=r"index 7 is outside \[0, 4\)"):
        F.embedding(table, on(device, [1, 7]))
    with pytest.raises(IndexError, match=r"index -1 is outside \[0, 4\)"):
        F.embedding(table, on(device, [-1, 2]))


def test_shape_op_errors(device):
    x = leaf(values((2, 3)), device)
    with pytest.raises(ValueError, match=r"cannot reshape \(2, 3\) \(6 elements\) into \(4,\)"):
        x.reshape(4)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        x.sum(axis=2)
    with pytest.raises(ValueError, match="not a permutation"):
        x.permute(0, 0)
    with pytest.raises(ValueError, match="add up to 2, not 3"):
        ops.split(x, [1, 1], axis=1)
    with pytest.raises(ValueError, match="one shape"):
        ops.stack([x, x[0]])
    with pytest.raises(ValueError, match="in_features=3"):
        F.linear(leaf(values((2, 4)), device), x)
    with pytest.raises(TypeError, match="exponent must be a number"):
        x**x


# ---- frozen weights: no weight-gradient product (the source of LoRA's savings) ------------
@pytest.fixture
def products(monkeypatch):
    """Every matrix product the engine computes, counted (ops.mm and functional's copy)."""
    calls = []
    real_mm = ops.mm

    def counting_mm(x, y):
        calls.append((x.shape, y.shape))
        return real_mm(x, y)

    monkeypatch.setattr(ops, "mm", counting_mm)
    monkeypatch.setattr(F, "mm", counting_mm)
    return calls


@pytest.mark.parametrize("op", ["linear", "matmul"])
@pytest.mark.parametrize("x_grad, w_grad, backward_products", [
    (True, True, 2), (True, False, 1), (False, True, 1)
])  # fmt: skip
def test_frozen_weight_costs_no_weight_gradient_product(
    op, x_grad, w_grad, backward_products, products, device
):
    x = leaf(values((2, 3, 4)), device, requires_grad=x_grad)
    if op == "linear":
        w = leaf(values((5, 4)), device, requires_grad=w_grad)
        out = F.linear(x, w)
    else:
        w = leaf(values((4, 5)), device, requires_grad=w_grad)
        out = ops.matmul(x, w)
    assert len(products) == 1  # the forward product
    out.sum().backward()
    assert len(products) == 1 + backward_products
    assert (w.grad is None) is not w_grad  # a frozen weight gets no gradient
    assert (x.grad is None) is not x_grad


def test_lora_shaped_layer_skips_only_the_frozen_product(products, device):
    """y = x W^T + (x A^T) B^T with W frozen: 3 forward products, 2 + 2 + 1 backward."""
    # an activation from a trainable layer below; 2 x 5 = 10 rows, so no product of x's
    # rows can be mistaken for W's (6, 8) shape
    x = leaf(values((2, 5, 8)), device)
    w = leaf(values((6, 8)), device, requires_grad=False)
    a, b = leaf(values((2, 8), 1), device), leaf(values((6, 2), 2), device)
    y = F.linear(x, w) + F.linear(F.linear(x, a), b)
    assert len(products) == 3
    y.sum().backward()
    assert len(products) == 3 + 5
    assert w.grad is None and a.grad.shape == (2, 8) and b.grad.shape == (6, 2)
    outputs = [(x_shape[-2], y_shape[-1]) for x_shape, y_shape in products[3:]]
    assert (6, 8) not in outputs  # no product the shape of W's gradient was computed


# ---- nested no_grad (issue 32) ------------------------------------------------------------
def test_nested_no_grad_restores_the_state_each_block_found(device):
    """Each exit restores what its enter found: inside an outer ``no_grad`` an inner one
    (a block, a decorated function, a block left by an exception) leaves gradients off;
    only the outermost exit turns them back on. Kills tools/mutants.py's
    ``no_grad_exit_enables``: ``_grad_enabled = True`` in ``__exit__`` instead of
    ``_grad_enabled = self._previous``."""
    x = leaf([1.0, 2.0], device)
    inner = ml.no_grad()(lambda t: t * 2.0)
    with ml.no_grad():
        with ml.no_grad():
            pass
        assert not ml.is_grad_enabled()
        assert not (x * 2.0).requires_grad  # no graph after the inner block either
        inner(x)
        assert not ml.is_grad_enabled()
        with pytest.raises(ZeroDivisionError), ml.no_grad():
            raise ZeroDivisionError
        assert not ml.is_grad_enabled()
    assert ml.is_grad_enabled()
    assert (x * 2.0).requires_grad


def test_backward_refuses_a_grad_of_the_right_size_but_the_wrong_shape(device):
    """Kills the mutant backward_grad_any_shape (tools/mutants.py): a transposed grad has
    as many elements as the tensor, and the backward would reshape it without a word."""
    x = leaf(values((2, 3)), device)
    with pytest.raises(ValueError, match=r"grad has shape \(3, 2\), expected \(2, 3\)"):
        (x * 2.0).backward(on(device, np.ones((3, 2))))
    assert x.grad is None
