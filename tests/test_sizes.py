"""Figure 2 / Table 15 and Table 16 (minilora.paper.sizes): their runs share Table 4's records."""

from __future__ import annotations

from minilora.paper import budgets, experiments, protocol, sizes, tables


def test_every_size_and_data_size_is_planned_and_all_data_cells_are_table4s():
    b = budgets.get_budget("full")
    records = protocol.Records()  # the committed ones: FT's and LoRA's rates are chosen
    fig, fig_waiting = sizes.figure2_runs(b, records)
    n_runs = sum(
        len(sizes.cell_seeds(b, m, s, b.n_train)) for m, v in sizes.SIZES.items() for s in v
    )
    assert len(fig) + len(fig_waiting) == n_runs * len(budgets.TASKS)
    # a default-size cell is Table 4's, with Table 4's seeds; another size has SEEDS
    assert sizes.cell_seeds(b, "ft", {}, b.n_train) == b.main_seeds
    assert sizes.cell_seeds(b, "adapterh", {}, b.n_train) == b.seeds
    assert sizes.cell_seeds(b, "adapterh", {"r": 16}, b.n_train) == sizes.SEEDS
    assert sizes.cell_seeds(b, "ft", {}, sizes.LOW_DATA[0]) == sizes.SEEDS
    t16, _ = sizes.table16_runs(b, records)
    table4, _ = tables.table4_runs(b, records)
    t4_keys = {r.key() for r in table4}
    for method in ("adapterh", "adapterl", "preembed", "prelayer", "bitfit", "ft"):
        default = [r for r in fig if r.method == method and r.settings == ()]
        assert default and all(r.key() in t4_keys for r in default), method  # Table 4's runs
    ft_all = [r for r in t16 if r.method == "ft" and r.n_train == b.n_train]
    assert ft_all and all(r.key() in t4_keys for r in ft_all)  # the same runs, the same records
    for n in sizes.LOW_DATA:
        few = [r for r in t16 if r.n_train == n and r.method == "ft"]
        assert len(few) == len(budgets.TASKS) * len(sizes.SEEDS)
        assert not {r.key() for r in few} & t4_keys
        # nothing but the number of examples differs from the all-data run of the same cell
        for r in few:
            twin = next(x for x in ft_all if (x.task, x.seed) == (r.task, r.seed))
            assert {**r.to_dict(), "n_train": 0} == {**twin.to_dict(), "n_train": 0}


def test_the_tables_say_what_is_not_yet_run(tmp_path, monkeypatch, records_without):
    monkeypatch.setattr(experiments, "execute", None)  # full-recorded trains nothing

    def drop(run):  # FT's low-data runs and AdapterH's r = 16 cell
        low_data_ft = run["method"] == "ft" and run["n_train"] < 4000
        return low_data_ft or (run["method"] == "adapterh" and run["settings"] == {"r": 16})

    records_without(drop)
    fig = sizes.figure2("full-recorded", tmp_path, progress=False).read_text()
    t16 = sizes.table16("full-recorded", tmp_path, progress=False).read_text()
    assert "| FT | — | 823,168 |" in fig
    assert "| AdapterH (r=16) | r = 16 | — | not yet run | not yet run |" in fig
    assert "| FT | sql | not yet run | not yet run | " in t16


def test_appendix_e_runs_the_combinations_at_loras_rate():
    from minilora.paper import appendix_e

    b = budgets.get_budget("full")
    records = protocol.Records()
    ready, waiting = appendix_e.appendix_e_runs(b, records)
    for task in budgets.TASKS:
        lora_lr, _ = protocol.choose_rate(b, "lora", task, records)
        combined = [r for r in ready if r.method.startswith("lora+") and r.task == task]
        assert len(combined) == 2 * len(b.seeds) and {r.lr for r in combined} == {lora_lr}
    table4, _ = tables.table4_runs(b, records)
    lora = [r for r in ready if r.method == "lora"]
    assert lora and {r.key() for r in lora} <= {r.key() for r in table4}
    assert len(ready) + len(waiting) == len(appendix_e.ROWS) * len(budgets.TASKS) * len(b.seeds)


