"""Writing the tables of ``minilora reproduce``: numbers in %, headers, plots, atomic files."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from minilora.work import io


def pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def mean_sd(scores) -> str:
    """Mean ± sample standard deviation in %, and the number of seeds (n) when not 1."""
    scores = [s for s in scores if s is not None]
    if not scores:
        return "—"
    if len(scores) == 1:
        return pct(scores[0])
    return f"{100 * np.mean(scores):.1f} ± {100 * np.std(scores, ddof=1):.1f} (n={len(scores)})"


def se_of_difference(a, b) -> float:
    """The standard error of mean(a) - mean(b) for independent seeds (a single seed adds 0)."""
    return float(np.sqrt(sum(np.var(x, ddof=1) / len(x) for x in (a, b) if len(x) > 1)))


def header(title: str, b, records: list, what: str, base: str | None = None) -> list[str]:
    """The table's title, the budget and the settings it ran with, and where it ran."""
    from minilora.paper.experiments import BASE

    lines = [f"# {title} on {base or BASE} ({b.name} budget)", ""]
    if b.name == "quick":
        lines += [
            "**Quick budget: a smoke test, not results.** A few training steps and a few "
            "test questions check that every run works end to end; the numbers mean nothing.",
            "",
        ]
    run = records[0]["run"] if records else {}
    rates = sorted({(r["label"].split(" (")[0], r["run"]["task"], r["run"]["lr"]) for r in records})
    how = "chosen on the validation split, sweeps.md" if b.sweep else "untuned defaults"
    lines += [
        f"{what} Each run: {run.get('steps')} steps of batch {run.get('batch_size')} from "
        f"{run.get('n_train')} training examples, validation loss every {b.eval_every} steps "
        f"and the best checkpoint scored on {run.get('n_eval')} test questions "
        f"(sql: exact match, nli: accuracy, in %). Learning rates of these runs ({how}): "
        + ", ".join(f"{m} {t} {lr:g}" for m, t, lr in rates)
        + ".",
        "",
        f"Made by `minilora reproduce` on {time.strftime('%Y-%m-%d')} from "
        f"{len(records)} run records ({', '.join(sorted({r['date'][:10] for r in records}))}; "
        f"{', '.join(sorted({_where(r) for r in records}))}). "
        "Step times are medians on that machine and vary with its load.",
        "",
    ]
    return lines


def _where(record: dict) -> str:
    return f"{record.get('cpu', record['machine'])}, {record.get('device', 'cpu')}"


def plot(
    path: Path, series: dict, xlabel: str, title: str, logx: bool = True, ylabel: str = "score (%)"
) -> None:
    """One line per name: [(x, y)], y in [0, 1]; or labelled points, [(x, y, label)], each
    marked and named and none joined (different methods are not a curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in series.items():
        points = [p for p in points if p[1] is not None]
        if not points:
            continue
        xs, ys = [p[0] for p in points], [100 * p[1] for p in points]
        labelled = all(len(p) == 3 for p in points)
        style = "o" if labelled or len(xs) == 1 else "o-"
        (line,) = ax.plot(xs, ys, style, label=name)
        if labelled:
            for x, y, p in zip(xs, ys, points):
                ax.annotate(
                    p[2], (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6,
                    color=line.get_color(),
                )  # fmt: skip
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if ax.get_lines():
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(path: Path, lines: list[str]) -> Path:
    io.write_atomic(path, ("\n".join(lines) + "\n").encode())
    return path


__all__ = ["header", "mean_sd", "pct", "plot", "write"]
