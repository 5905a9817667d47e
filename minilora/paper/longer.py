"""Is LoRA's gap to full fine-tuning a matter of budget? LoRA r = 8 and FT trained for longer.

Under the protocol (1,200 steps) LoRA r = 8 on Wq, Wv ends 37 points behind FT on sql, and its
validation loss is still falling at the last step where FT's has flattened. Before the gap is
read as the method's (or the base's, the paper's footnote 6), the cheapest other explanation is
the budget. ``minilora reproduce longer`` trains the same cell (the rate Table 4's sweep chose,
alpha 16, batch 16, the same 4,000 examples) for ``STEPS`` steps instead, 3 seeds, and FT for
``FT_STEPS`` (so that the two are compared at equal budgets too), and sets the result beside
Table 4's rows. Neither rate is chosen again for the longer runs (said in the table); the cosine
schedule stretches over the longer run, as it would for any run of that length. The best
checkpoint's step says whether the run was still improving when it stopped.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from minilora.paper import protocol as P
from minilora.paper.bases import lead
from minilora.paper.budgets import get_budget, records_of
from minilora.paper.experiments import Run
from minilora.paper.report import header, mean_sd, write
from minilora.paper.tables import table4_runs

STEPS = (2400, 4800)  # and Table 4's own 1,200
FT_STEPS = (4800,)  # FT at LoRA's longest budget: the budget claim compares equal budgets
TASK = "sql"  # the larger gap


def _steps(b) -> tuple:
    return STEPS if b.name != "quick" else (2 * b.steps,)


def _ft_steps(b) -> tuple:
    return FT_STEPS if b.name != "quick" else (2 * b.steps,)


def longer_runs(b, records=None, compute=None) -> tuple[list[Run], list[Run]]:
    """LoRA r = 8 at ``STEPS`` steps and FT at ``FT_STEPS`` (quick: twice its steps), seeds
    ``b.seeds``, each at the rate its own 1,200-step sweep chose; waiting while that rate is
    not chosen."""
    records = records or P.Records()
    ready, waiting = [], []
    for method, steps in (("lora", _steps(b)), ("ft", _ft_steps(b))):
        lr, _ = P.choose_rate(b, method, TASK, records, compute)
        settings = P.swept_settings(method)
        runs = [
            replace(P.protocol_run(b, method, TASK, settings, seed, lr or P.DEFAULT_LR[method]),
                    steps=n)
            for n in steps for seed in b.seeds
        ]  # fmt: skip
        (ready if lr is not None else waiting).extend(runs)
    return ready, waiting


def _last_fall(rec: dict) -> float | None:
    """How much the validation loss fell over the last evaluation interval (a fraction)."""
    losses = [c["val_loss"] for c in rec.get("curve") or [] if c.get("val_loss") is not None]
    return 1 - losses[-1] / losses[-2] if len(losses) > 1 else None


def longer(budget, out_dir: Path, progress: bool = True) -> Path:
    """LoRA r = 8 at Table 4's 1,200 steps and at ``STEPS``, FT at 1,200 and ``FT_STEPS``."""
    b, out_dir = get_budget(budget), Path(out_dir)
    recs = records_of(longer_runs, "longer", b, out_dir, progress)
    records = P.Records(out_dir / "cache")  # Table 4's rows: read, never trained here
    cells = {"ft": Run("ft", TASK).settings, "lora": Run("lora", TASK, P.LORA_SWEPT).settings}
    names = {"ft": "FT", "lora": "LoRA r = 8"}
    table4 = {
        run: rec for run in table4_runs(b, records)[0]
        if run.task == TASK and cells.get(run.method) == run.settings
        and (rec := records.get(run)) is not None
    }  # fmt: skip
    rows = [  # (name, method, steps, records)
        (f"{names[m]}, {b.steps:,} steps (Table 4)", m, b.steps,
         [rec for run, rec in table4.items() if run.method == m])
        for m in cells
    ]  # fmt: skip
    for m, steps in (("lora", _steps(b)), ("ft", _ft_steps(b))):
        for n in sorted({*steps, *(r.steps for r in recs if r.method == m)}):
            found = [rec for r, rec in recs.items() if r.method == m and r.steps == n]
            rows.append((f"{names[m]}, {n:,} steps", m, n, found))
    lines = header(
        "Is LoRA's gap a matter of budget?", b, [*table4.values(), *recs.values()],
        f"LoRA r = 8 on Wq, Wv and FT ({TASK}) trained longer, each at the rate its sweep chose "
        f"for {b.steps:,} steps (not chosen again: the same treatment for both); the longer runs "
        "differ from Table 4's in their steps only.",
    )  # fmt: skip
    lines += [
        "Mean ± standard deviation over seeds; FT's lead is the difference of the means with its "
        "standard error, against FT at Table 4's steps and against FT at the same steps. "
        "`best at the last evaluation`: seeds whose best checkpoint is their last one (still "
        "improving when they stopped); `last fall`: how much the validation loss fell over the "
        "last 200 steps (range over seeds).",
        "",
        f"| run | {TASK.upper()} | FT ({b.steps:,} steps) ahead by | FT (same steps) ahead by | "
        "best at the last evaluation | last fall | validation loss | lr |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    scores_of = {
        (m, n): [rec["score"] for rec in found if rec.get("score") is not None]
        for _, m, n, found in rows
    }
    for name, method, steps, found in rows:
        found = [rec for rec in found if rec.get("score") is not None]
        if not found:
            lines.append(f"| {name} | not yet run | — | — | — | — | — | — |")
            continue
        scores = [rec["score"] for rec in found]
        ft, same = scores_of[("ft", b.steps)], scores_of.get(("ft", steps), [])
        first = "—" if method == "ft" else lead(ft, scores)
        equal = "—" if method == "ft" or steps == b.steps else lead(same, scores)
        last = sum(rec["best_step"] == rec["run"]["steps"] for rec in found)
        falls = [f for rec in found if (f := _last_fall(rec)) is not None]
        fall = f"{100 * min(falls):.0f} to {100 * max(falls):.0f}%" if falls else "—"
        loss = np.mean([rec["val_loss"] for rec in found])
        n = len(b.main_seeds) if "(Table 4)" in name else len(b.seeds)
        shown = mean_sd(scores) + (f" (pending: {len(scores)} of {n})" if len(scores) < n else "")
        lines.append(
            f"| {name} | {shown} | {first} | {equal} | {last} of {len(found)} | {fall} "
            f"| {loss:.4f} | {found[0]['run']['lr']:g} |"
        )
    lines += ["", *where_runs_peak(b, records)]
    return write(out_dir / "longer.md", lines)