def test_a_computing_budget_runs_the_sweeps_these_tables_need(tmp_path, monkeypatch):
    """figure2, table16 and appendix_e hand ``compute`` to the sweeps, as tables 4-6 do."""
    from minilora.paper import appendix_e

    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "none")
    b = budgets.get_budget("full")
    for runs_of in (sizes.figure2_runs, sizes.table16_runs, appendix_e.appendix_e_runs):
        asked = []
        runs_of(b, protocol.Records(tmp_path), lambda runs, asked=asked: asked.extend(runs))
        assert {r.lr for r in asked if r.method == "lora"} >= {
            protocol.rate("lora", k) for k in protocol.GRID
        }, runs_of.__name__


def test_the_plan_names_the_data_size_of_each_low_data_run():
    from minilora.paper import reproduce

    text = reproduce.plan(["table16"], "full")
    lines = [line for line in text.splitlines() if line.startswith("  table16:")]
    assert len(lines) == len(set(lines)), "two missing runs read the same"
    for n in sizes.LOW_DATA:
        assert any(f", {n:,} examples," in line for line in lines) or not lines


def test_figure2_varies_loras_targets_with_table6s_recorded_runs(tmp_path, monkeypatch):
    """LoRA on Wq alone (and on all four) joins Figure 2 from Table 6's records, sql only."""
    from minilora.paper.report import mean_sd

    monkeypatch.setattr(experiments, "execute", None)  # full-recorded trains nothing
    b = budgets.get_budget("full")
    records = protocol.Records()
    runs, _ = tables.table6_runs(b, records)
    wq_r8 = [
        rec["score"] for r in runs
        if dict(r.settings)["targets"] == ("q",) and dict(r.settings)["r"] == 8
        and (rec := records.get(r)) is not None
    ]  # fmt: skip
    assert len(wq_r8) >= 2  # committed: Table 5's Wq row is this cell of Table 6
    fig = sizes.figure2("full-recorded", tmp_path, progress=False).read_text()
    rows = [line for line in fig.splitlines() if "(Table 6's runs)" in line]
    assert not [line for line in rows if "Wq+Wv)" in line]  # Figure 2's own curve, not again
    row = next(line for line in rows if line.startswith("| LoRA (alpha=16, r=8, Wq) ("))
    assert row.endswith(f"| r = 8 | 8,192 | {mean_sd(wq_r8)} | sql only |")


def test_a_figure2_cell_that_blew_up_runs_lower_but_a_low_data_cell_does_not():
    """protocol.cell_rate applies to Figure 2's cells; with 100 or 1,000 examples a validation
    loss that climbs back is overfitting (the best checkpoint is scored), not a rate too high."""
    b = budgets.get_budget("full")
    committed = protocol.Records()
    lr, _ = protocol.choose_rate(b, "lora", "sql", committed)
    blown = {"curve": [{"val_loss": 0.4}, {"val_loss": 2.6}], "score": 0.0}

    class Blown:
        def get(self, run):
            r = dict(run.settings).get("r")
            if run.method == "lora" and run.task == "sql" and run.lr == lr:
                if (r == 64 and run.n_train == b.n_train) or run.n_train < b.n_train:
                    return blown
            return committed.get(run)

    fig, _ = sizes.figure2_runs(b, Blown())
    r64 = [r for r in fig if r.method == "lora" and dict(r.settings)["r"] == 64]
    assert {r.lr for r in r64 if r.task == "sql"} == {float(f"{lr / 3:.2g}")}
    assert {r.lr for r in fig if r.method == "lora" and dict(r.settings)["r"] == 8} == {
        lr,
        protocol.choose_rate(b, "lora", "nli", committed)[0],
    }
    t16, _ = sizes.table16_runs(b, Blown())
    few = [r for r in t16 if r.method == "lora" and r.task == "sql" and r.n_train < b.n_train]
    assert few and {r.lr for r in few} == {lr}


