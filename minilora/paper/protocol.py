"""The protocol every table of ``minilora reproduce --budget full`` runs under.

Written out in docs/REPRODUCTION.md ("The protocol"); in short:

* **One budget for every run**: ``STEPS`` steps of batch ``BATCH_SIZE`` from
  ``N_TRAIN`` examples, AdamW with warm-up and cosine decay (``finetune_recipe``),
  the validation loss every ``EVAL_EVERY`` steps, and the weights of the best
  validation loss scored (kept in memory, put back at the end of training).
* **The learning rate chosen on the validation split**: for every method and task,
  a seed-0 run at each rate of ``grid(method)`` (five rates 3x apart around the
  method's old default, ``DEFAULT_LR``), scored on ``N_VAL_SCORED`` validation
  questions; the best validation score wins (ties: the lower validation loss).
  When the winner sits at the grid's edge the grid is extended by one rate on that
  side (up to ``MAX_EXTENSIONS`` times). LoRA's rate is swept for r = 8 on Wq, Wv
  and used for every LoRA row of the task (Tables 4, 5, 6): with alpha fixed, the
  paper tunes the rate, not alpha, per task.
* **alpha = 16 for every LoRA run** (``ALPHA``; scaling 16 / r, the paper's rule).
* **Scored on 1,000 test questions** (``experiments.N_TEST``), **seeds 0-2 per cell,
  0-4 for Table 4's LoRA and FT rows**; the seed-0 run at the chosen rate is the
  sweep's own run (the same run: the same key and record).

``choose_rate`` reads records through ``Records`` (committed records first, then the
cache) and, given ``compute``, runs what is missing. ``minilora.paper.reproduce.plan``
lists what is missing and estimates its CPU time from the records there are.
"""

from __future__ import annotations

from pathlib import Path

from minilora.paper.experiments import BASE, N_TEST, Cache, Run, run_all

STEPS = 1200
EVAL_EVERY = 200
BATCH_SIZE = 16
N_TRAIN = 4000
N_VAL_SCORED = 500  # validation questions each run scores (for the choice of rate)
SWEEP_SEED = 0
ALPHA = 16.0
# The rates used before the protocol (fixed by hand); the centres of the grids.
DEFAULT_LR = {
    "ft": 1e-3, "ft-top2": 1e-3, "bitfit": 1e-2, "preembed": 1e-2, "prelayer": 1e-2,
    "adapterh": 1e-2, "adapterl": 1e-2, "lora": 2e-2,
}  # fmt: skip
GRID = (-2, -1, 0, 1, 2)  # powers of 3 around the default
MAX_EXTENSIONS = 2
# The LoRA configuration whose sweep sets LoRA's rate for a task.
LORA_SWEPT = {"r": 8, "alpha": ALPHA, "targets": ("q", "v")}
# Seconds one 1,200-step run takes on one core of the 2-core machine, when no record says
# (measured 2026-11-29; see docs/REPRODUCTION.md); plan() prefers the records' own times.
RUN_SECONDS = 300.0


def rate(method: str, k: int) -> float:
    """The k-th rate of a method's ladder: DEFAULT_LR * 3**k, to two significant digits."""
    return float(f"{DEFAULT_LR[method] * 3.0**k:.2g}")


def swept_settings(method: str) -> dict:
    return dict(LORA_SWEPT) if method == "lora" else {}


def protocol_run(
    b, method: str, task: str, settings: dict, seed: int, lr: float, base: str = BASE
) -> Run:
    """The run of one cell under budget ``b`` (a ``budgets.Budget``), from base model ``base``."""
    return Run(
        method, task, settings, seed=seed, steps=b.steps, batch_size=b.batch_size, lr=lr,
        n_train=b.n_train, n_eval=b.n_eval, eval_every=b.eval_every, n_val_eval=b.n_val_eval,
        base=base,
    )  # fmt: skip


def _merit(record: dict) -> tuple:
    """How good a sweep point is: the validation score, then the lower validation loss."""
    score = record.get("val_score")
    loss = record.get("val_loss")
    loss = loss if loss is not None and loss == loss else float("inf")
    return (-1.0 if score is None else score, -loss)


def best_of(points: dict) -> float:
    """The rate of the best record among {rate: record}."""
    return max(points, key=lambda lr: _merit(points[lr]))


class Records:
    """Reads records: the committed ones (``experiments.RECORDS``) first, then ``cache_dir``."""

    def __init__(self, cache_dir=None):
        from minilora.paper import experiments

        self.directories = [Path(experiments.RECORDS)]  # looked up late: tests replace it
        if cache_dir is not None:
            self.directories.append(Path(cache_dir))

    def get(self, run: Run) -> dict | None:
        for directory in self.directories:
            record = Cache(directory).get(run)
            if record is not None:
                return record
        return None


