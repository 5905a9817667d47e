"""The experiment harness (minilora.paper.experiments), the tables and ``minilora reproduce``."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from minilora.paper import budgets, experiments, reproduce
from minilora.paper.experiments import Cache, Run, execute, run_all

TINY = dict(steps=3, batch_size=4, n_train=24, n_eval=4)


def tiny(method="lora", task="sql", seed=0, **kw) -> Run:
    return Run(method, task, kw.pop("settings", {}), seed=seed, **{**TINY, **kw})


# --------------------------------------------------------------------------- Run


def test_run_names_the_valid_methods_and_tasks():
    with pytest.raises(ValueError, match="valid methods: .*adapterh"):
        Run("lorra", "sql")
    with pytest.raises(ValueError, match="valid tasks: sql, nli"):
        Run("lora", "mnli")
    with pytest.raises(ValueError, match="steps"):
        Run("lora", "sql", steps=0)
    with pytest.raises(ValueError, match="split"):
        Run("lora", "sql", split="train")


def test_run_key_depends_on_every_setting_and_not_on_their_order():
    a = Run("lora", "sql", {"r": 4, "targets": ("q", "v")})
    b = Run("lora", "sql", {"targets": ["q", "v"], "r": 4})
    assert a == b and a.key() == b.key()
    others = [
        Run("lora", "sql", {"r": 2, "targets": ("q", "v")}),
        Run("lora", "nli", {"r": 4, "targets": ("q", "v")}),
        Run("lora", "sql", {"r": 4, "targets": ("q", "v")}, seed=1),
        Run("lora", "sql", {"r": 4, "targets": ("q", "v")}, lr=1e-2),
        Run("lora", "sql", {"r": 4, "targets": ("q", "v")}, steps=401),
        Run("lora", "sql", {"r": 4, "alpha": 16.0, "targets": ("q", "v")}),
    ]
    assert len({a.key(), *(o.key() for o in others)}) == 1 + len(others)


# --------------------------------------------------------------------------- execute


def test_a_run_is_repeatable_bit_for_bit_for_its_seed():
    first, again, other = execute(tiny(seed=5)), execute(tiny(seed=5)), execute(tiny(seed=6))
    assert first["trained_digest"] == again["trained_digest"]
    assert first["final_train_loss"] == again["final_train_loss"]
    assert first["val_loss"] == again["val_loss"]
    assert first["score"] == again["score"]
    assert other["trained_digest"] != first["trained_digest"]
    # LoRA r=8 on Wq, Wv of 4 blocks of width 128: 2 x 8 x 128 x 8
    assert first["trainable"] == 16_384 and first["total"] > first["trainable"]
    # training state: gradients plus AdamW's two moments, float32
    assert first["state_bytes"] == 3 * 4 * first["trainable"]
    assert first["step_ms"] > 0 and 0.0 <= first["score"] <= 1.0


def test_nli_runs_are_scored_by_accuracy():
    record = execute(tiny("bitfit", "nli"))
    assert record["metric"] == "accuracy" and record["trainable"] == 4 * 11 * 128 + 128


# --------------------------------------------------------------------------- the cache


def test_run_all_computes_only_what_is_missing(tmp_path, monkeypatch):
    runs = [tiny(seed=0), tiny("adapterl", seed=0)]
    first = run_all(runs[:1], tmp_path, progress=False)
    calls = []
    real = experiments.execute

    def counting(run, progress=False):
        calls.append(run)
        return real(run, progress)

    monkeypatch.setattr(experiments, "execute", counting)
    again = run_all(runs + runs[:1], tmp_path, progress=False)
    assert calls == [runs[1]]  # the cached one is read, the repeat not recomputed
    assert again[0] == first[0] and again[2] == first[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{r.key()}.json" for r in runs)


def test_an_interrupted_write_leaves_no_cache_entry(tmp_path, monkeypatch):
    run = tiny()
    cache = Cache(tmp_path)

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.put(run, {"key": run.key(), "score": 1.0})
    assert list(tmp_path.iterdir()) == []  # neither the entry nor a temporary file
    assert cache.get(run) is None


def test_a_damaged_or_foreign_entry_is_recomputed(tmp_path):
    run = tiny()
    cache = Cache(tmp_path)
    cache.path(run).write_text('{"key": "')
    assert cache.get(run) is None
    cache.path(run).write_text(json.dumps({"key": "another run"}))
    assert cache.get(run) is None


# --------------------------------------------------------------------------- reproduce


def test_every_lora_run_of_every_table_has_alpha_16():
    from minilora.paper import tables

    for budget in ("quick", "full"):  # full: the sweeps' runs, until they have chosen a rate
        b = budgets.get_budget(budget)
        runs6, waiting = tables.table6_runs(b)
        if budget == "quick":
            assert {dict(r.settings)["r"] for r in runs6} == set(b.ranks)
        runs = runs6 + tables.table4_runs(b)[0] + tables.table5_runs(b)[0]
        lora = [r for r in runs if r.method == "lora"]
        assert lora and {dict(r.settings)["alpha"] for r in lora} == {16.0}


def test_reproduce_names():
    assert reproduce.resolve(["table5", "table4", "table5"]) == ["table5", "table4"]
    assert reproduce.resolve(["all"]) == list(reproduce.REPRODUCTIONS)
    assert {"figure3", "figure4", "table7", "table1", "counts"} <= set(reproduce.resolve(["all"]))
    with pytest.raises(ValueError, match="valid names: counts, table1, table4"):
        reproduce.resolve(["table9"])
    with pytest.raises(ValueError, match="valid budgets: quick, full"):
        reproduce.reproduce(["counts"], budget="medium")


def test_a_missing_section7_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(reproduce.REPRODUCTIONS, "figure3", ("minilora.no_such_module", "X"))
    with pytest.raises(RuntimeError, match="reproduce figure3: its module minilora.no_such"):
        reproduce.function("figure3")


def test_cli_rejects_unknown_names_with_the_valid_ones(capsys):
    from minilora.cli import main

    with pytest.raises(SystemExit, match="valid names: counts"):
        main(["reproduce", "table9"])
    with pytest.raises(SystemExit, match="valid budgets: quick, full"):
        main(["reproduce", "counts", "--budget", "huge"])


def test_reproduce_all_quick_writes_every_table(tmp_path, capsys):
    from minilora.cli import main

    start = time.perf_counter()
    assert main(["reproduce", "all", "--budget", "quick", "--out", str(tmp_path)]) == 0
    seconds = time.perf_counter() - start
    for name in reproduce.REPRODUCTIONS:
        text = (tmp_path / f"{name}.md").read_text()
        assert text.startswith("# ")
        if name != "counts":
            assert "quick" in text.lower() and "smoke test" in text.lower()
    for png in ("table1.png", "table4.png", "table6.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert (
        "alpha = 16 at every rank (the paper's rule: scaling 16/r)"
        in (tmp_path / "table6.md").read_text()
    )
    table4 = (tmp_path / "table4.md").read_text()
    for label in ("FT", "FT-Top2", "BitFit", "PreEmbed", "PreLayer", "AdapterH", "AdapterL"):
        assert f"| {label} " in table4
    assert "| LoRA (alpha=16, r=2, Wq+Wv) | 4,096 |" in table4  # 2 x 2 x 128 x 2 x 4 blocks
    # a second run reads every training run from the cache
    cached = len(list((tmp_path / "cache").iterdir()))
    start = time.perf_counter()
    assert main(["reproduce", "table4", "--out", str(tmp_path), "--no-progress"]) == 0
    assert len(list((tmp_path / "cache").iterdir())) == cached
    assert time.perf_counter() - start < seconds / 2
    assert Path(tmp_path / "table4.md").read_text() == table4


def test_table1_models_merged_lora_is_a_plain_gpt_again():
    import numpy as np

    from minilora.lora import count_parameters, lora_layers
    from minilora.paper.latency import MODELS, build_models, repeats, time_forward

    models = build_models()
    assert tuple(models) == MODELS
    assert lora_layers(models["LoRA merged"]) == {}
    assert len(lora_layers(models["LoRA unmerged"])) == 8  # Wq and Wv of 4 blocks
    base_total = count_parameters(models["base"]).total
    assert count_parameters(models["LoRA merged"]).total == base_total
    assert count_parameters(models["AdapterH"]).total == base_total + 9_248
    x = np.arange(12).reshape(2, 6)
    want = models["base"](x)[0].numpy()
    for name in MODELS:  # zero-initialised adapters and B = 0: every model computes the same
        np.testing.assert_allclose(models[name](x)[0].numpy(), want, rtol=1e-6, atol=1e-6)
    medians = time_forward(models, 2, 6, repeats=3)
    assert set(medians) == set(MODELS) and all(t > 0 for t in medians.values())
    assert repeats("full", 32, 128) == 30 and repeats("full", 1, 32) == 300


def test_runs_in_worker_processes_give_the_records_of_one_process(tmp_path):
    """--jobs N: the same runs in two spawned processes give the records of one process.

    Both sides get the workers' BLAS threads (one, unless the environment names a number): a
    multi-threaded BLAS sums a matrix product in another order, so its last bits differ.
    """
    import json
    import subprocess
    import sys

    from minilora.paper import protocol

    b = budgets.get_budget("quick")
    runs = [protocol.protocol_run(b, "bitfit", "sql", {}, seed, 1e-2) for seed in (0, 1)]
    code = f"""
