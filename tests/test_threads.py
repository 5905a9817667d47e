"""Element-wise work on every core: ``backend.for_row_blocks`` and the fast paths built on it.

GELU, layer norm and attention's softmax cut their rows into blocks and share the blocks
among threads. The
blocks must cover every row once, whatever the thread count; errors in a worker must
reach the caller; and the results must be the same bits on one thread or many (so a
run is repeatable on any machine), and equal to the plain versions. The tests shrink
the blocks to a few numbers so that small Hypothesis shapes make many of them.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilora import Tensor, attention, backend
from minilora import functional as F


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of at most 5 numbers: a (4, 3) array is 4 blocks of one row."""
    monkeypatch.setattr(backend, "BLOCK_ELEMENTS", 5)


def with_threads(monkeypatch, n: int) -> None:
    monkeypatch.setattr(backend, "_threads", n)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize(("rows", "row_size"), [(0, 4), (1, 1), (7, 1), (10, 3), (33, 2)])
def test_blocks_cover_every_row_once(tiny_blocks, monkeypatch, threads, rows, row_size):
    with_threads(monkeypatch, threads)
    seen, names, lock = [], set(), threading.Lock()

    def work(start, stop):
        with lock:
            seen.extend(range(start, stop))
            names.add(threading.current_thread().name)

    backend.for_row_blocks(work, rows, row_size)
    assert sorted(seen) == list(range(rows))
    blocks = -(-rows // max(1, 5 // row_size)) if rows else 1
    assert 1 <= len(names) <= min(threads, blocks)
    if min(threads, blocks) > 1:  # the work was shared: a pool of the other threads exists
        assert backend._pool._max_workers >= min(threads, blocks) - 1


def test_an_error_in_a_worker_reaches_the_caller(tiny_blocks, monkeypatch):
    with_threads(monkeypatch, 3)

    def work(start, stop):
        if start == 4:
            raise ArithmeticError(f"block {start}..{stop}")

    with pytest.raises(ArithmeticError, match="block 4"):
        backend.for_row_blocks(work, rows=9, row_size=2)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MINILORA_NUM_THREADS": "3", "OMP_NUM_THREADS": "1"}, 3),
        ({"OMP_NUM_THREADS": "4"}, 1),  # opt-in only: MINILORA_NUM_THREADS
        ({"OPENBLAS_NUM_THREADS": "2"}, 1),
    ],
)
def test_thread_count_comes_from_the_environment(monkeypatch, env, expected):
    for name in ("MINILORA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with_threads(monkeypatch, None)
    assert backend.cpu_threads() == expected


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_bad_thread_count_is_named(monkeypatch, value):
    monkeypatch.setenv("MINILORA_NUM_THREADS", value)
    with_threads(monkeypatch, None)
    with pytest.raises(ValueError, match=rf"MINILORA_NUM_THREADS='{value}'.*whole number"):
        backend.cpu_threads()


shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)


def run(fn, x, g, threads, monkeypatch):
    """Output and input gradient of fn at x, on ``threads`` threads."""
    with_threads(monkeypatch, threads)
    t = Tensor(x, requires_grad=True)
    out = fn(t)
    out.backward(g)
    return out.data, t.grad


def assert_same_bits_and_plain(results, fast, plain, tol):
    """``results(fn, threads, mp)`` -> arrays, with blocks of at most 5 numbers: the fast
    version gives the same bits on 1 and 3 threads, and equals the plain one to ``tol``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backend, "BLOCK_ELEMENTS", 5)
        one, many = results(fast, 1, mp), results(fast, 3, mp)
        reference = results(plain, 1, mp)
    for a, c, p in zip(one, many, reference, strict=True):
        assert np.array_equal(a, c)
        np.testing.assert_allclose(a, p, rtol=tol, atol=tol)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_gelu_same_bits_on_any_thread_count_and_equal_to_plain(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 3
    g = rng.standard_normal(shape)
    results = lambda fn, threads, mp: run(fn, x, g, threads, mp)  # noqa: E731
    assert_same_bits_and_plain(results, F.gelu_fast, F.gelu_plain, 1e-12)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), affine=st.booleans())
def test_layer_norm_same_bits_on_any_thread_count_and_equal_to_plain(shape, seed, affine):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 1
    g = rng.standard_normal(shape)
    n = shape[-1]
    w = Tensor(rng.standard_normal(n), requires_grad=True) if affine else None
    b = Tensor(rng.standard_normal(n), requires_grad=True) if affine else None

    def results(fn, threads, mp):
        for p in (w, b):
            if p is not None:
                p.grad = None
        out, gx = run(lambda t: fn(t, w, b), x, g, threads, mp)
        return [out, gx] + ([w.grad.copy(), b.grad.copy()] if affine else [])

    assert_same_bits_and_plain(results, F.layer_norm_fast, F.layer_norm_plain, 1e-10)


@settings(max_examples=40, deadline=None)
@given(
    lead=st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple),
    T=st.integers(1, 5),
    D=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    causal=st.booleans(),
)
def test_attention_same_bits_on_any_thread_count_and_equal_to_plain(lead, T, D, seed, causal):
    """The softmax runs a few (T, T) matrices at a time: blocks of one matrix here."""
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((*lead, T, D)) for _ in range(3))
    g = rng.standard_normal((*lead, T, D))
    hidden = np.triu(np.ones((T, T), dtype=bool), 1) if causal else rng.random((*lead, T, T)) < 0.4

    def results(fn, threads, mp):
        with_threads(mp, threads)
        leaves = [Tensor(a, requires_grad=True) for a in (q, k, v)]
        out = fn(*leaves, hidden)
        out.backward(g)
        return [out.data] + [t.grad for t in leaves]

    assert_same_bits_and_plain(results, attention.attention_fast, attention.attention_plain, 1e-10)


def arrays_held(fn) -> list:
    """The arrays a backward closure holds, through the functions it calls, too."""
    found, todo = [], [fn]
    while todo:
        for cell in todo.pop().__closure__ or ():
            value = cell.cell_contents
            if isinstance(value, np.ndarray):
                found.append(value)
            elif callable(value) and getattr(value, "__closure__", None):
                todo.append(value)
    return found


@pytest.mark.parametrize(
    "op", [F.gelu_fast, lambda t: F.layer_norm_fast(t, None, None)], ids=["gelu", "layer_norm"]
)
def test_the_backward_keeps_no_buffer_as_large_as_x_besides_x(op):
    """GELU rebuilds t and layer norm rebuilds xhat: neither keeps a copy of x's size."""
    x = Tensor(np.random.default_rng(0).standard_normal((64, 32)), requires_grad=True)
    out = op(x)
    held = arrays_held(out._backward)
    assert any(np.shares_memory(a, x.data) for a in held)  # the search does find arrays
    assert [a.shape for a in held if a.size >= x.size and not np.shares_memory(a, x.data)] == []
