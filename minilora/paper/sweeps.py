"""``minilora reproduce sweeps``: the learning-rate sweeps and the learning curves.

For every method and task, the protocol (``minilora.paper.protocol``) trains a
seed-0 run at each rate of the method's grid and keeps the rate with the best
validation score. This writes, per task, the validation score and loss at every
rate tried with the chosen one marked, a plot of score against rate, and the
learning curves (validation loss against step) of the runs at the chosen rates
(at every rate while a sweep is incomplete), which show whether the step budget
is long enough (and the best step of each run).
"""

from __future__ import annotations

import math
from pathlib import Path

from minilora.paper import protocol as P
from minilora.paper.budgets import TASKS, get_budget
from minilora.paper.report import header, pct, plot, write
from minilora.paper.tables import TABLE4_ROWS


def _curves(path: Path, curves: dict, title: str) -> None:
    """One line per name: [(step, validation loss)], log y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in curves.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, "o-", label=name, markersize=3)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (answer tokens)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sweeps(budget, out_dir: Path, progress: bool = True) -> Path:
    """The sweeps of every method on both tasks (what exists when the budget computes nothing)."""
    b, out_dir = get_budget(budget), Path(out_dir)
    records = P.Records(out_dir / "cache")
    compute = P.compute_with(out_dir / "cache", progress, "sweeps") if b.compute else None
    methods = list(dict.fromkeys(m for m, _ in TABLE4_ROWS))
    found = {(m, t): P.choose_rate(b, m, t, records, compute) for t in TASKS for m in methods}
    everything = [rec for _, points in found.values() for rec in points.values()]
    lines = header(
        "Learning-rate sweeps (the protocol)", b, everything,
        "Seed-0 runs at every rate of each method's grid (5 rates 3x apart around the old "
        "default, extended at an edge), scored on the validation split.",
    )  # fmt: skip
    if not b.sweep:
        lines += ["The quick budget sweeps nothing: it runs every method at its default rate."]
        return write(out_dir / "sweeps.md", lines)
    for task in TASKS:
        lines += [
            f"## {task}",
            "",
            f"Validation score (%, {P.N_VAL_SCORED} validation questions) / validation loss "
            "of the best checkpoint / its step, at each rate; **bold**: the rate chosen. "
            "Test score (%, 1,000 questions) of the chosen run in the last column.",
            "",
            "| method | " + " | ".join(f"k={k}" for k in range(-3, 4)) + " | chosen | test |",
            "|---|" + "---:|" * 9,
        ]
        series, curves, notes = {}, {}, []
        for m in methods:
            chosen, points = found[m, task]
            cells = {round(math.log(lr / P.DEFAULT_LR[m], 3)): lr for lr in points}
            row = []
            for k in range(-3, 4):
                lr = cells.get(k)
                if lr is None:
                    row.append("")
                    continue
                rec = points[lr]
                if rec["val_loss"] is None:
                    row.append(f"{lr:g}: diverged")
                    continue
                text = (
                    f"{lr:g}: {pct(rec['val_score'])} / {rec['val_loss']:.3g} / {rec['best_step']}"
                )
                row.append(f"**{text}**" if lr == chosen else text)
            status = f"{chosen:g}" if chosen is not None else "not yet run"
            if chosen is None and points:
                status = (
                    f"incomplete ({len(points)} of {len(P.GRID)})"
                    if len(points) < len(P.GRID)
                    else f"best at an edge: extending ({len(points)} runs so far)"
                )
            test = pct(points[chosen]["score"]) if chosen is not None else "—"
            label = P.protocol_run(b, m, task, P.swept_settings(m), 0, 1.0).label()
            lines.append(f"| {label} | " + " | ".join(row) + f" | {status} | {test} |")
            series[label] = sorted((lr, rec["val_score"]) for lr, rec in points.items())
            if any(rec.get("diverged") for rec in points.values()):
                notes.append(f"{label}: " + "; ".join(
                    f"lr {lr:g} {rec['diverged']}" for lr, rec in sorted(points.items())
                    if rec.get("diverged")))  # fmt: skip
            for lr in [chosen] if chosen is not None else sorted(points):  # all while incomplete
                if points[lr]["curve"]:
                    curves[f"{label}, lr {lr:g}"] = [
                        (c["step"], c["val_loss"]) for c in points[lr]["curve"]
                    ]
        if notes:
            lines += ["", "Stopped early (the best weights before it are scored):", ""]
            lines += [f"* {n}" for n in notes]
        if any(series.values()):
            plot(out_dir / f"sweep-{task}.png", series, "learning rate",
                  f"{task}: validation score against learning rate (seed 0)")  # fmt: skip
            lines += ["", f"![validation score against rate, {task}](sweep-{task}.png)"]
        if curves:
            _curves(out_dir / f"curves-{task}.png", curves,
                    f"{task}: validation loss against step (seed 0)")  # fmt: skip
            lines += ["", f"![learning curves, {task}](curves-{task}.png)"]
        lines.append("")
    return write(out_dir / "sweeps.md", lines)


__all__ = ["sweeps"]
