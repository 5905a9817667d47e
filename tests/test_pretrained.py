"""The shipped base models: they load, they have learned their corpora, and they write text."""

import numpy as np
import pytest

from minilora.transformer import GPT, GPTConfig
from minilora.work import pretrained
from minilora.work.data import build_vocabulary, pretraining_text, random_batch, split_text
from minilora.work.mixed_corpus import CORPORA, corpus_parts
from minilora.work.pretrained import (
    BASE_CORPORA,
    PRETRAINED,
    SMALL,
    load_pretrained,
    pretrain_command,
    resolve_model,
    text_loss,
)
from minilora.work.train import estimate_loss

# A model that only knew character frequencies would score the unigram entropy
# (computed below from the validation text, about 3.2 nats). The shipped model
# reached about 1.19; the bound leaves room for rounding but would catch a
# model that had not learned (or weights loaded into the wrong places).
VAL_LOSS_BOUND = 1.4


@pytest.fixture(scope="module")
def shipped():
    return load_pretrained("char-small")


def test_shipped_model_has_the_documented_shape(shipped):
    model, tokenizer, meta = shipped
    c = model.config
    assert (c.n_layer, c.n_head, c.d_model, c.block_size) == (
        SMALL.n_layer,
        SMALL.n_head,
        SMALL.d_model,
        SMALL.block_size,
    )
    assert sum(p.size for p in model.parameters()) < 1_000_000
    assert meta["steps"] > 0 and "minilora pretrain" in meta["command"]


def test_shipped_tokenizer_is_the_vocabulary_the_code_builds(shipped):
    # if the task templates or the corpus ever changed the vocabulary, the shipped
    # model would no longer fit; this test says so before a user finds out
    _, tokenizer, _ = shipped
    assert tokenizer.chars == build_vocabulary()


