"""LoRA on every Linear (minilora.paper.placement): its own sweep, then seeds, task by task."""

from __future__ import annotations

import math

from minilora.paper import budgets, experiments, placement, protocol
from minilora.paper.baselines import ALL_LINEAR


def test_the_plan_sweeps_every_linear_at_r8_on_its_own_grid_before_any_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "none")  # nothing recorded yet
    b = budgets.get_budget("full")
    runs, waiting = placement.placement_runs(b, protocol.Records(tmp_path), tasks=("sql",))
    assert [(r.seed, r.lr) for r in runs] == [
        (protocol.SWEEP_SEED, protocol.rate("lora", k)) for k in protocol.GRID
    ]  # the sweep only: its own grid around LoRA's default, seed 0, r = 8
    for run in runs + waiting:
        s = dict(run.settings)
        assert run.method == "lora" and s["targets"] == ALL_LINEAR and s["alpha"] == protocol.ALPHA
        assert run.steps == b.steps and run.task == "sql"
    assert {dict(r.settings)["r"] for r in runs} == {placement.RANK}
    # waiting for the rate: r = 8's other seeds and every seed of the larger rank
    assert len(waiting) == 2 * len(b.seeds) - 1
    assert {dict(r.settings)["r"] for r in waiting} == {placement.RANK, placement.LARGER_RANK}


def test_the_table_reads_table4s_rows_and_marks_what_has_not_run(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "execute", None)  # full-recorded trains nothing
    text = placement.placement("full-recorded", tmp_path, progress=False).read_text()
    for task in placement.TASKS:  # Table 4's five seeds, FT's count and LoRA r = 8's
        assert f"| {task} | FT (Table 4) | " in text and "(n=5) | 823,168 | — |" in text
        assert f"| {task} | LoRA r = 8, Wq, Wv (Table 4) | " in text and "(n=5) | 16,384 |" in text
    for task in placement.TASKS:
        assert f"| {task} | LoRA r = {placement.LARGER_RANK}, every Linear | " in text


def test_once_its_sweep_is_recorded_every_seed_runs_at_the_rate_it_chose(tmp_path, monkeypatch):
    from minilora.paper.experiments import Cache

    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "none")
    b = budgets.get_budget("full")
    records = protocol.Records(tmp_path)
    sweep, _ = placement.placement_runs(b, records, tasks=("sql",))
    for run in sweep:  # the validation score peaks one rate above the grid's centre
        k = round(math.log(run.lr / protocol.DEFAULT_LR["lora"], 3))
        score = 0.5 - 0.1 * abs(k - 1)
        Cache(tmp_path).put(run, {"key": run.key(), "val_score": score, "val_loss": 1 - score})
    runs, waiting = placement.placement_runs(b, records, tasks=("sql",))
    chosen = protocol.rate("lora", 1)
    assert not waiting and {r.lr for r in runs} == {chosen}
    assert sorted((dict(r.settings)["r"], r.seed) for r in runs) == sorted(
        (r, s) for r in (placement.RANK, placement.LARGER_RANK) for s in b.seeds
    )
