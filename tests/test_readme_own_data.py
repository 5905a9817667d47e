"""The README's "Your own data" commands run as written, with fewer steps (README.md).

Every ``minilora`` line of the section's bash block runs in a fresh directory holding a
copy of the README (the text it pretrains on), in order, through ``minilora.cli.main``;
``--steps`` is cut to 2 and the fine-tuning scores 4 held-out pairs instead of 200, so that
it takes seconds. Each must succeed and print what the README's quoted output shows.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from minilora.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def section_commands(block_index: int = 0) -> list[list[str]]:
    """The argv of every ``minilora`` line in a bash block of the "Your own data" section
    (``block_index``: 0 the first block, 1 the second, "The paper on your base")."""
    section = README.read_text(encoding="utf-8").split("## Your own data", 1)[1].split("\n## ")[0]
    block = section.split("```bash\n")[1 + block_index].split("```", 1)[0]

    def ansi_c(match):  # bash's $'...' quoting, which shlex does not know
        return shlex.quote(match.group(1).encode().decode("unicode_escape"))

    commands = []
    for line in block.splitlines():
        if line.startswith("minilora "):
            line = re.sub(r"\$'((?:[^'\\]|\\.)*)'", ansi_c, line)
            commands.append(shlex.split(line)[1:])
    return commands


def quicker(argv: list[str]) -> list[str]:
    argv = list(argv)
    if "--steps" in argv:
        argv[argv.index("--steps") + 1] = "2"
    if argv[0] == "finetune":
        argv += ["--eval", "4", "--quiet"]
    if argv[0] == "pretrain":
        argv += ["--quiet"]
    return argv


def test_the_own_data_section_lists_pretrain_finetune_and_generate():
    names = [argv[0] for argv in section_commands()]
    assert names == ["pretrain", "generate", "data", "finetune", "generate"]


def test_the_own_data_commands_run_as_written(tmp_path, monkeypatch, capsys):
    shutil.copy(README, tmp_path / "README.md")
    monkeypatch.chdir(tmp_path)
    outputs = []
    for argv in section_commands():
        capsys.readouterr()
        assert main(quicker(argv)) == 0, argv
        outputs.append(capsys.readouterr().out)
    pretrained, sampled, exported, finetuned, answered = outputs
    assert pretrained.startswith("pretrained 2 steps") and "validation loss" in pretrained
    assert sampled.startswith("LoRA ")
    assert exported == "4000 sql train pairs written to runs/sql.jsonl\n"
    assert "fine-tuning on 3600 pairs; validation: 400 of 4000 pairs held out (seed 0)" in finetuned
    assert "validation loss on 4 held-out pairs" in finetuned
    assert "exact match on 4 held-out pairs" in finetuned
    assert answered.startswith("Q: how many cities are in france?\nSQL: ")
    assert (tmp_path / "runs" / "my-adapter" / "adapter_config.json").is_file()


@pytest.mark.slow  # about 25 s of CPU: Table 4's 18 quick runs on a 2-layer base
def test_the_paper_on_your_base_commands_run_as_written(tmp_path, monkeypatch, capsys):
    """The second block: pretrain a base (2 steps here), then Table 4 on it, quick budget."""
    shutil.copy(README, tmp_path / "README.md")
    monkeypatch.chdir(tmp_path)
    commands = section_commands(1)
    assert [argv[0] for argv in commands] == ["pretrain", "reproduce"]
    for argv in commands:
        argv = quicker(argv) + (["--no-progress"] if argv[0] == "reproduce" else [])
        assert main(argv) == 0, argv
    out = Path(commands[1][commands[1].index("--out") + 1])
    model = Path(commands[1][commands[1].index("--model") + 1])
    table = (out / "table4.md").read_text()
    assert table.startswith(f"# Table 4 (LoRA section 5.4) on {model.name} (your checkpoint")
    runs = [json.loads(p.read_text())["run"] for p in (out / "cache").glob("*.json")]
    assert runs and {run["base"].rpartition("@")[0] for run in runs} == {str(model.resolve())}
