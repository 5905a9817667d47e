"""minilora.paper.counting against the numbers printed in the LoRA paper (section 5.1).

The expected values are the paper's (its section 5.1 and appendix counts), not
this code's output: each test recomputes a printed count from the formula.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilora.paper.counting import (
    DEBERTA_XXL,
    GPT2_LARGE,
    GPT2_MEDIUM,
    GPT3_175B,
    ROBERTA_BASE,
    ROBERTA_LARGE,
    TARGETS,
    TransformerShape,
    adapter_params,
    adapterH_params,
    block_params,
    ft_top2_params,
    lora_params,
    preembed_params,
    prelayer_params,
)


def millions(n: int) -> float:
    """The paper prints counts in millions with one decimal."""
    return round(n / 1e6, 1)


# --------------------------------------------------------------------------- LoRA


@pytest.mark.parametrize(
    "shape, r, expected, printed",
    [
        (ROBERTA_BASE, 8, 294_912, 0.3),
        (ROBERTA_LARGE, 8, 786_432, 0.8),
        (GPT3_175B, 1, 4_718_592, 4.7),
        (GPT3_175B, 8, 37_748_736, 37.7),
    ],
)
def test_lora_wq_wv_counts(shape, r, expected, printed):
    assert lora_params(shape, r) == expected
    assert lora_params(shape, r, targets=("q", "v")) == expected
    assert millions(expected) == printed


def test_deberta_xxl_rank_16_not_8():
    # The paper's table lists r = 8 for DeBERTa XXL next to 4.7M; that count
    # needs r = 16 (what the reference repo's scripts use). r = 8 gives 2.36M.
    assert lora_params(DEBERTA_XXL, 16) == 4_718_592
    assert millions(lora_params(DEBERTA_XXL, 16)) == 4.7
    assert lora_params(DEBERTA_XXL, 8) == 2_359_296


@pytest.mark.parametrize(
    "ranks",
    [
        {"q": 8},
        {"k": 8},
        {"v": 8},
        {"o": 8},
        {"q": 4, "k": 4},
        {"q": 4, "v": 4},
        {"q": 2, "k": 2, "v": 2, "o": 2},
    ],
)
def test_table5_every_column_is_the_same_budget(ranks):
    # Table 5: 18M trainable parameters (about 35 MB in fp16) however spread.
    assert lora_params(GPT3_175B, ranks) == 18_874_368


def test_table5_int_rank_with_targets_equals_dict():
    assert lora_params(GPT3_175B, 2, targets=TARGETS) == 18_874_368
    assert lora_params(GPT3_175B, 4, targets=("q", "k")) == 18_874_368


def test_gpt2_counts_follow_the_formula_not_the_printed_values():
    # The paper prints 0.35M (medium) and 0.77M (large) for r = 4 on Wq, Wv;
    # its own formula gives 0.39M and 0.74M. Why is an open question in the
    # reference repo (microsoft/LoRA); we follow the formula.
    assert lora_params(GPT2_MEDIUM, 4) == 393_216
    assert lora_params(GPT2_LARGE, 4) == 737_280
    assert millions(lora_params(GPT2_MEDIUM, 4)) != 0.35
    assert millions(lora_params(GPT2_LARGE, 4)) != 0.77


def test_ten_thousand_times_fewer_claim():
    # Section 4.2 / the abstract: r = 4 on Wq, Wv of GPT-3 gives 18.9M, about
    # 9,300x fewer than 175B (the "10,000x" headline).
    n = lora_params(GPT3_175B, 4)
    assert n == 18_874_368
    assert round(175e9 / n, -2) == 9_300


@settings(deadline=None, derandomize=True, max_examples=50)
@given(
    n_layer=st.integers(1, 100),
    d_model=st.integers(1, 5000),
    r=st.integers(1, 64),
    targets=st.lists(st.sampled_from(TARGETS), min_size=1, max_size=4, unique=True),
)
def test_lora_formula_is_linear_in_everything(n_layer, d_model, r, targets):
    shape = TransformerShape(n_layer, d_model)
    n = lora_params(shape, r, targets=targets)
    assert n == 2 * len(targets) * n_layer * d_model * r
    assert n == lora_params(shape, {t: r for t in targets})


# --------------------------------------------------------------------------- baselines


def test_ft_top2_gpt2_medium():
    # 2 x (12 d^2 + 13 d) at d = 1024: 25.19M in the paper's GPT-2 table.
    assert block_params(1024) == 12_596_224
    assert ft_top2_params(GPT2_MEDIUM) == 25_192_448


def test_preembed_gpt3():
    # l_p = 256 prefix and l_i = 8 infix tokens: 3.2M.
    assert preembed_params(GPT3_175B, 256, 8) == 3_244_032
    assert millions(3_244_032) == 3.2


def test_prelayer_is_preembed_times_layers():
    assert prelayer_params(GPT3_175B, 256, 8) == 96 * 3_244_032


@pytest.mark.parametrize(
    "r, exact, printed",
    [
        (1, 7_078_080, 7.1),
        (4, 21_234_432, 21.2),
        (8, 40_109_568, 40.1),
        (16, 77_859_840, 77.9),
        (64, 304_361_472, 304.4),
    ],
)
def test_adapterH_gpt3(r, exact, printed):
    # L_adpt = 2 x 96 = 192, L_LN = 0: 192 x (2 x 12288 r + r + 12288).
    assert adapterH_params(GPT3_175B, r) == exact
    assert millions(exact) == printed
    assert adapter_params(GPT3_175B, r, n_adapters=192) == exact


def test_adapter_layernorms_add_2d_each():
    base = adapter_params(GPT2_MEDIUM, 4, n_adapters=24)
    assert adapter_params(GPT2_MEDIUM, 4, n_adapters=24, n_layernorms=24) == base + 2 * 24 * 1024


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("r", [0, -1, 1.5, True, "8"])
def test_bad_rank_names_r(r):
    with pytest.raises(ValueError, match=r"r must be an integer >= 1"):
        lora_params(GPT2_MEDIUM, r)


def test_unknown_target_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown target 'mlp'.*\('q', 'k', 'v', 'o'\)"):
        lora_params(GPT2_MEDIUM, 4, targets=("q", "mlp"))
    with pytest.raises(ValueError, match=r"unknown target 'Q'"):
        lora_params(GPT2_MEDIUM, {"Q": 4})


def test_bad_target_collections():
    with pytest.raises(ValueError, match="at least one"):
        lora_params(GPT2_MEDIUM, 4, targets=())
    with pytest.raises(ValueError, match="twice"):
        lora_params(GPT2_MEDIUM, 4, targets=("q", "q"))
    with pytest.raises(ValueError, match="sequence of names"):
        lora_params(GPT2_MEDIUM, 4, targets="qv")
    with pytest.raises(ValueError, match="not both"):
        lora_params(GPT2_MEDIUM, {"q": 4}, targets=("q",))
    with pytest.raises(ValueError, match=r"r \(for target 'v'\) must be an integer >= 1"):
        lora_params(GPT2_MEDIUM, {"q": 4, "v": 0})


def test_bad_shapes_and_lengths():
    with pytest.raises(ValueError, match="n_layer must be an integer >= 1"):
        TransformerShape(0, 768)
    with pytest.raises(ValueError, match="d_model must be an integer >= 1"):
        TransformerShape(12, -768)
    with pytest.raises(TypeError, match="TransformerShape"):
        lora_params((12, 768), 8)
    with pytest.raises(ValueError, match="two blocks"):
        ft_top2_params(TransformerShape(1, 64))
    with pytest.raises(ValueError, match="l_p"):
        preembed_params(GPT3_175B, -1, 8)
    with pytest.raises(ValueError, match="at least 1"):
        prelayer_params(GPT3_175B, 0, 0)
    with pytest.raises(ValueError, match="r must be"):
        adapterH_params(GPT3_175B, 0)
    with pytest.raises(ValueError, match="n_adapters"):
        adapter_params(GPT3_175B, 4, n_adapters=0)


def test_the_counts_the_formulas_do_not_give_are_listed_with_a_reason():
    from minilora.paper import counting as c
    from minilora.paper.counts_table import unexplained_counts

    rows = {
        method: (printed, formula, why) for _, method, printed, formula, why in unexplained_counts()
    }
    prelayer = next(v for k, v in rows.items() if k.startswith("PreLayer"))
    assert prelayer[:2] == (20.2, c.prelayer_params(c.GPT3_175B, 8, 8))
    all_four = next(v for k, v in rows.items() if "37.7M" in k)
    assert all_four[1] == c.lora_params(c.GPT3_175B, 2, c.TARGETS) == 18_874_368
    assert any(k.startswith("PreEmbed l_p=32") for k in rows)
    assert sum("RoBERTa" in m for m, *_ in unexplained_counts()) == 4
    assert all(len(why) > 20 for _, _, why in rows.values())
