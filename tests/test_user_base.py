"""The paper on your base: ``minilora reproduce table4|table5|table6 --model DIR``.

A tiny checkpoint made the user's way (``minilora pretrain --text``, a character tokenizer)
and a tiny GPT-2 imported with its byte-level BPE (``minilora import-hf``) run the tables'
runs under the quick budget; their records must name that base, go to ``OUT/cache`` only,
never be the shipped records' keys, and be read back on a second call without training.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from minilora.cli import main
from minilora.paper import budgets, experiments, protocol, tables, user_base
from minilora.transformer import GPT, GPTConfig
from minilora.work.data import CharTokenizer
from minilora.work.io import save_model
from minilora.work.tasks import MAX_EXAMPLE_CHARS, make_task, survey, task_characters

QUICK = budgets.get_budget("quick")


def lora_qv_trainable(n_layer: int, d_model: int, r: int) -> int:
    """LoRA on Wq and Wv of every block: A (r x d) and B (d x r) per matrix (section 4.1)."""
    return n_layer * 2 * (2 * d_model * r)


def committed() -> dict:
    """{name: (size, mtime)} of everything under the shipped records."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in Path(experiments.RECORDS).rglob("*")}  # fmt: skip


def run_cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A character-level base pretrained for 2 steps on the tasks' own text (``--text``)."""
    root = tmp_path_factory.mktemp("mine")
    text = "".join(p + a for task in ("sql", "nli") for p, a in make_task(task, 60, 0, 0).train)
    (root / "text.txt").write_text(text)
    argv = ["pretrain", "--text", str(root / "text.txt"), "--out", str(root / "model"),
            "--steps", "2", "--n-layer", "1", "--d-model", "16", "--n-head", "2",
            "--block-size", "128", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return root / "model"


def test_table4_on_your_base_keeps_its_records_apart_and_a_second_call_trains_nothing(
    pretrained, tmp_path, capsys, monkeypatch
):
    before = committed()
    out = tmp_path / "out"
    argv = ["reproduce", "table4", "--model", str(pretrained), "--budget", "quick", "--out",
            str(out), "--no-progress"]  # fmt: skip
    status, _, err = run_cli(argv, capsys)
    assert status == 0, err
    name = user_base.name_base(pretrained)
    assert name == f"{pretrained.resolve()}@{user_base.digest(pretrained)}"
    table = (out / "table4.md").read_text()
    digest = name.rpartition("@")[2]
    assert table.startswith(f"# Table 4 (LoRA section 5.4) on model (your checkpoint, digest "
                            f"{digest}) (quick budget)")  # fmt: skip
    assert f"Base: your checkpoint `{pretrained.resolve()}`" in table
    assert "its own character tokenizer" in table

    records = [json.loads(p.read_text()) for p in sorted((out / "cache").glob("*.json"))]
    assert len(records) == len(tables.TABLE4_ROWS) * 2  # every row on both tasks, one seed
    assert {rec["run"]["base"] for rec in records} == {name}
    assert committed() == before  # nothing written under minilora/paper/records
    model = GPT(GPTConfig(**json.loads((pretrained / "config.json").read_text())["config"]))
    n_params = sum(p.data.size for p in model.parameters())  # the user's model, not char-small
    assert {rec["total"] for rec in records if rec["run"]["method"] == "ft"} == {n_params}
    r8 = [rec for rec in records
          if rec["run"]["method"] == "lora" and rec["run"]["settings"]["r"] == 8]  # fmt: skip
    assert {rec["trainable"] for rec in r8} == {lora_qv_trainable(1, 16, 8)}

    # the same settings on the shipped base are other runs, with other keys
    runs, _ = tables.table4_runs(QUICK, protocol.Records(out / "cache"), base=name)
    shipped, _ = tables.table4_runs(QUICK, protocol.Records(out / "cache"))
    assert [replace(r, base=experiments.BASE) for r in runs] == shipped
    assert not {r.key() for r in runs} & {r.key() for r in shipped}
    assert all(protocol.Records(out / "cache").get(r) is None for r in shipped)

    def no_training(run, progress=False):
        raise AssertionError(f"trained {run.key()} again")

    monkeypatch.setattr(experiments, "execute", no_training)
    status, _, err = run_cli(argv, capsys)
    assert status == 0, err
    assert len(list((out / "cache").glob("*.json"))) == len(records)


def test_a_changed_checkpoint_is_a_new_base_and_its_old_runs_refuse_to_load(tmp_path):
    tokenizer = CharTokenizer(task_characters())
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=128, n_layer=1, n_head=2,
                       d_model=8)  # fmt: skip
    save_model(GPT(config, generator=np.random.default_rng(0)), tmp_path / "m", tokenizer)
    first = user_base.name_base(tmp_path / "m")
    assert user_base.load_base(first)[1] == tokenizer
    save_model(GPT(config, generator=np.random.default_rng(1)), tmp_path / "m", tokenizer)
    second = user_base.name_base(tmp_path / "m")
    assert first != second and first.rpartition("@")[0] == second.rpartition("@")[0]
    run = protocol.protocol_run(QUICK, "lora", "sql", protocol.LORA_SWEPT, 0, 0.02, first)
    assert run.key() != replace(run, base=second).key()
    with pytest.raises(ValueError, match=r"m has changed \(digest .*, its runs were named for"):
        experiments.execute(run)


