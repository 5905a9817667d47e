"""Tables 4, 5 and 6 and the parameter counts of Hu et al. 2021 (arXiv 2106.09685), at toy scale.

Each table is ``fn(budget, out_dir, progress=True) -> Path``: it lists its
runs (``minilora.paper.experiments.Run``), gets their records from the cache under
``out_dir/cache`` (computing only what is missing), and writes ``<name>.md``
(and, where a picture helps, ``<name>.png``) into ``out_dir``.

* Table 4 (section 5.4): every method of section 5.1 on both tasks, mean and
  standard deviation over seeds, with its trainable parameters.
* Table 5 (section 7.1): one budget of trainable parameters (2 d r x 8 matrices'
  worth of r = 8 on one matrix) spent on Wq, Wk, Wv, Wo alone (r = 8), Wq+Wk and
  Wq+Wv (r = 4) or all four (r = 2).
* Table 6 (section 7.2): ranks 1, 2, 4, 8, 64 on Wq, Wq+Wv and all four, with
  alpha fixed at 16 (scaling 16 / r, the paper's rule).
* ``counts``: the paper's printed parameter counts beside our formulas'.

The learning rates are one per method, fixed before any table was run (see
``LR`` and docs/REPRODUCTION.md): they are not tuned per table or per row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minilora.paper.baselines import DEFAULTS, LABELS, METHODS
from minilora.paper.experiments import METRICS, Run, run_all
from minilora.work import io

# One learning rate per method (AdamW, warm-up then cosine decay to a tenth).
LR = {
    "ft": 1e-3, "ft-top2": 1e-3, "bitfit": 1e-2, "preembed": 1e-2, "prelayer": 1e-2,
    "adapterh": 1e-2, "adapterl": 1e-2, "lora": 2e-2,
}  # fmt: skip
# Table 4's rows: (method, settings)
TABLE4_ROWS = [(m, {}) for m in METHODS if m != "lora"] + [
    ("lora", {"r": 2, "targets": ("q", "v")}),
    ("lora", {"r": 8, "targets": ("q", "v")}),
]
# Table 5: (targets, r) with the same 2 d r x (number of targets) = 16 d trainable per block
TABLE5_ROWS = [
    (("q",), 8), (("k",), 8), (("v",), 8), (("o",), 8),
    (("q", "k"), 4), (("q", "v"), 4), (("q", "k", "v", "o"), 2),
]  # fmt: skip
TABLE6_TARGETS = [("q",), ("q", "v"), ("q", "k", "v", "o")]
# Table 6's alpha: fixed at 16 at every rank (the paper's rule, section 4.1: alpha is set
# to the first r tried and not tuned, so the scaling alpha / r is 16 / r). Tables 4 and 5
# keep the default alpha = 2 r.
TABLE6_ALPHA = 16.0

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


@dataclass(frozen=True)
class Budget:
    """How much each table computes. ``quick`` is a smoke test; ``full`` makes the tables."""

    name: str
    steps: int  # training steps of a Table 4 run
    lora_steps: int  # training steps of a Table 5 / 6 run
    seeds: tuple  # Table 4's seeds (Tables 5 and 6: the first one)
    n_train: int
    n_eval: int  # test questions scored per run
    batch_size: int
    tasks5: tuple  # the tasks of Table 5
    tasks6: tuple  # the tasks of Table 6
    ranks: tuple  # Table 6's ranks
    table5_rows: int  # how many of TABLE5_ROWS


BUDGETS = {
    "quick": Budget("quick", 6, 6, (0,), 200, 12, 8, ("sql", "nli"), ("sql",), (1, 8), 3),
    "full": Budget(
        "full", 300, 500, (0, 1, 2), 4000, 200, 16, ("sql", "nli"), ("sql",), (1, 2, 4, 8, 64), 7
    ),
}


def get_budget(budget) -> Budget:
    """A budget by name ("quick", "full"), or a ``Budget`` itself (e.g. full with one seed)."""
    if isinstance(budget, Budget):
        return budget
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGETS)}")
    return BUDGETS[budget]


def _run(b: Budget, method: str, task: str, settings: dict, seed: int, steps: int) -> Run:
    return Run(
        method, task, settings, seed=seed, steps=steps, batch_size=b.batch_size,
        lr=LR[method], n_train=b.n_train, n_eval=b.n_eval,
    )  # fmt: skip


def table4_runs(b: Budget) -> list[Run]:
    return [
        _run(b, m, task, s, seed, b.steps)
        for m, s in TABLE4_ROWS
        for task in ("sql", "nli")
        for seed in b.seeds
    ]


def table5_runs(b: Budget) -> list[Run]:
    return [
        _run(b, "lora", task, {"r": r, "targets": t}, b.seeds[0], b.lora_steps)
        for t, r in TABLE5_ROWS[: b.table5_rows]
        for task in b.tasks5
    ]


def table6_runs(b: Budget) -> list[Run]:
    return [
        _run(
            b, "lora", task, {"r": r, "alpha": TABLE6_ALPHA, "targets": t}, b.seeds[0], b.lora_steps
        )
        for t in TABLE6_TARGETS
        for r in b.ranks
        for task in b.tasks6
    ]


# --------------------------------------------------------------------------- writing


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _mean_sd(scores) -> str:
    scores = [s for s in scores if s is not None]
    if not scores:
        return "—"
    if len(scores) == 1:
        return _pct(scores[0])
    return f"{100 * np.mean(scores):.1f} ± {100 * np.std(scores, ddof=1):.1f}"


def header(title: str, b: Budget, records: list, what: str) -> list[str]:
    """The table's title, the budget and the settings it ran with, and where it ran."""
    from minilora.paper.experiments import BASE

    lines = [f"# {title} on {BASE} ({b.name} budget)", ""]
    if b.name == "quick":
        lines += [
            "**Quick budget: a smoke test, not results.** A few training steps and a few "
            "test questions check that every run works end to end; the numbers mean nothing.",
            "",
        ]
    run = records[0]["run"] if records else {}
    lines += [
        f"{what} Each run: {run.get('steps')} steps of batch {run.get('batch_size')} from "
        f"{run.get('n_train')} training examples, scored on {run.get('n_eval')} test questions "
        f"(sql: exact match, nli: accuracy, in %). Learning rates: "
        + ", ".join(f"{LABELS[m]} {lr:g}" for m, lr in LR.items())
        + ".",
        "",
        f"Made by `minilora reproduce` on {time.strftime('%Y-%m-%d')}; runs recorded on "
        f"{records[0]['machine'] if records else '?'}. Step times are medians on that "
        "machine and vary with its load.",
        "",
    ]
    return lines


