"""The GPT: config validation, gradients of every parameter, causality, generation, learning."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora.creation import manual_seed
from minilora.gradcheck import gradcheck
from minilora.optim import AdamW
from minilora.tensor import no_grad
from minilora.transformer import GPT, GPTConfig, KVCache, sample_next

TINY = dict(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8)


def make_gpt(seed=0, dtype=np.float64, scale=0.5, **overrides) -> GPT:
    """A tiny GPT; with ``scale`` the weights are redrawn larger than GPT-2's init
    (and the LayerNorm gains away from 1), so attention is far from uniform and
    every parameter has a gradient well above round-off."""
    manual_seed(seed)
    config = GPTConfig(**{**TINY, **overrides})
    model = GPT(config, generator=np.random.default_rng(seed)).to(dtype=dtype)
    if scale:
        rng = np.random.default_rng(seed + 1000)
        for p in model.parameters():
            p.data = (p.data + scale * rng.standard_normal(p.shape)).astype(dtype)
    return model.eval()


@functools.cache
def cached_gpt() -> GPT:
    return make_gpt(seed=3)


# ---- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(d_model=10, n_head=4), "divisible"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(block_size=-1), "block_size"),
        (dict(n_layer=0), "n_layer"),
        (dict(n_head=2.0), "n_head"),
        (dict(d_model="8"), "d_model"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
    ],
)
def test_config_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**TINY, **fields})


def test_config_dict_round_trip():
    config = GPTConfig(
        vocab_size=13,
        block_size=9,
        n_layer=3,
        n_head=3,
        d_model=12,
        dropout=0.25,
        bias=False,
        layer_norm_eps=1e-6,
    )
    d = config.to_dict()
    assert d["d_model"] == 12 and d["bias"] is False and d["dropout"] == 0.25
    again = GPTConfig.from_dict(json.loads(json.dumps(d)))  # through JSON, as in a checkpoint
    assert again == config
    with pytest.raises(ValueError, match="n_embd"):
        GPTConfig.from_dict({**d, "n_embd": 12})


def test_config_without_bias_has_no_bias_parameters():
    model = GPT(GPTConfig(**{**TINY, "bias": False}))
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())


# ---- gradients ----------------------------------------------------------------------------------


def test_gradcheck_whole_gpt_every_parameter():
    """Central differences in float64 over every element of every parameter of a tiny GPT."""
    model = make_gpt(seed=0, scale=0.3)
    params = model.parameters()
    assert len(params) == 20 and all(p.requires_grad for p in params)
    rng = np.random.default_rng(0)
    x = rng.integers(0, TINY["vocab_size"], (2, 5))
    y = rng.integers(0, TINY["vocab_size"], (2, 5))
    y[1, 2] = -100  # an ignored target too

    def loss(*_params):  # the parameters are perturbed in place by gradcheck
        return model(x, y)[1]

    # the gradient must be checked against something that is not tiny everywhere
    model.zero_grad()
    loss().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    # two gradients are zero by the maths: rows of positions >= 5 are never used, and
    # the key bias adds q . b_k to every score of a row, which softmax ignores
    np.testing.assert_array_equal(grads.pop("wpe.weight")[5:], 0.0)
    np.testing.assert_allclose(grads.pop("blocks.0.attn.k_proj.bias"), 0.0, atol=1e-12)
    for name, g in grads.items():
        assert np.abs(g).max() > 1e-4, name
    model.zero_grad()

    assert gradcheck(
        loss, params, eps=1e-6, atol=1e-7, rtol=1e-5, mode="elementwise", name="GPT loss"
    )


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    """The whole-model gradcheck above can fail: break one backward and it does."""
    from minilora import functional as F
    from minilora.gradcheck import GradcheckError
    from minilora.tensor import make_result

    real_gelu = F.gelu

    def wrong_gelu(x):
        out = real_gelu(x)
        return make_result(out.data, (x,), lambda g: (g * 0.5,), "gelu")

    monkeypatch.setattr(F, "gelu", wrong_gelu)  # the MLP calls F.gelu at run time
    model = make_gpt(seed=0, scale=0.3)
    x = np.array([[1, 2, 3]])
    with pytest.raises(GradcheckError):
        gradcheck(lambda *_: model(x, x)[1], [model.blocks[0].mlp.fc_in.weight], mode="elementwise")


# ---- causality ----------------------------------------------------------------------------------


@given(data=st.data())
def test_causality(data):
    model = cached_gpt()
    vocab, block = model.config.vocab_size, model.config.block_size
    T = data.draw(st.integers(2, block), label="T")
    t = data.draw(st.integers(0, T - 2), label="t")
    tokens = st.integers(0, vocab - 1)
    seq = data.draw(st.lists(tokens, min_size=T, max_size=T), label="seq")
    tail = data.draw(st.lists(tokens, min_size=T - t - 1, max_size=T - t - 1), label="tail")
    changed = seq[: t + 1] + tail
    with no_grad():
        a = model(np.array([seq]))[0].numpy()
        b = model(np.array([changed]))[0].numpy()
    np.testing.assert_allclose(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-12)
    if tail != seq[t + 1 :]:
        first = t + 1 + next(i for i, (u, v) in enumerate(zip(tail, seq[t + 1 :])) if u != v)
        assert not np.allclose(a[:, first], b[:, first])  # the change is seen where it is


def test_changing_an_early_token_changes_later_logits():
    model = cached_gpt()
    with no_grad():
        a = model(np.array([[1, 2, 3, 4, 5]]))[0].numpy()
        b = model(np.array([[7, 2, 3, 4, 5]]))[0].numpy()
    for pos in range(5):
        assert np.abs(a[0, pos] - b[0, pos]).max() > 1e-6, pos


def test_batch_rows_are_independent():
    model = cached_gpt()
    rows = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 10, 9]])
    with no_grad():
        together = model(rows)[0].numpy()
        for i in range(3):
            alone = model(rows[i : i + 1])[0].numpy()
            np.testing.assert_allclose(together[i], alone[0], rtol=1e-12, atol=1e-12)


# ---- loss and length limits ---------------------------------------------------------------------


def test_loss_equals_numpy_cross_entropy():
    model = cached_gpt()
    rng = np.random.default_rng(1)
    x = rng.integers(0, 11, (2, 6))
    y = rng.integers(0, 11, (2, 6))
    logits, loss = model(x, y)
    z = logits.numpy()
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    expected = -np.mean(np.take_along_axis(logp, y[..., None], -1))
    assert logits.shape == (2, 6, 11)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_too_long_input_raises():
    model = cached_gpt()
    with pytest.raises(ValueError, match="block_size"):
        model(np.zeros((1, 9), dtype=np.int64))


def test_initial_loss_is_close_to_log_vocab():
    manual_seed(0)
    config = GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, d_model=16)
    model = GPT(config, generator=np.random.default_rng(0))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, (8, 16))
    y = rng.integers(0, 20, (8, 16))
    with no_grad():
        _, loss = model(x, y)
    assert loss.dtype == np.float32
    assert abs(loss.item() - math.log(20)) < 0.3


def test_gpt2_initialisation():
    manual_seed(0)
    config = GPTConfig(vocab_size=20, block_size=16, n_layer=4, n_head=2, d_model=64)
    model = GPT(config, generator=np.random.default_rng(0))
    params = dict(model.named_parameters())
    np.testing.assert_array_equal(params["blocks.0.attn.q_proj.bias"].data, 0.0)
    np.testing.assert_array_equal(params["blocks.2.ln_1.weight"].data, 1.0)
    np.testing.assert_array_equal(params["ln_f.bias"].data, 0.0)
    assert params["blocks.0.mlp.fc_in.weight"].data.std() == pytest.approx(0.02, rel=0.1)
    resid = 0.02 / math.sqrt(2 * 4)
    assert params["blocks.3.mlp.fc_out.weight"].data.std() == pytest.approx(resid, rel=0.1)
    assert params["blocks.1.attn.o_proj.weight"].data.std() == pytest.approx(resid, rel=0.15)


# ---- generation ---------------------------------------------------------------------------------


def slow_greedy(model: GPT, idx: np.ndarray, n: int) -> np.ndarray:
    """Greedy decoding that recomputes the forward pass over the last block_size tokens."""
    out = idx.copy()
    with no_grad():
        for _ in range(n):
            logits = model(out[:, -model.config.block_size :])[0].numpy()
            out = np.concatenate([out, logits[:, -1].argmax(-1)[:, None]], axis=1)
    return out


def test_generate_shape_and_prompt():
    model = cached_gpt()
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    out = model.generate(prompt, max_new_tokens=4, temperature=1.0, seed=0)
    assert out.shape == (2, 7)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out[:, :3], prompt)
    assert out.min() >= 0 and out.max() < model.config.vocab_size
    one_d = model.generate(np.array([1, 2]), max_new_tokens=3, temperature=0)
    assert one_d.shape == (1, 5)
    # the whole block can be used
    assert model.generate(prompt[:, :1], max_new_tokens=7, temperature=0).shape == (2, 8)


def test_greedy_is_deterministic_and_matches_full_recompute():
    model = cached_gpt()
    prompt = np.array([[1, 2, 3], [9, 0, 4]])
    a = model.generate(prompt, max_new_tokens=5, temperature=0)
    b = model.generate(prompt, max_new_tokens=5, temperature=0, seed=123)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, slow_greedy(model, prompt, 5))
    assert len(set(a[:, 3:].ravel().tolist())) > 1  # not a degenerate constant output


def test_generation_past_the_context_slides_a_window_of_block_size_tokens():
    model = cached_gpt()  # block_size 8
    for prompt in (np.array([[1, 2, 3, 4, 5]]), np.arange(11)[None] % 11):  # shorter, longer
        out = model.generate(prompt, max_new_tokens=9, temperature=0)
        assert out.shape == (1, prompt.shape[1] + 9)
        np.testing.assert_array_equal(out, slow_greedy(model, prompt, 9))


def test_greedy_with_cache_matches_recompute_in_float32():
    model = make_gpt(seed=5, dtype=np.float32, scale=0.5)
    prompt = np.array([[2, 7], [3, 3], [10, 0]])
    np.testing.assert_array_equal(
        model.generate(prompt, max_new_tokens=6, temperature=0), slow_greedy(model, prompt, 6)
    )


def test_kv_cache_logits_equal_full_forward():
    model = cached_gpt()
    seq = np.array([[4, 8, 5, 6, 2, 3, 10, 1]])
    with no_grad():
        full = model(seq)[0].numpy()
        cache = KVCache(model.config.n_layer)
        first = model(seq[:, :3], cache=cache)[0].numpy()
        assert cache.length == 3
        steps = [model(seq[:, i : i + 1], cache=cache)[0].numpy() for i in range(3, 8)]
        assert cache.length == 8
    np.testing.assert_allclose(first, full[:, :3], rtol=1e-10, atol=1e-12)
    for i, step in zip(range(3, 8), steps):
        np.testing.assert_allclose(step[:, 0], full[:, i], rtol=1e-10, atol=1e-12)
    with no_grad(), pytest.raises(ValueError, match="block_size"):
        model(seq[:, :1], cache=cache)  # the cache is full


def test_seeded_sampling_repeats():
    model = cached_gpt()
    prompt = np.array([[1, 2]])
    a = model.generate(prompt, max_new_tokens=6, temperature=1.0, seed=7)
    b = model.generate(prompt, max_new_tokens=6, temperature=1.0, seed=7)
    np.testing.assert_array_equal(a, b)
    draws = {tuple(model.generate(prompt, 6, temperature=2.0, seed=s)[0]) for s in range(6)}
    assert len(draws) > 1  # sampling is random: seeds differ


def test_top_k_1_equals_greedy():
    model = cached_gpt()
    prompt = np.array([[5, 6, 7], [1, 1, 1]])
    greedy = model.generate(prompt, max_new_tokens=5, temperature=0)
    for seed in range(3):
        sampled = model.generate(prompt, 5, temperature=1.5, top_k=1, seed=seed)
        np.testing.assert_array_equal(sampled, greedy)


def test_generate_restores_training_mode():
    model = make_gpt(seed=1, dropout=0.3).train()
    model.generate(np.array([[1]]), max_new_tokens=2, temperature=0)
    assert model.training and model.blocks[0].attn.attn_dropout.training
    model.eval()
    model.generate(np.array([[1]]), max_new_tokens=2, temperature=0)
    assert not model.training


def test_sample_next():
    logits = np.array([[0.0, 3.0, 1.0, 2.9], [5.0, -1.0, 0.0, 4.0]])
    np.testing.assert_array_equal(sample_next(logits, 0, None, None), [1, 0])
    rng = np.random.default_rng(0)
    # top_k = 2 never picks outside the two largest of each row
    picks = np.array([sample_next(logits, 1.0, 2, rng) for _ in range(300)])
    assert set(picks[:, 0]) == {1, 3}
    assert set(picks[:, 1]) == {0, 3}
    # frequencies follow softmax(logits / T) over the kept tokens
    p1 = math.exp(3.0) / (math.exp(3.0) + math.exp(2.9))
    assert abs((picks[:, 0] == 1).mean() - p1) < 0.1
    with pytest.raises(ValueError, match="temperature"):
        sample_next(logits, -1.0, None, rng)


# ---- learning -----------------------------------------------------------------------------------


def test_overfits_one_small_batch():
    manual_seed(0)
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=16)
    model = GPT(config, generator=np.random.default_rng(0))
    rng = np.random.default_rng(0)
    seqs = rng.integers(0, 11, (4, 9))
    seqs[:, 0] = [0, 1, 2, 3]  # distinct first tokens: every target is predictable
    x, y = seqs[:, :-1], seqs[:, 1:]
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    first = None
    for _ in range(300):
        _, loss = model(x, y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with no_grad():
        final = model(x, y)[1].item()
    assert first > 2.0
    assert final < 0.05
