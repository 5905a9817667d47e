"""``minilora reproduce NAME... [--budget quick|full] [--out DIR]``: the paper's tables.

Names (Hu et al. 2021, arXiv 2106.09685):

    table1   inference latency of adapters and merged LoRA (section 3)  minilora.paper.latency
    table4   every method of section 5.1 on both tasks (section 5.4)   minilora.paper.tables
    table5   one parameter budget on different weight types (7.1)     minilora.paper.tables
    table6   LoRA's rank r (7.2)                                        minilora.paper.tables
    counts   the paper's parameter counts beside the formulas (5.1)   minilora.paper.counts_table
    sweeps   the learning-rate sweeps and learning curves (protocol)  minilora.paper.sweeps
    bases    FT and LoRA on three base models (footnote 6)            minilora.paper.bases
    converged  section 7 on the protocol's kept adapters              minilora.paper.converged
    figure2, table16  each method at several sizes; little data (F.2, F.3)  minilora.paper.sizes
    appendix_e  LoRA combined with PreEmbed and with PreLayer          minilora.paper.appendix_e
    longer   LoRA r = 8 at 2x and 4x the steps, FT at 4x (the budget)   minilora.paper.longer
    placement  LoRA on every Linear, MLP included (the modern reading)  minilora.paper.placement
    loraplus   LoRA+: B at 4x and 16x A's rate (the modern reading)     minilora.paper.loraplus
    scale    FT and LoRA on a base four times larger (the lead's trend)  minilora.paper.scale
    figure3, figure4, table7   section 7's analyses                   minilora.paper.section7
    all      every one of them

Each writes ``NAME.md`` (and a PNG where a picture helps) into ``--out``.
Training runs are read from the committed records (``minilora/paper/records``)
and then from ``OUT/cache`` (``minilora.paper.experiments``); only what is missing
is computed, into the cache. ``--plan`` computes nothing: it lists the runs still
missing and estimates their CPU time (``plan``).
``--model DIR`` runs Tables 4, 5 and 6 from your own checkpoint instead of the shipped base,
with its own tokenizer; its runs go to ``OUT/cache`` only (``minilora.paper.user_base``).
This module imports nothing heavy at the top: the tables' modules are imported when they run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

BUDGETS = ("quick", "full", "full-recorded")
# name -> (module, attribute of a {name: fn} dict or a function); section 7's are another helper's
REPRODUCTIONS = {
    "counts": ("minilora.paper.counts_table", "counts"),
    "table1": ("minilora.paper.latency", "table1"),
    "table4": ("minilora.paper.tables", "table4"),
    "table5": ("minilora.paper.tables", "table5"),
    "table6": ("minilora.paper.tables", "table6"),
    "sweeps": ("minilora.paper.sweeps", "sweeps"),
    "bases": ("minilora.paper.bases", "bases"),
    "converged": ("minilora.paper.converged", "converged"),
    "figure2": ("minilora.paper.sizes", "REPRODUCTIONS"),
    "table16": ("minilora.paper.sizes", "REPRODUCTIONS"),
    "appendix_e": ("minilora.paper.appendix_e", "appendix_e"),
    "longer": ("minilora.paper.longer", "longer"),
    "placement": ("minilora.paper.placement", "placement"),
    "loraplus": ("minilora.paper.loraplus", "loraplus"),
    "scale": ("minilora.paper.scale", "scale"),
    "figure3": ("minilora.paper.section7", "REPRODUCTIONS"),
    "figure4": ("minilora.paper.section7", "REPRODUCTIONS"),
    "table7": ("minilora.paper.section7", "REPRODUCTIONS"),
}
NAMES = (*REPRODUCTIONS, "all")
DEFAULT_OUT = "runs/reproduce"


def resolve(names) -> list[str]:
    """The reproductions ``names`` ask for, in order, each once ("all" is every one)."""
    if not names:
        raise ValueError(f"name at least one reproduction; valid names: {', '.join(NAMES)}")
    bad = [n for n in names if n not in NAMES]
    if bad:
        raise ValueError(
            f"unknown reproduction {', '.join(map(repr, bad))}; valid names: {', '.join(NAMES)}"
        )
    out: list[str] = []
    for n in names:
        out += list(REPRODUCTIONS) if n == "all" else [n]
    return list(dict.fromkeys(out))


def function(name: str):
    """The function ``fn(budget, out_dir, progress) -> Path`` that makes reproduction ``name``."""
    module_name, attr = REPRODUCTIONS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RuntimeError(
            f"reproduce {name}: its module {module_name} cannot be imported ({err})"
        ) from err
    fn = getattr(module, attr, None)
    if isinstance(fn, dict):
        fn = fn.get(name)
    if not callable(fn):
        raise RuntimeError(f"reproduce {name}: {module_name} does not provide it (yet)")
    return fn


def user_base_of(names, budget, model) -> str | None:
    """The ``Run.base`` of checkpoint ``model`` (None: the shipped base), checked before any
    work: only Tables 4, 5 and 6 take one, and it must be able to run their tasks."""
    if model is None:
        return None
    from minilora.paper import budgets, experiments, user_base

    other = [n for n in resolve(names) if n not in user_base.MODEL_TABLES]
    if other:
        raise ValueError(
            f"--model applies to {', '.join(user_base.MODEL_TABLES)}, not to {', '.join(other)}"
        )
    base = user_base.name_base(model)
    b = budgets.get_budget(budget)
    of = {"table4": budgets.TASKS, "table5": b.tasks5, "table6": b.tasks6}  # their tasks
    tasks = dict.fromkeys(t for n in resolve(names) for t in of[n])
    user_base.check_base(base, tasks, (b.n_train, experiments.N_VAL, experiments.N_TEST))
    return base


def reproduce(
    names, budget: str = "quick", out_dir=DEFAULT_OUT, progress: bool = True, model=None
) -> dict:
    """Make each reproduction; returns {name: path of its Markdown file}. ``model``: a
    checkpoint directory to run Tables 4, 5 and 6 from instead of the shipped base."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGETS)}")
    names = resolve(names)
    fns = {name: function(name) for name in names}  # fail before any work if one is missing
    base = user_base_of(names, budget, model)
    on_base = {} if base is None else {"base": base}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the reproductions that read records
    recorded = (
        "table4", "table5", "table6", "sweeps", "counts", "bases", "converged", "figure2",
        "table16", "appendix_e", "longer", "placement", "loraplus", "scale", "table1",
        "figure3", "figure4", "table7",
    )  # fmt: skip

    def budget_of(name):  # the other reproductions know quick and full only
        return "full" if budget == "full-recorded" and name not in recorded else budget

    return {
        name: Path(fn(budget_of(name), out_dir, progress, **on_base)) for name, fn in fns.items()
    }


