"""A GPT-2 with its own byte-level BPE, offline: import, generate, fine-tune, merge, export.

A small GPT2LMHeadModel (random weights) and a small byte-level BPE trained with Hugging
Face ``tokenizers`` on this project's README, both saved as ``save_pretrained`` saves them,
stand for the real 124M GPT-2 (the same files, smaller). The greedy tokens must be the ones
``transformers`` generates, and the exported adapter must load in PEFT with the same logits.
Needs ``tokenizers`` (the bpe extra) and, for the cross-checks, the compat extra; each part
skips cleanly without them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers", reason='needs pip install -e ".[bpe]"')

from minilora.cli import main  # noqa: E402
from minilora.interop.adapters import load_adapter  # noqa: E402
from minilora.lora import merge_and_unload  # noqa: E402
from minilora.tensor import no_grad  # noqa: E402
from minilora.work.bpe import BPETokenizer  # noqa: E402
from minilora.work.io import CheckpointError, load_model, save_model  # noqa: E402

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
PROMPT = "LoRA freezes the pretrained weights and"
EOT = "<|endoftext|>"


def train_bpe(text: str, vocab_size: int = 400):
    """A byte-level BPE as GPT-2's (no prefix space, <|endoftext|> special), trained on text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer)
    return tok


def logits(model, ids):
    model.eval()  # GPT-2's dropout (0.1) is for training only
    with no_grad():
        return model(np.asarray(ids)[None])[0].numpy()[0]


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(README)


# ---- the tokenizer alone (tokenizers only) -------------------------------------------------


def test_a_bpe_checkpoint_keeps_its_tokenizer_file_and_says_so(bpe, tmp_path):
    from minilora.transformer import GPT, GPTConfig

    tokenizer = BPETokenizer(bpe)
    text = "Ünïcode, tabs\tand emoji 🙂 all encode: a byte-level BPE has every byte."
    assert tokenizer.decode(tokenizer.encode(text)) == text and not tokenizer.unknown_characters(
        text
    )
    assert tokenizer.encode(text).tolist() == bpe.encode(text).ids  # the library's own tokens
    model = GPT(GPTConfig(vocab_size=bpe.get_vocab_size(), block_size=16, n_layer=1, n_head=2,
                          d_model=8), generator=np.random.default_rng(0))  # fmt: skip
    save_model(model, tmp_path / "ckpt", tokenizer)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["format_version"] == 2
    assert config["tokenizer"] == {"type": "bpe", "file": "tokenizer.json", "vocab_size": 400}
    _, back, _ = load_model(tmp_path / "ckpt")
    assert isinstance(back, BPETokenizer) and back == tokenizer
    save_model(model, tmp_path / "char", None)  # no BPE: the format older minilora reads
    assert json.loads((tmp_path / "char" / "config.json").read_text())["format_version"] == 1
    with pytest.raises(ValueError, match="token id 400 is outside the vocabulary"):
        tokenizer.decode([1, 400])
    (tmp_path / "ckpt" / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="config.json: the tokenizer is a BPE in .*missing"):
        load_model(tmp_path / "ckpt")


def test_without_the_tokenizers_library_the_error_says_what_to_install(
    bpe, tmp_path, capsys, monkeypatch
):
    from minilora.transformer import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=400, block_size=16, n_layer=1, n_head=2, d_model=8))
    save_model(model, tmp_path / "ckpt", BPETokenizer(bpe))
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if it were not installed
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(tmp_path / "ckpt"), "--length", "2"])
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'pip install "minilora[bpe]"' in err, err


# ---- GPT-2 files from transformers (the compat extra) --------------------------------------


@pytest.fixture(scope="module")
def gpt2(bpe, tmp_path_factory):
    """(directory saved as save_pretrained saves, the transformers model, its tokenizer)."""
    torch = pytest.importorskip("torch", reason='needs pip install -e ".[compat]"')
    transformers = pytest.importorskip("transformers", reason='needs pip install -e ".[compat]"')
    transformers.logging.set_verbosity_error()
    root = tmp_path_factory.mktemp("gpt2")
    hf_tok = transformers.GPT2TokenizerFast(
        tokenizer_object=bpe, bos_token=EOT, eos_token=EOT, unk_token=EOT
    )
    hf_tok.save_pretrained(root / "gpt2")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=bpe.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(root / "gpt2")
    status = main(["import-hf", str(root / "gpt2"), str(root / "ours")])
    assert status == 0
    return root, model, transformers.AutoTokenizer.from_pretrained(root / "gpt2")


