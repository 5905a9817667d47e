"""The protocol (minilora.paper.protocol) and the committed run records."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from minilora.paper import budgets, experiments, protocol, reproduce, tables
from minilora.paper.experiments import RECORDS, Cache, execute
from minilora.work import io

FIXTURES = Path(__file__).parent / "fixtures" / "records"
TINY = budgets.Budget(  # the budget of tests/fixtures/make_records.py
    "tiny", 3, (0,), (0,), 24, 4, 4, ("sql", "nli"), ("sql",), (1,), 1, eval_every=3,
    n_val_eval=4, sweep=False,
)  # fmt: skip


def test_the_grid_is_five_rates_three_apart_around_the_old_default():
    for method, default in protocol.DEFAULT_LR.items():
        rates = [protocol.rate(method, k) for k in protocol.GRID]
        assert len(rates) >= 5 and protocol.rate(method, 0) == default
        assert rates[0] < default < rates[-1]
        for a, b in zip(rates, rates[1:]):
            assert 2.5 < b / a < 3.5


def _fake(tmp_path, b, method, task, scores: dict) -> None:
    """Records of a sweep: {k: validation score} for the rate of ladder step k."""
    for k, score in scores.items():
        lr = protocol.rate(method, k)
        run = protocol.protocol_run(b, method, task, protocol.swept_settings(method), 0, lr)
        Cache(tmp_path).put(run, {"key": run.key(), "val_score": score, "val_loss": 1 - score})


def test_the_rate_is_chosen_on_validation_and_the_grid_extended_at_an_edge(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "none")  # no committed records
    b = budgets.get_budget("full")
    records = protocol.Records(tmp_path)
    assert protocol.choose_rate(b, "ft", "sql", records) == (None, {})
    _fake(tmp_path, b, "ft", "sql", {-2: 0.1, -1: 0.5, 0: 0.7, 1: 0.6, 2: 0.0})
    lr, points = protocol.choose_rate(b, "ft", "sql", records)
    assert lr == protocol.rate("ft", 0) and len(points) == 5
    # the best at the top edge: one more rate is needed, and computed when asked
    _fake(tmp_path, b, "lora", "sql", {-2: 0.1, -1: 0.2, 0: 0.3, 1: 0.4, 2: 0.5})
    lr, points = protocol.choose_rate(b, "lora", "sql", records)
    assert lr is None and len(points) == 5
    # the plan lists the extension (and only it) as the run still to do
    listed = protocol.sweep_runs_missing(b, "lora", "sql", records)
    assert [r.lr for r in listed] == [protocol.rate("lora", 3)]
    asked = []

    def compute(runs):
        asked.extend(runs)
        _fake(tmp_path, b, "lora", "sql", {3: 0.45})

    lr, points = protocol.choose_rate(b, "lora", "sql", records, compute)
    assert [r.lr for r in asked] == [protocol.rate("lora", 3)]
    assert lr == protocol.rate("lora", 2) and len(points) == 6
    # ties go to the lower validation loss
    assert protocol.best_of({1.0: {"val_score": 0.5, "val_loss": 0.2},
                             2.0: {"val_score": 0.5, "val_loss": 0.1}}) == 2.0  # fmt: skip


def test_plan_lists_what_is_missing_and_its_time(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "none")
    text = reproduce.plan(["table4"], "full", tmp_path)
    sweeps = 8 * 2 * len(protocol.GRID)  # every method's grid on both tasks
    assert f"0 runs recorded; {sweeps} missing now" in text
    # after the sweeps: 7 rows x 3 seeds + LoRA r=2 x 3 + 2 main rows x 4 more seeds (seed 0
    # is the sweep's own run for FT and LoRA r = 8, and for the other 6 methods too)
    assert f"about {2 * (7 * 2 + 3 + 2 * 4)} more" in text
    assert "CPU hours" in text


def test_a_table_is_rebuilt_from_committed_records_without_training(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RECORDS", FIXTURES)

    def no_training(run, progress=False):
        raise AssertionError(f"{run.key()} should have been read from the records")

    monkeypatch.setattr(experiments, "execute", no_training)
    text = tables.table4(TINY, tmp_path, progress=False).read_text()
    ft = next(
        r for p in FIXTURES.glob("ft-sql-*.json")
        if (r := json.loads(p.read_text()))["run"]["base"] == "char-small"
    )  # fmt: skip
    assert "| FT | 823,168 |" in text
    assert f"from 18 run records ({ft['date'][:10]}" in text
    assert not list(tmp_path.glob("cache/*.json"))  # nothing computed into the cache


def test_records_say_where_and_when_they_ran_and_are_named_by_their_key():
    for directory in (FIXTURES, RECORDS):
        for path in directory.glob("*.json"):
            record = io.read_json(path)
            assert path.name == f"{record['key']}.json"
            for field in ("date", "machine", "cpu", "numpy", "device", "curve", "best_step"):
                assert record[field] is not None, (path.name, field)


def test_a_recomputed_run_matches_its_record(monkeypatch, tmp_path):
    monkeypatch.setattr(experiments, "RECORDS", FIXTURES)
    run = protocol.protocol_run(TINY, "bitfit", "sql", {}, 0, protocol.DEFAULT_LR["bitfit"])
    record = Cache(FIXTURES).get(run)
    assert record is not None, "tests/fixtures/records is out of date: run make_records.py"
    again = execute(run)
    for key in ("score", "val_score", "best_step", "trainable", "total", "state_bytes"):
        assert again[key] == record[key], key
    assert again["val_loss"] == pytest.approx(record["val_loss"], rel=1e-5)
    # The trained weights' digest is not compared: the records name the CPU model only ("AMD
    # EPYC"), and two machines of that name, one with AVX-512 and one with AVX2 (2026-12-07),
    # pick different BLAS kernels that round differently, so equal bits are not a property
    # of the code. The score, the best step and the loss above are.


def test_every_sweep_runs_in_one_round_and_idle_workers_take_known_cells(tmp_path, monkeypatch):
    """records_of computes the sweeps of all methods together (so --jobs workers share them),
    then each edge's extension, filling idle workers with cells whose rate is chosen."""
    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "none")
    monkeypatch.setattr(experiments, "JOBS", 2)
    b = budgets.get_budget("full")
    step = {(m, protocol.rate(m, k)): k for m in ("ft", "lora") for k in range(-6, 9)}
    peak = {"ft": 0, "lora": 3}  # lora's best lies beyond the grid's top edge
    batches = []

    def fake_run_all(runs, cache_dir, progress=True, desc=""):
        batches.append([(r.method, r.seed, step[r.method, r.lr]) for r in runs])
        for r in runs:
            if Cache(cache_dir).get(r) is None:
                score = 0.9 - 0.1 * abs(step[r.method, r.lr] - peak[r.method])
                Cache(cache_dir).put(r, {"key": r.key(), "val_score": score, "val_loss": 1 - score})
        return [Cache(cache_dir).get(r) for r in runs]

    def runs_of(b, records=None, compute=None):
        lr = tables.rates(b, records, ("sql",), ["ft", "lora"], compute)
        rows = [("ft", {}), ("lora", protocol.swept_settings("lora"))]
        return tables._cells(b, rows, ("sql",), lambda m: (0, 1), lr, records)

    monkeypatch.setattr(budgets, "run_all", fake_run_all)
    recs = budgets.records_of(runs_of, "test", b, tmp_path, progress=False)
    grid = sorted(protocol.GRID)
    assert sorted(batches[0]) == sorted(
        [("ft", 0, k) for k in grid] + [("lora", 0, k) for k in grid]
    )  # both sweeps at once
    assert batches[1] == [("lora", 0, 3), ("ft", 1, 0)]  # the extension, and a known cell
    assert batches[2] == [("lora", 0, 4)]  # 3 beat 2: one more; 4 is worse, so 3 is chosen
    assert sorted(batches[3]) == [("ft", 0, 0), ("ft", 1, 0), ("lora", 0, 3), ("lora", 1, 3)]
    assert len(batches) == 4 and all(rec is not None for rec in recs.values())