def plan(names, budget, cache_dir=None, model=None) -> str:
    """What ``reproduce NAMES --budget BUDGET [--model DIR]`` still has to run, and its CPU
    time (estimated from the records' times, which are the shipped base's)."""
    from functools import partial

    from minilora.paper import (
        appendix_e,
        bases,
        budgets,
        converged,
        longer,
        loraplus,
        placement,
        protocol,
        scale,
        sizes,
        tables,
    )

    run_lists = {**tables.RUN_LISTS, "bases": bases.bases_runs, **sizes.RUN_LISTS}
    run_lists["appendix_e"] = appendix_e.appendix_e_runs
    run_lists["longer"] = longer.longer_runs
    run_lists["placement"] = placement.placement_runs
    run_lists["loraplus"] = loraplus.loraplus_runs
    run_lists["scale"] = scale.scale_runs
    run_lists["converged"] = lambda b, records: (converged.converged_runs(b, records), [])
    base = user_base_of(names, budget, model)
    if base is not None:
        run_lists = {name: partial(tables.RUN_LISTS[name], base=base) for name in tables.RUN_LISTS}
    b = budgets.get_budget(budget)
    records = protocol.Records(cache_dir)
    missing, pending = {}, {}
    for name in resolve(names):
        if name not in run_lists:
            continue
        ready, waiting = run_lists[name](b, records)
        for run in ready:
            if records.get(run) is None:
                missing.setdefault(run.key(), (name, run))
        pending.update((run.key(), run) for run in waiting)
    have = [json.loads(p.read_text()) for d in records.directories for p in d.glob("*.json")]
    per_run = protocol.estimate_seconds(have)
    lines = [
        f"{len(have)} runs recorded; {len(missing)} missing now, and about {len(pending)} more "
        "once the missing sweeps have chosen their rates.",
    ]
    for name, run in missing.values():
        data = f", {run.n_train:,} examples" if run.n_train != b.n_train else ""
        data += f", {run.steps:,} steps" if run.steps != b.steps else ""
        base = f", base {run.base}" if run.base != protocol.BASE else ""
        lines.append(
            f"  {name}: {run.label()} on {run.task}{data}{base}, seed {run.seed}, lr {run.lr:g}"
        )
    n = len(missing) + len(pending)
    # a run's time grows with its steps (longer's runs are twice the protocol's)
    lengths = sum(run.steps / b.steps for _, run in missing.values()) + sum(
        run.steps / b.steps for run in pending.values()
    )
    lines.append(
        f"Estimate: {n} runs x {per_run:.0f} s"
        + (f" (as {lengths:.0f} runs of {b.steps:,} steps)" if round(lengths) != n else "")
        + f" = {lengths * per_run / 3600:.1f} CPU hours "
        "(one core; two processes use both cores of the 2-core machine)."
    )
    if base is not None:
        lines.append("(The time per run is the shipped base's; your base's grows with its size.)")
    return "\n".join(lines)


