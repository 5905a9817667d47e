"""Section 5.1's baselines (minilora.paper.baselines): what trains, where they start, their counts.

Expected sets of trainable names are written from each method's definition
(the last two blocks, the biases, ...), not read back from the code; expected
outputs come from the base model itself or from an independent construction
(the GPT run on a longer sequence with chosen positions).
"""

from __future__ import annotations

import numpy as np
import pytest

from minilora.lora import count_parameters
from minilora.paper.baselines import (
    METHODS,
    PrefixTuned,
    apply_method,
    check_method,
    trainable_count,
)
from minilora.transformer import GPT, GPTConfig, KVCache

CONFIG = GPTConfig(vocab_size=23, block_size=24, n_layer=3, n_head=2, d_model=8)


def gpt(config=CONFIG, seed=0):
    return GPT(config, generator=np.random.default_rng(seed))


def ids(B=2, T=7, seed=1, vocab=CONFIG.vocab_size):
    return np.random.default_rng(seed).integers(vocab, size=(B, T))


def trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def base_names(config=CONFIG) -> set[str]:
    return {n for n, _ in gpt(config).named_parameters()}


# --------------------------------------------------------------------------- what trains


def test_ft_trains_every_weight():
    model = apply_method(gpt(), "ft")
    assert trainable_names(model) == base_names()


def test_ft_top2_trains_the_last_two_blocks_only():
    model = apply_method(gpt(), "ft-top2")
    want = {n for n in base_names() if n.startswith(("blocks.1.", "blocks.2."))}
    assert want and trainable_names(model) == want


def test_bitfit_trains_the_biases_only():
    model = apply_method(gpt(), "bitfit")
    names = trainable_names(model)
    assert names == {n for n in base_names() if n.endswith(".bias")}
    params = dict(model.named_parameters())
    assert all(params[n].ndim == 1 for n in names)
    # every attention projection, both MLP layers, both LayerNorms of 3 blocks, and ln_f
    assert len(names) == 3 * (4 + 2 + 2) + 1


@pytest.mark.parametrize("name, sets", [("preembed", 1), ("prelayer", CONFIG.n_layer)])
def test_prefix_methods_train_only_their_vectors(name, sets):
    model = apply_method(gpt(), name, {"l_p": 3, "l_i": 2})
    assert isinstance(model, PrefixTuned)
    assert trainable_names(model) == {"special"}
    assert model.special.shape == (sets, 5, CONFIG.d_model)
    # the frozen GPT's parameters are all still there, frozen
    assert {n for n, _ in model.named_parameters()} == {"special"} | {
        f"gpt.{n}" for n in base_names()
    }


def test_adapterh_adds_two_adapters_per_block_and_trains_only_them():
    model = apply_method(gpt(), "adapterh", {"r": 2})
    names = trainable_names(model)
    want = {
        f"blocks.{i}.{where}.adapter.{layer}.{p}"
        for i in range(3)
        for where in ("attn", "mlp")
        for layer in ("down", "up")
        for p in ("weight", "bias")
    }
    assert names == want
    assert dict(model.named_parameters())["blocks.0.attn.adapter.down.weight"].shape == (2, 8)


def test_adapterl_adds_one_adapter_with_a_layernorm_per_block():
    model = apply_method(gpt(), "adapterl", {"r": 2})
    want = {
        f"blocks.{i}.adapter.{layer}.{p}"
        for i in range(3)
        for layer in ("norm", "down", "up")
        for p in ("weight", "bias")
    }
    assert trainable_names(model) == want


def test_lora_trains_only_a_and_b_of_the_chosen_projections():
    model = apply_method(gpt(), "lora", {"r": 2, "targets": ("q", "o")})
    names = trainable_names(model)
    assert len(names) == 3 * 2 * 2
    assert all(".lora_A." in n or ".lora_B." in n for n in names)
    assert {n.split(".")[3] for n in names} == {"q_proj", "o_proj"}


def test_lora_alpha_defaults_to_2r_and_an_explicit_alpha_is_kept():
    from minilora.lora import LoRALinear

    def scalings(settings):
        model = apply_method(gpt(), "lora", settings)
        return {
            m.configs[m.active_adapter].scaling
            for _, m in model.named_modules()
            if isinstance(m, LoRALinear)
        }

    assert check_method("lora", {"alpha": 16.0})["alpha"] == 16.0
    assert scalings({"r": 4}) == {2.0}  # alpha None: 2 r, so scaling 2 at every rank
    assert scalings({"r": 1, "alpha": 16.0}) == {16.0}  # the paper's rule: 16 / r
    assert scalings({"r": 4, "alpha": 16.0}) == {4.0}


