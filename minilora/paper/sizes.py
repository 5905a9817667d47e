"""Figure 2 / Table 15 (score against trainable parameters) and Table 16 (little data).

* **Figure 2 and Table 15** (appendix F.2): every method at several sizes: LoRA over its rank
  (r = 1, 2, 8, 64 on Wq, Wv), the adapters over their bottleneck (r = 1, 4, 16), the prefix
  methods over their special tokens (l_p = l_i = 2, 8, 32), with BitFit, FT-Top2 and FT at
  their one size. The paper's finding: the prefix methods get worse past a size, LoRA does
  not.
* **Table 16** (appendix F.3): 100, 1,000 and all 4,000 training examples for FT, PreEmbed,
  PreLayer and LoRA r = 8 (the paper's values are in its appendix F.3).

Every run follows the protocol (``minilora.paper.protocol``) at the rate the method's sweep
chose at its default size with all the data: the paper tuned each cell, we do not, to keep the
compute in reach, and say so. 2 seeds per cell (issue 17's first cut), both tasks, base
``char-small``; the default-size, all-data cells are Table 4's own runs (the same records, and
Table 4's seeds: ``cell_seeds``).
Figure 2 also reads runs recorded for other tables, without a run of its own: LoRA on Wq alone
and on all four matrices (Table 6's, sql), and the second base ``char-small-mixed`` (FT, and
LoRA on Wq, Wv over Table 6's ranks: the bases comparison's), 3 seeds each.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from minilora.paper import protocol as P
from minilora.paper.baselines import DEFAULTS
from minilora.paper.bases import lead
from minilora.paper.budgets import TASKS, get_budget, records_of
from minilora.paper.experiments import Run
from minilora.paper.report import header, mean_sd, paired_difference, write
from minilora.paper.tables import MAIN_METHODS, TABLE4_ROWS

SEEDS = (0, 1)
LORA = {"alpha": P.ALPHA, "targets": ("q", "v")}
SIZES = {  # method -> settings at each size, smallest first
    "lora": [{"r": r, **LORA} for r in (1, 2, 8, 64)],
    # {}: the method's default size (r = 4; l_p = l_i = 8), spelled as Table 4 spells it, so
    # that the cell is Table 4's own run (a run's key is its settings as written)
    "adapterh": [{"r": 1}, {}, {"r": 16}],
    "adapterl": [{"r": 1}, {}, {"r": 16}],
    "preembed": [{"l_p": 2, "l_i": 2}, {}, {"l_p": 32, "l_i": 32}],
    "prelayer": [{"l_p": 2, "l_i": 2}, {}, {"l_p": 32, "l_i": 32}],
    "bitfit": [{}], "ft-top2": [{}], "ft": [{}],
}  # fmt: skip
LOW_DATA = (100, 1000)  # and all of it: Table 4's runs
LOW_DATA_METHODS = {"ft": {}, "preembed": {}, "prelayer": {}, "lora": {"r": 8, **LORA}}


def _plan(b):
    """(tasks, seeds) of a budget: the quick one is a smoke test on sql with one seed."""
    return (TASKS[:1], (0,)) if b.name == "quick" else (TASKS, SEEDS)


def cell_seeds(b, method: str, settings: dict, n_train: int) -> tuple:
    """A cell's seeds: Table 4's (5 for FT and LoRA, 3 for the others) where the cell is one of
    Table 4's own (the default size, all the data: those runs are recorded), else ``SEEDS``."""
    _, seeds = _plan(b)
    key = Run(method, "sql", settings).settings
    if b.name == "quick" or n_train != b.n_train:
        return seeds
    if any((m, Run(m, "sql", s).settings) == (method, key) for m, s in TABLE4_ROWS):
        return b.main_seeds if method in MAIN_METHODS else b.seeds
    return seeds


def _ready(b, records, cells, compute=None) -> tuple[list[Run], list[Run]]:
    """Runs of [(method, settings, task, n_train)] whose rate is chosen; and those waiting."""
    ready, waiting = [], []
    for method, settings, task, n_train in cells:
        seeds = cell_seeds(b, method, settings, n_train)
        lr, _ = P.choose_rate(b, method, task, records, compute)
        if lr is not None and n_train == b.n_train:  # (with less data a rising loss is overfitting)
            lr, _ = P.cell_rate(b, method, task, settings, seeds, lr, records)
        for seed in seeds:
            run = P.protocol_run(b, method, task, settings, seed, lr or P.DEFAULT_LR[method])
            run = Run(**{**run.to_dict(), "settings": run.settings, "n_train": n_train})
            (ready if lr is not None else waiting).append(run)
    return ready, waiting


