"""Budgets and records: how much a reproduction computes, and how it gets its runs' records.

Every reproduction of ``minilora reproduce`` (``minilora.paper.reproduce``) takes a budget by
name and asks ``records_of`` for the records of the runs it lists:

* ``Budget``: the steps, seeds, data and evaluation of every run, and whether rates are swept
  (``sweep``) and missing runs computed (``compute``). ``quick`` is a smoke test; ``full`` is
  the protocol (``minilora.paper.protocol``); ``full-recorded`` is ``full`` computing nothing.
* ``records_of(runs_of, name, b, out_dir, progress)``: the records of the runs a
  ``RUN_LISTS``-like function lists, read from the committed records
  (``experiments.RECORDS``), then ``out_dir/cache``; with a budget that computes, the missing
  sweeps first (in rounds, until every rate is chosen), then the missing cells.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from minilora.paper import experiments
from minilora.paper import protocol as P
from minilora.paper.experiments import run_all

TASKS = ("sql", "nli")


@dataclass(frozen=True)
class Budget:
    """How much each table computes. ``quick`` is a smoke test; ``full`` is the protocol."""

    name: str
    steps: int  # training steps of every run
    seeds: tuple  # seeds per cell
    main_seeds: tuple  # seeds of Table 4's LoRA and FT rows
    n_train: int
    n_eval: int  # test questions scored per run
    batch_size: int
    tasks5: tuple  # the tasks of Table 5
    tasks6: tuple  # the tasks of Table 6
    ranks: tuple  # Table 6's ranks
    table5_rows: int  # how many of TABLE5_ROWS
    eval_every: int = 0  # validation loss every so many steps, best checkpoint scored
    n_val_eval: int = 0  # validation questions scored (the rate's choice)
    sweep: bool = False  # learning rates chosen on the validation split
    compute: bool = True  # False: tables from the records there are, missing cells marked


BUDGETS = {
    "quick": Budget("quick", 6, (0,), (0,), 200, 12, 8, TASKS, ("sql",), (1, 8), 3, 6, 12),
    # The protocol. Cut to fit (the order): Table 6 on nli.
    "full": Budget(
        "full",
        P.STEPS,
        (0, 1, 2),
        (0, 1, 2, 3, 4),
        P.N_TRAIN,
        P.N_TEST,
        P.BATCH_SIZE,
        TASKS,
        ("sql",),
        (1, 2, 4, 8, 64, 128),
        7,
        P.EVAL_EVERY,
        P.N_VAL_SCORED,
        True,
    ),  # fmt: skip
}


def get_budget(budget) -> Budget:
    """A budget by name ("quick", "full", "full-recorded": full, computing nothing), or a
    ``Budget`` itself (e.g. full with one seed)."""
    if isinstance(budget, Budget):
        return budget
    if budget == "full-recorded":
        return replace(BUDGETS["full"], compute=False)
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGETS)}")
    return BUDGETS[budget]


def records_of(runs_of, name: str, b: Budget, out_dir: Path, progress: bool) -> dict:
    """{run: record} of the runs ``runs_of(b, records, compute)`` lists (a ``RUN_LISTS``-like
    function): the sweeps first (choosing the rates), then the cells; with a budget that
    computes nothing, the records there are.

    The sweeps run in rounds: each round asks ``runs_of`` which sweep runs it is missing
    (every sweep at once, so that ``--jobs`` workers share them), computes them, and asks
    again until every rate is chosen (an edge's extension is the next round). Workers left
    idle by a short round take cells whose rate is already known."""
    cache = out_dir / "cache"
    records = P.Records(cache)
    if not b.compute:
        runs, _ = runs_of(b, records)
        return {r: rec for r in runs if (rec := records.get(r)) is not None}
    while True:
        wanted = []
        runs, waiting = runs_of(b, records, wanted.extend)
        sweeps = list(dict.fromkeys(r for r in wanted if records.get(r) is None))
        if not sweeps:
            break
        idle = max(0, experiments.JOBS - len(sweeps))
        known = [r for r in dict.fromkeys(runs) if r not in sweeps and records.get(r) is None]
        run_all(sweeps + known[:idle], cache, progress, desc=f"{name} (sweeps)")
    assert not waiting, "every sweep was computed, so every rate is known"
    return dict(zip(runs, run_all(runs, cache, progress, desc=name)))


__all__ = ["BUDGETS", "TASKS", "Budget", "get_budget", "records_of"]
