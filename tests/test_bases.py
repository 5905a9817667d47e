"""The base-model comparison (minilora.paper.bases): its runs and its table."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

from test_protocol import FIXTURES, TINY

from minilora.paper import bases, budgets, experiments, protocol, reproduce, tables
from minilora.paper.report import mean_sd
from minilora.work.pretrained import PRETRAINED_DIR, load_pretrained


def test_each_base_gets_its_own_sweeps_and_shares_char_smalls_records(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "none")
    b = budgets.get_budget("full")
    runs, waiting = bases.bases_runs(b, protocol.Records(tmp_path))
    grid = len(protocol.GRID)
    assert len(runs) == len(bases.BASES) * 2 * 2 * grid  # 2 tasks x 2 methods x grid
    assert {r.base for r in runs} == set(bases.BASES)
    main = 2 * 2 * (len(b.main_seeds) - 1)  # 2 tasks x 2 methods x seeds beyond the sweep's
    ranks = len(b.tasks6) * (len(b.ranks) * len(b.seeds) - len(b.seeds))  # r = 8's are main's
    assert len(waiting) == len(bases.BASES) * main + len(bases.RANK_BASES) * ranks
    assert bases.RANK_BASES == bases.BASES[:2] and len(bases.BASES) == 3
    assert {dict(r.settings).get("r") for r in waiting} >= set(b.ranks)
    # char-small's half is Table 4's own runs: the same keys, so the same records
    table4, _ = tables.table4_runs(b, protocol.Records(tmp_path))
    ours = {r.key() for r in runs if r.base == "char-small"}
    assert ours <= {r.key() for r in table4}
    mixed = [r for r in runs if r.base == "char-small-mixed"]
    assert not {r.key() for r in mixed} & {r.key() for r in table4}
    # the third base: its own sweeps, sql's before nli's, no rank runs
    third = [r for r in runs + waiting if r.base == "char-small-tasklang"]
    assert len({r.key() for r in third}) == len(third) == 2 * 2 * (grid + len(b.main_seeds) - 1)
    assert not {r.key() for r in third} & {r.key() for r in runs + waiting if r not in third}
    tasks = [r.task for r in runs if r.base == "char-small-tasklang"]
    assert tasks == sorted(tasks, key=["sql", "nli"].index) and set(tasks) == {"sql", "nli"}
    assert {dict(r.settings).get("r", 8) for r in third} == {8}


def test_the_table_is_rebuilt_from_records_without_training(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RECORDS", FIXTURES)
    # the fixtures hold the runs of the bases with weights (the third has none yet)
    monkeypatch.setattr(bases, "BASES", bases.RANK_BASES)

    def no_training(run, progress=False):
        raise AssertionError(f"{run.key()} should have been read from the records")

    monkeypatch.setattr(experiments, "execute", no_training)
    text = bases.bases(TINY, tmp_path, progress=False).read_text()
    for base in bases.BASES:
        assert text.count(f"| {base} |") == 3  # both tasks, and the ranks on Table 6's task
    assert "not yet run" not in text
    assert "| r=1 |" in text  # TINY's one rank


def test_the_third_base_has_main_rows_and_a_manipulation_row_not_rank_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RECORDS", FIXTURES)
    text = bases.bases(replace(TINY, compute=False), tmp_path, progress=False).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| char-small-tasklang |")]
    main = [r for r in rows if "not yet run" in r]
    assert [r.split("|")[2].strip() for r in main] == ["sql", "nli"]
    assert all(r.count("not yet run") == 2 for r in main)  # FT and LoRA r = 8
    assert len(rows) == 2  # and no row in the rank table
    for base in bases.RANK_BASES:  # the others' rows are all there, from the records
        assert not [x for x in text.splitlines() if f"| {base} |" in x and "not yet" in x]


def test_the_manipulation_table_has_a_row_for_every_base_and_task():
    # from the committed check; a base it lacks gets "not yet measured" rows
    lines = bases._manipulation_check(budgets.get_budget("full-recorded"))
    for base in bases.BASES:
        rows = [line.split("|")[2].strip() for line in lines if line.startswith(f"| {base} |")]
        assert rows == ["sql", "nli"], (base, rows)


def test_the_lora_column_is_r8s_and_the_rank_table_each_ranks(tmp_path, monkeypatch):
    """Runs at other ranks share base, task and method with r = 8's: each goes to its cell."""
    records = tmp_path / "records"
    shutil.copytree(FIXTURES, records)
    monkeypatch.setattr(experiments, "RECORDS", records)
    monkeypatch.setattr(bases, "BASES", bases.RANK_BASES)  # the bases with fixture records
    lr = protocol.DEFAULT_LR["lora"]  # TINY does not sweep
    for r, score in ((8, 0.5), (1, 0.9)):
        run = protocol.protocol_run(TINY, "lora", "sql", {**protocol.LORA_SWEPT, "r": r}, 0, lr)
        path = records / f"{run.key()}.json"
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "score": score}))
    text = bases.bases(TINY, tmp_path, progress=False).read_text()
    main, ranks = (x for x in text.splitlines() if x.startswith("| char-small | sql |"))
    assert main.split("|")[4].strip() == mean_sd([0.5]), main
    assert ranks.split("|")[3].strip() == mean_sd([0.9]), ranks
    assert (tmp_path / "bases.png").is_file()


def test_fts_lead_is_the_difference_of_means_with_its_standard_error():
    # means 0.85 and 0.55; each sample variance 0.005, so se = sqrt(0.005/2 + 0.005/2)
    # se = sqrt(0.005 / 2 + 0.005 / 2); Welch df = 2, t = 4.303: half-width 30.4 points
    assert bases.lead([0.9, 0.8], [0.5, 0.6]) == "+30.0 ± 7.1 (95%: -0.4 to +60.4)"
    assert bases.lead([0.9], [0.5, 0.6]) == "—"  # one seed: no spread to judge by


def test_bases_is_a_reproduction_and_plans_its_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "none")
    assert "bases" in reproduce.resolve(["all"])
    text = reproduce.plan(["bases"], "full", tmp_path)
    assert f"{3 * 2 * 2 * len(protocol.GRID)} missing now" in text


def test_with_the_committed_records_only_the_third_base_can_be_missing(tmp_path):
    # the old bases' runs keep their keys: the plan finds every one of them recorded; what
    # it lists is the third base's runs still to do, however many of them are recorded
    text = reproduce.plan(["bases"], "full", tmp_path)
    listed = [line for line in text.splitlines() if line.startswith("  bases: ")]
    assert all(line.count("base char-small-tasklang,") == 1 for line in listed), listed
    assert len(listed) <= 2 * 2 * len(protocol.GRID)  # at most its four sweeps
    tasks = [line.split(" on ")[1].split(",")[0] for line in listed]
    assert tasks == sorted(tasks, key=("sql", "nli").index)  # sql first, then nli


def test_the_bases_with_weights_have_one_shape_and_one_tokenizer():
    made = [n for n in bases.BASES if (PRETRAINED_DIR / n / "model.safetensors").is_file()]
    assert made[:2] == list(bases.RANK_BASES)  # the third once it is pretrained and shipped
    (a, tok_a, _), *others = (load_pretrained(name) for name in made)
    for b, tok_b, _ in others:
        assert a.config == b.config and tok_a == tok_b
