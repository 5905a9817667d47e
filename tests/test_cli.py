"""The `minilora` command end to end on tiny settings: pretrain, generate, finetune, merge."""

import json

import numpy as np
import pytest

from minilora.cli import build_parser, main
from minilora.interop.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from minilora.work.io import load_model
from minilora.work.mixed_corpus import CORPORA, corpus_parts

TINY = [
    "--steps",
    "4",
    "--batch-size",
    "2",
    "--block-size",
    "128",
    "--n-layer",
    "1",
    "--n-head",
    "2",
    "--d-model",
    "16",
    "--eval-every",
    "2",
    "--quiet",
]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    assert main(["pretrain", "--out", str(out), *TINY]) == 0
    return out


@pytest.mark.parametrize("command", ["demo", "pretrain", "generate", "finetune", "merge"])
def test_every_command_has_useful_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"minilora {command}" in text
    assert len(text.splitlines()) > 6  # a description and the options, not one line


def test_pretrain_writes_a_loadable_checkpoint_with_its_record(tiny_checkpoint):
    model, tokenizer, meta = load_model(tiny_checkpoint)
    assert model.config.n_layer == 1 and model.config.d_model == 16
    assert tokenizer.vocab_size == model.config.vocab_size
    assert meta["steps"] == 4 and "minilora pretrain" in meta["command"]
    assert meta["corpus_name"] == "pydoc" and meta["corpus"] == "pydoc_data.topics"
    assert np.isfinite(meta["final_val_loss"])
    assert (tiny_checkpoint / "last" / "model.safetensors").is_file()
    assert (tiny_checkpoint / "best" / "model.safetensors").is_file()


def test_pretrain_takes_the_corpus_by_name(tmp_path):
    out = tmp_path / "mixed"
    assert main(["pretrain", "--out", str(out), "--corpus", "mixed", *TINY]) == 0
    _, _, meta = load_model(out)
    assert meta["corpus_name"] == "mixed" and "mixed_corpus.generated_text" in meta["corpus"]
    assert meta["corpus_tokens"] == sum(map(len, corpus_parts("mixed").values()))
    parse = build_parser().parse_args
    assert parse(["pretrain", "--out", "x"]).corpus == "pydoc"  # char-small's, by default
    assert [parse(["pretrain", "--out", "x", "--corpus", c]).corpus for c in CORPORA] == list(
        CORPORA
    )
    with pytest.raises(SystemExit):
        parse(["pretrain", "--out", "x", "--corpus", "wiki"])


def test_generate_prints_prompt_plus_requested_length(tiny_checkpoint, capsys):
    main(
        [
            "generate",
            "--model",
            str(tiny_checkpoint),
            "--prompt",
            "def ",
            "--length",
            "12",
            "--seed",
            "3",
        ]
    )
    text = capsys.readouterr().out.rstrip("\n")
    assert text.startswith("def ") and len(text) == 4 + 12


def test_generate_goes_past_the_context_and_refuses_a_negative_length(tiny_checkpoint, capsys):
    block = int(TINY[TINY.index("--block-size") + 1])
    args = ["generate", "--model", str(tiny_checkpoint), "--prompt", "def ", "--quiet"]
    assert main([*args, "--length", str(2 * block), "--temperature", "0"]) == 0
    text = capsys.readouterr().out[:-1]  # print's newline (the text may end in its own)
    assert text.startswith("def ") and len(text) == 4 + 2 * block
    with pytest.raises(SystemExit, match="--length: got '-1'") as exit_info:
        main([*args, "--length", "-1"])
    assert exit_info.value.code == 2


def test_finetune_then_merge_then_generate(tiny_checkpoint, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    main(
        [
            "finetune",
            "--model",
            str(tiny_checkpoint),
            "--steps",
            "3",
            "--batch-size",
            "2",
            "--eval",
            "2",
            "--r",
            "2",
            "--out",
            str(adapter),
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert "exact match on 2 test questions" in out
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    assert config["r"] == 2 and config["lora_alpha"] == 4.0 and config["peft_type"] == "LORA"
    assert (adapter / ADAPTER_WEIGHTS).is_file()

    merged = tmp_path / "merged"
    main(
        ["merge", "--model", str(tiny_checkpoint), "--adapter", str(adapter), "--out", str(merged)]
    )
    assert "merged model saved" in capsys.readouterr().out
    merged_model, _, meta = load_model(merged)
    base_model, _, _ = load_model(tiny_checkpoint)
    assert meta["merged_adapter"] == str(adapter)
    # the merged model is a plain GPT: same parameter names as the base, q and v changed
    assert set(merged_model.state_dict()) == set(base_model.state_dict())
    q = "blocks.0.attn.q_proj.weight"
    k = "blocks.0.attn.k_proj.weight"
    assert not np.array_equal(merged_model.state_dict()[q], base_model.state_dict()[q])
    assert np.array_equal(merged_model.state_dict()[k], base_model.state_dict()[k])

    main(
        [
            "generate",
            "--model",
            str(tiny_checkpoint),
            "--adapter",
            str(adapter),
            "--length",
            "5",
            "--temperature",
            "0",
        ]
    )
    with_adapter = capsys.readouterr().out
    main(["generate", "--model", str(merged), "--length", "5", "--temperature", "0"])
    assert capsys.readouterr().out == with_adapter  # merged = base + adapter, greedy tokens agree


def test_finetune_rejects_a_target_that_matches_nothing(tiny_checkpoint, tmp_path):
    with pytest.raises(SystemExit, match="--targets nope: .*match no Linear") as exit_info:
        main(
            [
                "finetune",
                "--model",
                str(tiny_checkpoint),
                "--steps",
                "1",
                "--targets",
                "nope",
                "--out",
                str(tmp_path / "a"),
                "--quiet",
            ]
        )
    assert exit_info.value.code == 1
    assert not (tmp_path / "a").exists()  # refused before anything was written
