"""The larger-base comparison (minilora.paper.scale): its runs, its arithmetic and its table."""

from __future__ import annotations

import json
from dataclasses import replace

from test_protocol import FIXTURES, TINY

from minilora.paper import budgets, experiments, protocol, reproduce, scale, tables
from minilora.paper.experiments import Cache

TEMPLATE = json.loads((FIXTURES / "ft-sql-seed0-53440e04f466b8d4.json").read_text())


def test_char_smalls_half_is_table_4s_runs_and_the_wider_base_gets_its_own_sweeps(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "none")
    monkeypatch.setattr(scale, "made", lambda base: True)
    b = budgets.get_budget("full")
    runs, waiting = scale.scale_runs(b, protocol.Records(tmp_path))
    table4 = sum(tables.table4_runs(b, protocol.Records(tmp_path)), [])  # ready and waiting
    small = {r.key() for r in runs + waiting if r.base == scale.SMALL}
    assert small and small <= {r.key() for r in table4}  # read, never run again
    wide = [r for r in runs + waiting if r.base == scale.WIDER]
    grid, seeds = len(protocol.GRID), len(b.seeds)
    assert len({r.key() for r in wide}) == len(wide) == 2 * 2 * (grid + seeds - 1)
    assert not {r.key() for r in wide} & small
    tasks = [r.task for r in runs if r.base == scale.WIDER]
    assert tasks == sorted(tasks, key=["sql", "nli"].index) and set(tasks) == {"sql", "nli"}
    assert {dict(r.settings).get("r", 8) for r in wide} == {8}
    assert {r.seed for r in waiting} <= set(b.seeds) - {protocol.SWEEP_SEED}


def test_a_base_without_weights_has_no_runs_and_its_rows_say_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setattr(scale, "made", lambda base: base != scale.WIDER)
    runs, waiting = scale.scale_runs(budgets.get_budget("full"))
    assert runs and not [r for r in runs + waiting if r.base == scale.WIDER]
    text = scale.scale("full-recorded", tmp_path, progress=False).read_text()
    rows = [line for line in text.splitlines() if line.startswith(f"| {scale.WIDER} |")]
    assert len(rows) == 2 and all(row.count("base not made") == 2 for row in rows)
    assert "--d-model 256" in text
    assert "scale" in reproduce.resolve(["all"])


def test_the_change_of_the_lead_is_a_difference_of_differences_with_welchs_df():
    # leads 30 and 10 points: change +20; each of the four cells has sample variance 0.005
    # over 2 seeds, so se = sqrt(4 x 0.005 / 2) = 0.1 and Welch-Satterthwaite's
    # df = 0.01^2 / (4 x 0.0025^2 / 1) = 4, t(0.975, 4) = 2.776: half-width 27.8 points
    got = scale.lead_change([0.9, 0.8], [0.5, 0.6], [0.9, 0.8], [0.8, 0.7])
    assert got == "+20.0 ± 10.0 (95%: -7.8 to +47.8)"
    assert scale.lead_change([0.9], [0.5, 0.6], [0.9, 0.8], [0.8, 0.7]) == "—"  # one seed


def test_the_table_is_rebuilt_from_records_without_training(tmp_path, monkeypatch):
    records = tmp_path / "records"
    monkeypatch.setattr(experiments, "RECORDS", records)
    monkeypatch.setattr(scale, "made", lambda base: True)
    b = replace(TINY, seeds=(0, 1), main_seeds=(0, 1), compute=False)
    scores = {  # (base, method): the seeds' scores, as in the test above (sql)
        (scale.SMALL, "ft"): (0.9, 0.8), (scale.SMALL, "lora"): (0.5, 0.6),
        (scale.WIDER, "ft"): (0.9, 0.8), (scale.WIDER, "lora"): (0.8, 0.7),
    }  # fmt: skip
    for (base, method), pair in scores.items():
        for seed, score in zip(b.seeds, pair):
            settings = dict(protocol.swept_settings(method))
            lr = protocol.DEFAULT_LR[method]  # TINY does not sweep
            run = protocol.protocol_run(b, method, "sql", settings, seed, lr, base)
            record = {**TEMPLATE, "key": run.key(), "score": score, "label": method.upper()}
            Cache(records).put(run, {**record, "run": {**TEMPLATE["run"], "lr": lr}})
    text = scale.scale(b, tmp_path / "out", progress=False).read_text()
    sql = [line for line in text.splitlines() if "| sql |" in line]
    assert [row.split("|")[1].strip() for row in sql[:2]] == [scale.SMALL, scale.WIDER]
    assert "+30.0 ± 7.1" in sql[0] and "+10.0 ± 7.1" in sql[1]
    assert "| sql | +20.0 ± 10.0 (95%: -7.8 to +47.8) |" in text
    assert "| nli | — |" in text  # no records on nli: no change to compute
    assert "sweeps (seed 0" not in text  # this budget chooses no rate: no sweep lines


def test_the_wider_bases_sweeps_are_listed_with_the_chosen_rate_in_bold(tmp_path, monkeypatch):
    # FT's sweep on char-medium complete (best in the middle of the grid), LoRA's half run
    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "records")
    monkeypatch.setattr(scale, "made", lambda base: True)
    b = replace(TINY, sweep=True, compute=False)
    cache = Cache(tmp_path / "out" / "cache")
    val = {-2: 0.2, -1: 0.8, 0: 0.9, 1: 0.7, 2: 0.1}
    for method, ks in (("ft", protocol.GRID), ("lora", protocol.GRID[:2])):
        settings = dict(protocol.swept_settings(method))
        for k in ks:
            lr = protocol.rate(method, k)
            run = protocol.protocol_run(b, method, "sql", settings, 0, lr, scale.WIDER)
            record = {**TEMPLATE, "key": run.key(), "val_score": val[k], "best_step": 24}
            cache.put(run, {**record, "run": {**TEMPLATE["run"], "lr": lr}})
    lines = scale.scale(b, tmp_path / "out", progress=False).read_text().splitlines()
    ft = next(x for x in lines if x.startswith("* sql, FT:"))
    assert f"**{protocol.rate('ft', 0):g}: 90.0 / 24**" in ft and ft.count("**") == 2
    assert "incomplete" not in ft and ft.count(";") == len(protocol.GRID) - 1
    lora = next(x for x in lines if x.startswith("* sql, LoRA r = 8:"))
    assert lora.endswith("(incomplete: 2 runs so far)") and "**" not in lora
    assert "* nli, FT: not yet run" in lines