def choose_rate(
    b, method: str, task: str, records: Records, compute=None, base: str = BASE, settings=None
) -> tuple:
    """(chosen rate or None, {rate: record}) for ``method`` on ``task`` under ``b``.

    Every base model gets its own sweep (``base``: the shipped model the runs start from).
    ``settings`` (default ``swept_settings(method)``) sweeps another configuration of the
    method (e.g. LoRA on every Linear): its own grid around the method's default, its own choice.

    Without a sweep in ``b`` (the quick budget) the default rate, untuned. With one,
    the grid's records; those missing are computed by ``compute(runs)`` (a
    ``run_all``-like function) when given, else the answer is (None, what there is).
    """
    if not b.sweep:
        return DEFAULT_LR[method], {}
    ks = list(GRID)
    settings = swept_settings(method) if settings is None else settings
    for _ in range(MAX_EXTENSIONS + 1):
        runs = {
            rate(method, k): protocol_run(
                b, method, task, settings, SWEEP_SEED, rate(method, k), base
            )
            for k in ks
        }
        if compute is not None:
            missing = [r for r in runs.values() if records.get(r) is None]
            if missing:
                compute(missing)
        points = {lr: records.get(r) for lr, r in runs.items()}
        if any(rec is None for rec in points.values()):
            return None, {lr: rec for lr, rec in points.items() if rec is not None}
        best = best_of(points)
        if best == rate(method, ks[-1]):
            ks.append(ks[-1] + 1)
        elif best == rate(method, ks[0]):
            ks.insert(0, ks[0] - 1)
        else:
            return best, points
    return best, points  # still at an edge after MAX_EXTENSIONS: said so in the sweep table


# A run "blew up" when its last validation loss is more than this times its best one.
BLOWN_UP = 1.5
MAX_STEPS_DOWN = 2  # a cell's rate is divided by 3 at most this many times


def blew_up(record: dict) -> bool:
    """Whether training blew up: it stopped as diverged, or its validation loss climbed back
    to more than ``BLOWN_UP`` times its best. The best checkpoint is scored either way, so such
    a run's score is that of an early checkpoint: the rate was too high for the cell."""
    losses = [p["val_loss"] for p in record.get("curve") or [] if p.get("val_loss") is not None]
    return bool(record.get("diverged")) or (len(losses) > 1 and losses[-1] > BLOWN_UP * min(losses))


def cell_rate(b, method, task, settings, seeds, lr, records: Records, base: str = BASE):
    """(rate, [rates that blew up]) for one cell of a table: the task's chosen rate ``lr``,
    divided by 3 while a recorded seed of the cell blew up at it (``blew_up``), at most
    ``MAX_STEPS_DOWN`` times. The rate is chosen for one configuration (LoRA: r = 8 on Wq,
    Wv) and used for the others; this rule keeps a cell that needs a lower rate (e.g. LoRA at
    r = 64 on all four matrices) from reading as the method failing. Every seed of the cell
    then runs at the lower rate, and the table says so."""
    blown = []
    for _ in range(MAX_STEPS_DOWN):
        runs = [protocol_run(b, method, task, settings, s, lr, base) for s in seeds]
        if not any((rec := records.get(r)) is not None and blew_up(rec) for r in runs):
            break
        blown.append(lr)
        lr = float(f"{lr / 3:.2g}")
    return lr, blown


# Said under a table whose cells carry ``cell_mark``.
MARK_NOTE = (
    "A cell marked with its own lr blew up at the method's chosen rate (`protocol.blew_up`: the "
    f"last validation loss over {BLOWN_UP:g} times the best), so every seed ran again at a third "
    "of it (`protocol.cell_rate`)."
)


def cell_mark(b, method, task, settings, seeds, records: Records, base: str = BASE) -> str:
    """ " (lr X)" for a cell that runs below its method's chosen rate (``cell_rate``), else ""."""
    lr, _ = choose_rate(b, method, task, records, base=base)
    if lr is None:
        return ""
    rate, blown = cell_rate(b, method, task, settings, seeds, lr, records, base)
    return f" (lr {rate:g})" if blown else ""


def sweep_runs_missing(
    b, method: str, task: str, records: Records, base: str = BASE, settings=None
) -> list[Run]:
    """The sweep runs still to do before the rate of ``method`` on ``task`` is known: the
    missing rates of the grid, or, once the grid is complete with its best rate at an edge,
    the rate that extends it (what ``choose_rate`` would compute next)."""
    asked: list[Run] = []

    class _Asked(Exception):
        pass

    def note(runs):
        asked.extend(runs)
        raise _Asked

    try:
        choose_rate(b, method, task, records, compute=note, base=base, settings=settings)
    except _Asked:
        pass
    return asked


def compute_with(cache_dir, progress: bool, desc: str):
    """``compute(runs)`` for ``choose_rate``: run_all into ``cache_dir``."""

    def compute(runs):
        run_all(runs, cache_dir, progress, desc=desc)

    return compute


def estimate_seconds(records: list[dict]) -> float:
    """Seconds per run from the records there are (median of their run times), else RUN_SECONDS."""
    times = sorted(r["seconds"] for r in records if r.get("run", {}).get("steps") == STEPS)
    return times[len(times) // 2] if times else RUN_SECONDS


__all__ = [
    "ALPHA", "DEFAULT_LR", "EVAL_EVERY", "N_TEST", "STEPS", "Records", "blew_up", "cell_mark",
    "cell_rate", "choose_rate", "protocol_run", "rate", "sweep_runs_missing", "estimate_seconds",
]  # fmt: skip
