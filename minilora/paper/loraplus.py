"""LoRA+: does a faster B close LoRA's gap to FT? B's rate 4x and 16x A's, r = 8 on Wq, Wv.

The paper trains A and B at one rate (section 4.1, Eq. 3: B A is scaled by alpha / r, and
"we simply set alpha to the first r we try and do not tune it"). Hayou et al. 2024 ("LoRA+:
Efficient Low Rank Adaptation of Large Models") show that with one rate the update is not
learned efficiently at large width, and that B's rate should be a multiple of A's (about 16x
in their experiments). ``minilora reproduce loraplus`` tests that at toy scale under the
protocol (``minilora.paper.protocol``), on sql (the task with the larger gap) and then nli:

* LoRA r = 8 on Wq, Wv, alpha 16 (Table 4's configuration) with ``b_lr_ratio`` 4 and 16:
  every lora_B trains at that multiple of the run's rate (``work.train.make_optimizer``);
* each ratio with its own sweep of A's rate (seed 0, LoRA's grid, chosen on the validation
  split), then seeds ``b.seeds`` at the chosen rate (lowered only if it blows up);
* beside Table 4's FT and LoRA rows (read, never trained here).
"""

from __future__ import annotations

from pathlib import Path

from minilora.paper import protocol as P
from minilora.paper.bases import lead
from minilora.paper.budgets import get_budget, records_of
from minilora.paper.experiments import Run
from minilora.paper.report import header, mean_sd, write
from minilora.paper.variants import own_sweep_runs, sweep_line, table4_rows

TASKS = ("sql", "nli")
RATIOS = (4, 16)  # B's rate over A's (1: the paper's one rate)


def settings_at(ratio: int) -> dict:
    return {**P.LORA_SWEPT, "b_lr_ratio": ratio}


def loraplus_runs(b, records=None, compute=None, tasks=TASKS) -> tuple[list[Run], list[Run]]:
    """(the missing sweep runs, then the cells whose rate is known; the cells still waiting)."""
    records = records or P.Records()
    ratios = RATIOS if b.name != "quick" else RATIOS[-1:]
    sweeps, ready, waiting = [], [], []
    for task in tasks:
        for ratio in ratios:
            s = settings_at(ratio)
            for into, runs in zip(
                (sweeps, ready, waiting), own_sweep_runs(b, task, s, [s], records, compute)
            ):
                into += runs
    return sweeps + ready, waiting


def loraplus(budget, out_dir: Path, progress: bool = True) -> Path:
    """LoRA+ at B's rate 4x and 16x A's beside Table 4's FT and LoRA (one rate) rows."""
    b, out_dir = get_budget(budget), Path(out_dir)
    recs = records_of(loraplus_runs, "loraplus", b, out_dir, progress)
    records = P.Records(out_dir / "cache")
    table4 = table4_rows(b, records, TASKS)
    lines = header(
        "LoRA+: B trains faster than A", b, [*table4.values(), *recs.values()],
        "LoRA r = 8 on Wq, Wv (alpha 16) with every lora_B at 4x and 16x the rate of the rest "
        "(Hayou et al. 2024), A's rate chosen by each ratio's own sweep (seed 0, validation "
        "split), beside Table 4's FT and LoRA at one rate.",
    )  # fmt: skip
    lines += [
        "Mean ± standard deviation over seeds. Gain over LoRA: this row's mean minus Table 4's "
        "LoRA row, and FT's lead: FT's mean minus this row's, each with its standard error and "
        "95% interval (`bases.lead`). `pending: k of n` counts the recorded seeds of a cell "
        "still running.",
        "",
        "| task | run | score | gain over LoRA (points ± se) | FT's lead (points ± se) "
        "| A's lr | B's lr |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for task in TASKS:
        ft = [
            rec["score"] for run, rec in table4.items() if run.task == task and run.method == "ft"
        ]
        one = [rec for run, rec in table4.items() if run.task == task and run.method == "lora"]
        rows = [("FT (Table 4)", [], None), ("LoRA, one rate (Table 4)", one, 1)]
        for ratio in RATIOS:
            key = Run("lora", task, settings_at(ratio)).settings
            found = [rec for run, rec in recs.items() if run.task == task and run.settings == key]
            rows.append((f"LoRA+, B at {ratio}x A's rate", found, ratio))
        lora = [rec["score"] for rec in one]
        for name, found, ratio in rows:
            if ratio is None:
                lines.append(f"| {task} | {name} | {mean_sd(ft)} | — | — | — | — |")
                continue
            found = [rec for rec in found if rec.get("score") is not None]
            if not found:
                lines.append(f"| {task} | {name} | not yet run | — | — | — | — |")
                continue
            scores = [rec["score"] for rec in found]
            n = len(b.main_seeds) if "Table 4" in name else len(b.seeds)
            pending = f" (pending: {len(scores)} of {n})" if len(scores) < n else ""
            gain = "—" if ratio == 1 else lead(scores, lora)
            lr = found[0]["run"]["lr"]
            lines.append(
                f"| {task} | {name} | {mean_sd(scores)}{pending} | {gain} | {lead(ft, scores)} | "
                f"{lr:g} | {lr * ratio:g} |"
            )
    lines += _sweep_lines(b, records)
    return write(out_dir / "loraplus.md", lines)


def _sweep_lines(b, records) -> list[str]:
    """Each ratio's sweep of A's rate: validation score at each rate."""
    lines = [
        "",
        "Their sweeps (seed 0; A's rate: validation score % / best step; **bold**: chosen):",
        "",
    ]
    return lines + [
        f"* {task}, B at {ratio}x: {sweep_line(b, task, records, settings_at(ratio))}"
        for task in TASKS
        for ratio in RATIOS
    ]


__all__ = ["RATIOS", "loraplus", "loraplus_runs", "settings_at"]
