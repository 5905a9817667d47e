"""What the later work's LoRA variants share: their own sweep, their cells, Table 4 beside them.

``placement`` (LoRA on every Linear) and ``loraplus`` (B at a multiple of A's rate) each test
a configuration the paper did not run, under the protocol (``minilora.paper.protocol``):

* the configuration gets its own learning-rate sweep (seed 0, the method's grid, chosen on the
  validation split) instead of borrowing Table 4's rate;
* its cells (one or more settings: another rank, say) run every seed of the budget at that
  rate, lowered only if a seed blows up (``protocol.cell_rate``);
* the table shows them beside Table 4's FT and LoRA r = 8 on Wq, Wv rows, read from the
  records and never trained here.
"""

from __future__ import annotations

from minilora.paper import protocol as P
from minilora.paper.experiments import Run
from minilora.paper.tables import table4_runs


def own_sweep_runs(
    b, task: str, sweep: dict, cells: list[dict], records: P.Records, compute=None
) -> tuple[list[Run], list[Run], list[Run]]:
    """(the sweep runs still missing, the cells' runs whose rate is known, the cells' runs
    waiting for it) for LoRA with ``sweep`` settings on ``task``, then ``cells`` at its rate.

    A waiting cell whose settings are the sweep's leaves out the sweep's seed: the sweep's run
    at the chosen rate is that seed's run."""
    lr, _ = P.choose_rate(b, "lora", task, records, compute, settings=sweep)
    sweeps = P.sweep_runs_missing(b, "lora", task, records, settings=sweep)
    ready, waiting = [], []
    for s in cells:
        if lr is None:
            same = Run("lora", task, s).settings == Run("lora", task, sweep).settings
            seeds = [x for x in b.seeds if not (same and x == P.SWEEP_SEED)]
            waiting += [P.protocol_run(b, "lora", task, s, x, P.DEFAULT_LR["lora"]) for x in seeds]
            continue
        rate, _ = P.cell_rate(b, "lora", task, s, b.seeds, lr, records)
        ready += [P.protocol_run(b, "lora", task, s, x, rate) for x in b.seeds]
    return sweeps, ready, waiting


def table4_rows(b, records: P.Records, tasks) -> dict:
    """{run: record} of Table 4's FT and LoRA r = 8 on Wq, Wv rows on ``tasks``: the main
    seeds that have a score."""
    wq_wv = Run("lora", "sql", P.LORA_SWEPT).settings
    rows = {}
    for run in table4_runs(b, records)[0]:
        if run.task not in tasks or run.seed not in b.main_seeds:
            continue
        if run.method == "ft" or (run.method == "lora" and run.settings == wq_wv):
            rec = records.get(run)
            if rec is not None and rec.get("score") is not None:
                rows[run] = rec
    return rows


def sweep_line(
    b, task: str, records: P.Records, settings=None, method: str = "lora", base: str = P.BASE
) -> str:
    """One sweep as text: each rate's validation score % / best step, the chosen rate in bold,
    "(incomplete: k runs so far)" while the rate is not chosen. ``settings``: the swept
    configuration (default: the method's own, ``protocol.swept_settings``); ``base``: the
    base model the sweep started from."""
    chosen, points = P.choose_rate(b, method, task, records, base=base, settings=settings)
    cells = []
    for lr, rec in sorted(points.items()):
        if rec.get("val_score") is None:
            cells.append(f"{lr:g}: diverged")
            continue
        cell = f"{lr:g}: {100 * rec['val_score']:.1f} / {rec['best_step']}"
        cells.append(f"**{cell}**" if lr == chosen else cell)
    state = "" if chosen is not None or not points else f" (incomplete: {len(points)} runs so far)"
    return ("; ".join(cells) or "not yet run") + state


__all__ = ["own_sweep_runs", "sweep_line", "table4_rows"]
