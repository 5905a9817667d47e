"""Modules: parameter discovery and names, the layers against NumPy formulas, modes, state dicts."""

from __future__ import annotations

import numpy as np
import pytest

from minilora.creation import manual_seed
from minilora.nn import (
    Dropout,
    Embedding,
    LayerNorm,
    Linear,
    Module,
    ModuleDict,
    ModuleList,
    Parameter,
)
from minilora.tensor import Tensor
from minilora.transformer import GPT, GPTConfig

TINY = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=8)


def tiny_gpt(seed: int = 0, config: GPTConfig = TINY) -> GPT:
    manual_seed(seed)
    return GPT(config, generator=np.random.default_rng(seed))


# ---- names and parameter discovery ------------------------------------------------------


def test_gpt_parameter_names_follow_pytorch_conventions():
    model = tiny_gpt(config=GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8))
    block = ["ln_1.weight", "ln_1.bias"]
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        block += [f"attn.{proj}.weight", f"attn.{proj}.bias"]
    block += ["ln_2.weight", "ln_2.bias"]
    for fc in ("fc_in", "fc_out"):
        block += [f"mlp.{fc}.weight", f"mlp.{fc}.bias"]
    expected = (
        ["wte.weight", "wpe.weight"]
        + [f"blocks.0.{n}" for n in block]
        + ["ln_f.weight", "ln_f.bias"]
    )
    names = [n for n, _ in model.named_parameters()]
    assert names == expected  # the same names, in the order PyTorch would list them
    # the LM head is tied to the token embedding: no separate weight
    assert not any("lm_head" in n for n in names)


def test_gpt_parameter_shapes_and_count():
    c, v, t, layers = TINY.d_model, TINY.vocab_size, TINY.block_size, TINY.n_layer
    model = tiny_gpt()
    params = dict(model.named_parameters())
    assert params["wte.weight"].shape == (v, c)
    assert params["wpe.weight"].shape == (t, c)
    assert params["blocks.1.attn.q_proj.weight"].shape == (c, c)
    assert params["blocks.0.mlp.fc_in.weight"].shape == (4 * c, c)  # (out, in)
    assert params["blocks.0.mlp.fc_in.bias"].shape == (4 * c,)
    assert params["blocks.0.mlp.fc_out.weight"].shape == (c, 4 * c)
    per_block = 2 * 2 * c + 4 * (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c)
    expected = v * c + t * c + layers * per_block + 2 * c
    assert sum(p.size for p in model.parameters()) == expected
    assert len(model.parameters()) == len(params)


class _Shared(Module):
    def __init__(self):
        self.a = Linear(3, 3)
        self.b = Linear(3, 3)
        self.b.weight = self.a.weight  # tied, as a tied LM head would be
        self.scale = Parameter(np.ones(1, dtype=np.float32))

    def forward(self, x):
        return self.b(self.a(x)) * self.scale


def test_shared_parameter_is_listed_once_under_its_first_name():
    m = _Shared()
    names = [n for n, _ in m.named_parameters()]
    # PyTorch's order: the module's own parameters, then each child's in turn
    assert names == ["scale", "a.weight", "a.bias", "b.bias"]
    assert "b.weight" not in names
    assert len(m.parameters()) == 4
    assert len({id(p) for p in m.parameters()}) == 4
    assert set(m.state_dict()) == set(names)


def test_named_modules_and_get_submodule():
    model = tiny_gpt()
    names = [n for n, _ in model.named_modules()]
    assert names[0] == ""
    for expected in ("wte", "blocks", "blocks.0", "blocks.1.attn.v_proj", "blocks.0.mlp.fc_out"):
        assert expected in names
    assert model.get_submodule("blocks.1.attn.v_proj") is model.blocks[1].attn.v_proj
    with pytest.raises(KeyError):
        model.get_submodule("blocks.0.nope")
    new = Linear(8, 8)
    model.set_submodule("blocks.0.attn.k_proj", new)
    assert model.blocks[0].attn.k_proj is new
    with pytest.raises(KeyError):
        model.set_submodule("blocks.0.attn.nope", new)


