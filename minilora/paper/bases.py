"""When does a low-rank update suffice? Table 4's FT and LoRA rows on two base models.

The paper's argument (section 4.1, after Aghajanyan et al.) is that a pretrained model
already holds the features a task needs, so adapting it is a change of low "intrinsic
rank"; its footnote 6 warns that a small r may not suffice when the task is in a
"different language" from pretraining. minilora has three bases of the same shape,
pretrained with the same recipe (``minilora.work.pretrained``):

* ``char-small``: Python's documentation only. It has never seen SQL or the inference
  task's kind of sentence: fine-tuning it is the case the paper sets aside.
* ``char-small-mixed``: the same documentation plus as many characters of English
  questions with their SQL and premise / hypothesis sentences, generated from other
  templates, tables and words than the tasks' own (``minilora.work.mixed_corpus``; the
  tests check that no task example occurs in it). It fails the manipulation check below:
  it does not know the tasks' language much better than a character-frequency model.
* ``char-small-tasklang`` (issue 28): the same documentation plus as many characters in the
  tasks' own prompt formats, with their label words and their kinds of example, on other
  tables, words and templates (``minilora.work.tasklang_corpus``): the base meant to pass
  the check. Its weights are made by the command ``minilora.work.pretrained`` gives.

``minilora reproduce bases`` runs FT and LoRA r = 8 (alpha 16, Wq and Wv) under the
protocol on every base and both tasks (sql first, then nli): each rate chosen by its own
sweep on the validation split (per base, method and task), 5 seeds at the chosen rate, the
best validation checkpoint scored on 1,000 test questions. The table gives FT's lead over
LoRA on each base: if the premise holds at this scale, the lead shrinks on a base that
knows the language (one that passes the manipulation check). A second table runs Table 6's
Wq, Wv row (r = 1 to 128, 3 seeds, Table 6's tasks) on ``RANK_BASES``, the first two bases
only (on the third it would be 15 more runs on sql; its main rows come first).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minilora.paper import protocol as P
from minilora.paper.budgets import TASKS, get_budget, records_of
from minilora.paper.experiments import Run
from minilora.paper.report import difference, header, interval, mean_sd, plot, write

BASES = ("char-small", "char-small-mixed", "char-small-tasklang")
RANK_BASES = BASES[:2]  # the bases of the rank table
ROWS = [("ft", {}), ("lora", P.LORA_SWEPT)]


def bases_runs(b, records=None, compute=None) -> tuple[list[Run], list[Run]]:
    """(runs whose rate is known, with the missing sweep runs first; runs still waiting)."""
    records = records or P.Records()
    sweeps, ready, waiting = [], [], []
    for base in BASES:
        for task in TASKS:
            for method, settings in ROWS:
                lr, _ = P.choose_rate(b, method, task, records, compute, base=base)
                sweeps += P.sweep_runs_missing(b, method, task, records, base)
                for seed in b.main_seeds:
                    if lr is not None:
                        ready.append(P.protocol_run(b, method, task, settings, seed, lr, base))
                    elif seed != P.SWEEP_SEED:  # (the sweep's own run is counted with it)
                        run = P.protocol_run(
                            b, method, task, settings, seed, P.DEFAULT_LR[method], base
                        )
                        waiting.append(run)
    # Table 6's Wq, Wv row on each base (on char-small: Table 6's own runs), seed by seed, so
    # that a partial run of the plan covers every rank and base once before the second seed
    lora = {(base, task): P.choose_rate(b, "lora", task, records, compute, base=base)[0]
            for base in RANK_BASES for task in b.tasks6}  # fmt: skip
    for seed in b.seeds:
        for (base, task), lr in lora.items():
            for r in b.ranks:
                settings = {**P.LORA_SWEPT, "r": r}
                if lr is not None:
                    ready.append(P.protocol_run(b, "lora", task, settings, seed, lr, base))
                elif not (seed == P.SWEEP_SEED and settings == P.swept_settings("lora")):
                    default = P.DEFAULT_LR["lora"]  # a placeholder, so that plans count it
                    waiting.append(P.protocol_run(b, "lora", task, settings, seed, default, base))
    return sweeps + list(dict.fromkeys(ready)), list(dict.fromkeys(waiting))


def in_main_table(run: Run) -> bool:
    """Whether ``run`` is one of ROWS (FT, LoRA r = 8), not one of the rank runs."""
    return any(run.method == m and run.settings == Run(m, run.task, s).settings for m, s in ROWS)


def lead(ft: list, lora: list) -> str:
    """FT's mean minus LoRA's, in points, with the standard error of that difference and its
    95% interval (the t quantile at Welch's degrees of freedom: with 2-5 seeds a side, two
    standard errors are not a 95% rule)."""
    if len(ft) < 2 or len(lora) < 2:
        return "—"
    return interval(*difference(ft, lora))


def bases(budget, out_dir: Path, progress: bool = True) -> Path:
    """FT and LoRA r = 8 on every base and both tasks, and FT's lead on each base."""
    b, out_dir = get_budget(budget), Path(out_dir)
    recs = records_of(bases_runs, "bases", b, out_dir, progress)
    cells: dict = {}
    for run, rec in recs.items():
        if not in_main_table(run):
            continue  # the rank runs below
        if run.seed in b.main_seeds and rec.get("score") is not None:
            cells.setdefault((run.base, run.task, run.method), {})[run.seed] = rec
    lines = header(
        "Table 4's FT and LoRA rows on three base models (the paper's footnote 6)",
        b, list(recs.values()),
        "FT and LoRA r = 8 (alpha 16, Wq and Wv), every rate chosen by its own sweep per "
        "base, method and task.", base=", ".join(BASES),
    )  # fmt: skip
    lines += [
        f"Mean ± standard deviation over seeds {list(b.main_seeds)}; FT's lead is the "
        "difference of the means with its standard error.",
        "",
        "| base | task | FT | LoRA r = 8 | FT's lead (points) | lr FT / LoRA |",
        "|---|---|---:|---:|---:|---:|",
    ]
    series = {}
    for base in BASES:
        for task in TASKS:
            ft = cells.get((base, task, "ft"), {})
            lo = cells.get((base, task, "lora"), {})
            f = [r["score"] for r in ft.values()]
            x = [r["score"] for r in lo.values()]
            rates = " / ".join(
                f"{next(iter(c.values()))['run']['lr']:g}" if c else "—" for c in (ft, lo)
            )
            lines.append(
                f"| {base} | {task} | {mean_sd(f) if f else 'not yet run'} | "
                f"{mean_sd(x) if x else 'not yet run'} | {lead(f, x)} | {rates} |"
            )
            for name, c, scores in (("LoRA r = 8", lo, x), ("FT", ft, f)):
                if scores:
                    trainable = next(iter(c.values()))["trainable"]
                    point = (trainable, float(np.mean(scores)), name)
                    series.setdefault(f"{base}, {task}", []).append(point)
    plot(
        out_dir / "bases.png",
        {name: sorted(points) for name, points in series.items()},
        "trainable parameters",
        f"FT and LoRA on each base ({b.name} budget)",
    )
    lines += ["", "![FT and LoRA on each base](bases.png)"]
    lines += _ranks(b, recs)
    lines += _manipulation_check(b)
    return write(out_dir / "bases.md", lines)


