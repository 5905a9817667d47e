"""Tables 4, 5 and 6 of Hu et al. 2021 (arXiv 2106.09685), at toy scale.

Each table is ``fn(budget, out_dir, progress=True) -> Path``: it lists its
runs (``minilora.paper.experiments.Run``), reads their records (the committed
ones, then the cache under ``out_dir/cache``), computes only what is missing,
and writes ``<name>.md`` (and, where a picture helps, ``<name>.png``) into
``out_dir``. ``RUN_LISTS[name](budget, records)`` lists a table's runs without
computing anything (``minilora reproduce --plan``).

* Table 4 (section 5.4): every method of section 5.1 on both tasks, mean and
  standard deviation over seeds, with its trainable parameters.
* Table 5 (section 7.1): one budget of trainable parameters (2 d r x 8 matrices'
  worth of r = 8 on one matrix) spent on Wq, Wk, Wv, Wo alone (r = 8), Wq+Wk and
  Wq+Wv (r = 4) or all four (r = 2).
* Table 6 (section 7.2): ranks 1 to 64 (and r = d_model, full rank) on Wq, Wq+Wv
  and all four.

The full budget is the protocol of ``minilora.paper.protocol``: every learning
rate chosen on the validation split, alpha = 16 for every LoRA run, the best
validation checkpoint scored on 1,000 test questions, 3 seeds per cell (5 for
Table 4's LoRA and FT rows). The quick budget is a smoke test at the old default
rates.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from minilora.paper import protocol as P
from minilora.paper.baselines import METHODS
from minilora.paper.budgets import TASKS, Budget, get_budget, records_of
from minilora.paper.experiments import BASE, METRICS, Run
from minilora.paper.report import header, mean_sd, plot, write

# Table 4's rows: (method, settings); every LoRA row has alpha = 16 (scaling 16 / r)
TABLE4_ROWS = [(m, {}) for m in METHODS if m != "lora"] + [
    ("lora", {"r": 2, "alpha": P.ALPHA, "targets": ("q", "v")}),
    ("lora", {"r": 8, "alpha": P.ALPHA, "targets": ("q", "v")}),
]
MAIN_METHODS = ("ft", "lora")  # Table 4's rows with more seeds (never cut)
# Table 5: (targets, r) with the same 2 d r x (number of targets) = 16 d trainable per block
TABLE5_ROWS = [
    (("q",), 8), (("k",), 8), (("v",), 8), (("o",), 8),
    (("q", "k"), 4), (("q", "v"), 4), (("q", "k", "v", "o"), 2),
]  # fmt: skip
TABLE6_TARGETS = [("q",), ("q", "v"), ("q", "k", "v", "o")]
TABLE6_ALPHA = P.ALPHA  # alpha fixed at 16 at every rank (the paper's rule, section 4.1)
LR = P.DEFAULT_LR  # the quick budget's rates (the grids' centres in the full one)

# The paper's numbers (GPT-3 175B; WikiSQL exact match / MNLI-m accuracy, in %).
PAPER4 = {
    "ft": (73.8, 89.5), "bitfit": (71.3, 91.0), "preembed": (63.1, 88.6),
    "prelayer": (70.1, 89.5), "adapterh": (71.9, 89.8), "lora": (73.4, 91.7),
}  # fmt: skip
PAPER5 = {
    "q": (70.4, 91.0), "k": (70.0, 90.8), "v": (73.0, 91.0), "o": (73.2, 91.3),
    "qk": (71.4, 91.3), "qv": (73.7, 91.3), "qkvo": (73.7, 91.7),
}  # fmt: skip
PAPER6 = {  # WikiSQL, r = 1, 2, 4, 8, 64
    "q": (68.8, 69.6, 70.5, 70.4, 70.0),
    "qv": (73.4, 73.3, 73.7, 73.8, 73.5),
    "qkvo": (74.1, 73.7, 74.0, 74.0, 73.9),
}


def rates(b: Budget, records, tasks=TASKS, methods=None, compute=None, base=BASE) -> dict:
    """{(method, task): chosen rate, or None while its sweep is incomplete}, on ``base``."""
    methods = methods or list(dict.fromkeys(m for m, _ in TABLE4_ROWS))
    return {(m, t): P.choose_rate(b, m, t, records, compute, base=base)[0]
            for m in methods for t in tasks}  # fmt: skip


def _cells(b: Budget, rows, tasks, seeds_of, lr, records, base=BASE) -> tuple[list, list]:
    """The runs of (method, settings) x tasks x seeds whose rate is known (the task's, lower
    where the cell blew up at it: ``protocol.cell_rate``), and those waiting for a sweep
    (listed at the default rate, a placeholder, so that plans can count them)."""
    ready, waiting = [], []
    for m, s in rows:
        for task in tasks:
            seeds = seeds_of(m)
            if lr[m, task] is not None:
                rate, _ = P.cell_rate(b, m, task, s, seeds, lr[m, task], records, base)
            for seed in seeds:
                if lr[m, task] is not None:
                    ready.append(P.protocol_run(b, m, task, s, seed, rate, base))
                elif not (seed == P.SWEEP_SEED and s == P.swept_settings(m)):
                    # (the sweep's own run is counted with the sweep)
                    waiting.append(P.protocol_run(b, m, task, s, seed, P.DEFAULT_LR[m], base))
    return ready, waiting


def table4_runs(b: Budget, records=None, compute=None, base=BASE) -> tuple[list, list]:
    """(runs whose rate is known, the missing sweep runs first; runs waiting for a sweep),
    every run from ``base`` (a shipped base's name or ``user_base.name_base``'s)."""
    records = records or P.Records()
    lr = rates(b, records, compute=compute, base=base)
    sweeps = [r for (m, t) in lr for r in P.sweep_runs_missing(b, m, t, records, base)]
    ready, waiting = _cells(
        b, TABLE4_ROWS, TASKS, lambda m: b.main_seeds if m in MAIN_METHODS else b.seeds, lr,
        records, base,
    )  # fmt: skip
    return sweeps + ready, waiting


def _lora_rows(rows):
    return [("lora", {"r": r, "alpha": P.ALPHA, "targets": t}) for t, r in rows]


def _lora_runs(b: Budget, records, compute, base, rows, tasks) -> tuple[list, list]:
    """Table 5's or 6's LoRA ``rows`` on ``tasks``: the missing sweep runs of LoRA's rate
    first (as ``table4_runs``; none once the sweeps are recorded), then the cells."""
    records = records or P.Records()
    lr = rates(b, records, tasks, ["lora"], compute, base)
    sweeps = [r for t in tasks for r in P.sweep_runs_missing(b, "lora", t, records, base)]
    ready, waiting = _cells(b, rows, tasks, lambda m: b.seeds, lr, records, base)
    return sweeps + ready, waiting


def table5_runs(b: Budget, records=None, compute=None, base=BASE) -> tuple[list, list]:
    rows = _lora_rows(TABLE5_ROWS[: b.table5_rows])
    return _lora_runs(b, records, compute, base, rows, b.tasks5)


def table6_runs(b: Budget, records=None, compute=None, base=BASE) -> tuple[list, list]:
    rows = _lora_rows([(t, r) for t in TABLE6_TARGETS for r in b.ranks])
    return _lora_runs(b, records, compute, base, rows, b.tasks6)


RUN_LISTS = {"table4": table4_runs, "table5": table5_runs, "table6": table6_runs}


def _index(recs: dict) -> dict:
    """{(method, settings, task, seed): record}."""
    return {(r.method, r.settings, r.task, r.seed): rec for r, rec in recs.items()}


def _cell(index, method, settings, task, seeds) -> list:
    """The records of one cell (one per seed there is)."""
    key = Run(method, task, settings).settings  # normalised as the runs' own
    return [index[k] for seed in seeds if (k := (method, key, task, seed)) in index]


def _blown_note(b, task, targets, r, settings, blown, rate, records, base=BASE) -> str:
    """One line on a cell that blew up: its seeds' scores at each rate that did."""
    parts = []
    for lr in blown:
        runs = [P.protocol_run(b, "lora", task, settings, s, lr, base) for s in b.seeds]
        recs = [records.get(run) for run in runs]
        recs = [rec for rec in recs if rec is not None]
        n = sum(P.blew_up(rec) for rec in recs)
        parts.append(
            f"at lr {lr:g} {n} of {len(recs)} seeds blew up "
            f"(score {mean_sd([rec['score'] for rec in recs])})"
        )
    return f"{task}, W{', W'.join(targets)}, r = {r}: {'; '.join(parts)}; run at lr {rate:g}."