# ---- layers against NumPy ---------------------------------------------------------------------


def test_linear_weight_shape_and_forward_equals_numpy():
    rng = np.random.default_rng(1)
    layer = Linear(5, 3, dtype=np.float64, generator=rng)
    assert layer.weight.shape == (3, 5)
    assert layer.bias.shape == (3,)
    bound = 1 / np.sqrt(5)
    assert np.all(np.abs(layer.weight.data) <= bound)
    assert np.all(np.abs(layer.bias.data) <= bound)
    x = rng.standard_normal((2, 4, 5))
    out = layer(Tensor(x)).numpy()
    w, b = layer.weight.data, layer.bias.data
    expected = np.einsum("btj,ij->bti", x, w) + b
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_linear_without_bias():
    rng = np.random.default_rng(2)
    layer = Linear(4, 6, bias=False, dtype=np.float64, generator=rng)
    assert layer.bias is None
    assert [n for n, _ in layer.named_parameters()] == ["weight"]
    x = rng.standard_normal((3, 4))
    np.testing.assert_allclose(layer(Tensor(x)).numpy(), x @ layer.weight.data.T, rtol=1e-12)


def test_linear_backward_matches_numpy():
    rng = np.random.default_rng(3)
    layer = Linear(4, 3, dtype=np.float64, generator=rng)
    x = Tensor(rng.standard_normal((5, 4)), requires_grad=True)
    g = rng.standard_normal((5, 3))
    layer(x).backward(g)
    np.testing.assert_allclose(layer.weight.grad, g.T @ x.data, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, g.sum(0), rtol=1e-12)
    np.testing.assert_allclose(x.grad, g @ layer.weight.data, rtol=1e-12)


def test_layer_norm_forward_equals_numpy_formula():
    rng = np.random.default_rng(4)
    ln = LayerNorm(6, eps=1e-5, dtype=np.float64)
    np.testing.assert_array_equal(ln.weight.data, np.ones(6))
    np.testing.assert_array_equal(ln.bias.data, np.zeros(6))
    ln.weight.data = rng.standard_normal(6)
    ln.bias.data = rng.standard_normal(6)
    x = rng.standard_normal((3, 2, 6)) * 3 + 1
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # biased variance, as PyTorch
    expected = (x - mean) / np.sqrt(var + 1e-5) * ln.weight.data + ln.bias.data
    np.testing.assert_allclose(ln(Tensor(x)).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_layer_norm_without_bias():
    ln = LayerNorm(4, bias=False, dtype=np.float64)
    assert ln.bias is None
    x = np.array([[1.0, 2.0, 3.0, 6.0]])
    out = ln(Tensor(x)).numpy()
    np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-12)
    # mean 3, deviations (-2, -1, 0, 3): variance 14 / 4 = 3.5
    np.testing.assert_allclose((out**2).mean(-1), 3.5 / (3.5 + 1e-5), rtol=1e-10)


def test_embedding_picks_rows():
    rng = np.random.default_rng(5)
    emb = Embedding(7, 3, generator=rng)
    assert emb.weight.shape == (7, 3)
    idx = np.array([[0, 6, 6], [2, 1, 0]])
    np.testing.assert_array_equal(emb(idx).numpy(), emb.weight.data[idx])


def test_dropout_is_identity_in_eval_mode():
    d = Dropout(0.5).eval()
    x = Tensor(np.arange(1.0, 101.0))
    np.testing.assert_array_equal(d(x).numpy(), x.numpy())


def test_dropout_train_mode_zeros_and_scales_survivors():
    p = 0.25
    d = Dropout(p)
    assert d.training
    manual_seed(123)
    x = np.random.default_rng(0).uniform(1.0, 2.0, 20000).astype(np.float32)
    out = d(Tensor(x)).numpy()
    dropped = out == 0
    # survivors are scaled by 1 / (1 - p): inverted dropout keeps the expectation
    np.testing.assert_allclose(out[~dropped], x[~dropped] / (1 - p), rtol=1e-6)
    assert abs(dropped.mean() - p) < 0.02
    assert abs(out.mean() - x.mean()) < 0.02
    # the mask comes from the global generator: the same seed, the same mask
    manual_seed(123)
    np.testing.assert_array_equal(d(Tensor(x)).numpy(), out)