def figure2_runs(b, records=None, compute=None):
    tasks, _ = _plan(b)
    methods = ("lora", "preembed") if b.name == "quick" else tuple(SIZES)  # quick: two curves
    cells = [(m, s, t, b.n_train) for t in tasks for m in methods for s in SIZES[m]]
    return _ready(b, records or P.Records(), cells, compute)


def table16_runs(b, records=None, compute=None):
    tasks, _ = _plan(b)
    sizes = (*LOW_DATA, b.n_train) if b.name != "quick" else (24, b.n_train)
    cells = [(m, s, t, n) for t in tasks for m, s in LOW_DATA_METHODS.items() for n in sizes]
    return _ready(b, records or P.Records(), cells, compute)


def _scores(recs: dict, method: str, settings: dict, task: str, n_train: int) -> list:
    key = Run(method, task, settings).settings
    return [
        rec["score"] for run, rec in recs.items()
        if (run.method, run.settings, run.task, run.n_train) == (method, key, task, n_train)
        and rec.get("score") is not None
    ]  # fmt: skip


def _every_seed(recs: dict, records, b, method, settings, task, n_train) -> dict:
    """{seed: score} of one cell: its own runs' seeds and every other seed (up to Table 4's
    ``b.main_seeds``) recorded for the very same run, whichever table ran it. The rule (fixed
    before the comparison it serves was looked at again, issue 28): a cell shows every seed
    recorded for it, and two cells are compared on the seeds both have."""
    key = Run(method, task, settings).settings
    own = [run for run in recs if (run.method, run.settings, run.task, run.n_train)
           == (method, key, task, n_train)]  # fmt: skip
    found = {}
    for run in own:
        for seed in dict.fromkeys((run.seed, *b.main_seeds)):
            rec = recs.get(run) if seed == run.seed else records.get(replace(run, seed=seed))
            if rec is not None and rec.get("score") is not None:
                found[seed] = rec["score"]
    return dict(sorted(found.items()))


def _size_label(method: str, settings: dict) -> str:
    settings = {**DEFAULTS[method], **settings}
    if "l_p" in settings:
        return f"l_p = l_i = {settings['l_p']}"
    return f"r = {settings['r']}" if "r" in settings else "—"


def _lora_targets(b, out_dir: Path) -> dict:
    """{(targets, r): [score]} of LoRA on Wq alone and on all four matrices: Table 6's recorded
    runs (sql only, 3 seeds), read here so that Figure 2's LoRA varies its targets as well as
    its rank without a run of its own. Empty at the quick budget (Table 6 is not run there)."""
    if b.name == "quick":
        return {}
    from minilora.paper import tables

    records = P.Records(out_dir / "cache")
    runs, _ = tables.table6_runs(b, records)
    found: dict = {}
    for run in runs:
        settings = dict(run.settings)
        if tuple(settings["targets"]) == LORA["targets"]:
            continue  # Figure 2's own LoRA curve
        record = records.get(run)
        if record is not None and record.get("score") is not None:
            found.setdefault((tuple(settings["targets"]), settings["r"]), []).append(record)
    return found


def _second_base(b, out_dir: Path) -> dict:
    """{(method, r, task): [record]} on ``char-small-mixed``, the base that knows the tasks'
    languages: the bases comparison's recorded runs (FT, and LoRA on Wq, Wv over Table 6's
    ranks), seeds ``b.seeds``, read so that Figure 2 shows that base beside ``char-small``
    without a run of its own. Empty at the quick budget (the bases are not run there)."""
    if b.name == "quick":
        return {}
    from minilora.paper import bases

    records, base = P.Records(out_dir / "cache"), bases.BASES[1]
    runs, _ = bases.bases_runs(b, records)
    found: dict = {}
    for run in dict.fromkeys(runs):
        if run.base != base or run.seed not in b.seeds:
            continue
        if run.lr != P.choose_rate(b, run.method, run.task, records, base=base)[0]:
            continue  # a sweep's run at a rate not chosen
        record = records.get(run)
        if record is not None and record.get("score") is not None:
            found.setdefault((run.method, dict(run.settings).get("r"), run.task), []).append(record)
    return found