def test_the_full_protocol_sweeps_the_rate_on_your_base(pretrained, tmp_path, monkeypatch):
    """A sweep budget (the full protocol, cut to a few steps) on Table 6: every run, the
    sweep's included, starts from your base; none from the shipped one."""
    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "none")
    b = replace(QUICK, name="tiny-sweep", steps=2, n_eval=2, n_val_eval=2, eval_every=2,
                ranks=(1,), sweep=True)  # fmt: skip
    name = user_base.name_base(pretrained)
    path = tables.table6(b, tmp_path / "out", progress=False, base=name)
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "cache").glob("*.json")]
    assert {rec["run"]["base"] for rec in records} == {name}
    swept = {rec["run"]["lr"] for rec in records if rec["run"]["settings"]["r"] == 8}
    assert swept >= {protocol.rate("lora", k) for k in protocol.GRID}
    assert "your checkpoint" in path.read_text()


def test_a_gpt2_imported_with_its_bpe_runs_table6(tmp_path, capsys):
    pytest.importorskip("tokenizers", reason='needs pip install -e ".[bpe]"')
    torch = pytest.importorskip("torch", reason='needs pip install -e ".[compat]"')
    transformers = pytest.importorskip("transformers", reason='needs pip install -e ".[compat]"')
    from test_gpt2_bpe import EOT, README, train_bpe

    transformers.logging.set_verbosity_error()
    bpe = train_bpe(README, vocab_size=300)
    hf_tok = transformers.GPT2TokenizerFast(
        tokenizer_object=bpe, bos_token=EOT, eos_token=EOT, unk_token=EOT
    )
    hf_tok.save_pretrained(tmp_path / "gpt2")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=300, n_positions=128, n_embd=16, n_layer=1,
                                     n_head=2, bos_token_id=0, eos_token_id=0)  # fmt: skip
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    assert main(["import-hf", str(tmp_path / "gpt2"), str(tmp_path / "ours")]) == 0
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["tokenizer"]["type"] == "bpe"
    out = tmp_path / "out"
    argv = ["reproduce", "table6", "--model", str(tmp_path / "ours"), "--out", str(out),
            "--no-progress"]  # fmt: skip
    status, _, err = run_cli(argv, capsys)
    assert status == 0, err
    table = (out / "table6.md").read_text()
    assert "its own byte-level BPE tokenizer (300 tokens)" in table
    records = [json.loads(p.read_text()) for p in (out / "cache").glob("*.json")]
    assert len(records) == len(tables.TABLE6_TARGETS) * len(QUICK.ranks)
    assert {rec["run"]["base"] for rec in records} == {user_base.name_base(tmp_path / "ours")}
    r8 = [rec for rec in records if rec["run"]["settings"]["r"] == 8
          and rec["run"]["settings"]["targets"] == ["q", "v"]]  # fmt: skip
    assert [rec["trainable"] for rec in r8] == [lora_qv_trainable(1, 16, 8)]
    # BPE merges characters: the sql task's longest example is fewer tokens than characters
    _, tokenizer, _ = user_base.load_base(user_base.name_base(tmp_path / "ours"))
    sizes = (QUICK.n_train, experiments.N_VAL, experiments.N_TEST)
    assert user_base.longest_example("sql", tokenizer, sizes) < MAX_EXAMPLE_CHARS


