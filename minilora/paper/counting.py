"""Trainable-parameter counts from a configuration alone (no model is built).

The formulas are the LoRA paper's (Hu et al. 2021, arXiv 2106.09685, v2,
section 5.1 and the baselines it compares). A Transformer here is just
(n_layer, d_model): every attention projection Wq, Wk, Wv, Wo is a square
d_model x d_model matrix, the MLP is d_model -> 4 d_model -> d_model.

    LoRA      |Theta| = 2 x L_hat x d_model x r, L_hat = adapted matrices
              (B is d x r and A is r x d: 2 d r per matrix)
    FT-Top2   2 x (12 d^2 + 13 d): the last two blocks, weights and biases
    PreEmbed  d_model x (l_p + l_i): trainable prefix and infix token embeddings
    PreLayer  L x d_model x (l_p + l_i): those activations at every layer
    Adapter   L_adpt x (2 d r + r + d) + 2 x L_LN x d: down (d x r + r),
              up (r x d + d), plus LayerNorms (scale and shift) if trained
    AdapterH  Houlsby: two adapters per block, L_adpt = 2 L, L_LN = 0

BitFit is not counted here: its count depends on which biases a model has,
and the paper gives no formula for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral

TARGETS = ("q", "k", "v", "o")  # the four square attention projections of section 4.2
DEFAULT_TARGETS = ("q", "v")  # what most of the paper's experiments adapt


def _check_positive(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int >= minimum, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class TransformerShape:
    """The two numbers the counting formulas need: blocks and model width."""

    n_layer: int
    d_model: int
    name: str = ""

    def __post_init__(self):
        for attr in ("n_layer", "d_model"):
            _check_positive(attr, getattr(self, attr))


# The models of the paper's tables (layers, d_model).
ROBERTA_BASE = TransformerShape(12, 768, "RoBERTa base")
ROBERTA_LARGE = TransformerShape(24, 1024, "RoBERTa large")
DEBERTA_XXL = TransformerShape(48, 1536, "DeBERTa XXL")
GPT2_MEDIUM = TransformerShape(24, 1024, "GPT-2 medium")
GPT2_LARGE = TransformerShape(36, 1280, "GPT-2 large")
GPT3_175B = TransformerShape(96, 12288, "GPT-3 175B")


def _check_shape(shape) -> TransformerShape:
    if not isinstance(shape, TransformerShape):
        raise TypeError(
            f"shape must be a TransformerShape(n_layer, d_model), got {type(shape).__name__}"
        )
    return shape


def _ranks(r, targets) -> dict[str, int]:
    """One rank per adapted matrix name, from an int r plus targets or a {target: r} dict."""
    if isinstance(r, Mapping):
        if targets is not None:
            raise ValueError(
                f"give the ranks either as a dict r={dict(r)!r} or as an int r with "
                f"targets={targets!r}, not both"
            )
        ranks = dict(r)
    else:
        r = _check_positive("r", r)
        targets = DEFAULT_TARGETS if targets is None else targets
        if isinstance(targets, str) or not isinstance(targets, Sequence):
            raise ValueError(f"targets must be a sequence of names from {TARGETS}, got {targets!r}")
        if len(set(targets)) != len(targets):
            raise ValueError(f"targets={tuple(targets)!r} names a matrix twice")
        ranks = {t: r for t in targets}
    if not ranks:
        raise ValueError(f"adapt at least one matrix: targets must name some of {TARGETS}")
    for target, rank in ranks.items():
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r} in targets; valid targets: {TARGETS}")
        _check_positive(f"r (for target {target!r})", rank)
    return ranks


def lora_params(shape: TransformerShape, r, targets: Sequence[str] | None = None) -> int:
    """|Theta| = 2 x L_hat x d_model x r (section 5.1): LoRA's trainable count.

    ``r`` is the rank of every adapted matrix, with ``targets`` naming which of
    ("q", "k", "v", "o") are adapted in each of the n_layer blocks (default
    ("q", "v"), so L_hat = 2 n_layer). Or ``r`` is a dict of per-matrix ranks,
    e.g. Table 5's {"q": 8}, {"q": 4, "v": 4}, {"q": 2, "k": 2, "v": 2, "o": 2}
    (then leave ``targets`` out). Biases and LayerNorms are not counted.
    """
    shape = _check_shape(shape)
    ranks = _ranks(r, targets)
    # each adapted d x d matrix gets B (d x r) and A (r x d): 2 d r numbers
    return sum(2 * shape.n_layer * shape.d_model * rank for rank in ranks.values())


def block_params(d_model: int) -> int:
    """One Transformer block: 12 d^2 + 13 d.

    Weights: attention 4 d^2 (Wq, Wk, Wv, Wo) + MLP 8 d^2 (d x 4d and 4d x d).
    Biases: attention 4 d + MLP 4d + d = 5 d; two LayerNorms 2 x 2 d = 4 d.
    """
    d = _check_positive("d_model", d_model)
    return 12 * d * d + 13 * d


def ft_top2_params(shape: TransformerShape) -> int:
    """FT-Top2 (section 5.1 baselines): fine-tune only the last two blocks."""
    shape = _check_shape(shape)
    _check_positive("shape.n_layer (FT-Top2 needs two blocks)", shape.n_layer, minimum=2)
    return 2 * block_params(shape.d_model)


def _check_lengths(l_p, l_i) -> int:
    _check_positive("l_p (prefix length)", l_p, minimum=0)
    _check_positive("l_i (infix length)", l_i, minimum=0)
    if l_p + l_i == 0:
        raise ValueError("l_p + l_i must be at least 1: no special tokens means nothing to train")
    return l_p + l_i


def preembed_params(shape: TransformerShape, l_p: int, l_i: int) -> int:
    """PreEmbed (prefix-embedding tuning): d_model x (l_p + l_i) trainable embeddings."""
    shape = _check_shape(shape)
    return shape.d_model * _check_lengths(l_p, l_i)


def prelayer_params(shape: TransformerShape, l_p: int, l_i: int) -> int:
    """PreLayer (prefix-layer tuning): L x d_model x (l_p + l_i), activations at every layer."""
    shape = _check_shape(shape)
    return shape.n_layer * shape.d_model * _check_lengths(l_p, l_i)


def adapter_params(shape: TransformerShape, r: int, n_adapters: int, n_layernorms: int = 0) -> int:
    """Adapters: L_adpt x (2 x d_model x r + r + d_model) + 2 x L_LN x d_model.

    Each adapter is a down projection d -> r (d r weights + r biases) and an up
    projection r -> d (r d weights + d biases). ``n_adapters`` is L_adpt, the
    total over the model; ``n_layernorms`` is L_LN, trained LayerNorms (2 d each).
    """
    shape = _check_shape(shape)
    _check_positive("r", r)
    _check_positive("n_adapters", n_adapters)
    _check_positive("n_layernorms", n_layernorms, minimum=0)
    d = shape.d_model
    return n_adapters * (2 * d * r + r + d) + 2 * n_layernorms * d


def adapterH_params(shape: TransformerShape, r: int) -> int:
    """AdapterH (Houlsby et al. 2019): two adapters per block, L_adpt = 2 L, L_LN = 0."""
    shape = _check_shape(shape)
    return adapter_params(shape, r, n_adapters=2 * shape.n_layer, n_layernorms=0)
