"""Where a training step's time goes: cProfile over minilora steps, grouped by kind.

    python benchmarks/profile_step.py --config small --mode full --steps 10

Prints the share of time spent in matrix products (BLAS), in other NumPy / CuPy
calls, and in minilora's own Python (graph building, backward bookkeeping,
the optimizer loop), then the functions with the most time of their own. This is
the measurement the performance work started from (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE.parent, HERE):  # run from a checkout without `pip install -e .`
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from configs import CONFIGS, MODES  # noqa: E402
from models import MiniloraRunner, make_batch  # noqa: E402

MATMUL_NAMES = ("matmul", "dot", "einsum", "tensordot")


def kind_of(key) -> str:
    """Sort one cProfile entry (file, line, function name) into a kind of work.

    cProfile charges NumPy's operators (``a @ b``, ``a * b``) to the Python function that
    applies them, not to a C function of their own: every matrix product of the engine goes
    through ``ops.mm``, so its own time is the BLAS time; the own time of the other minilora
    functions is their Python plus the element-wise array arithmetic written in them.
    """
    filename, _, name = key
    if filename.endswith(f"minilora{os.sep}ops.py") and name == "mm":
        return "matrix products (BLAS, in ops.mm)"
    if filename == "~":  # a C function: NumPy, CuPy or a Python builtin
        if any(m in name for m in MATMUL_NAMES):
            return "matrix products (BLAS)"
        if "numpy" in name or "cupy" in name or "ufunc" in name or "ndarray" in name:
            return "other NumPy/CuPy calls"
        return "Python builtins"
    if f"{os.sep}minilora{os.sep}" in filename:
        return "minilora functions: Python + element-wise NumPy operators"
    if "numpy" in filename or "cupy" in filename:
        return "NumPy/CuPy Python wrappers"
    return "other Python"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small")
    parser.add_argument("--mode", choices=MODES, default="full")
    parser.add_argument("--steps", type=int, default=10, help="profiled steps (default 10)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--top", type=int, default=15, help="functions listed (default 15)")
    args = parser.parse_args(argv)

    spec = CONFIGS[args.config]
    runner = MiniloraRunner(spec, args.mode, args.device, make_batch(spec, 0), seed=0)
    for _ in range(3):  # warm-up: first-touch allocations, BLAS thread start
        runner.step()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.steps):
        runner.step()
    profiler.disable()

    stats = pstats.Stats(profiler).stats  # {key: (calls, ncalls, tottime, cumtime, callers)}
    total = sum(entry[2] for entry in stats.values())
    by_kind: dict[str, float] = {}
    for key, entry in stats.items():
        by_kind[kind_of(key)] = by_kind.get(kind_of(key), 0.0) + entry[2]
    print(f"# {args.config} / {args.mode} on {args.device}: {args.steps} profiled steps, ", end="")
    print(f"{1000 * total / args.steps:.1f} ms per step under the profiler\n")
    print("| kind of work | ms per step | share |\n|---|---|---|")
    for kind, seconds in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {1000 * seconds / args.steps:.1f} | {seconds / total:.0%} |")

    print("\n| function | calls per step | own ms per step | share |\n|---|---|---|---|")
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[: args.top]
    for (filename, line, name), entry in top:
        where = name if filename == "~" else f"{Path(filename).name}:{line} {name}"
        per_step = 1000 * entry[2] / args.steps
        print(
            f"| `{where}` | {entry[1] / args.steps:.0f} | {per_step:.2f} | {entry[2] / total:.0%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