def test_imported_gpt2_generates_transformers_greedy_tokens(gpt2, capsys):
    import torch

    root, hf_model, hf_tok = gpt2
    model, tokenizer, meta = load_model(root / "ours")
    assert isinstance(tokenizer, BPETokenizer) and (root / "ours" / "tokenizer.json").is_file()
    ids = tokenizer.encode(PROMPT)
    assert ids.tolist() == hf_tok(PROMPT)["input_ids"]
    with torch.no_grad():
        theirs = hf_model.generate(
            torch.tensor(ids[None]), max_new_tokens=20, do_sample=False, pad_token_id=0
        )[0].tolist()
    ours = model.generate(ids, 20, temperature=0)[0].tolist()
    assert ours == theirs
    capsys.readouterr()
    argv = ["generate", "--model", str(root / "ours"), "--prompt", PROMPT, "--length", "20",
            "--temperature", "0"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out == hf_tok.decode(theirs) + "\n"


def test_vocab_and_merges_give_the_same_tokens_as_tokenizer_json(gpt2, bpe, tmp_path):
    root, _, _ = gpt2
    legacy = tmp_path / "legacy"
    shutil.copytree(root / "gpt2", legacy)
    (legacy / "tokenizer.json").unlink()
    bpe.model.save(str(legacy))  # vocab.json and merges.txt, as GPT-2's original release
    assert {"vocab.json", "merges.txt"} <= {p.name for p in legacy.iterdir()}
    assert main(["import-hf", str(legacy), str(tmp_path / "ours")]) == 0
    _, tokenizer, _ = load_model(tmp_path / "ours")
    _, reference, _ = load_model(root / "ours")
    text = README[:3000] + f" {EOT} the end"
    assert tokenizer.encode(text).tolist() == reference.encode(text).tolist()
    assert tokenizer.encode(EOT).tolist() == [0] and tokenizer.end_of_text == 0


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers' own deprecations, via PEFT
def test_finetune_merge_and_export_work_with_the_bpe_and_peft_loads_the_adapter(
    gpt2, tmp_path, capsys
):
    import peft
    import torch
    import transformers

    root, _, hf_tok = gpt2
    questions = ["what does LoRA train?", "what stays frozen?", "what is r?", "what is alpha?"]
    answers = ["A and B", "W0", "the rank", "a scale"]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q: {q}\nA: ", "completion": a}) + "\n"
                            for q, a in zip(questions * 3, answers * 3)))  # fmt: skip
    adapter = tmp_path / "adapter"
    argv = ["finetune", "--model", str(root / "ours"), "--data", str(data), "--steps", "4",
            "--batch-size", "4", "--lr", "0.05", "--out", str(adapter), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fine-tuning on 11 pairs; validation: 1 of 12 pairs held out" in out
    assert "validation loss on 1 held-out pairs" in out and "exact match on 1 held-out" in out

    model, tokenizer, _ = load_model(root / "ours")
    load_adapter(model, adapter)
    ids = tokenizer.encode("Q: what is r?\nA: the rank\n")
    adapted = logits(model, ids)
    base_model, _, _ = load_model(root / "ours")
    assert np.abs(adapted - logits(base_model, ids)).max() > 1e-4  # the adapter did change it

    assert main(["merge", "--model", str(root / "ours"), "--adapter", str(adapter), "--out",
                 str(tmp_path / "merged")]) == 0  # fmt: skip
    merged, merged_tok, _ = load_model(tmp_path / "merged")
    assert merged_tok == tokenizer
    np.testing.assert_allclose(logits(merged, ids), adapted, atol=1e-5)

    hf_out = tmp_path / "hf"
    assert main(["export-hf", str(root / "ours"), str(hf_out), "--adapter", str(adapter)]) == 0
    config = json.loads((hf_out / "config.json").read_text())
    assert config["eos_token_id"] == 0 and config["bos_token_id"] == 0  # <|endoftext|>
    assert (
        transformers.AutoTokenizer.from_pretrained(hf_out)(PROMPT)["input_ids"]
        == hf_tok(PROMPT)["input_ids"]
    )
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(hf_out)
    hf_model = peft.PeftModel.from_pretrained(hf_model, hf_out / "adapter").eval()
    with torch.no_grad():
        theirs = hf_model(torch.tensor(ids[None])).logits.numpy()[0]
    np.testing.assert_allclose(theirs, adapted, atol=1e-5)
    merge_and_unload(model)  # and the merged model agrees with PEFT's merged one
    with torch.no_grad():
        merged_theirs = hf_model.merge_and_unload()(torch.tensor(ids[None])).logits.numpy()[0]
    np.testing.assert_allclose(merged_theirs, logits(model, ids), atol=1e-5)