def _manipulation_check(b) -> list[str]:
    """Does each base know the tasks' language better than a character-frequency model?"""
    from minilora.paper import manipulation

    lines = [
        "",
        "## Does each base know the tasks' language? (the manipulation check)",
        "",
        "Loss in nats per character on the 1,000 test questions, of each base (no training) and "
        "of a character-frequency model fitted on the task's 4,000 training examples (answers "
        "for the answer tokens, whole examples for the whole text; `paper.manipulation`). A base "
        f"passes when its answer-token loss is at most {manipulation.PASS_RATIO:g} times the "
        "character-frequency model's (the rule was fixed before the numbers were seen).",
        "",
    ]
    record = manipulation.recorded()
    if record is None and b.compute and b.name == "full":
        record = manipulation.measure(BASES, TASKS)
    if record is None:
        return lines + ["Not measured here: `python -m minilora.paper.manipulation` measures it."]
    return lines + manipulation.table(record, BASES, TASKS)


def _ranks(b, recs: dict) -> list[str]:
    """Does a small r suffice on either base? LoRA on Wq, Wv at Table 6's ranks."""
    scores: dict = {}
    for run, rec in recs.items():
        s = dict(run.settings)
        if run.method == "lora" and s.get("targets") == ("q", "v") and run.seed in b.seeds:
            if rec.get("score") is not None:
                scores.setdefault((run.base, run.task, s["r"]), []).append(rec["score"])
    lines = [
        "",
        "## Does a small r suffice on either base? (Table 6's Wq, Wv row)",
        "",
        f"LoRA on Wq and Wv, alpha 16, at each base's chosen rate; mean ± standard deviation "
        f"over seeds {list(b.seeds)} (r = 128 = d_model is full rank).",
        "",
        "| base | task | " + " | ".join(f"r={r}" for r in b.ranks) + " |",
        "|---|---|" + "---:|" * len(b.ranks),
    ]
    for base in RANK_BASES:
        for task in b.tasks6:
            cells = [scores.get((base, task, r)) for r in b.ranks]
            row = " | ".join(mean_sd(c) if c else "not yet run" for c in cells)
            lines.append(f"| {base} | {task} | {row} |")
    return lines


__all__ = ["BASES", "RANK_BASES", "bases", "bases_runs", "in_main_table", "lead"]
