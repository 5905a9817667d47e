"""Bad inputs at the command line: one line on stderr, naming the argument and its value.

Each case runs ``minilora.cli.main(argv)`` in this process and asserts the exit status (2 for a
usage error, 1 for anything else) and that stderr is ONE line, ``minilora COMMAND: ...``,
naming the argument and its value, without a traceback. Nothing here trains for more than a
couple of steps: the cases fail before any work (that is part of what they test). The API's
cases are in tests/test_bad_inputs.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minilora import backend, cli
from minilora.lora import LoRAConfig, inject_lora
from minilora.transformer import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent.parent

# ---- small things to break ---------------------------------------------------------------


def tiny_gpt(vocab_size: int = 11) -> GPT:
    config = GPTConfig(vocab_size=vocab_size, block_size=8, n_layer=2, n_head=2, d_model=8)
    return GPT(config, generator=np.random.default_rng(0))


# ---- the command line ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Files to point the command at: a plain file, damaged and foreign checkpoints/adapters."""
    from safetensors.numpy import load_file, save_file

    from minilora.interop.adapters import ADAPTER_WEIGHTS, save_adapter
    from minilora.work.io import save_model
    from minilora.work.pretrained import load_pretrained

    root = tmp_path_factory.mktemp("bad")
    (root / "file.txt").write_text("not a directory\n")
    base, tokenizer, _ = load_pretrained("char-small")

    # an adapter for another base model (a tiny GPT with char-small's vocabulary)
    other = tiny_gpt(tokenizer.vocab_size)
    inject_lora(other, LoRAConfig(r=2, alpha=4), generator=np.random.default_rng(1))
    save_adapter(other, root / "adapter-other-base")
    save_model(tiny_gpt(tokenizer.vocab_size), root / "ckpt-tiny", tokenizer)

    # an adapter for char-small, then a copy with one NaN in B, and one cut short
    inject_lora(base, LoRAConfig(r=2, alpha=4), generator=np.random.default_rng(1))
    save_adapter(base, root / "adapter")
    shutil.copytree(root / "adapter", root / "adapter-nan")
    arrays = load_file(root / "adapter-nan" / ADAPTER_WEIGHTS)
    last = sorted(k for k in arrays if k.endswith("lora_B.weight"))[-1]
    arrays[last][0, 0] = np.nan
    save_file(arrays, root / "adapter-nan" / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    shutil.copytree(root / "adapter", root / "adapter-cut")
    weights = root / "adapter-cut" / ADAPTER_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])

    (root / "ckpt-damaged").mkdir()
    (root / "ckpt-damaged" / "config.json").write_text("{not json")
    (root / "ckpt-foreign").mkdir()
    (root / "ckpt-foreign" / "config.json").write_text(json.dumps({"format": "other"}))
    (root / "nb-damaged.ipynb").write_text("not a notebook")
    (root / "a-dir").mkdir()
    return root