import json
from minilora.paper import budgets, experiments, protocol
b = budgets.get_budget("quick")
runs = [protocol.protocol_run(b, "bitfit", "sql", {{}}, seed, 1e-2) for seed in (0, 1)]
one = experiments.run_all(runs, {str(tmp_path / "one")!r}, progress=False, read_first=[])
print(json.dumps([(r["score"], r["val_loss"], r["trained_digest"]) for r in one]))
"""
    env = {**os.environ, **{name: os.environ.get(name, "1") for name in experiments.ONE_THREAD}}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    one = [tuple(r) for r in json.loads(out.splitlines()[-1])]
    before = {name: os.environ.get(name) for name in experiments.ONE_THREAD}
    two = experiments.run_all(runs, tmp_path / "two", progress=False, jobs=2, read_first=[])
    assert one == [(r["score"], r["val_loss"], r["trained_digest"]) for r in two]
    assert {name: os.environ.get(name) for name in experiments.ONE_THREAD} == before


def test_jobs_must_be_a_whole_number(capsys):
    from minilora.cli import main

    try:
        status = main(["reproduce", "table4", "--jobs", "0"])
    except SystemExit as exit_:
        status = exit_.code
    assert status == 2
    assert "--jobs '0': expected a whole number >= 1" in capsys.readouterr().err


def test_table1_full_recorded_shows_the_committed_timings_without_measuring(tmp_path, monkeypatch):
    """A run writes OUT/table1.json; committed as records/table1/table1.json, full-recorded
    prints it (its machine and date) and builds no model; with none committed it measures."""
    from minilora.paper import latency

    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "records")
    latency.table1("quick", tmp_path / "a", progress=False)
    timings = json.loads((tmp_path / "a" / "table1.json").read_text())
    assert [s[:2] for s in timings["shapes"]] == [list(s) for s in latency.SHAPES["quick"]]
    timings["machine"], timings["shapes"][0][2]["AdapterH"] = "the machine of the record", 9.9
    (tmp_path / "records" / "table1").mkdir(parents=True)
    (tmp_path / "records" / "table1" / "table1.json").write_text(json.dumps(timings))

    def no_measuring():
        raise AssertionError("full-recorded measured instead of reading the record")

    monkeypatch.setattr(latency, "build_models", no_measuring)
    text = latency.table1("full-recorded", tmp_path / "b", progress=False).read_text()
    assert "the machine of the record" in text and "records/table1/table1.json" in text
    base = timings["shapes"][0][2]["base"]
    assert f"+{100 * (9.9 / base - 1):.1f}%" in text  # the overhead from the recorded time


def test_section7_reads_a_committed_adapter_before_training(tmp_path, monkeypatch):
    from minilora.paper import section7

    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "records")
    b = section7._budget("quick")
    spec = dataclasses.replace(section7._spec(b, 4), steps=2)
    _, info, cached = section7.adapter(spec, b, tmp_path / "out", progress=False)
    assert not cached
    section7.recorded(spec).parent.mkdir(parents=True)
    (tmp_path / "out" / "adapters" / spec.key()).rename(section7.recorded(spec))
    monkeypatch.setattr(section7, "train_adapter", None)  # a call would fail
    _, again, cached = section7.adapter(spec, b, tmp_path / "elsewhere", progress=False)
    assert cached and again == json.loads(json.dumps(info))  # as written: tuples are lists
    assert section7._budget("full-recorded") == section7._budget("full")