def tiny(directory: Path, chars: str, block_size: int = 128, fmt=None) -> Path:
    tokenizer = CharTokenizer(chars)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=1,
                       n_head=2, d_model=8)  # fmt: skip
    save_model(GPT(config), directory, tokenizer)
    if fmt is not None:
        info = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps({**info, "format": fmt}))
    return directory


BAD = {
    "missing": (lambda d: d / "nowhere", 1, ["--model", "nowhere: no such directory"]),
    "a file": (lambda d: (d / "f.txt").write_text("x") and d / "f.txt", 1, ["not a directory"]),
    "not a checkpoint": (
        lambda d: d, 1, ["not a checkpoint (expected config.json and model.safetensors"]
    ),
    "another format": (
        lambda d: tiny(d / "m", task_characters(), fmt="other"), 1,
        ["not a minilora checkpoint (its 'format' is 'other'"],
    ),
    "unencodable": (
        lambda d: tiny(d / "m", task_characters().replace("Q", "").replace("*", "")), 1,
        ["character tokenizer", "cannot encode '*Q'", "sql task", "minilora pretrain --text"],
    ),
    "short context": (
        lambda d: tiny(d / "m", task_characters(), block_size=32), 1,
        ["context holds 32 tokens", "reach {sql} tokens", "expected block_size >= {sql}"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_models_are_refused_in_one_line_before_any_run(case, tmp_path, capsys, monkeypatch):
    make, want_status, words = BAD[case]
    (tmp_path / "in").mkdir()
    model = make(tmp_path / "in")
    monkeypatch.chdir(tmp_path / "in")
    monkeypatch.setattr(experiments, "execute", None)  # any run would fail differently
    status, _, err = run_cli(["reproduce", "table4", "--model", str(model), "--out",
                              str(tmp_path / "out"), "--no-progress"], capsys)  # fmt: skip
    assert status == want_status and len(err.strip().splitlines()) == 1, err
    assert err.startswith("minilora reproduce: --model ")
    for word in words:  # {sql}: the sql task's longest example (exhaustive: tasks.survey)
        assert word.replace("{sql}", str(survey("sql")[0])) in err, err
    assert not (tmp_path / "out" / "cache").exists()


def test_model_only_applies_to_the_protocol_tables_and_plan_lists_its_sweeps(
    pretrained, tmp_path, capsys
):
    status, _, err = run_cli(["reproduce", "table4", "table1", "--model", str(pretrained),
                              "--out", str(tmp_path)], capsys)  # fmt: skip
    assert status == 1 and "--model applies to table4, table5, table6, not to table1" in err
    status, out, err = run_cli(["reproduce", "table6", "--model", str(pretrained), "--plan",
                                "--budget", "full", "--out", str(tmp_path)], capsys)  # fmt: skip
    assert status == 0, err
    name = user_base.name_base(pretrained)
    listed = [line for line in out.splitlines() if line.startswith("  table6: ")]
    assert len(listed) == len(protocol.GRID) and all(f"base {name}," in x for x in listed)
