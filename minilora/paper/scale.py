"""Does full fine-tuning's lead shrink as the base grows? FT and LoRA r = 8 on a wider base.

Aghajanyan et al. (2020) find that the intrinsic dimension of fine-tuning falls as the
pretrained model grows, which is the paper's motivation for a low rank (section 4.1): the
larger the base, the less a task should need beyond a small update. At this scale the
shipped base, char-small (0.8M parameters), leaves LoRA r = 8 on Wq, Wv 37.5 points behind
FT on sql. ``minilora reproduce scale`` runs FT and LoRA r = 8 (alpha 16, Wq and Wv) under
the protocol on ``char-medium``: char-small's corpus and recipe at d_model 256 (3.2M
parameters; ``minilora.work.pretrained``), each rate chosen by its own sweep on the
validation split (per method and task), ``b.seeds`` at the chosen rate, sql first. char-small's
cells are Table 4's own runs, read on the same seeds (matched in number, the rule fixed before
any run of the wider base). The change of FT's lead between the two bases comes with its
standard error and 95% interval (Welch-Satterthwaite over the four cells).

One base twice as wide is one step of a trend, not a trend: the table says whether the lead
moved, by how much, and how sure that is with 3 seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minilora.paper import protocol as P
from minilora.paper.bases import ROWS, in_main_table, lead
from minilora.paper.budgets import TASKS, get_budget, records_of
from minilora.paper.experiments import Run
from minilora.paper.report import header, interval, mean_sd, se_of_difference, t975, welch_df, write
from minilora.paper.variants import sweep_line
from minilora.work.pretrained import PRETRAINED_DIR, pretrain_command

SMALL, WIDER = "char-small", "char-medium"
SCALE_BASES = (SMALL, WIDER)


def made(base: str) -> bool:
    """Whether the base's weights are there (the wider one is made by ``pretrain_command``)."""
    return (PRETRAINED_DIR / base / "model.safetensors").is_file()


def scale_runs(b, records=None, compute=None) -> tuple[list[Run], list[Run]]:
    """(runs whose rate is known, the missing sweep runs first; runs still waiting): FT and
    LoRA r = 8 on both bases and both tasks, seeds ``b.seeds``, each rate chosen by its own
    sweep (char-small's: Table 4's). A base whose weights are absent has no runs."""
    records = records or P.Records()
    sweeps, ready, waiting = [], [], []
    for base in (x for x in SCALE_BASES if made(x)):
        for task in TASKS:
            for method, settings in ROWS:
                lr, _ = P.choose_rate(b, method, task, records, compute, base=base)
                sweeps += P.sweep_runs_missing(b, method, task, records, base)
                for seed in b.seeds:
                    if lr is not None:
                        ready.append(P.protocol_run(b, method, task, settings, seed, lr, base))
                    elif seed != P.SWEEP_SEED:  # (the sweep's own run is counted with it)
                        default = P.DEFAULT_LR[method]  # a placeholder, so that plans count it
                        run = P.protocol_run(b, method, task, settings, seed, default, base)
                        waiting.append(run)
    return sweeps + list(dict.fromkeys(ready)), waiting


def lead_change(small_ft, small_lora, wide_ft, wide_lora) -> str:
    """(FT - LoRA on the small base) - (FT - LoRA on the wider one), in points, with its
    standard error and 95% interval: the t quantile at the Welch-Satterthwaite degrees of
    freedom of the four independent cells."""
    groups = [np.asarray(g, dtype=float) for g in (small_ft, small_lora, wide_ft, wide_lora)]
    if any(len(g) < 2 for g in groups):
        return "—"
    change = (groups[0].mean() - groups[1].mean()) - (groups[2].mean() - groups[3].mean())
    se = se_of_difference(*groups)
    return interval(change, se, t975(max(1.0, welch_df(*groups))) * se)


def scale(budget, out_dir: Path, progress: bool = True) -> Path:
    """FT and LoRA r = 8 on char-small and on the wider base, and FT's lead on each."""
    b, out_dir = get_budget(budget), Path(out_dir)
    recs = records_of(scale_runs, "scale", b, out_dir, progress)
    cells: dict = {}
    for run, rec in recs.items():
        if in_main_table(run) and run.seed in b.seeds and rec.get("score") is not None:
            cells.setdefault((run.base, run.task, run.method), {})[run.seed] = rec
    lines = header(
        "FT and LoRA as the base grows", b, list(recs.values()),
        "FT and LoRA r = 8 (alpha 16, Wq and Wv), every rate chosen by its own sweep per base, "
        "method and task.", base=" and ".join(SCALE_BASES),
    )  # fmt: skip
    lines += [
        f"Mean ± standard deviation over seeds {list(b.seeds)}; FT's lead is the difference of "
        "the means with its standard error and 95% interval (`bases.lead`); its change is the "
        "small base's lead minus the wider base's (positive: the lead shrank).",
        "",
        "| base | parameters | task | FT | LoRA r = 8 | FT's lead (points) | lr FT / LoRA |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    scores: dict = {}
    for base in SCALE_BASES:
        for task in TASKS:
            ft, lo = (cells.get((base, task, m), {}) for m in ("ft", "lora"))
            f, x = ([r["score"] for r in c.values()] for c in (ft, lo))
            scores[base, task] = f, x
            size = next(iter(ft.values()))["trainable"] if ft else None
            rates = " / ".join(
                f"{next(iter(c.values()))['run']['lr']:g}" if c else "—" for c in (ft, lo)
            )
            shown = [_cell(s, len(b.seeds), made(base)) for s in (f, x)]
            lines.append(
                f"| {base} | {f'{size:,}' if size else '—'} | {task} | {shown[0]} | "
                f"{shown[1]} | {lead(f, x)} | {rates} |"
            )
    lines += ["", "| task | change of FT's lead, char-small to the wider base (points) |"]
    lines += ["|---|---:|"]
    for task in TASKS:
        lines.append(f"| {task} | {lead_change(*scores[SMALL, task], *scores[WIDER, task])} |")
    if not made(WIDER):
        lines += ["", f"{WIDER} is not pretrained here: `{pretrain_command(WIDER, '/tmp/w')}`."]
    if not made(WIDER) or not b.sweep:  # (the quick budget sweeps no rate)
        return write(out_dir / "scale.md", lines)
    lines += [
        "",
        f"{WIDER}'s sweeps (seed 0; validation score % / best step; **bold**: chosen):",
        "",
    ]
    records = P.Records(out_dir / "cache")
    for task in TASKS:
        for method, _ in ROWS:
            line = sweep_line(b, task, records, method=method, base=WIDER)
            lines.append(f"* {task}, {'FT' if method == 'ft' else 'LoRA r = 8'}: {line}")
    return write(out_dir / "scale.md", lines)


def _cell(scores: list, n: int, base_made: bool) -> str:
    if not base_made:
        return "base not made"
    if not scores:
        return "not yet run"
    return mean_sd(scores) + (f" (pending: {len(scores)} of {n})" if len(scores) < n else "")


__all__ = ["SCALE_BASES", "lead_change", "scale", "scale_runs"]