def test_full_recorded_computes_nothing_and_marks_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "none")
    monkeypatch.setattr(experiments, "execute", None)  # any training would fail
    text = tables.table4("full-recorded", tmp_path, progress=False).read_text()
    assert text.count("not yet run") >= 9
    b = replace(budgets.get_budget("full"), compute=False)
    assert not b.compute and budgets.get_budget("full").compute


def test_a_run_that_diverges_keeps_and_scores_its_best_weights(monkeypatch):
    from minilora.work import train as train_module

    real, calls = train_module.estimate_loss, []

    def nan_after_the_first(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs) if len(calls) == 1 else float("nan")

    monkeypatch.setattr(train_module, "estimate_loss", nan_after_the_first)
    b = replace(TINY, steps=6)
    record = execute(
        protocol.protocol_run(b, "lora", "sql", protocol.swept_settings("lora"), 0, 0.02)
    )
    assert "validation loss became nan at step 6" in record["diverged"]
    assert record["best_step"] == 3 and record["score"] is not None
    assert [c["step"] for c in record["curve"]] == [3]


def test_a_lora_run_at_a_section7_rank_keeps_its_adapter_and_its_start(tmp_path, monkeypatch):
    import numpy as np

    from minilora.paper.baselines import apply_method
    from minilora.work.pretrained import load_pretrained

    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "none")
    settings = {"r": 4, "alpha": protocol.ALPHA, "targets": ("q", "v")}
    kept = protocol.protocol_run(TINY, "lora", "sql", settings, 3, 0.02)
    other = protocol.protocol_run(TINY, "lora", "sql", {**settings, "r": 2}, 3, 0.02)
    assert experiments.keeps_adapter(kept) and not experiments.keeps_adapter(other)
    experiments.run_all([kept, other], tmp_path, progress=False)
    cache = Cache(tmp_path)
    assert cache.tensors(other) is None and "adapter_file" not in cache.get(other)
    record, tensors = cache.get(kept), cache.tensors(kept)
    assert record["adapter_file"] == f"{kept.key()}.safetensors" and "_tensors" not in record
    names = [n for n in tensors if n.endswith(".lora_A.default.weight")]
    assert len(names) == 2 * 4 and all(f"{n}.init" in tensors for n in names)  # Wq, Wv x 4 blocks
    fresh = apply_method(load_pretrained("char-small")[0], "lora", settings,
                         np.random.default_rng(3))  # fmt: skip
    start = dict(fresh.named_parameters())
    for name in names:
        assert np.array_equal(tensors[f"{name}.init"], start[name].numpy())  # the same draw
        assert not np.array_equal(tensors[name], tensors[f"{name}.init"])  # and it trained