def _write(path: Path, lines: list[str]) -> Path:
    io.write_atomic(path, ("\n".join(lines) + "\n").encode())
    return path


def _by(records, runs):
    return dict(zip(runs, records))


def _plot(
    path: Path, series: dict, xlabel: str, title: str, logx: bool = True, ylabel: str = "score (%)"
) -> None:
    """One line (or set of points) per name: [(x, y)], y in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in series.items():
        points = [(x, y) for x, y in points if y is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, [100 * y for y in ys], "o-" if len(xs) > 1 else "o", label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table4(budget: str, out_dir: Path, progress: bool = True) -> Path:
    """Every method on both tasks (the paper's Table 4, and Figure 2's picture)."""
    b, out_dir = get_budget(budget), Path(out_dir)
    runs = table4_runs(b)
    recs = _by(run_all(runs, out_dir / "cache", progress, desc="table4"), runs)
    lines = header(
        "Table 4 (LoRA section 5.4)", b, list(recs.values()), "Every method on both tasks."
    )
    lines += [
        f"Mean ± standard deviation over seeds {list(b.seeds)}. Paper: GPT-3 175B, "
        "WikiSQL / MNLI-m.",
        "",
        "| method | trainable | SQL | NLI | step ms (sql) | training state | paper |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    series = {}
    for m, s in TABLE4_ROWS:
        row = {
            t: [recs[_run(b, m, t, s, seed, b.steps)] for seed in b.seeds] for t in ("sql", "nli")
        }
        first = row["sql"][0]
        paper = PAPER4.get(m)
        if m == "lora" and s.get("r") != 2:
            paper = (74.0, 91.6) if paper else None  # the paper's larger LoRA (37.7M)
        lines.append(
            f"| {first['label']} | {first['trainable']:,} | "
            f"{_mean_sd([x['score'] for x in row['sql']])} | "
            f"{_mean_sd([x['score'] for x in row['nli']])} | "
            f"{np.median([x['step_ms'] for x in row['sql']]):.0f} | "
            f"{first['state_bytes'] / 1024:,.0f} KiB | "
            f"{'—' if paper is None else f'{paper[0]} / {paper[1]}'} |"
        )
        for t in ("sql", "nli"):
            score = (
                np.mean([x["score"] for x in row[t]]) if row[t][0]["score"] is not None else None
            )
            series.setdefault(t, []).append((first["trainable"], score))
    _plot(
        out_dir / "table4.png",
        {f"{t} ({METRICS[t]})": sorted(p) for t, p in series.items()},
        "trainable parameters",
        f"Table 4 ({b.name} budget): score against trainable parameters",
    )
    lines += ["", "![score against trainable parameters](table4.png)"]
    return _write(out_dir / "table4.md", lines)


def _tag(targets) -> str:
    return "".join(targets)


def table5(budget: str, out_dir: Path, progress: bool = True) -> Path:
    """One parameter budget spent on different weight types (the paper's Table 5)."""
    b, out_dir = get_budget(budget), Path(out_dir)
    runs = table5_runs(b)
    recs = _by(run_all(runs, out_dir / "cache", progress, desc="table5"), runs)
    lines = header(
        "Table 5 (LoRA section 7.1)", b, list(recs.values()),
        "LoRA with the same number of trainable parameters on different attention weights.",
    )  # fmt: skip
    lines += [
        f"Seed {b.seeds[0]}. Paper: GPT-3 175B, 18M trainable, WikiSQL / MNLI-m.",
        "",
        "| weights | r | trainable | " + " | ".join(t.upper() for t in b.tasks5) + " | paper |",
        "|---|---:|---:|" + "---:|" * len(b.tasks5) + "---:|",
    ]
    for t, r in TABLE5_ROWS[: b.table5_rows]:
        cells = {x.task: recs[x] for x in runs if dict(x.settings)["targets"] == t}
        first = next(iter(cells.values()))
        paper = PAPER5[_tag(t)]
        lines.append(
            f"| W{', W'.join(t)} | {r} | {first['trainable']:,} | "
            + " | ".join(_pct(cells[task]["score"]) for task in b.tasks5)
            + f" | {paper[0]} / {paper[1]} |"
        )
    return _write(out_dir / "table5.md", lines)


def table6(budget: str, out_dir: Path, progress: bool = True) -> Path:
    """LoRA's rank r (the paper's Table 6), with a plot of score against r."""
    b, out_dir = get_budget(budget), Path(out_dir)
    runs = table6_runs(b)
    recs = _by(run_all(runs, out_dir / "cache", progress, desc="table6"), runs)
    lines = header(
        "Table 6 (LoRA section 7.2)", b, list(recs.values()),
        f"LoRA at several ranks r, alpha = {TABLE6_ALPHA:g} at every rank (the paper's rule: "
        f"scaling {TABLE6_ALPHA:g}/r).",
    )  # fmt: skip
    lines += [
        f"Seed {b.seeds[0]}; task(s): {', '.join(b.tasks6)}. Paper: GPT-3 175B, WikiSQL "
        "(r = 1, 2, 4, 8, 64).",
        "",
        "| task | weights | " + " | ".join(f"r={r}" for r in b.ranks) + " | paper |",
        "|---|---|" + "---:|" * len(b.ranks) + "---|",
    ]
    series = {}
    for task in b.tasks6:
        for t in TABLE6_TARGETS:
            row = {
                dict(x.settings)["r"]: recs[x]
                for x in runs
                if x.task == task and dict(x.settings)["targets"] == t
            }
            paper = " / ".join(map(str, PAPER6[_tag(t)])) if task == "sql" else "—"
            lines.append(
                f"| {task} | W{', W'.join(t)} | "
                + " | ".join(_pct(row[r]["score"]) for r in b.ranks)
                + f" | {paper} |"
            )
            series[f"{task}: W{', W'.join(t)}"] = [(r, row[r]["score"]) for r in b.ranks]
    _plot(out_dir / "table6.png", series, "rank r", f"Table 6 ({b.name} budget): score against r")
    lines += ["", "![score against rank](table6.png)"]
    return _write(out_dir / "table6.md", lines)


def _paper_counts() -> list[tuple]:
    """(model, method, the paper's printed count in millions, the formula's count)."""
    from minilora.paper import counting as c

    return [
        ("RoBERTa base", "LoRA Wq, Wv, r=8", 0.3, c.lora_params(c.ROBERTA_BASE, 8)),
        ("RoBERTa large", "LoRA Wq, Wv, r=8", 0.8, c.lora_params(c.ROBERTA_LARGE, 8)),
        ("DeBERTa XXL", "LoRA Wq, Wv, r=16 (table says 8)", 4.7, c.lora_params(c.DEBERTA_XXL, 16)),
        ("GPT-2 medium", "LoRA Wq, Wv, r=4", 0.35, c.lora_params(c.GPT2_MEDIUM, 4)),
        ("GPT-2 large", "LoRA Wq, Wv, r=4", 0.77, c.lora_params(c.GPT2_LARGE, 4)),
        ("GPT-2 medium", "FT-Top2", 25.19, c.ft_top2_params(c.GPT2_MEDIUM)),
        ("GPT-3 175B", "LoRA Wq, Wv, r=1", 4.7, c.lora_params(c.GPT3_175B, 1)),
        ("GPT-3 175B", "LoRA Wq, Wv, r=8", 37.7, c.lora_params(c.GPT3_175B, 8)),
        ("GPT-3 175B", "LoRA Wq, r=8 (Table 5)", 18.0, c.lora_params(c.GPT3_175B, 8, ("q",))),
        ("GPT-3 175B", "PreEmbed l_p=256, l_i=8", 3.2, c.preembed_params(c.GPT3_175B, 256, 8)),
        ("GPT-3 175B", "AdapterH r=1", 7.1, c.adapterH_params(c.GPT3_175B, 1)),
        ("GPT-3 175B", "AdapterH r=8", 40.1, c.adapterH_params(c.GPT3_175B, 8)),
        ("GPT-3 175B", "AdapterH r=64", 304.4, c.adapterH_params(c.GPT3_175B, 64)),
    ]


def counts(budget: str, out_dir: Path, progress: bool = True) -> Path:
    """The paper's printed parameter counts beside ``minilora.paper.counting``'s formulas,
    and every method's count on our base model: formula and built model."""
    from minilora.lora import count_parameters
    from minilora.paper.baselines import apply_method, trainable_count
    from minilora.work.pretrained import load_pretrained

    get_budget(budget)
    out_dir = Path(out_dir)
    lines = [
        "# Trainable parameter counts (LoRA section 5.1)",
        "",
        "The paper prints counts in millions, rounded; the formula is "
        "`minilora.paper.counting`'s (no model built). The same at every budget.",
        "",
        "| model | method | paper prints | formula | formula, rounded | agrees |",
        "|---|---|---:|---:|---:|---|",
    ]
    for model, method, printed, formula in _paper_counts():
        digits = len(str(printed).split(".")[1])
        rounded = round(formula / 1e6, digits)
        if abs(rounded - printed) < 1e-9:
            ok = "yes"
        elif printed == 18.0 and int(formula / 1e6) == 18:
            ok = "yes (the paper truncates: 18M)"
        else:
            ok = "NO (see docs/REPRODUCTION.md)"
        lines.append(f"| {model} | {method} | {printed}M | {formula:,} | {rounded}M | {ok} |")
    lines += [
        "",
        "## Every method on our base model (char-small: 4 blocks, d_model 128)",
        "",
        "| method | settings | formula | built model | % of the base model |",
        "|---|---|---:|---:|---:|",
    ]
    for m in METHODS:
        gpt, _, _ = load_pretrained("char-small")
        total = count_parameters(gpt).total
        formula = trainable_count(m, gpt.config)
        built = count_parameters(apply_method(gpt, m, None, np.random.default_rng(0))).trainable
        settings = ", ".join(f"{k}={v}" for k, v in DEFAULTS[m].items() if v is not None)
        lines.append(
            f"| {LABELS[m]} | {settings or '—'} | {formula:,} | {built:,} | "
            f"{100 * built / total:.2f} |"
        )
    return _write(out_dir / "counts.md", lines)


TABLES = {"table4": table4, "table5": table5, "table6": table6, "counts": counts}

__all__ = ["BUDGETS", "LR", "TABLES", "Budget", "get_budget", "table4_runs", "table5_runs"]