def past_best(curve: list) -> str:
    """What a curve does past its best size: Figure 2's finding is that the prefix methods fall
    (PreEmbed past 256 special tokens, PreLayer past 32, on GPT-3) and LoRA does not.

    ``curve`` is [(trainable, {seed: score})], smallest first. The best size is the one with
    the best mean over its seeds. A fall counts only when, **on the seeds both the best and the
    largest size have** (matched seeds), the largest is below the best by more than a point and
    by more than the half-width of the 95% interval of the paired difference (Student's t with
    n - 1 degrees of freedom: with 2-3 seeds, two standard errors are not a 95% rule).
    """
    means = [float(np.mean(list(scores.values()))) for _, scores in curve]
    if max(means) < 0.01:
        return "never learns (under 1% at every size)"
    best = int(np.argmax(means))
    if best == len(curve) - 1:
        return "rises to its largest size"
    paired = paired_difference(curve[best][1], curve[-1][1])
    if paired is None:
        return "fewer than 2 matched seeds: not judged"
    drop, half, n = paired
    mean_best = np.mean(
        [curve[best][1][s] for s in sorted(set(curve[best][1]) & set(curve[-1][1]))]
    )
    where = (
        f"on {n} matched seeds from {100 * mean_best:.1f}% at {curve[best][0]:,} to "
        f"{100 * (mean_best - drop):.1f}%, {100 * drop:.1f} points lower, 95% interval ± "
        f"{100 * half:.1f}"
    )
    if drop > max(half, 0.01):
        return f"falls past its best ({where})"
    return f"level past its best ({where})"


