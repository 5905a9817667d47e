"""LoRA r = 8 trained for longer (minilora.paper.longer): only the number of steps differs."""

from __future__ import annotations

from minilora.paper import budgets, experiments, longer, protocol, tables
from minilora.paper.bases import lead
from minilora.paper.report import mean_sd


def test_the_longer_runs_differ_from_table4s_lora_cell_in_their_steps_only():
    b = budgets.get_budget("full")
    records = protocol.Records()
    runs, waiting = longer.longer_runs(b, records)
    assert not waiting
    assert len(runs) == (len(longer.STEPS) + len(longer.FT_STEPS)) * len(b.seeds)
    table4, _ = tables.table4_runs(b, records)
    cell = {(r.method, r.seed): r for r in table4 if r.task == longer.TASK
            and (r.method == "ft" or dict(r.settings).get("r") == 8)}  # fmt: skip
    for run in runs:
        steps = longer.STEPS if run.method == "lora" else longer.FT_STEPS
        assert run.steps in steps and run.steps > b.steps
        same = cell[run.method, run.seed]
        assert {**run.to_dict(), "steps": 0} == {**same.to_dict(), "steps": 0}
        assert run.key() != same.key()


def test_the_table_sets_the_longer_runs_beside_table4s(tmp_path, monkeypatch, records_without):
    monkeypatch.setattr(experiments, "execute", None)  # full-recorded trains nothing
    b = budgets.get_budget("full")
    records_without(lambda run: run["steps"] > b.steps)  # every longer run
    records = protocol.Records()
    table4, _ = tables.table4_runs(b, records)
    lora = [records.get(r)["score"] for r in table4 if r.method == "lora" and r.task == "sql"
            and dict(r.settings)["r"] == 8 and records.get(r) is not None]  # fmt: skip
    assert len(lora) == len(b.main_seeds)
    text = longer.longer("full-recorded", tmp_path, progress=False).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| LoRA r = 8, 1,200"))
    assert row.startswith(f"| LoRA r = 8, 1,200 steps (Table 4) | {mean_sd(lora)} | ")
    assert f" | {len(lora)} of {len(lora)} | " in row  # every seed peaks at its last step
    ft = [records.get(r)["score"] for r in table4 if r.method == "ft" and r.task == "sql"
          and records.get(r) is not None]  # fmt: skip
    assert f"| {mean_sd(lora)} | {lead(ft, lora)} | " in row  # FT's lead at 1,200 steps
    assert "| FT, 1,200 steps (Table 4) | " in text
    assert "| LoRA r = 8, 2,400 steps | not yet run |" in text
    assert "| FT, 4,800 steps | " in text


def test_the_quick_budget_trains_lora_for_twice_its_steps():
    b = budgets.get_budget("quick")
    runs, waiting = longer.longer_runs(b, protocol.Records())
    assert {r.steps for r in runs + waiting} == {2 * b.steps}


def test_the_peak_count_counts_the_recorded_protocol_runs(tmp_path):
    """where_runs_peak: of the runs at the protocol's steps, how many peak at the last and at
    the first evaluation (counted here again from the records' own best steps)."""
    import json

    b = budgets.get_budget("full")
    records = protocol.Records()
    found = [
        rec for p in sorted(experiments.RECORDS.glob("*.json"))
        if (rec := json.loads(p.read_text()))["run"].get("steps") == b.steps
        and rec["run"].get("eval_every") and rec.get("score") is not None
    ]  # fmt: skip
    last = sum(rec["best_step"] == b.steps for rec in found)
    (line,) = longer.where_runs_peak(b, records)
    assert f"{len(found)} recorded 1,200-step runs peak: **{last} have" in line
