"""Generation on a batch: left padding hidden from attention, batched ``complete()``, and
sampling at a temperature (issue 32's behaviours; the model's own tests are in
test_transformer.py, whose tiny GPT these reuse)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_transformer import TINY, make_gpt

from minilora.tensor import no_grad
from minilora.transformer import sample_next


# ---- left padding in a batch (issue 32) ---------------------------------------------------
def test_left_padded_rows_give_the_logits_of_each_prompt_alone():
    """Prompts of 6, 3 and 1 tokens left-padded into one batch, the padding hidden from
    attention (``key_padding``) and positions counted from each prompt's first token, as
    ``complete()`` does: each row's logits at its real positions equal those of its prompt
    run alone, to float64 round-off. Kills tools/mutants.py's ``key_padding_ignored`` and
    ``key_padding_on_query_axis`` (padded queries hidden instead of padded keys)."""
    model = make_gpt(seed=5)
    rng = np.random.default_rng(5)
    prompts = [rng.integers(0, TINY["vocab_size"], n) for n in (6, 3, 1)]
    L = 6
    pad = np.array([L - len(p) for p in prompts])
    ids = np.zeros((len(prompts), L), dtype=np.int64)
    for row, p in enumerate(prompts):
        ids[row, pad[row] :] = p
    padding = np.arange(L)[None, :] < pad[:, None]
    positions = np.maximum(np.arange(L)[None, :] - pad[:, None], 0)
    with no_grad():
        logits, _ = model(ids, positions=positions, key_padding=padding)
        for row, p in enumerate(prompts):
            alone, _ = model(p[None, :])
            got = logits.numpy()[row, pad[row] :]
            np.testing.assert_allclose(got, alone.numpy()[0], rtol=0, atol=1e-12)


def test_batched_complete_equals_one_prompt_at_a_time():
    """Greedy completions of four prompts of different lengths in one left-padded batch
    (with a key/value cache, padding extended at every step) equal the completions of each
    prompt alone. Kills ``key_padding_ignored`` and ``key_padding_on_query_axis``."""
    from minilora.work.data import CharTokenizer
    from minilora.work.finetune import complete

    tokenizer = CharTokenizer("abcdefghij\n")  # 11 characters: TINY's vocabulary
    model = make_gpt(seed=6, block_size=16)
    prompts = ["abcdefg", "bca", "j", "hhhhh"]
    alone = [complete(model, tokenizer, [p], max_new_tokens=6)[0] for p in prompts]
    assert complete(model, tokenizer, prompts, max_new_tokens=6) == alone
    assert sum(len(a) for a in alone) >= 12  # the comparison covers several generated tokens


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sampling_frequencies_follow_softmax_of_the_logits_over_the_temperature(temperature):
    """Two tokens with logits 0 and ln 3: softmax(logits / T) gives token 1 the probability
    p = 3^(1/T) / (1 + 3^(1/T)) (0.9 at T = 0.5, 0.634 at T = 2); the share of 4,000 seeded
    draws is within 5 standard deviations of p. Kills tools/mutants.py's
    ``temperature_multiplies`` (logits * T, which swaps the two probabilities)."""
    logits = np.tile([0.0, math.log(3.0)], (4000, 1))
    picks = sample_next(logits, temperature, None, np.random.default_rng(0))
    p = 3 ** (1 / temperature) / (1 + 3 ** (1 / temperature))
    assert abs(picks.mean() - p) < 5 * math.sqrt(p * (1 - p) / len(picks))
