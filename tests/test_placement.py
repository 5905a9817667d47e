"""LoRA on every Linear (minilora.paper.placement): its own sweep, then seeds, task by task."""

from __future__ import annotations

from minilora.paper import budgets, experiments, placement, protocol
from minilora.paper.baselines import ALL_LINEAR


def test_the_plan_sweeps_every_linear_at_r8_on_its_own_grid_before_any_seed():
    b = budgets.get_budget("full")
    runs, waiting = placement.placement_runs(
        b, protocol.Records(experiments.RECORDS), tasks=("sql",)
    )
    sweep = [r for r in runs if r.seed == protocol.SWEEP_SEED and dict(r.settings)["r"] == 8]
    assert {r.lr for r in sweep} >= {protocol.rate("lora", k) for k in protocol.GRID} or not sweep
    for run in runs + waiting:
        s = dict(run.settings)
        assert run.method == "lora" and s["targets"] == ALL_LINEAR and s["alpha"] == protocol.ALPHA
        assert run.steps == b.steps and run.task == "sql"
    if waiting:  # the rate is not chosen yet: r = 8's other seeds and the larger rank wait
        assert len(waiting) == 2 * len(b.seeds) - 1


def test_the_table_reads_table4s_rows_and_marks_what_has_not_run(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "execute", None)  # full-recorded trains nothing
    text = placement.placement("full-recorded", tmp_path, progress=False).read_text()
    for task in placement.TASKS:  # Table 4's five seeds, FT's count and LoRA r = 8's
        assert f"| {task} | FT (Table 4) | " in text and "(n=5) | 823,168 | — |" in text
        assert f"| {task} | LoRA r = 8, Wq, Wv (Table 4) | " in text and "(n=5) | 16,384 |" in text
    for task in placement.TASKS:
        assert f"| {task} | LoRA r = {placement.LARGER_RANK}, every Linear | " in text