def test_past_best_names_a_fall_only_beyond_the_seed_spread():
    """Curves are [(trainable, {seed: score})]; a fall is judged on the seeds both sizes have."""
    fall = [(512, {0: 0.30, 1: 0.32}), (2048, {0: 0.50, 1: 0.52}), (8192, {0: 0.20, 1: 0.22})]
    assert sizes.past_best(fall).startswith(
        "falls past its best (on 2 matched seeds from 51.0% at 2,048 to 21.0%"
    )
    # paired differences 0.2 and 0.0: mean 0.1, the 95% half-width 12.706 x 0.1 = 1.27
    noisy = [(512, {0: 0.30, 1: 0.32}), (2048, {0: 0.50, 1: 0.70}), (8192, {0: 0.30, 1: 0.70})]
    assert sizes.past_best(noisy).startswith("level past its best")
    assert (
        sizes.past_best([(1, {0: 0.1, 1: 0.1}), (2, {0: 0.3, 1: 0.4})])
        == "rises to its largest size"
    )
    assert sizes.past_best([(1, {0: 0.0, 1: 0.0}), (2, {0: 0.004, 1: 0.0})]).startswith(
        "never learns"
    )
    tiny = [(1, {0: 0.200, 1: 0.200}), (2, {0: 0.205, 1: 0.205}), (3, {0: 0.200, 1: 0.200})]
    assert sizes.past_best(tiny).startswith("level")  # no spread, but under a point
    # the best size by its mean over five seeds, judged against the largest on seeds 0-2 only
    matched = [(1, {0: 0.78, 1: 0.81, 2: 0.78, 3: 0.74, 4: 0.69}), (2, {0: 0.74, 1: 0.76, 2: 0.74})]
    assert sizes.past_best(matched).startswith("falls past its best (on 3 matched seeds")


def test_figure2_checks_each_curve_past_its_best_size(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "execute", None)  # full-recorded trains nothing
    fig = sizes.figure2("full-recorded", tmp_path, progress=False).read_text()
    checks = fig.split("| curve | sizes | past its best size |")[1].splitlines()[2:]
    rows = [line for line in checks if line.startswith("| ")]
    assert any(line.startswith("| LoRA on Wq+Wv, sql | 4 |") for line in rows)
    assert any(line.startswith("| LoRA on Wq+Wk+Wv+Wo, sql | 6 |") for line in rows)
    assert not any(line.startswith(("| FT,", "| BitFit,")) for line in rows)  # one size each


def test_table16_gives_fts_lead_over_lora_at_each_data_size(tmp_path, monkeypatch):
    from minilora.paper.bases import lead

    monkeypatch.setattr(experiments, "execute", None)  # full-recorded trains nothing
    b = budgets.get_budget("full")
    records = protocol.Records()
    table4, _ = tables.table4_runs(b, records)

    def scores(method):
        return [
            records.get(r)["score"] for r in table4
            if r.method == method and r.task == "sql" and r.settings in ((), sizes.Run(
                "lora", "sql", sizes.LOW_DATA_METHODS["lora"]).settings)
            and r.seed in b.main_seeds and records.get(r) is not None
        ]  # fmt: skip

    t16 = sizes.table16("full-recorded", tmp_path, progress=False).read_text()
    row = next(line for line in t16.splitlines() if line.startswith("| FT's lead over LoRA"))
    assert row.startswith("| FT's lead over LoRA (points ± se) | sql | ")
    assert row.endswith(f"| {lead(scores('ft'), scores('lora'))} |")  # all 4,000 examples
    assert lead(scores("ft"), scores("lora")).startswith("+")  # FT leads with all the data


def test_figure2_shows_the_second_base_from_the_bases_recorded_runs(tmp_path, monkeypatch):
    from minilora.paper import bases
    from minilora.paper.report import mean_sd

    monkeypatch.setattr(experiments, "execute", None)  # full-recorded trains nothing
    b = budgets.get_budget("full")
    records = protocol.Records()
    runs, _ = bases.bases_runs(b, records)
    lr = protocol.choose_rate(b, "lora", "sql", records, base="char-small-mixed")[0]
    r4 = [
        rec["score"] for r in dict.fromkeys(runs)
        if r.base == "char-small-mixed" and r.method == "lora" and r.task == "sql"
        and dict(r.settings)["r"] == 4 and r.lr == lr and r.seed in b.seeds
        and (rec := records.get(r)) is not None
    ]  # fmt: skip
    assert len(r4) == len(b.seeds)  # committed: the bases' rank row
    fig = sizes.figure2("full-recorded", tmp_path, progress=False).read_text()
    row = next(line for line in fig.splitlines() if "r=4, Wq+Wv) (char-small-mixed)" in line)
    assert row.endswith(f"| r = 4 | 8,192 | {mean_sd(r4)} | — |")  # sql only at r = 4
    assert any(
        line.startswith("| FT (char-small-mixed) | — | 823,168 |") for line in fig.split("\n")
    )
    assert "| LoRA on Wq+Wv, char-small-mixed, sql | 6 |" in fig
