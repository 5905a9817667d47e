"""``minilora reproduce NAME... [--budget quick|full] [--out DIR]``: the paper's tables.

Names (Hu et al. 2021, arXiv 2106.09685):

    table1   inference latency of adapters and merged LoRA (section 3)  minilora.paper.latency
    table4   every method of section 5.1 on both tasks (section 5.4)   minilora.paper.tables
    table5   one parameter budget on different weight types (7.1)     minilora.paper.tables
    table6   LoRA's rank r (7.2)                                        minilora.paper.tables
    counts   the paper's parameter counts beside the formulas (5.1)   minilora.paper.tables
    figure3, figure4, table7   section 7's analyses                   minilora.paper.section7
    all      every one of them

Each writes ``NAME.md`` (and a PNG where a picture helps) into ``--out``;
training runs are cached under ``OUT/cache`` (``minilora.paper.experiments``), so a
re-run computes only what is missing. This module imports nothing heavy at
the top: the tables' modules are imported when they run.
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

BUDGETS = ("quick", "full")
# name -> (module, attribute of a {name: fn} dict or a function); section 7's are another helper's
REPRODUCTIONS = {
    "counts": ("minilora.paper.tables", "counts"),
    "table1": ("minilora.paper.latency", "table1"),
    "table4": ("minilora.paper.tables", "table4"),
    "table5": ("minilora.paper.tables", "table5"),
    "table6": ("minilora.paper.tables", "table6"),
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


def reproduce(names, budget: str = "quick", out_dir=DEFAULT_OUT, progress: bool = True) -> dict:
    """Make each reproduction; returns {name: path of its Markdown file}."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGETS)}")
    names = resolve(names)
    fns = {name: function(name) for name in names}  # fail before any work if one is missing
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {name: Path(fn(budget, out_dir, progress)) for name, fn in fns.items()}


def _handle(args, command) -> int:
    started = time.perf_counter()
    paths = reproduce(args.names, args.budget, args.out, progress=not args.no_progress)
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
        "shipped base model. Each writes NAME.md (and a PNG where a picture helps) into --out; "
        "training runs are cached in OUT/cache, so a re-run computes only what is missing. "
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
        "full: the published tables (about an hour on 2 CPU cores). Default: quick",
    )
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"default: {DEFAULT_OUT}")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    outputs(p, ("out", "--out", "dir"))
    return {"reproduce": _handle}


__all__ = ["NAMES", "REPRODUCTIONS", "add_cli", "function", "reproduce", "resolve"]