def _header(title, b, recs: dict, what: str, base: str) -> list[str]:
    """``report.header``, naming ``base`` where it is not the shipped default, and describing
    your checkpoint (``user_base.describe``)."""
    from minilora.paper import user_base

    if base == BASE:
        return header(title, b, list(recs.values()), what)
    lines = header(title, b, list(recs.values()), what, base=user_base.title(base))
    return lines + user_base.describe(base)


def table4(budget: str, out_dir: Path, progress: bool = True, base: str = BASE) -> Path:
    """Every method on both tasks (the paper's Table 4, and Figure 2's picture), from ``base``
    (default: the shipped char-small; ``reproduce --model DIR``: your checkpoint)."""
    b, out_dir = get_budget(budget), Path(out_dir)
    recs = records_of(partial(table4_runs, base=base), "table4", b, out_dir, progress)
    index = _index(recs)
    lines = _header("Table 4 (LoRA section 5.4)", b, recs, "Every method on both tasks.", base)
    lines += [
        f"Mean ± standard deviation over seeds {list(b.seeds)} ({list(b.main_seeds)} for FT "
        "and LoRA r = 8). Paper: GPT-3 175B, WikiSQL / MNLI-m.",
        "",
        "| method | trainable | SQL | NLI | lr (sql / nli) | step ms (sql) | training state "
        "| paper |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    series = {}
    for m, s in TABLE4_ROWS:
        seeds = b.main_seeds if m in MAIN_METHODS else b.seeds
        row = {t: _cell(index, m, s, t, seeds) for t in TASKS}
        if not row["sql"] + row["nli"]:
            lines.append(f"| {Run(m, 'sql', s).label()} | | not yet run | not yet run |||||")
            continue
        first = (row["sql"] + row["nli"])[0]
        paper = PAPER4.get(m)
        paper = f"{paper[0]} / {paper[1]}" if paper else "—"
        if m == "lora":  # the paper's 37.7M row is r = 8 on Wq, Wv; its 4.7M row is r = 1
            paper = "74.0 / 91.6" if s.get("r") == 8 else f"{PAPER6['qv'][1]} / — (Table 6)"
        lines.append(
            f"| {Run(m, 'sql', s).label()} | {first['trainable']:,} | "
            f"{mean_sd([x['score'] for x in row['sql']])} | "
            f"{mean_sd([x['score'] for x in row['nli']])} | "
            f"{' / '.join(_lr(row[t]) for t in TASKS)} | "
            f"{_median_ms(row['sql'])} | "
            f"{first['state_bytes'] / 1024:,.0f} KiB | {paper} |"
        )
        for t in TASKS:
            scores = [x["score"] for x in row[t] if x["score"] is not None]
            series.setdefault(t, []).append(
                (
                    first["trainable"],
                    float(np.mean(scores)) if scores else None,
                    Run(m, "sql", s).label(),
                )
            )
    plot(
        out_dir / "table4.png",
        {f"{t} ({METRICS[t]})": sorted(p) for t, p in series.items()},
        "trainable parameters",
        f"Table 4 ({b.name} budget): score against trainable parameters",
    )
    lines += [
        "",
        "Step ms: the median step time of the sql runs. The paper column of LoRA r = 2 is its "
        "Table 6 (WikiSQL, r = 2 on Wq, Wv): the paper's Table 4 row with 4.7M parameters "
        f"({PAPER4['lora'][0]} / {PAPER4['lora'][1]}) is r = 1 on Wq, Wv (or r = 2 on Wv alone, "
        "its appendix), and its 37.7M row (74.0 / 91.6) is r = 8 on Wq, Wv.",
        "",
        "![score against trainable parameters](table4.png)",
    ]
    return write(out_dir / "table4.md", lines)


def _median_ms(records: list) -> str:
    """The median training step time of ``records`` in ms (one task's runs: never pooled)."""
    return f"{np.median([r['step_ms'] for r in records]):.0f}" if records else "—"


def _lr(records: list) -> str:
    return f"{records[0]['run']['lr']:g}" if records else "—"


def _tag(targets) -> str:
    return "".join(targets)


def table5(budget: str, out_dir: Path, progress: bool = True, base: str = BASE) -> Path:
    """One parameter budget spent on different weight types (the paper's Table 5)."""
    b, out_dir = get_budget(budget), Path(out_dir)
    recs = records_of(partial(table5_runs, base=base), "table5", b, out_dir, progress)
    index = _index(recs)
    lines = _header(
        "Table 5 (LoRA section 7.1)", b, recs,
        f"LoRA with the same number of trainable parameters on different attention weights, "
        f"alpha = {P.ALPHA:g}.", base,
    )  # fmt: skip
    lines += [
        f"Mean ± standard deviation over seeds {list(b.seeds)}. Paper: GPT-3 175B, 18M "
        "trainable, WikiSQL / MNLI-m.",
        "",
        "| weights | r | trainable | " + " | ".join(t.upper() for t in b.tasks5) + " | paper |",
        "|---|---:|---:|" + "---:|" * len(b.tasks5) + "---:|",
    ]
    records = P.Records(out_dir / "cache")
    for (_, s), (t, r) in zip(_lora_rows(TABLE5_ROWS[: b.table5_rows]), TABLE5_ROWS):
        cells = {task: _cell(index, "lora", s, task, b.seeds) for task in b.tasks5}
        first = next((x[0] for x in cells.values() if x), {"trainable": 2 * 128 * 8 * 4})
        paper = PAPER5[_tag(t)]
        lines.append(
            f"| W{', W'.join(t)} | {r} | {first['trainable']:,} | "
            + " | ".join(
                mean_sd([x["score"] for x in cells[task]])
                + P.cell_mark(b, "lora", task, s, b.seeds, records, base)
                for task in b.tasks5
            )
            + f" | {paper[0]} / {paper[1]} |"
        )
    if any("(lr " in line for line in lines):
        lines += ["", P.MARK_NOTE]
    return write(out_dir / "table5.md", lines)


def table6(budget: str, out_dir: Path, progress: bool = True, base: str = BASE) -> Path:
    """LoRA's rank r (the paper's Table 6), with a plot of score against r."""
    b, out_dir = get_budget(budget), Path(out_dir)
    recs = records_of(partial(table6_runs, base=base), "table6", b, out_dir, progress)
    index = _index(recs)
    lines = _header(
        "Table 6 (LoRA section 7.2)", b, recs,
        f"LoRA at several ranks r, alpha = {TABLE6_ALPHA:g} at every rank (the paper's rule: "
        f"scaling {TABLE6_ALPHA:g}/r).", base,
    )  # fmt: skip
    lines += [
        f"Mean ± standard deviation over seeds {list(b.seeds)}; task(s): {', '.join(b.tasks6)}. "
        "Paper: GPT-3 175B, WikiSQL (r = 1, 2, 4, 8, 64).",
        "",
        "| task | weights | " + " | ".join(f"r={r}" for r in b.ranks) + " | paper |",
        "|---|---|" + "---:|" * len(b.ranks) + "---|",
    ]
    series, notes = {}, []
    records = P.Records(out_dir / "cache")
    lr = rates(b, records, b.tasks6, ["lora"], base=base)
    for task in b.tasks6:
        for t in TABLE6_TARGETS:
            settings = {r: {"r": r, "alpha": P.ALPHA, "targets": t} for r in b.ranks}
            row = {r: _cell(index, "lora", settings[r], task, b.seeds) for r in b.ranks}
            text = {r: mean_sd([x["score"] for x in row[r]]) for r in b.ranks}
            for r in b.ranks if lr["lora", task] is not None else ():
                rate, blown = P.cell_rate(b, "lora", task, settings[r], b.seeds, lr["lora", task],
                                          records, base)  # fmt: skip
                if blown:  # the mark, and the runs that blew up
                    text[r] += f" (lr {rate:g})"
                    notes.append(
                        _blown_note(b, task, t, r, settings[r], blown, rate, records, base)
                    )
            paper = " / ".join(map(str, PAPER6[_tag(t)])) if task == "sql" else "—"
            lines.append(
                f"| {task} | W{', W'.join(t)} | "
                + " | ".join(text[r] for r in b.ranks)
                + f" | {paper} |"
            )
            series[f"{task}: W{', W'.join(t)}"] = [
                (r, float(np.mean([x["score"] for x in row[r]])) if row[r] else None)
                for r in b.ranks
            ]
    plot(out_dir / "table6.png", series, "rank r", f"Table 6 ({b.name} budget): score against r")
    if notes:
        lines += ["", P.MARK_NOTE + " The runs that blew up:", ""]
        lines += [f"* {note}" for note in notes]
    lines += ["", "![score against rank](table6.png)"]
    return write(out_dir / "table6.md", lines)


TABLES = {"table4": table4, "table5": table5, "table6": table6}

__all__ = [
    "LR", "PAPER4", "PAPER5", "PAPER6", "RUN_LISTS", "TABLE4_ROWS", "TABLES", "rates", "table4",
    "table4_runs", "table5", "table5_runs", "table6", "table6_runs",
]  # fmt: skip
