"""Threads and malloc: the environment a benchmark process needs, set by re-exec.

glibc returns large freed buffers to the OS and takes them back page by page on
the next step (shared/PERFORMANCE.md). With ``--malloc-tuned`` the script runs
with ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` raised
(``MALLOC_ENV``); with ``--no-malloc-tuned`` without either, and with
minilora's own ``mallopt`` call switched off (``MINILORA_MALLOC_TUNING=0``, see
``minilora.work.memory.tune_malloc``), so glibc's defaults apply. The BLAS thread
counts (``THREAD_VARS``) are pinned to ``--threads``. Both are read when the
process or the library starts, so ``prepare_environment`` re-executes the
script once with them set, before NumPy or PyTorch load. Imports nothing but
the standard library.
"""

from __future__ import annotations

import os
import sys

MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),  # glibc's largest allowed value on 64-bit
    "MALLOC_TRIM_THRESHOLD_": str(1024 * 1024 * 1024),
}
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
REEXEC_MARK = "_MINILORA_BENCH_REEXEC"


def wanted_environment(args) -> dict:
    """The environment this run needs before NumPy and PyTorch load (threads, malloc)."""
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(args.threads)
    for var, value in MALLOC_ENV.items():
        if args.malloc_tuned:
            env[var] = value
        else:
            env.pop(var, None)
    env["MINILORA_MALLOC_TUNING"] = "1" if args.malloc_tuned else "0"
    return env


def prepare_environment(parser) -> None:
    """Re-exec this script once if threads or malloc settings must change.

    glibc reads MALLOC_* and OpenBLAS reads its thread count when the process
    (or the library) starts, so they can only be set for a fresh process.
    ``parser`` is the script's argument parser (``bench.build_parser()``).
    """
    args, _ = parser.parse_known_args()
    env = wanted_environment(args)
    if all(
        os.environ.get(k) == env.get(k)
        for k in (*THREAD_VARS, *MALLOC_ENV, "MINILORA_MALLOC_TUNING")
    ):
        return
    if os.environ.get(REEXEC_MARK):
        raise SystemExit("bench.py: the environment did not take after re-exec; giving up")
    env[REEXEC_MARK] = "1"
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