def test_dropout_zero_is_identity_and_invalid_p_is_refused():
    x = Tensor(np.ones(10, dtype=np.float32))
    np.testing.assert_array_equal(Dropout(0.0)(x).numpy(), x.numpy())
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="p="):
            Dropout(bad)


def test_dropout_backward_uses_the_same_mask():
    d = Dropout(0.5)
    manual_seed(7)
    x = Tensor(np.ones(50), requires_grad=True)
    out = d(x)
    out.backward(np.ones(50))
    np.testing.assert_array_equal(x.grad, out.numpy())  # d(x*mask)/dx = mask = out for x = 1


# ---- containers ----------------------------------------------------------------------------------


def test_module_list():
    layers = ModuleList([Linear(2, 3), Linear(3, 4)])
    assert len(layers) == 2
    assert layers[1].out_features == 4
    assert layers[-1] is layers[1]
    assert [m.in_features for m in layers] == [2, 3]
    with pytest.raises(IndexError):
        layers[2]
    layers.append(Linear(4, 5))
    assert len(layers) == 3
    assert layers[2].out_features == 5
    names = [n for n, _ in layers.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"]
    assert len(ModuleList()) == 0


def test_module_dict():
    d = ModuleDict({"first": Linear(2, 2)})
    d["second"] = Linear(2, 3, bias=False)
    assert len(d) == 2
    assert d.keys() == ["first", "second"]
    assert "second" in d and "third" not in d
    assert d["second"].out_features == 3
    assert [n for n, _ in d.named_parameters()] == ["first.weight", "first.bias", "second.weight"]
    with pytest.raises(KeyError, match="third"):
        d["third"]
    with pytest.raises(ValueError):
        d["not an identifier"] = Linear(1, 1)
    del d["first"]
    assert d.keys() == ["second"]
    with pytest.raises(KeyError):
        del d["first"]


# ---- modes, gradients, dtypes -----------------------------------------------------------------


def test_train_and_eval_propagate_to_every_submodule():
    model = tiny_gpt(
        config=GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=8, dropout=0.5)
    )
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    # eval: dropout off, so two forwards agree exactly
    idx = np.array([[1, 2, 3, 4]])
    np.testing.assert_array_equal(model(idx)[0].numpy(), model(idx)[0].numpy())
    model.train()
    assert all(m.training for m in model.modules())
    manual_seed(0)
    a = model(idx)[0].numpy()
    b = model(idx)[0].numpy()
    assert not np.array_equal(a, b)  # dropout active in every block
    model.train(False)
    assert not model.blocks[1].mlp.dropout.training


def test_requires_grad_and_zero_grad():
    model = tiny_gpt()
    x = np.array([[1, 2, 3], [4, 5, 6]])
    _, loss = model(x, x)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())

    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())
    _, loss = model(x, x)
    assert not loss.requires_grad  # nothing to differentiate

    model.blocks[0].requires_grad_(True)
    _, loss = model(x, x)
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("blocks.0."):
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_module_to_float64():
    model = tiny_gpt()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x = np.array([[1, 2, 3]])
    _, loss = model(x, x)
    loss.backward()
    assert model.to(dtype=np.float64) is model
    for name, p in model.named_parameters():
        assert p.dtype == np.float64, name
        assert p.grad is None
        np.testing.assert_array_equal(p.data, before[name].astype(np.float64))
    logits, loss = model(x, x)
    assert logits.dtype == np.float64 and loss.dtype == np.float64
    loss.backward()
    assert model.wte.weight.grad.dtype == np.float64


# ---- state dicts -------------------------------------------------------------------------------


