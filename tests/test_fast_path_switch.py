"""The switch between fast paths and plain versions (README, "Plain math first, fast path
beside it"): ``minilora.fast_paths(False)`` as a call and as a ``with`` block,
``MINILORA_FAST_PATHS=0``, each public op following it, and a whole GPT with the fast paths
on and off. Each fast path against its plain version: tests/test_fast_paths.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import SEEDS, leaf, on, to_host

import minilora as ml
from minilora import attention as attn
from minilora import backend, broadcasting
from minilora import functional as F
from minilora.transformer import GPT, GPTConfig

DTYPES = st.sampled_from([np.float64, np.float32])


def largest(x) -> float:
    return float(np.max(np.abs(x), initial=0.0))


def test_switch_as_a_call_and_as_a_with_block_restores_the_previous_state():
    before = backend.fast_paths_enabled()
    try:
        ml.fast_paths(False)  # for the rest of the process
        assert not backend.fast_paths_enabled()
        with ml.fast_paths(True):
            assert backend.fast_paths_enabled()
            with ml.fast_paths(False):
                assert not backend.fast_paths_enabled()
            assert backend.fast_paths_enabled()
        assert not backend.fast_paths_enabled()  # the block restored the call's state
        ml.fast_paths(True)
        assert backend.fast_paths_enabled()
        with pytest.raises(KeyError), ml.fast_paths(False):
            raise KeyError("an error inside the block")
        assert backend.fast_paths_enabled()  # restored on the way out of an error too
    finally:
        ml.fast_paths(before)


@pytest.mark.parametrize(("env", "expected"), [("0", "False"), ("1", "True"), (None, "True")])
def test_environment_variable_sets_the_switch_at_import(env, expected):
    root = Path(__file__).resolve().parent.parent
    environ = {k: v for k, v in os.environ.items() if k != "MINILORA_FAST_PATHS"}
    if env is not None:
        environ["MINILORA_FAST_PATHS"] = env
    environ["PYTHONPATH"] = str(root)
    code = "import minilora.backend as b; print(b.fast_paths_enabled())"
    command = [sys.executable, "-c", code]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=environ, cwd=root)
    assert out.stdout.strip() == expected


def one_vector(device):
    return [leaf(np.linspace(-1.0, 1.0, 4), device)]


OPS = {  # public op, module, its versions' names, arguments
    "add": (broadcasting.add, broadcasting, "add", lambda d: one_vector(d) * 2),
    "sub": (broadcasting.sub, broadcasting, "sub", lambda d: one_vector(d) * 2),
    "mul": (broadcasting.mul, broadcasting, "mul", lambda d: one_vector(d) * 2),
    "div": (broadcasting.div, broadcasting, "div", lambda d: one_vector(d) * 2),
    "gelu": (F.gelu, F, "gelu", one_vector),
    "layer_norm": (F.layer_norm, F, "layer_norm", lambda d: one_vector(d) + [None, None]),
    "attention": (
        F.attention,
        attn,
        "attention",
        lambda d: [leaf(np.ones((2, 3)), d)] * 3 + [on(d, np.zeros((2, 2), dtype=bool))],
    ),
}


@pytest.mark.parametrize("name", OPS)
def test_each_public_op_runs_its_fast_version_unless_switched_off(name, monkeypatch, device):
    op, module, stem, args = OPS[name]
    calls = []
    for kind in ("plain", "fast"):
        real = getattr(module, f"{stem}_{kind}")
        monkeypatch.setattr(
            module, f"{stem}_{kind}", lambda *a, _r=real, _k=kind: calls.append(_k) or _r(*a)
        )
    op(*args(device))
    with ml.fast_paths(False):
        op(*args(device))
    op(*args(device))
    assert calls == ["fast", "plain", "fast"]


@st.composite
def gpt_cases(draw):
    """A small GPTConfig, a batch shape and a seed. d_model is at least 4: layer norm over
    2 or 3 numbers is ill-conditioned (rstd = 1 / |x1 - x2| amplifies a one-ulp difference)."""
    n_head = draw(st.integers(1, 2))
    config = GPTConfig(
        vocab_size=draw(st.integers(2, 12)),
        block_size=draw(st.integers(1, 6)),
        n_layer=draw(st.integers(1, 2)),
        n_head=n_head,
        d_model=n_head * draw(st.integers(4 // n_head, 4)),
        dropout=draw(st.sampled_from([0.0, 0.2])),
        bias=draw(st.booleans()),
    )
    B, T = draw(st.integers(1, 3)), draw(st.integers(1, config.block_size))
    return config, (B, T), draw(SEEDS)


GPT_TOL = {np.dtype(np.float64): 1e-11, np.dtype(np.float32): 1e-3}


@settings(max_examples=30, deadline=None)
@given(case=gpt_cases(), dtype=DTYPES)
def test_whole_gpt_same_loss_and_gradients_with_fast_paths_on_and_off(case, dtype, device):
    """Forward and backward of a random small GPT, weights redrawn large (attention far from
    uniform), dropout on with one seed. Differences of a few ulps in layer norm, GELU and
    attention pass through every layer after them, so the loss is compared to GPT_TOL
    relative (1e-11 in float64, 1e-3 in float32), the logits and every gradient to
    GPT_TOL of the largest logit and of the largest gradient of the model (measured
    over 1,500 random models: below 2e-14 in float64 and 1e-5 in float32)."""
    config, (B, T), seed = case
    rng = np.random.default_rng(seed)
    model = GPT(config, generator=rng).to(device=device, dtype=dtype)
    for p in model.parameters():
        p.data = on(device, to_host(p.data) + 0.5 * rng.standard_normal(p.shape).astype(dtype))
    idx, targets = rng.integers(0, config.vocab_size, (2, B, T))
    results = {}
    for fast in (True, False):
        model.zero_grad()
        with ml.fast_paths(fast):
            ml.manual_seed(seed)  # the same dropout masks
            logits, loss = model(idx, targets)
            loss.backward()
        grads = {n: to_host(p.grad) for n, p in model.named_parameters()}
        results[fast] = (loss.item(), to_host(logits.data), grads)
    (loss_f, logits_f, grads_f), (loss_p, logits_p, grads_p) = results[True], results[False]
    tol = GPT_TOL[np.dtype(dtype)]
    assert loss_f == pytest.approx(loss_p, rel=tol)
    np.testing.assert_allclose(logits_f, logits_p, rtol=0, atol=tol * largest(logits_p))
    scale = max(largest(g) for g in grads_p.values())
    for name, g in grads_f.items():
        assert g.dtype == dtype, name
        np.testing.assert_allclose(g, grads_p[name], rtol=0, atol=tol * scale, err_msg=name)
