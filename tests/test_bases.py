"""The base-model comparison (minilora.paper.bases): its runs and its table."""

from __future__ import annotations

import json
import shutil

from test_protocol import FIXTURES, TINY

from minilora.paper import bases, budgets, experiments, protocol, reproduce, tables
from minilora.paper.report import mean_sd
from minilora.work.pretrained import load_pretrained


def test_each_base_gets_its_own_sweeps_and_shares_char_smalls_records(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "none")
    b = budgets.get_budget("full")
    runs, waiting = bases.bases_runs(b, protocol.Records(tmp_path))
    grid = len(protocol.GRID)
    assert len(runs) == len(bases.BASES) * 2 * 2 * grid  # 2 tasks x 2 methods x grid
    assert {r.base for r in runs} == set(bases.BASES)
    main = 2 * 2 * (len(b.main_seeds) - 1)  # 2 tasks x 2 methods x seeds beyond the sweep's
    ranks = len(b.tasks6) * (len(b.ranks) * len(b.seeds) - len(b.seeds))  # r = 8's are main's
    assert len(waiting) == len(bases.BASES) * (main + ranks)
    assert {dict(r.settings).get("r") for r in waiting} >= set(b.ranks)
    # char-small's half is Table 4's own runs: the same keys, so the same records
    table4, _ = tables.table4_runs(b, protocol.Records(tmp_path))
    ours = {r.key() for r in runs if r.base == "char-small"}
    assert ours <= {r.key() for r in table4}
    mixed = [r for r in runs if r.base == "char-small-mixed"]
    assert not {r.key() for r in mixed} & {r.key() for r in table4}


def test_the_table_is_rebuilt_from_records_without_training(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RECORDS", FIXTURES)

    def no_training(run, progress=False):
        raise AssertionError(f"{run.key()} should have been read from the records")

    monkeypatch.setattr(experiments, "execute", no_training)
    text = bases.bases(TINY, tmp_path, progress=False).read_text()
    for base in bases.BASES:
        assert text.count(f"| {base} |") == 3  # both tasks, and the ranks on Table 6's task
    assert "not yet run" not in text
    assert "| r=1 |" in text  # TINY's one rank


def test_the_lora_column_is_r8s_and_the_rank_table_each_ranks(tmp_path, monkeypatch):
    """Runs at other ranks share base, task and method with r = 8's: each goes to its cell."""
    records = tmp_path / "records"
    shutil.copytree(FIXTURES, records)
    monkeypatch.setattr(experiments, "RECORDS", records)
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
    assert f"{2 * 2 * 2 * len(protocol.GRID)} missing now" in text


def test_both_bases_have_one_shape_and_one_tokenizer():
    (a, tok_a, _), (b, tok_b, _) = (load_pretrained(name) for name in bases.BASES)
    assert a.config == b.config and tok_a == tok_b