def where_runs_peak(b, records) -> list[str]:
    """How many of the recorded protocol runs (``b.steps`` steps, validation during training)
    have their best checkpoint at their last evaluation, and how many at their first: whether
    the budget is where the curves flatten."""
    import json

    found = [
        rec for d in records.directories if d.is_dir() for p in sorted(d.glob("*.json"))
        if (rec := json.loads(p.read_text())).get("run", {}).get("steps") == b.steps
        and rec["run"].get("eval_every") and rec.get("score") is not None
    ]  # fmt: skip
    if not found:
        return []
    last = [r for r in found if r["best_step"] == b.steps]
    first = [r for r in found if r["best_step"] == r["run"]["eval_every"]]
    little = [r for r in found if r["run"]["n_train"] < b.n_train]
    little_first = [r for r in little if r in first]
    return [
        f"Where the protocol's {len(found)} recorded {b.steps:,}-step runs peak: **{len(last)} "
        f"have their best checkpoint at their last evaluation** (still improving when they "
        f"stopped) and {len(first)} at their first (step {b.eval_every}); of the "
        f"{len(little)} runs on fewer than {b.n_train:,} examples (Table 16), "
        f"{len(little_first)} peak at the first evaluation, where the evaluation grid is too "
        "coarse to see the peak.",
    ]


__all__ = ["FT_STEPS", "STEPS", "longer", "longer_runs"]
