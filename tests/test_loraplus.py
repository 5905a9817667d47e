"""LoRA+ (minilora.paper.loraplus): B at a multiple of A's rate, each ratio its own sweep."""

from __future__ import annotations

import math

import pytest

from minilora.paper import budgets, experiments, loraplus, protocol
from minilora.paper.experiments import Cache


def test_each_ratio_sweeps_as_rate_on_its_own_grid_before_any_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "none")  # nothing recorded yet
    b = budgets.get_budget("full")
    runs, waiting = loraplus.loraplus_runs(b, protocol.Records(tmp_path))
    assert loraplus.TASKS == ("sql", "nli")
    assert sorted((r.task, dict(r.settings)["b_lr_ratio"], r.lr) for r in runs) == sorted(
        (task, ratio, protocol.rate("lora", k))
        for task in loraplus.TASKS
        for ratio in loraplus.RATIOS
        for k in protocol.GRID
    )
    for run in runs + waiting:
        s = dict(run.settings)
        assert run.method == "lora" and run.task in loraplus.TASKS and run.steps == b.steps
        assert {k: s[k] for k in protocol.LORA_SWEPT} == protocol.LORA_SWEPT  # Table 4's LoRA
    assert {r.seed for r in runs} == {protocol.SWEEP_SEED}
    assert len(waiting) == len(loraplus.TASKS) * len(loraplus.RATIOS) * (len(b.seeds) - 1)


def test_once_a_sweep_is_recorded_its_seeds_run_at_the_rate_it_chose(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "none")
    b = budgets.get_budget("full")
    records = protocol.Records(tmp_path)
    sweep, _ = loraplus.loraplus_runs(b, records)
    for run in sweep:  # ratio 4 peaks one rate below the centre, ratio 16 one above
        k = round(math.log(run.lr / protocol.DEFAULT_LR["lora"], 3))
        best = {4: -1, 16: 1}[dict(run.settings)["b_lr_ratio"]]
        score = 0.5 - 0.1 * abs(k - best)
        Cache(tmp_path).put(run, {"key": run.key(), "val_score": score, "val_loss": 1 - score})
    runs, waiting = loraplus.loraplus_runs(b, records)
    assert not waiting
    cells = {(r.task, dict(r.settings)["b_lr_ratio"], r.seed): r.lr for r in runs}
    for task in loraplus.TASKS:
        for ratio, k in ((4, -1), (16, 1)):
            assert {s: cells[(task, ratio, s)] for s in b.seeds} == dict.fromkeys(
                b.seeds, protocol.rate("lora", k)
            )


def test_the_table_reads_table4s_rows_and_marks_what_has_not_run(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "execute", None)  # full-recorded trains nothing
    text = loraplus.loraplus("full-recorded", tmp_path, progress=False).read_text()
    for task in ("sql", "nli"):
        assert f"| {task} | FT (Table 4) | " in text and "(n=5) | — |" in text
        assert f"| {task} | LoRA, one rate (Table 4) | " in text
        for ratio in loraplus.RATIOS:
            assert f"| {task} | LoRA+, B at {ratio}x A's rate | " in text
            assert f"* {task}, B at {ratio}x: " in text


def test_a_run_trains_with_its_ratio(monkeypatch):
    """execute hands the run's b_lr_ratio to the training recipe (and 1 without it)."""
    from minilora.work import train as train_module

    seen = []

    def stop(model, get_batch, config):
        seen.append(config.b_lr_ratio)
        raise KeyboardInterrupt  # enough: the recipe is what this test reads

    monkeypatch.setattr(train_module, "train", stop)
    b = budgets.get_budget("quick")
    for settings in (loraplus.settings_at(16), protocol.LORA_SWEPT):
        with pytest.raises(KeyboardInterrupt):
            experiments.execute(protocol.protocol_run(b, "lora", "sql", settings, 0, 1e-2))
    assert seen == [16, 1.0]
