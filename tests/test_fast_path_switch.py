"""The switch between the fast twins (minilora/fast/) and the formulas of the core:
``minilora.fast_paths(False)`` as a call and as a ``with`` block, ``MINILORA_FAST_PATHS=0``,
each op with a twin following it, a core without minilora/fast/ (the student package), and
a whole GPT with the fast paths on and off. Each twin against its formula:
tests/test_fast_paths.py.
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
from minilora import backend, fast
from minilora import functional as F
from minilora.lora import LoRAConfig, LoRALinear, inject_lora
from minilora.nn import Linear
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


def lora_layer(device):
    layer = LoRALinear(Linear(4, 3, generator=np.random.default_rng(0))).to(device)
    layer.add_adapter("default", LoRAConfig(r=2))
    return [layer, leaf(np.ones((2, 4), dtype=np.float32), device)]


OPS = {  # the twin's name in the registry: (the public op, its arguments)
    "functional.gelu": (F.gelu, one_vector),
    "functional.layer_norm": (F.layer_norm, lambda d: one_vector(d) + [None, None]),
    "functional.attention": (
        F.attention,
        lambda d: [leaf(np.ones((2, 3)), d)] * 3 + [on(d, np.zeros((2, 2), dtype=bool))],
    ),
    "lora.LoRALinear.forward": (LoRALinear.forward, lora_layer),
}


def test_every_twin_is_tested_here_and_replaces_an_op_marked_fast_twin():
    assert set(OPS) == set(fast.TWINS)
    for name, (op, _) in OPS.items():
        assert op.twin_name == name and callable(op.plain)


@pytest.mark.parametrize("name", OPS)
def test_each_op_runs_its_twin_unless_switched_off(name, monkeypatch, device):
    op, args = OPS[name]
    calls = []
    twin = fast.TWINS[name]
    monkeypatch.setitem(backend._twins, name, lambda *a: calls.append("twin") or twin(*a))
    op(*args(device))
    with ml.fast_paths(False):
        before = len(calls)
        op(*args(device))
        assert len(calls) == before  # the formula ran
    op(*args(device))
    assert calls == ["twin", "twin"]


def test_without_the_fast_folder_every_op_runs_its_formula(tmp_path):
    """The student package leaves minilora/fast/ out: nothing is installed, the core runs.

    A copy of the package without the folder, found first on the path: its ``import
    minilora`` must not borrow ``minilora.fast`` from an installed (editable) reference."""
    import shutil

    package = Path(ml.__file__).parent
    shutil.copytree(
        package,
        tmp_path / "minilora",
        ignore=shutil.ignore_patterns("fast", "__pycache__", "paper"),
    )
    code = "import minilora as m, minilora.backend as b; print(len(b._twins), m.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    twins, where = out.stdout.split()
    assert twins == "0" and where.startswith(str(tmp_path))


def test_uninstall_and_install_a_twin_by_name():
    try:
        fast.uninstall(["functional.gelu"])
        assert "functional.gelu" not in backend._twins
        assert "functional.layer_norm" in backend._twins
    finally:
        fast.install(["functional.gelu"])
    assert backend._twins["functional.gelu"] is fast.TWINS["functional.gelu"]


def test_a_seeded_gpt_with_lora_trains_to_the_same_loss_with_twins_on_and_off():
    """LoRA's twin (one op) and the formula (four ops) on a whole model: the same step."""
    losses = {}
    for on_ in (True, False):
        model = GPT(
            GPTConfig(vocab_size=11, block_size=8, d_model=8, n_head=2, n_layer=1),
            generator=np.random.default_rng(0),
        )
        inject_lora(model, LoRAConfig(r=2), generator=np.random.default_rng(1))
        opt = ml.optim.AdamW(model.parameters(), lr=0.1)
        idx = np.random.default_rng(2).integers(0, 11, (2, 8))
        with ml.fast_paths(on_):
            for _ in range(3):
                _, loss = model(idx[:, :-1], idx[:, 1:])
                opt.zero_grad()
                loss.backward()
                opt.step()
        losses[on_] = loss.item()
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


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
    for twins_on in (True, False):
        model.zero_grad()
        with ml.fast_paths(twins_on):
            ml.manual_seed(seed)  # the same dropout masks
            logits, loss = model(idx, targets)
            loss.backward()
        grads = {n: to_host(p.grad) for n, p in model.named_parameters()}
        results[twins_on] = (loss.item(), to_host(logits.data), grads)
    (loss_f, logits_f, grads_f), (loss_p, logits_p, grads_p) = results[True], results[False]
    tol = GPT_TOL[np.dtype(dtype)]
    assert loss_f == pytest.approx(loss_p, rel=tol)
    np.testing.assert_allclose(logits_f, logits_p, rtol=0, atol=tol * largest(logits_p))
    scale = max(largest(g) for g in grads_p.values())
    for name, g in grads_f.items():
        assert g.dtype == dtype, name
        np.testing.assert_allclose(g, grads_p[name], rtol=0, atol=tol * scale, err_msg=name)