def test_validation_loss_is_far_below_a_unigram_model(shipped):
    model, tokenizer, _ = shipped
    ids = tokenizer.encode(pretraining_text())
    _, val_ids = split_text(ids, val_fraction=0.1)
    counts = np.bincount(val_ids, minlength=tokenizer.vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    unigram_entropy = float(-(p * np.log(p)).sum())

    def get_batch(split, rng):
        return random_batch(val_ids, 16, model.config.block_size, rng)

    val_loss = estimate_loss(model, get_batch, batches=8, seed=123)
    assert unigram_entropy > 2.5
    assert val_loss < VAL_LOSS_BOUND < unigram_entropy - 1.0


def test_generate_returns_the_requested_number_of_characters(shipped):
    model, tokenizer, _ = shipped
    prompt = tokenizer.encode("The ")
    out = model.generate(prompt, 40, temperature=0.8, seed=0)
    text = tokenizer.decode(out[0])
    assert out.shape == (1, 4 + 40) and text.startswith("The ") and len(text) == 44
    again = tokenizer.decode(model.generate(prompt, 40, temperature=0.8, seed=0)[0])
    assert again == text  # seeded sampling repeats


@pytest.fixture(scope="module")
def mixed():
    return load_pretrained("char-small-mixed")


def test_the_second_base_is_char_small_with_another_corpus(shipped, mixed):
    # issue 17's controlled comparison: one shape, one tokenizer, one recipe; the corpus differs
    (base, base_tokenizer, base_meta), (model, tokenizer, meta) = shipped, mixed
    assert PRETRAINED[:2] == ("char-small", "char-small-mixed")
    assert model.config == base.config and tokenizer == base_tokenizer
    assert [p.shape for p in model.parameters()] == [p.shape for p in base.parameters()]
    recipe = {k: v for k, v in base_meta["train_config"].items() if k != "progress"}  # display only
    assert recipe == {k: meta["train_config"][k] for k in recipe}
    assert meta["corpus_name"] == "mixed" and meta["steps"] == base_meta["steps"] == 3000
    assert "--corpus mixed" in meta["command"] and "--steps 3000" in meta["command"]


def test_the_second_base_learned_the_generated_language_and_the_first_did_not(shipped, mixed):
    # the generated validation text, which neither base trained on (its first 16 windows)
    generated = corpus_parts("mixed")["generated"]
    tokenizer = mixed[1]
    ids = split_text(tokenizer.encode(generated), 0.1)[1][: 16 * 128 + 1]
    first, second = text_loss(shipped[0], ids), text_loss(mixed[0], ids)
    assert second < 0.5 and first > 2.5, (first, second)  # measured: 0.28 and 3.40 on the whole


def test_the_second_base_loads_by_name_everywhere(mixed, capsys):
    from minilora.cli import main

    model, _, meta = resolve_model("char-small-mixed")
    assert meta == mixed[2] and model.config == mixed[0].config
    assert (
        main(["generate", "--model", "char-small-mixed", "--prompt", "-- ", "--length", "5"]) == 0
    )
    assert capsys.readouterr().out.startswith("-- ")


def test_unknown_pretrained_name_lists_the_available_ones():
    names = "'char-small', 'char-small-mixed', 'char-small-tasklang', 'char-medium'"
    with pytest.raises(ValueError, match=names):
        load_pretrained("gpt-9")
    with pytest.raises(Exception, match="not a directory|not found"):
        resolve_model("/nonexistent/dir")


def test_every_base_is_made_by_one_recipe_on_its_own_corpus(mixed):
    # the second base's recorded command is what pretrain_command gives for it; the third
    # differs only in its corpus, the larger one (char-small's corpus) only in its width
    command = mixed[2]["command"]
    out = command.split("--out ")[1].split()[0]
    assert pretrain_command("char-small-mixed", out) == command
    third = pretrain_command("char-small-tasklang", out)
    assert third == command.replace("--corpus mixed", "--corpus tasklang")
    assert BASE_CORPORA["char-small-tasklang"] in CORPORA
    larger = pretrain_command("char-medium", out)
    assert larger == command.replace("--corpus mixed", "--d-model 256")
    with pytest.raises(ValueError, match="'gpt-9'"):
        pretrain_command("gpt-9", out)


def test_the_larger_base_is_char_small_twice_as_wide(shipped):
    # issue 28's fifth experiment: char-small's corpus, recipe and tokenizer at d_model 256
    (base, base_tokenizer, base_meta), (model, tokenizer, meta) = (
        shipped,
        load_pretrained("char-medium"),
    )
    assert model.config.d_model == 2 * base.config.d_model == 256
    others = {k: v for k, v in vars(model.config).items() if k != "d_model"}
    assert others == {k: v for k, v in vars(base.config).items() if k != "d_model"}
    assert tokenizer == base_tokenizer
    assert sum(p.size for p in model.parameters()) == 3_219_200  # four times 823,168, nearly
    recipe = {k: v for k, v in base_meta["train_config"].items() if k != "progress"}
    assert recipe == {k: meta["train_config"][k] for k in recipe}
    out = meta["command"].split("--out ")[1].split()[0]
    assert meta["command"] == pretrain_command("char-medium", out)
    assert meta["corpus_name"] == "pydoc" and meta["steps"] == 3000


def test_a_base_not_made_yet_says_how_to_make_it(tmp_path, monkeypatch, capsys):
    from minilora.cli import main

    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path)  # as if its weights were absent
    with pytest.raises(FileNotFoundError) as err:
        load_pretrained("char-small-tasklang")
    message = str(err.value)
    assert "'char-small-tasklang' is missing" in message and "--corpus tasklang" in message
    assert "--steps 3000 --eval-every 500" in message and str(tmp_path) in message
    argv = ["generate", "--model", "char-small-tasklang", "--prompt", "Q: ", "--length", "5"]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--model char-small-tasklang" in error, error


def test_text_loss_is_the_mean_over_the_windows_that_tile_the_text():
    config = GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, d_model=8)
    model = GPT(config, generator=np.random.default_rng(0))
    ids = np.random.default_rng(1).integers(0, 7, size=8 * 5 + 3)  # 5 whole windows, 2 left over
    expected = []
    for w in range(5):  # NumPy's cross-entropy of each window's logits, one window at a time
        x, y = ids[8 * w : 8 * w + 8], ids[8 * w + 1 : 8 * w + 9]
        logits = model(x[None])[0].data[0].astype(np.float64)
        log_p = logits - logits.max(-1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
        expected.append(-log_p[np.arange(8), y].mean())
    for batch_size in (1, 2, 16):
        assert abs(text_loss(model, ids, batch_size) - np.mean(expected)) < 1e-5
    with pytest.raises(ValueError, match="no window"):
        text_loss(model, ids[:8])
