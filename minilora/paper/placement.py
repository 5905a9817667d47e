"""Does placement, not rank, explain LoRA's gap to FT? LoRA on every Linear of each block.

The paper adapts attention only (Wq, Wv; section 7.1) and leaves the MLP frozen. Work since
(Biderman et al. 2024, "LoRA Learns Less and Forgets Less"; Schulman et al. 2025, "LoRA
Without Regret") finds that LoRA on every Linear, the MLP's two included, comes much closer
to FT than attention-only LoRA, at a rate of about 10x FT's. ``minilora reproduce placement``
tests that at toy scale under the protocol (``minilora.paper.protocol``):

* LoRA on Wq, Wk, Wv, Wo and the MLP's two Linears (``baselines.ALL_LINEAR``) at r = 8 and
  at ``LARGER_RANK``, alpha 16, both tasks, 1,200 steps;
* its own learning-rate sweep (seed 0, r = 8, the method's grid around LoRA's default, chosen
  on the validation split), the larger rank at that rate (lowered only if it blows up,
  ``protocol.cell_rate``), seeds ``b.seeds``;
* beside Table 4's FT and LoRA r = 8 on Wq, Wv rows (read, never trained here).

The sweeps and seeds run task by task (``TASKS``: sql first, the larger gap), so a partial
run of the plan completes one task before it starts the next.
"""

from __future__ import annotations

from pathlib import Path

from minilora.paper import protocol as P
from minilora.paper.baselines import ALL_LINEAR
from minilora.paper.bases import lead
from minilora.paper.budgets import get_budget, records_of
from minilora.paper.experiments import Run
from minilora.paper.report import header, mean_sd, write
from minilora.paper.variants import own_sweep_runs, sweep_line, table4_rows

TASKS = ("sql", "nli")  # in the order they run
RANK = 8
LARGER_RANK = 64
EVERY_LINEAR = {"r": RANK, "alpha": P.ALPHA, "targets": ALL_LINEAR}


def settings_at(r: int) -> dict:
    return {**EVERY_LINEAR, "r": r}


def placement_runs(b, records=None, compute=None, tasks=TASKS) -> tuple[list[Run], list[Run]]:
    """(the missing sweep runs, then the cells whose rate is known; the cells still waiting)."""
    records = records or P.Records()
    ranks = (RANK, LARGER_RANK) if b.name != "quick" else (RANK,)
    sweeps, ready, waiting = [], [], []
    for task in tasks:
        found = own_sweep_runs(b, task, EVERY_LINEAR, [settings_at(r) for r in ranks], records,
                               compute)  # fmt: skip
        for into, runs in zip((sweeps, ready, waiting), found):
            into += runs
    return sweeps + ready, waiting


def placement(budget, out_dir: Path, progress: bool = True) -> Path:
    """LoRA on every Linear at r = 8 and LARGER_RANK beside Table 4's FT and LoRA rows."""
    b, out_dir = get_budget(budget), Path(out_dir)
    recs = records_of(placement_runs, "placement", b, out_dir, progress)
    records = P.Records(out_dir / "cache")
    table4 = table4_rows(b, records, TASKS)
    lines = header(
        "LoRA on every Linear (attention and MLP)", b, [*table4.values(), *recs.values()],
        "LoRA on Wq, Wk, Wv, Wo and the MLP's two Linears (alpha 16), its rate chosen by its own "
        "sweep at r = 8 (seed 0, validation split), beside Table 4's FT and LoRA r = 8 on Wq, Wv.",
    )  # fmt: skip
    lines += [
        "Mean ± standard deviation over seeds; FT's lead is the difference of the means with "
        "its standard error (`report.lead`). `pending: k of n` counts the recorded seeds of a "
        "cell still running.",
        "",
        "| task | run | score | trainable | FT's lead (points ± se) | lr |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for task in TASKS:
        ft = [rec for run, rec in table4.items() if run.task == task and run.method == "ft"]
        rows = [
            ("FT (Table 4)", ft),
            ("LoRA r = 8, Wq, Wv (Table 4)",
             [rec for run, rec in table4.items() if run.task == task and run.method == "lora"]),
        ]  # fmt: skip
        for r in (RANK, LARGER_RANK):
            key = Run("lora", task, settings_at(r)).settings
            found = [rec for run, rec in recs.items() if run.task == task and run.settings == key]
            rows.append((f"LoRA r = {r}, every Linear", found))
        f = [rec["score"] for rec in ft]
        for name, found in rows:
            found = [rec for rec in found if rec.get("score") is not None]
            if not found:
                lines.append(f"| {task} | {name} | not yet run | — | — | — |")
                continue
            scores = [rec["score"] for rec in found]
            n = len(b.main_seeds) if "Table 4" in name else len(b.seeds)
            shown = mean_sd(scores) + (
                f" (pending: {len(scores)} of {n})" if len(scores) < n else ""
            )
            ahead = "—" if name.startswith("FT") else lead(f, scores)
            lines.append(
                f"| {task} | {name} | {shown} | {found[0]['trainable']:,} | {ahead} | "
                f"{found[0]['run']['lr']:g} |"
            )
    lines += _sweep_lines(b, records)
    return write(out_dir / "placement.md", lines)


def _sweep_lines(b, records) -> list[str]:
    """Each task's sweep of LoRA on every Linear at r = 8: validation score at each rate."""
    lines = [
        "",
        "Its sweeps (seed 0, r = 8; validation score % / best step; **bold**: chosen):",
        "",
    ]
    return lines + [f"* {task}: {sweep_line(b, task, records, EVERY_LINEAR)}" for task in TASKS]


__all__ = ["EVERY_LINEAR", "LARGER_RANK", "placement", "placement_runs"]

if __name__ == "__main__":  # pragma: no cover - the background driver: one task at a time
    import sys

    out = Path(sys.argv[1])
    for t in sys.argv[2:] or TASKS:
        records_of(
            lambda b, rec, comp, t=t: placement_runs(b, rec, comp, (t,)), "placement",
            get_budget("full"), out, False,
        )  # fmt: skip