def test_the_documents_blocks_are_the_reproductions_one_level_down():
    """docs/update_tables.py puts a reproduction's Markdown into REPRODUCTION.md's blocks."""
    import importlib.util

    path = Path(__file__).parent.parent / "docs" / "update_tables.py"
    spec = importlib.util.spec_from_file_location("update_tables", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    text = "# Title on char-small\n\nIntro.\n\n## sql\n\n![curves](curves-sql.png)\n"
    assert tool.block(text) == "Intro.\n\n### sql\n\n![curves](figures/protocol-curves-sql.png)"
    doc = (path.parent / "REPRODUCTION.md").read_text()
    for name in tool.BLOCKS:  # every block the tool fills has its markers in the document
        assert f"<!-- generated: {name} -->" in doc and f"<!-- end generated: {name} -->" in doc


def _curve(*val_losses):
    return [{"step": 200 * (i + 1), "val_loss": v} for i, v in enumerate(val_losses)]


def test_a_run_blew_up_when_its_validation_loss_climbs_far_above_its_best():
    assert not protocol.blew_up({"curve": _curve(0.5, 0.3, 0.2, 0.21), "diverged": None})
    assert protocol.blew_up({"curve": _curve(0.5, 0.3, 2.7, 2.0), "diverged": None})
    assert protocol.blew_up({"curve": _curve(0.5), "diverged": "training loss became nan"})
    assert not protocol.blew_up({"curve": [], "diverged": None})


class _Recorded:
    """Records.get for a test: {(seed, lr): record}."""

    def __init__(self, found):
        self.found = found

    def get(self, run):
        return self.found.get((run.seed, run.lr))


def test_a_cell_that_blew_up_at_the_tasks_rate_runs_at_a_third_of_it():
    b = budgets.get_budget("full")
    settings = {"r": 64, "alpha": 16.0, "targets": ("q", "k", "v", "o")}
    healthy, blown = {"curve": _curve(0.5, 0.2)}, {"curve": _curve(0.4, 2.6, 2.1)}

    def rate_of(found):
        return protocol.cell_rate(b, "lora", "sql", settings, (0, 1, 2), 0.02, _Recorded(found))

    assert rate_of({}) == (0.02, [])  # nothing recorded: the task's rate
    assert rate_of({(0, 0.02): healthy, (1, 0.02): healthy}) == (0.02, [])
    assert rate_of({(0, 0.02): healthy, (2, 0.02): blown}) == (0.0067, [0.02])  # any seed
    twice = {(0, 0.02): blown, (1, 0.0067): blown}
    assert rate_of(twice) == (0.0022, [0.02, 0.0067])
    always = {(0, lr): blown for lr in (0.02, 0.0067, 0.0022, 0.00073)}
    assert rate_of(always) == (0.0022, [0.02, 0.0067])  # at most MAX_STEPS_DOWN times
    # the table's runs of that cell follow: every seed at the lower rate
    runs, _ = tables.table6_runs(b, _RecordedWithRates(twice))
    cell = [r for r in runs if r.settings == experiments.Run("lora", "sql", settings).settings]
    assert {r.lr for r in cell} == {0.0022} and {r.seed for r in cell} == {0, 1, 2}


class _RecordedWithRates(_Recorded):
    """As _Recorded for the cell, and the committed records for everything else (the sweep)."""

    def get(self, run):
        if dict(run.settings).get("r") == 64 and len(dict(run.settings)["targets"]) == 4:
            return super().get(run)
        return protocol.Records().get(run)


def test_table6_marks_a_cell_run_at_a_lower_rate_and_says_why(tmp_path, monkeypatch):
    """From the committed records: LoRA on all four matrices at r = 64 blew up at 2e-2 on sql."""
    monkeypatch.setattr(experiments, "execute", None)  # full-recorded trains nothing
    text = tables.table6("full-recorded", tmp_path, progress=False).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| sql | Wq, Wk, Wv, Wo |"))
    assert "(lr 0.0067)" in row
    assert "* sql, Wq, Wk, Wv, Wo, r = 64: at lr 0.02 3 of 3 seeds blew up" in text


def test_a_cell_run_below_its_methods_rate_is_marked_with_its_rate():
    b = budgets.get_budget("full")
    settings = {"r": 64, "alpha": 16.0, "targets": ("q", "k", "v", "o")}
    blown = {"curve": _curve(0.4, 2.6, 2.1)}
    seeds = (0, 1, 2)
    marked = _RecordedWithRates({(0, 0.02): blown})
    assert protocol.cell_mark(b, "lora", "sql", settings, seeds, marked) == " (lr 0.0067)"
    assert protocol.cell_mark(b, "lora", "sql", settings, seeds, _RecordedWithRates({})) == ""