@pytest.mark.parametrize("method", METHODS)
def test_gradients_reach_exactly_the_trainable_parameters(method):
    model = apply_method(gpt(), method, None, np.random.default_rng(0))
    x = ids()
    targets = np.roll(x, -1, axis=1)
    targets[:, :3] = -100  # a prompt: the prefix methods put the infix after it
    _, loss = model(x, targets)
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and np.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name
    # something trainable really gets a signal (adapters' up starts at zero, but its
    # gradient does not; LoRA's B starts at zero, its gradient does not)
    assert any(np.abs(p.grad).max() > 0 for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- where they start


@pytest.mark.parametrize("method", ["ft", "ft-top2", "bitfit", "adapterh", "adapterl", "lora"])
def test_methods_start_from_the_base_models_outputs_exactly(method):
    x = ids()
    base_logits, _ = gpt()(x)
    model = apply_method(gpt(), method, None, np.random.default_rng(3))
    logits, _ = model(x)
    np.testing.assert_array_equal(logits.numpy(), base_logits.numpy())


def test_preembed_prefix_equals_the_gpt_reading_those_tokens_first():
    # A prefix initialised from tokens `init` is the GPT run on [init, x] with the
    # prefix at positions 0..l_p-1 and x at its own positions 0..T-1 (the layout the
    # docstring promises). PreLayer at init, with no infix, is the same: a causal
    # prefix never sees the tokens after it.
    base, x, init = gpt(), ids(T=6), np.array([4, 9, 1])
    both = np.concatenate([np.tile(init, (2, 1)), x], axis=1)
    positions = np.concatenate([np.arange(3), np.arange(6)])
    want, _ = base(both, positions=positions)
    for every_layer in (False, True):
        model = PrefixTuned(gpt(), 3, 0, every_layer=every_layer, init_ids=init)
        got, _ = model(x)
        np.testing.assert_allclose(got.numpy(), want.numpy()[:, 3:], rtol=1e-5, atol=1e-5)


def test_preembed_infix_sits_between_prompt_and_answer():
    base, init = gpt(), np.array([5, 2, 7, 3])  # l_p = 1, l_i = 3
    x = ids(B=1, T=8)
    targets = np.full((1, 8), -100)
    targets[0, 4:] = 1  # the prompt is x[:, :5]: position 4 predicts the first answer token
    got, _ = PrefixTuned(gpt(), 1, 3, every_layer=False, init_ids=init)(x, targets)
    seq = np.concatenate([init[:1], x[0, :5], init[1:], x[0, 5:]])[None, :]
    positions = np.concatenate([[0], np.arange(5), [1, 2, 3], np.arange(5, 8)])
    want, _ = base(seq, positions=positions)
    want = want.numpy()[0]
    # prompt tokens 0..3 at slots 1..4; the last prompt token predicts at the last
    # infix slot (8); the answer tokens 5..7 at slots 9..11
    rows = [1, 2, 3, 4, 8, 9, 10, 11]
    np.testing.assert_allclose(got.numpy()[0], want[rows], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("every_layer", [False, True])
def test_prefix_generation_with_a_cache_matches_the_training_forward(every_layer):
    # feeding the prompt, then the answer one token at a time (as `complete` does),
    # gives the logits the training forward computes for the same answer
    model = PrefixTuned(gpt(), 2, 2, every_layer=every_layer, rng=np.random.default_rng(0))
    x = ids(B=1, T=9)
    targets = np.full((1, 9), -100)
    targets[0, 5:] = 1  # prompt = x[:, :6]
    full, _ = model(x, targets)
    cache = KVCache(CONFIG.n_layer)
    steps = [model(x[:, :6], cache=cache)[0].numpy()[0, -1]]
    for t in range(6, 9):
        steps.append(model(x[:, t : t + 1], cache=cache)[0].numpy()[0, -1])
    np.testing.assert_allclose(np.stack(steps[:-1]), full.numpy()[0, 5:8], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- counts


SETTINGS = [
    ("ft", None), ("ft-top2", None), ("bitfit", None),
    ("preembed", {"l_p": 4, "l_i": 0}), ("prelayer", {"l_p": 2, "l_i": 3}),
    ("adapterh", {"r": 1}), ("adapterh", {"r": 5}), ("adapterl", {"r": 3}),
    ("lora", {"r": 1}), ("lora", {"r": 4, "targets": ("q", "k", "v", "o")}),
    ("lora", {"r": 2, "targets": ("q", "k", "v", "o", "fc1", "fc2")}),
    ("lora", {"r": 3, "targets": ("fc2",)}),
]  # fmt: skip


@pytest.mark.parametrize("method, settings", SETTINGS)
@pytest.mark.parametrize(
    "config",
    [CONFIG, GPTConfig(vocab_size=11, block_size=9, n_layer=2, n_head=4, d_model=12)],
    ids=["3x8", "2x12"],
)
def test_count_from_config_equals_the_built_model(method, settings, config):
    model = apply_method(gpt(config), method, settings)
    assert trainable_count(method, config, settings) == count_parameters(model).trainable


def test_lora_on_every_linear_adapts_the_mlp_too():
    """targets fc1, fc2: the MLP's Linears (d -> 4d, 4d -> d) get A and B, r (d + 4d) each."""
    model = apply_method(gpt(CONFIG), "lora", {"r": 2, "targets": ("q", "fc1", "fc2")})
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    d = CONFIG.d_model
    for i in range(CONFIG.n_layer):
        for name in (f"blocks.{i}.mlp.fc_in.lora_A", f"blocks.{i}.mlp.fc_out.lora_B"):
            assert f"{name}.default.weight" in names
    assert (
        trainable_count("lora", CONFIG, {"r": 2, "targets": ("fc1",)}) == CONFIG.n_layer * 2 * 5 * d
    )


def test_counts_on_the_shipped_model_match_the_paper_formulas():
    from minilora.work.pretrained import load_pretrained

    model, _, _ = load_pretrained("char-small")
    config = model.config
    assert (config.n_layer, config.d_model) == (4, 128)
    d, L = 128, 4
    total = count_parameters(model).total
    # written out from the paper's formulas (section 5.1) for L = 4, d = 128
    assert trainable_count("ft", config) == total
    assert trainable_count("ft-top2", config) == 2 * (12 * d * d + 13 * d)
    assert trainable_count("preembed", config, {"l_p": 8, "l_i": 8}) == d * 16
    assert trainable_count("prelayer", config, {"l_p": 8, "l_i": 8}) == L * d * 16
    assert trainable_count("adapterh", config, {"r": 4}) == 2 * L * (2 * d * 4 + 4 + d)
    assert trainable_count("adapterl", config, {"r": 4}) == L * (2 * d * 4 + 4 + d) + 2 * L * d
    assert trainable_count("lora", config, {"r": 8}) == 2 * (2 * L) * d * 8
    for method in METHODS:
        built = apply_method(load_pretrained("char-small")[0], method)
        assert count_parameters(built).trainable == trainable_count(method, config), method


# --------------------------------------------------------------------------- bad input


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid methods: ft, ft-top2, bitfit"):
        check_method("lorax")
    with pytest.raises(ValueError, match="takes no setting"):
        check_method("bitfit", {"r": 4})


def test_rank_that_does_not_fit_names_the_limit():
    with pytest.raises(ValueError, match=r"r=9.*d_model=8"):
        apply_method(gpt(), "lora", {"r": 9})
    with pytest.raises(ValueError, match=r"r=0"):
        trainable_count("adapterh", CONFIG, {"r": 0})
    with pytest.raises(ValueError, match="targets"):
        trainable_count("lora", CONFIG, {"targets": ("q", "x")})


def test_prefix_that_does_not_fit_names_the_limit():
    with pytest.raises(ValueError, match=r"l_p=20, l_i=5.*block_size=24"):
        apply_method(gpt(), "preembed", {"l_p": 20, "l_i": 5})
    with pytest.raises(ValueError, match="l_p=0, l_i=0"):
        trainable_count("prelayer", CONFIG, {"l_p": 0, "l_i": 0})


def test_bitfit_on_a_model_without_biases_is_refused():
    config = GPTConfig(vocab_size=11, block_size=9, n_layer=2, n_head=2, d_model=8, bias=False)
    with pytest.raises(ValueError, match="no biases"):
        trainable_count("bitfit", config)


@pytest.mark.parametrize("name", ["lora+preembed", "lora+prelayer"])
def test_lora_with_a_prefix_trains_both_and_counts_both(name):
    """Appendix E: LoRA's A and B and the prefix's vectors train, nothing else; the count from
    the configuration is the sum of the two methods' counts and equals the built model's."""
    from minilora.paper.baselines import trainable_count

    base = gpt()
    settings = {"r": 2, "alpha": 4.0, "targets": ("q", "v"), "l_p": 2, "l_i": 1}
    model = apply_method(base, name, settings, np.random.default_rng(0))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "special" in trainable and all(n == "special" or ".lora_" in n for n in trainable)
    assert any(".lora_A." in n for n in trainable) and any(".lora_B." in n for n in trainable)
    counted = sum(p.data.size for p in model.parameters() if p.requires_grad)
    lora = {k: settings[k] for k in ("r", "alpha", "targets")}
    prefix = {"l_p": 2, "l_i": 1}
    expected = trainable_count("lora", base.config, lora) + trainable_count(
        name.split("+")[1], base.config, prefix
    )
    assert counted == trainable_count(name, base.config, settings) == expected