def unwritable(root: Path) -> Path:
    """A place this process cannot make anything in (root ignores permission bits)."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        locked = root / "locked"
        locked.mkdir(exist_ok=True)
        locked.chmod(0o555)
        return locked / "out"
    if not Path("/proc").is_dir():
        pytest.skip("no unwritable place to test with")
    return Path("/proc/minilora-cannot-write-here")


def command(id, argv, status, *words, env=None):
    """``argv`` may hold "{root}" (the files fixture), "{file}" and "{unwritable}"."""
    return pytest.param(argv, status, words, env or {}, id=id)


FT = ["finetune", "--out", "{root}/ft", "--steps", "1", "--quiet"]
PT = ["pretrain", "--out", "{root}/pt", "--steps", "1", "--quiet"]
GEN = ["generate", "--length", "2"]
MERGE = ["merge", "--out", "{root}/merged"]
NO_CUPY = "CuPy" if not backend.cuda_available() else None

# fmt: off
CLI_CASES = [
    command("no-command", [], 2, "minilora:", "COMMAND"),
    command("unknown-command", ["frob"], 2, "'frob'"),
    command("unknown-option", ["generate", "--frob"], 2, "--frob"),
    # generate
    command("generate-length-negative", [*GEN, "--length", "-1"], 2, "--length", "'-1'", ">= 0"),
    command("generate-length-not-a-number", [*GEN, "--length", "abc"], 2, "--length", "'abc'"),
    command("generate-temperature-negative", [*GEN, "--temperature", "-0.5"],
            2, "--temperature", "'-0.5'"),
    command("generate-temperature-nan", [*GEN, "--temperature", "nan"],
            2, "--temperature", "'nan'"),
    command("generate-top-k-0", [*GEN, "--top-k", "0"], 2, "--top-k", "'0'", ">= 1"),
    command("generate-empty-prompt", [*GEN, "--prompt", ""], 2, "--prompt", "''"),
    command("generate-prompt-outside-vocabulary", [*GEN, "--prompt", "Café"],
            2, "--prompt", "'Café'", "'é'"),
    command("generate-seed-negative", [*GEN, "--seed", "-1"], 2, "--seed", "'-1'"),
    command("generate-model-missing", [*GEN, "--model", "{root}/nowhere"],
            1, "--model", "nowhere"),
    command("generate-model-is-a-file", [*GEN, "--model", "{file}"], 1, "--model", "file.txt"),
    command("generate-model-damaged", [*GEN, "--model", "{root}/ckpt-damaged"],
            1, "--model", "ckpt-damaged", "JSON"),
    command("generate-model-not-minilora", [*GEN, "--model", "{root}/ckpt-foreign"],
            1, "--model", "ckpt-foreign", "'other'"),
    command("generate-adapter-missing", [*GEN, "--adapter", "{root}/nowhere"],
            1, "--adapter", "nowhere"),
    command("generate-adapter-cut-short", [*GEN, "--adapter", "{root}/adapter-cut"],
            1, "--adapter", "adapter-cut"),
    command("generate-adapter-for-another-base", [*GEN, "--adapter", "{root}/adapter-other-base"],
            1, "--adapter", "adapter-other-base", "does not fit"),
    command("generate-device-tpu", [*GEN, "--device", "tpu"], 2, "--device", "'tpu'"),
    command("generate-env-device-tpu", GEN, 1, "MINILORA_DEVICE", "'tpu'",
            env={"MINILORA_DEVICE": "tpu"}),
    command("generate-env-device-cuda", GEN, 1, "MINILORA_DEVICE=cuda", NO_CUPY,
            env={"MINILORA_DEVICE": "cuda"}),
    command("generate-device-cuda", [*GEN, "--device", "cuda"], 1, "--device cuda", NO_CUPY),
    # finetune
    command("finetune-steps-0", [*FT, "--steps", "0"], 2, "--steps", "'0'", ">= 1"),
    command("finetune-steps-negative", [*FT, "--steps", "-3"], 2, "--steps", "'-3'"),
    command("finetune-rank-negative", [*FT, "--r", "-2"], 2, "--r", "'-2'", ">= 1"),
    command("finetune-rank-0", [*FT, "--r", "0"], 2, "--r", "'0'"),
    command("finetune-rank-not-a-number", [*FT, "--r", "eight"], 2, "--r", "'eight'"),
    command("finetune-alpha-0", [*FT, "--alpha", "0"], 2, "--alpha", "'0'", "(0, inf)"),
    command("finetune-alpha-negative", [*FT, "--alpha", "-16"], 2, "--alpha", "'-16'"),
    command("finetune-alpha-inf", [*FT, "--alpha", "inf"], 2, "--alpha", "'inf'", "finite"),
    command("finetune-alpha-nan", [*FT, "--alpha", "nan"], 2, "--alpha", "'nan'"),
    command("finetune-dropout-1", [*FT, "--dropout", "1"], 2, "--dropout", "'1'", "[0, 1)"),
    command("finetune-dropout-negative", [*FT, "--dropout", "-0.1"], 2, "--dropout", "'-0.1'"),
    command("finetune-lr-0", [*FT, "--lr", "0"], 2, "--lr", "'0'"),
    command("finetune-lr-nan", [*FT, "--lr", "nan"], 2, "--lr", "'nan'"),
    command("finetune-batch-size-0", [*FT, "--batch-size", "0"], 2, "--batch-size", "'0'"),
    command("finetune-eval-negative", [*FT, "--eval", "-1"], 2, "--eval", "'-1'"),
    command("finetune-unknown-task", [*FT, "--task", "foo"], 2, "--task", "'foo'", "'sql'"),
    command("finetune-no-targets", [*FT, "--targets", ","], 2, "--targets", "','"),
    command("finetune-unknown-target", [*FT, "--targets", "nope", "--eval", "0"],
            1, "--targets nope", "match no Linear"),
    command("finetune-rank-larger-than-layer", [*FT, "--r", "500", "--eval", "0"],
            1, "--r 500", "r=500"),
    command("finetune-out-missing", ["finetune", "--steps", "1"], 2, "--out", "required"),
    command("finetune-out-is-a-file", [*FT, "--out", "{file}"],
            2, "--out", "file.txt", "existing file"),
    command("finetune-out-under-a-file", [*FT, "--out", "{file}/sub"],
            2, "--out", "file.txt/sub"),
    command("finetune-out-unwritable", [*FT, "--out", "{unwritable}"],
            1, "--out", "{unwritable}", "cannot write"),
    command("finetune-model-missing", [*FT, "--model", "{root}/nowhere"],
            1, "--model", "nowhere"),
    # pretrain
    command("pretrain-steps-0", [*PT, "--steps", "0"], 2, "--steps", "'0'"),
    command("pretrain-d-model-not-multiple", [*PT, "--d-model", "10", "--n-head", "4"],
            2, "--d-model 10", "--n-head 4"),
    command("pretrain-n-head-0", [*PT, "--n-head", "0"], 2, "--n-head", "'0'"),
    command("pretrain-block-size-0", [*PT, "--block-size", "0"], 2, "--block-size", "'0'"),
    command("pretrain-eval-every-negative", [*PT, "--eval-every", "-1"],
            2, "--eval-every", "'-1'"),
    command("pretrain-lr-negative", [*PT, "--lr", "-0.001"], 2, "--lr", "'-0.001'"),
    command("pretrain-out-is-a-file", [*PT, "--out", "{file}"], 2, "--out", "file.txt"),
    command("pretrain-out-unwritable", [*PT, "--out", "{unwritable}"],
            1, "--out", "cannot write"),
    # merge
    command("merge-adapter-required", ["merge", "--out", "{root}/m"], 2, "--adapter", "required"),
    command("merge-adapter-missing", [*MERGE, "--adapter", "{root}/nowhere"],
            1, "--adapter", "nowhere"),
    command("merge-adapter-for-another-base", [*MERGE, "--adapter", "{root}/adapter-other-base"],
            1, "--adapter", "adapter-other-base"),
    command("merge-adapter-with-NaN", [*MERGE, "--adapter", "{root}/adapter-nan"],
            1, "--adapter", "adapter-nan"),
    command("merge-out-is-a-file", [*MERGE, "--adapter", "{root}/adapter", "--out", "{file}"],
            2, "--out", "file.txt"),
    command("merge-model-missing",
            [*MERGE, "--adapter", "{root}/adapter", "--model", "{root}/nowhere"],
            1, "--model", "nowhere"),
    # demo
    command("demo-steps-0", ["demo", "--steps", "0"], 2, "--steps", "'0'"),
    command("demo-eval-0", ["demo", "--eval", "0"], 2, "--eval", "'0'"),
    command("demo-alpha-0", ["demo", "--alpha", "0"], 2, "--alpha", "'0'"),
    command("demo-out-is-a-file", ["demo", "--out", "{file}"], 2, "--out", "file.txt"),
    # export-hf and import-hf
    command("export-hf-model-missing", ["export-hf", "{root}/nowhere", "{root}/hf"],
            1, "MODEL", "nowhere"),
    command("export-hf-out-is-a-file", ["export-hf", "char-small", "{file}"],
            2, "OUT", "file.txt"),
    command("export-hf-adapter-for-another-base",
            ["export-hf", "char-small", "{root}/hf2", "--adapter", "{root}/adapter-other-base"],
            1, "--adapter", "adapter-other-base"),
    command("import-hf-dir-missing", ["import-hf", "{root}/nowhere", "{root}/back"],
            1, "DIR", "nowhere"),
    command("import-hf-out-is-a-file", ["import-hf", "{root}/a-dir", "{file}"],
            2, "OUT", "file.txt"),
    command("import-hf-adapter-missing",
            ["import-hf", "{root}/a-dir", "{root}/back", "--adapter", "{root}/nowhere"],
            1, "--adapter", "nowhere"),
    # the paper's and the course's commands
    command("reproduce-unknown-name", ["reproduce", "table9"], 2, "NAME", "'table9'", "counts"),
    command("reproduce-unknown-budget", ["reproduce", "counts", "--budget", "huge"],
            2, "--budget", "'huge'", "quick"),
    command("reproduce-out-is-a-file", ["reproduce", "counts", "--out", "{file}"],
            2, "--out", "file.txt"),
    command("exercises-no-subcommand", ["exercises"], 2, "minilora exercises:", "required"),
    command("exercises-strip-missing-notebook",
            ["exercises", "strip", "{root}/no.ipynb", "{root}/s.ipynb"],
            1, "NOTEBOOK", "no.ipynb"),
    command("exercises-strip-damaged-notebook",
            ["exercises", "strip", "{root}/nb-damaged.ipynb", "{root}/s.ipynb"],
            1, "NOTEBOOK", "nb-damaged.ipynb"),
    command("exercises-strip-out-is-a-dir",
            ["exercises", "strip", "{root}/nb-damaged.ipynb", "{root}/a-dir"],
            2, "OUT", "a-dir", "directory"),
    command("exercises-golden-out-is-a-file", ["exercises", "golden", "{file}"],
            2, "OUT_DIR", "file.txt"),
    command("exercises-execute-timeout-0", ["exercises", "execute", "x.ipynb", "--timeout", "0"],
            2, "--timeout", "'0'"),
]
# fmt: on


def run_cli(argv, capsys, monkeypatch, env=None):
    """(exit status, stdout, stderr) of ``minilora ARGV`` run in this process."""
    monkeypatch.delenv("MINILORA_DEBUG", raising=False)
    monkeypatch.delenv("MINILORA_DEVICE", raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    try:
        status = cli.main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    out, err = capsys.readouterr()
    return status, out, err


def fill(text: str, files: Path) -> str:
    if "{unwritable}" in text:
        text = text.replace("{unwritable}", str(unwritable(files)))
    return text.replace("{root}", str(files)).replace("{file}", str(files / "file.txt"))


@pytest.mark.parametrize(("argv", "status", "words", "env"), CLI_CASES)
def test_cli_reports_bad_input_in_one_line(argv, status, words, env, files, capsys, monkeypatch):
    if "cuda" in env.get("MINILORA_DEVICE", "") + " ".join(argv) and NO_CUPY is None:
        pytest.skip("CuPy and a GPU are here: device 'cuda' is not an error")
    got, _, err = run_cli([fill(a, files) for a in argv], capsys, monkeypatch, env)
    lines = err.strip().splitlines()
    assert got == status, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("minilora"), err
    for word in words:
        assert fill(word, files) in lines[0], f"{word!r} not in {lines[0]!r}"


def test_cli_task_names_are_the_tasks():
    from minilora.work.tasks import TASKS

    assert cli.TASKS == TASKS


# ---- before any work, --debug, and what is not an expected error ---------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["finetune", "--out", "{file}", "--steps", "1"],
        ["pretrain", "--out", "{unwritable}", "--steps", "1"],
        ["merge", "--adapter", "{root}/adapter", "--out", "{file}"],
    ],
    ids=["finetune-out-is-a-file", "pretrain-out-unwritable", "merge-out-is-a-file"],
)
def test_output_places_are_checked_before_any_work(argv, files, capsys, monkeypatch):
    def must_not_run(args, command):
        raise AssertionError("the command started although its output place is bad")

    monkeypatch.setitem(cli.COMMANDS, argv[0], must_not_run)
    status, out, err = run_cli([fill(a, files) for a in argv], capsys, monkeypatch)
    assert status in (1, 2) and "--out" in err and "started" not in err
    assert not out


def test_finetune_alpha_defaults_to_2r_and_an_explicit_alpha_is_kept(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setitem(cli.COMMANDS, "finetune", lambda args, command: seen.append(args.alpha))
    out = str(tmp_path / "adapter")
    cli.main(["finetune", "--out", out, "--r", "4"])
    cli.main(["finetune", "--out", out, "--r", "4", "--alpha", "0.5"])
    assert seen == [None, 0.5]  # None becomes 2r in the handler; 0.5 is not replaced


@pytest.mark.parametrize("how", ["flag-before", "flag-after", "environment"])
def test_debug_shows_the_original_exception(how, capsys, monkeypatch):
    argv = ["generate", "--prompt", "Café", "--length", "1"]
    if how == "flag-before":
        argv = ["--debug", *argv]
    elif how == "flag-after":
        argv = [*argv, "--debug"]
    else:
        monkeypatch.setenv("MINILORA_DEBUG", "1")
    with pytest.raises(Exception) as info:
        cli.main(argv)
    assert not isinstance(info.value, SystemExit)
    assert "'é'" in str(info.value)


def test_a_bug_is_one_line_marked_internal_and_debug_gives_its_traceback(capsys, monkeypatch):
    def buggy(args, command):
        return None + 1

    monkeypatch.setitem(cli.COMMANDS, "generate", buggy)
    status, _, err = run_cli(["generate"], capsys, monkeypatch)
    assert status == 1 and len(err.strip().splitlines()) == 1
    assert "internal error" in err and "TypeError" in err and "--debug" in err
    with pytest.raises(TypeError):
        cli.main(["--debug", "generate"])


def test_the_real_command_exits_2_with_one_line_and_debug_prints_the_traceback():
    env = {k: v for k, v in os.environ.items() if k not in ("MINILORA_DEBUG", "MINILORA_DEVICE")}

    def minilora(*args):
        argv = [sys.executable, "-m", "minilora.cli", *args]
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    plain = minilora("generate", "--prompt", "Café", "--length", "1")
    assert plain.returncode == 2, plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1, plain.stderr
    assert plain.stderr.startswith("minilora generate: --prompt 'Café'")
    debug = minilora("--debug", "generate", "--prompt", "Café", "--length", "1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "'é'" in debug.stderr