def test_state_dict_round_trip_is_exact():
    a, b = tiny_gpt(seed=1), tiny_gpt(seed=2)
    state = a.state_dict()
    assert list(state) == [n for n, _ in a.named_parameters()]
    assert not np.array_equal(state["wte.weight"], b.state_dict()["wte.weight"])
    missing, unexpected = b.load_state_dict(state)
    assert missing == [] and unexpected == []
    for name, value in b.state_dict().items():
        assert value.dtype == state[name].dtype
        np.testing.assert_array_equal(value, state[name])
    x = np.array([[3, 1, 4, 1, 5]])
    np.testing.assert_array_equal(a(x)[0].numpy(), b(x)[0].numpy())
    # the parameters got copies: changing the source afterwards changes nothing
    state["wte.weight"][...] = 0.0
    assert np.any(b.wte.weight.data != 0.0)


def test_load_state_dict_strict_reports_every_problem():
    model = tiny_gpt()
    state = {k: v.copy() for k, v in model.state_dict().items()}
    del state["blocks.1.attn.k_proj.bias"]
    state["blocks.0.attn.lora_A"] = np.zeros((2, 8), dtype=np.float32)
    state["wpe.weight"] = np.zeros((4, 8), dtype=np.float32)
    before = model.wte.weight.data.copy()
    with pytest.raises(KeyError) as info:
        model.load_state_dict(state)
    message = str(info.value)
    assert "blocks.1.attn.k_proj.bias" in message and "missing" in message
    assert "blocks.0.attn.lora_A" in message and "unexpected" in message
    assert "wpe.weight" in message and "(4, 8)" in message and "(8, 8)" in message
    np.testing.assert_array_equal(model.wte.weight.data, before)  # nothing half-loaded


def test_load_state_dict_non_strict():
    a, b = tiny_gpt(seed=1), tiny_gpt(seed=2)
    state = {k: v.copy() for k, v in a.state_dict().items() if not k.startswith("blocks.1.")}
    state["extra.weight"] = np.zeros(3, dtype=np.float32)
    old_block1 = b.blocks[1].attn.q_proj.weight.data.copy()
    missing, unexpected = b.load_state_dict(state, strict=False)
    assert missing == [n for n, _ in b.named_parameters() if n.startswith("blocks.1.")]
    assert unexpected == ["extra.weight"]
    np.testing.assert_array_equal(b.wte.weight.data, a.wte.weight.data)
    np.testing.assert_array_equal(b.blocks[1].attn.q_proj.weight.data, old_block1)
    # a shape mismatch is an error even when not strict
    state["wte.weight"] = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(KeyError, match="wte.weight"):
        b.load_state_dict(state, strict=False)


def test_load_state_dict_casts_to_the_parameter_dtype():
    model = tiny_gpt()
    state = {k: v.astype(np.float64) + 1.0 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    assert model.wte.weight.dtype == np.float32
    np.testing.assert_array_equal(model.wte.weight.data, state["wte.weight"].astype(np.float32))


def test_strict_loading_refuses_an_unexpected_key_that_is_the_only_problem():
    """A checkpoint with every key of the model plus one it does not know: strict loading
    raises, names that key and loads nothing; ``strict=False`` loads the rest and returns
    it. Kills tools/mutants.py's ``strict_load_ignores_unexpected``:
    ``strict and missing`` instead of ``strict and (missing or unexpected)``."""
    a, b = tiny_gpt(seed=1), tiny_gpt(seed=2)
    extra = "blocks.0.attn.q_proj.lora_A.default.weight"
    state = {k: v.copy() for k, v in a.state_dict().items()}
    state[extra] = np.zeros((2, 8), dtype=np.float32)
    before = {k: v.copy() for k, v in b.state_dict().items()}
    with pytest.raises(KeyError) as info:
        b.load_state_dict(state)
    message = str(info.value)
    assert "unexpected keys" in message and extra in message
    assert "missing" not in message and "shape" not in message
    for name, value in b.state_dict().items():
        np.testing.assert_array_equal(value, before[name])  # nothing loaded
    assert b.load_state_dict(state, strict=False) == ([], [extra])
    for name, value in b.state_dict().items():
        np.testing.assert_array_equal(value, state[name])
