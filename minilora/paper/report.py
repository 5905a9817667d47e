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


def se_of_difference(*groups) -> float:
    """The standard error of mean(a) - mean(b) (or of any sum of ± the groups' means) for
    independent seeds (a single seed adds 0)."""
    return float(np.sqrt(sum(np.var(x, ddof=1) / len(x) for x in groups if len(x) > 1)))


# The 97.5% quantile of Student's t with df degrees of freedom (a two-sided 95% interval), from
# the usual tables; between the listed df (Welch's df need not be whole) it is interpolated
# linearly in 1 / df, which is exact at the listed points and within 0.5% between them.
T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, float("inf"): 1.960,
}  # fmt: skip


def t975(df: float) -> float:
    """Student's t quantile for a two-sided 95% interval with ``df`` (>= 1) degrees of freedom."""
    if not df >= 1:
        raise ValueError(f"t975: df={df!r} must be a number >= 1")
    if df in T975:
        return T975[df]
    low = max(k for k in T975 if k < df)
    high = min(k for k in T975 if k > df)
    w = (1 / low - 1 / df) / (1 / low - 1 / high)
    return T975[low] + w * (T975[high] - T975[low])


def welch_df(*groups) -> float:
    """Welch-Satterthwaite degrees of freedom of mean(a) - mean(b) (or of any sum of ± the
    groups' means; a single seed adds 0)."""
    parts = [(np.var(x, ddof=1) / len(x), len(x) - 1) for x in groups if len(x) > 1]
    num = sum(v for v, _ in parts) ** 2
    den = sum(v * v / df for v, df in parts)
    return num / den if den > 0 else float(sum(df for _, df in parts))


def difference(a, b) -> tuple[float, float, float]:
    """(mean(a) - mean(b), its standard error, the half-width of its 95% interval: the t
    quantile at Welch's degrees of freedom times the standard error)."""
    se = se_of_difference(a, b)
    return float(np.mean(a) - np.mean(b)), se, t975(max(1.0, welch_df(a, b))) * se


def interval(diff: float, se: float, half: float) -> str:
    """A difference of scores in points: "+d ± se (95%: low to high)"."""
    low, high = 100 * (diff - half), 100 * (diff + half)
    return f"{100 * diff:+.1f} ± {100 * se:.1f} (95%: {low:+.1f} to {high:+.1f})"


def paired_difference(a: dict, b: dict) -> tuple[float, float, int] | None:
    """Matched seeds: (mean of a[s] - b[s] over the seeds both have, the half-width of its 95%
    interval with n - 1 degrees of freedom, n), or None with fewer than 2 seeds in common."""
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return None
    d = np.array([a[s] - b[s] for s in common])
    half = t975(len(d) - 1) * float(np.std(d, ddof=1)) / np.sqrt(len(d))
    return float(d.mean()), half, len(d)


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


__all__ = [
    "difference", "header", "mean_sd", "paired_difference", "pct", "plot", "t975", "welch_df",
    "write",
]  # fmt: skip