def _plot_by_task(path: Path, series: dict, title: str) -> None:
    """One panel per task, a method keeps its colour in both; ``series`` as "task: method"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({name.split(": ")[0] for name in series}, reverse=True)  # sql, nli
    methods = list(dict.fromkeys(name.split(": ", 1)[1] for name in series))
    owners = [m for m in methods if "mixed" not in m] + [m for m in methods if "mixed" in m]
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(10, 4), sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for method in methods:
            points = sorted(series.get(f"{task}: {method}", []))
            if points:
                # the second base: its method's colour, square markers and dashed lines
                own, mixed = method.split(", char-small-mixed")[0], "mixed" in method
                style = ("s" if mixed else "o") + ("--" if mixed else "-") * (len(points) > 1)
                xs, ys = [x for x, _ in points], [100 * y for _, y in points]
                ax.plot(xs, ys, style, color=colours(owners.index(own) % 10), label=method)
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_title(f"{title}: {task}", fontsize=9)
    axes[0][0].set_ylabel("score (%)")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure2(budget, out_dir: Path, progress: bool = True) -> Path:
    """Score against trainable parameters, each method at several sizes (Figure 2, Table 15)."""
    b, out_dir = get_budget(budget), Path(out_dir)
    recs = records_of(figure2_runs, "figure2", b, out_dir, progress)
    tasks, seeds = _plan(b)
    lines = header(
        "Figure 2 and Table 15 (appendix F.2)", b, list(recs.values()),
        "Every method at several sizes, at the rate its sweep chose at the default size.",
    )  # fmt: skip
    lines += [
        f"Mean ± standard deviation over the seeds recorded for each cell: seeds {list(seeds)} "
        "run for this figure, and every other seed recorded for the very same run by another "
        "table (Table 4's default-size cells: 5 seeds for FT and LoRA, 3 for the others; "
        "section 7's adapters at r = 64: 3).",
        "",
        "| method | size | trainable | " + " | ".join(t.upper() for t in tasks) + " |",
        "|---|---|---:|" + "---:|" * len(tasks),
    ]
    series: dict = {}
    curves: dict = {}  # "task: curve" -> [(trainable, scores)], for past_best
    records = P.Records(out_dir / "cache")
    for method, sizes in SIZES.items():
        for settings in sizes:
            cells = {
                t: _every_seed(recs, records, b, method, settings, t, b.n_train) for t in tasks
            }
            key = Run(method, "sql", settings).settings
            counts = [rec["trainable"] for run, rec in recs.items()
                      if (run.method, run.settings) == (method, key)]  # fmt: skip
            trainable = counts[0] if counts else None
            label = Run(method, "sql", settings).label()
            seeds = cell_seeds(b, method, settings, b.n_train)
            lines.append(
                f"| {label} | {_size_label(method, settings)} | "
                f"{'—' if trainable is None else f'{trainable:,}'} | "
                + " | ".join(
                    (mean_sd(list(cells[t].values())) if cells[t] else "not yet run")
                    + P.cell_mark(b, method, t, settings, seeds, records)
                    for t in tasks
                )
                + " |"
            )
            for t in tasks:
                if cells[t] and trainable:
                    name = f"{t}: {label.split(' (')[0]}" + (
                        " on Wq+Wv" if method == "lora" else ""
                    )
                    mean = float(np.mean(list(cells[t].values())))
                    series.setdefault(name, []).append((trainable, mean))
                    curves.setdefault(name, []).append((trainable, cells[t]))
    for (targets, r), found in sorted(_lora_targets(b, out_dir).items()):
        label = Run("lora", "sql", {"r": r, "alpha": P.ALPHA, "targets": targets}).label()
        trainable, scores = found[0]["trainable"], [rec["score"] for rec in found]
        by_seed = {rec["run"]["seed"]: rec["score"] for rec in found}
        lines.append(
            f"| {label} (Table 6's runs) | r = {r} | {trainable:,} | {mean_sd(scores)} |"
            + " sql only |" * (len(tasks) - 1)
        )
        name = "sql: LoRA on " + "+".join(f"W{t}" for t in targets)
        series.setdefault(name, []).append((trainable, float(np.mean(scores))))
        curves.setdefault(name, []).append((trainable, by_seed))
    second = _second_base(b, out_dir)
    for method, r in sorted({k[:2] for k in second}, key=lambda k: (k[0] != "lora", k[1] or 0)):
        settings = {"r": r, **LORA} if method == "lora" else {}
        run = Run(method, "sql", settings)
        cells = {t: [rec["score"] for rec in second.get((method, r, t), [])] for t in tasks}
        trainable = next(rec["trainable"] for k, v in second.items() if k[:2] == (method, r)
                         for rec in v)  # fmt: skip
        lines.append(
            f"| {run.label()} (char-small-mixed) | {_size_label(method, settings)} | "
            f"{trainable:,} | "
            + " | ".join(mean_sd(c) if c else "—" for c in cells.values())
            + " |"
        )
        for t, scores in cells.items():
            if scores:
                name = f"{t}: {'LoRA on Wq+Wv' if method == 'lora' else 'FT'}, char-small-mixed"
                by_seed = {rec["run"]["seed"]: rec["score"] for rec in second[method, r, t]}
                series.setdefault(name, []).append((trainable, float(np.mean(scores))))
                curves.setdefault(name, []).append((trainable, by_seed))
    if any("(lr " in line for line in lines):
        lines += ["", P.MARK_NOTE]
    lines += [
        "",
        "Past its best size (the paper: the prefix methods fall, LoRA does not). A fall counts "
        "when, on the seeds both the best and the largest size have (matched seeds), the largest "
        "is below the best by more than a point and by more than the half-width of the 95% "
        "interval of the paired difference (t with n - 1 degrees of freedom; `sizes.past_best`):",
        "",
        "| curve | sizes | past its best size |",
        "|---|---:|---|",
    ]
    for name, curve in curves.items():
        if len(curve) > 1:
            task, method = name.split(": ", 1)
            lines.append(f"| {method}, {task} | {len(curve)} | {past_best(sorted(curve))} |")
    _plot_by_task(out_dir / "figure2.png", series, f"Figure 2 ({b.name} budget)")
    lines += ["", "![score against trainable parameters, every method](figure2.png)"]
    return write(out_dir / "figure2.md", lines)


def table16(budget, out_dir: Path, progress: bool = True) -> Path:
    """Little training data (Table 16): 100, 1,000 and all training examples."""
    b, out_dir = get_budget(budget), Path(out_dir)
    recs = records_of(table16_runs, "table16", b, out_dir, progress)
    tasks, seeds = _plan(b)
    sizes = sorted({run.n_train for run in recs} | ({*LOW_DATA, b.n_train}
                   if b.name != "quick" else {24, b.n_train}))  # fmt: skip
    lines = header(
        "Table 16 (appendix F.3)", b, list(recs.values()),
        "FT, the prefix methods and LoRA r = 8 trained on fewer examples, each at the rate its "
        "sweep chose with all of them.",
    )  # fmt: skip
    lines += [
        f"Mean ± standard deviation over seeds {list(seeds)} (all the data: Table 4's runs and "
        "seeds, 5 for FT and LoRA, 3 for the prefix methods). The paper's table (GPT-3 175B, "
        "MNLI-m with 100 / 1k / 10k / all examples) is in its appendix F.3.",
        "",
        "| method | task | " + " | ".join(f"{n:,} examples" for n in sizes) + " |",
        "|---|---|" + "---:|" * len(sizes),
    ]
    scores = {}
    for method, settings in LOW_DATA_METHODS.items():
        for t in tasks:
            cells = [_scores(recs, method, settings, t, n) for n in sizes]
            scores[method, t] = cells
            lines.append(
                f"| {Run(method, t, settings).label()} | {t} | "
                + " | ".join(mean_sd(c) if c else "not yet run" for c in cells)
                + " |"
            )
    for t in tasks:  # the paper's finding is about this difference: LoRA holds up with less data
        leads = [lead(ft, lo) for ft, lo in zip(scores["ft", t], scores["lora", t])]
        lines.append(f"| FT's lead over LoRA (points ± se) | {t} | " + " | ".join(leads) + " |")
    return write(out_dir / "table16.md", lines)


REPRODUCTIONS = {"figure2": figure2, "table16": table16}
RUN_LISTS = {"figure2": figure2_runs, "table16": table16_runs}

__all__ = [
    "REPRODUCTIONS",
    "RUN_LISTS",
    "SIZES",
    "figure2",
    "figure2_runs",
    "past_best",
    "table16",
]