def _handle(args, command) -> int:
    started = time.perf_counter()
    if getattr(args, "plan", False):
        print(plan(args.names, args.budget, Path(args.out) / "cache", args.model))
        return 0
    from minilora.paper import experiments

    experiments.JOBS = args.jobs
    paths = reproduce(
        args.names, args.budget, args.out, progress=not args.no_progress, model=args.model
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(f"`{command}` took {time.perf_counter() - started:.0f} s")
    return 0


def _name(text: str) -> str:
    """argparse type: one reproduction name (an unknown one is a usage error naming the valid)."""
    try:
        resolve([text])
    except ValueError as err:  # unknown reproduction 'x'; valid names: ...
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _jobs(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--jobs {text!r}: expected a whole number >= 1")
    return int(text)


def _budget(text: str) -> str:
    if text not in BUDGETS:
        raise argparse.ArgumentTypeError(
            f"unknown budget {text!r}; valid budgets: {', '.join(BUDGETS)}"
        )
    return text


def add_cli(subparsers) -> dict:
    """Add ``minilora reproduce``; return {"reproduce": handler(args, command)}."""
    from minilora.work.command import outputs

    p = subparsers.add_parser(
        "reproduce",
        help="reproduce the paper's tables and figures at toy scale",
        description="Reproduce tables and figures of the LoRA paper (Hu et al. 2021) on the "
        "shipped base model (table4, table5, table6: or from your own checkpoint, --model "
        "DIR). Each writes NAME.md (and a PNG where a picture helps) into --out; "
        "training runs are read from the committed records, then from OUT/cache, and only what "
        "is missing is computed. "
        f"Names: {', '.join(NAMES)}.",
    )
    p.add_argument(
        "names", nargs="+", type=_name, metavar="NAME", help=f"one or more of: {', '.join(NAMES)}"
    )
    p.add_argument(
        "--budget",
        type=_budget,
        default="quick",
        help="quick: a smoke test of every run in a few minutes (the numbers mean nothing); "
        "full: the protocol of docs/REPRODUCTION.md (tuned rates, 1,200 steps, seeds), "
        "read from the committed records where they exist; full-recorded: the full tables "
        "from the records there are, computing nothing (missing cells marked). Default: quick",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="compute nothing: list the runs still missing and their estimated CPU time",
    )
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"default: {DEFAULT_OUT}")
    p.add_argument(
        "--model",
        metavar="DIR",
        help="table4, table5, table6: run from this checkpoint (saved by minilora pretrain or "
        "import-hf, its own tokenizer) instead of the shipped base; its runs go to OUT/cache "
        "only, named by its path and a digest of its weights. Default: the shipped char-small",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--jobs",
        type=_jobs,
        default=1,
        metavar="N",
        help="missing runs in N processes at once, one BLAS thread each (2 on a 2-core "
        "machine; several on a GPU). Default: 1",
    )
    outputs(p, ("out", "--out", "dir"))
    return {"reproduce": _handle}


__all__ = ["NAMES", "REPRODUCTIONS", "add_cli", "function", "plan", "reproduce", "resolve"]
