#!/usr/bin/env python
"""Benchmark minilora against PyTorch: full fine-tuning, LoRA, and inference.

Run from the repository root::

    python benchmarks/bench.py                      # small and medium, CPU, 20 steps
    python benchmarks/bench.py --config small --steps 30 --json out/bench.json
    python benchmarks/bench.py --quick              # 2 steps, small only: does it run?
    python benchmarks/bench.py --device cuda        # CuPy backend against PyTorch on the GPU
    python benchmarks/bench.py --device cuda --config gpt2s   # GPT-2 small's shape (GPU only)

What is timed (``MODES``), per configuration (``CONFIGS``), float32, dropout 0,
one fixed random token batch (seed ``--seed``):

* ``full``: one AdamW step over every parameter (zero_grad, forward + loss,
  backward, optimizer step).
* ``lora``: the same with LoRA (r=8, alpha=16 on q_proj and v_proj); AdamW holds
  A and B only, everything else is frozen.
* ``infer base``: a forward pass of the model without adapters, under no_grad.
* ``infer unmerged``: the LoRA model's forward, adapters as separate matmuls.
* ``infer merged``: the same after ``merge`` (W0 + (alpha/r) B A folded in).

Both engines start from identical weights (the PyTorch model loads minilora's
state dict; B is set to small random values for the inference modes so that
the merge changes something), and the script checks that their logits agree
before it times anything.

How it is timed: all ten models (5 modes x 2 engines) are built first, in one
process; then every measurement round runs one timed step of each mode on each
engine, one thing at a time, alternating which engine goes first. Each timed
step comes right after ``--lead-in`` (default 1) untimed steps of the same mode
and engine, as in a training loop: a PyTorch step that directly follows a
NumPy one was measured up to 1.7x slower here, because OpenBLAS's and OpenMP's
worker threads keep spinning after their work and take the two cores from the
other pool. The first ``--warmup`` rounds are dropped; the table shows medians
over ``--steps`` rounds. On the GPU every step ends with a device
synchronisation before the clock is read. Memory is measured afterwards in
fresh processes, one at a time (``--probe-jobs``), never while timing.

Columns:

* ``GFLOP``: model FLOPs of one step, matmuls only (``model_flops``).
* ``ms``: median wall time of one step; ``tok/s``: batch x context / that time.
* ``%peak``: model FLOP/s as a fraction of this machine's float32 matmul peak,
  measured by the script itself (median GFLOP/s of 1024^3 and 2048^3 NumPy
  matmuls, the larger of the two; CuPy 4096^3 and 8192^3 on the GPU). The
  same denominator for both engines.
* ``peak mem``: on the CPU, how far the resident set size rises above what it
  was just before the first step, in a fresh process that runs only that mode
  (``--memory``; the kernel's VmHWM, reset through /proc/self/clear_refs
  before the steps where the kernel allows it). It covers activations,
  gradients, optimizer state and temporaries, plus whatever the allocator keeps
  mapped; it excludes the interpreter, the libraries and the parameters. On
  the GPU: the rise of live device bytes (torch.cuda.max_memory_allocated; for
  CuPy a memory hook that sums the pool's mallocs and frees).
* ``arrays``: minilora only: the peak of NumPy array bytes allocated during a
  step and alive at once (tracemalloc, which NumPy reports its buffers to),
  i.e. the engine's own working set without allocator slack.
* ``faults/step``: minor page faults (ru_minflt) per timed step, in the timing
  process. Many faults per step mean freed buffers were returned to the OS and
  are taken back page by page (see ``--malloc-tuned``).
* ``state``: bytes of training state after the last step: parameters +
  gradients + optimizer state (minilora: ``p.data.nbytes``, ``p.grad.nbytes``,
  ``optimizer.state_bytes()``; PyTorch: the same from its tensors). For the
  inference modes, parameters only.
* ``m/t``: minilora / PyTorch for the figure to its left (columns left out when
  torch is not installed or ``--no-torch``).

Malloc: glibc returns large freed buffers to the OS and takes them back page
by page on the next step (shared/PERFORMANCE.md). With ``--malloc-tuned`` (the
default) the script re-executes itself with ``MALLOC_MMAP_THRESHOLD_=32 MiB``
(buffers up to 32 MiB, glibc's maximum, come from the heap, not from fresh
mmaps) and ``MALLOC_TRIM_THRESHOLD_=1 GiB`` (freed heap memory is kept), before
NumPy or PyTorch load. ``--no-malloc-tuned`` removes both variables, giving
glibc's defaults. The header says which was used; the faults column shows the
effect. BLAS threads are pinned the same way (``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` = ``--threads``) and PyTorch gets
``torch.set_num_threads(--threads)``.

The script is split by concept; this file holds the command line and ``main``:

* ``configs.py``: the configurations (``CONFIGS``), modes and LoRA/AdamW settings.
* ``environment.py``: threads and malloc, set by re-executing the script.
* ``flops.py``: the model FLOPs of one step (``model_flops``).
* ``models.py``: the minilora and PyTorch models and their runners.
* ``measure.py``: the matmul peak, the interleaved timing, the memory probes.
* ``report.py``: the header, the figures and ratios, the Markdown tables.
* ``torch_reference.py``: the minilora GPT in plain ``torch.nn``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))
if str(HERE) not in sys.path:  # the sibling modules below
    sys.path.insert(0, str(HERE))

# These two import the standard library only: NumPy must not load before the
# environment is settled (prepare_environment, below).
from configs import CONFIGS, CPU_ALL, MODES, TRAINING  # noqa: E402
from environment import prepare_environment  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="minilora vs PyTorch: full fine-tuning, LoRA and inference step times.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    p.add_argument("--steps", type=int, default=20, help="timed steps per mode (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    p.add_argument(
        "--lead-in",
        type=int,
        default=1,
        help="untimed steps of the same mode and engine right before each timed one (default 1)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=2, help="BLAS and torch threads (default 2)")
    p.add_argument(
        "--malloc-tuned",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="re-exec with MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ raised (default on)",
    )
    p.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure peak memory of each mode in a fresh subprocess (default on)",
    )
    p.add_argument(
        "--probe-jobs",
        type=int,
        default=1,
        help="memory subprocesses at once (default 1: more oversubscribe the BLAS threads, "
        "which spin, and slow everything down; the figures do not change)",
    )
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {MODES}")
    p.add_argument("--no-torch", action="store_true", help="time minilora alone")
    p.add_argument(
        "--torch-attention",
        choices=["explicit", "sdpa"],
        default="explicit",
        help="PyTorch attention: written out like minilora's (default) or "
        "F.scaled_dot_product_attention",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    p.add_argument(
        "--quick",
        action="store_true",
        help="2 steps, 1 warm-up, small config only, memory of the training modes only "
        "(checks that the script runs; the figures mean nothing)",
    )
    p.add_argument("--_probe", help=argparse.SUPPRESS)  # internal: one memory measurement
    return p


if __name__ == "__main__":
    prepare_environment(build_parser())

# These load NumPy (and its BLAS), which must happen after the environment is settled above.
from measure import matmul_peak, measure_memory, run_probe, time_interleaved  # noqa: E402
from models import agreement, build_runners, load_torch, make_batch  # noqa: E402
from report import NOTES, header, jsonable, print_header, render, summarise  # noqa: E402

from minilora import backend  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args._probe:
        run_probe(args._probe)
        return 0
    if args.quick:
        args.steps, args.warmup, args.config = 2, 1, "small"
    if args.steps < 1 or args.warmup < 0 or args.lead_in < 0:
        raise SystemExit("--steps must be >= 1, --warmup and --lead-in >= 0")
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise SystemExit(f"--modes: unknown {unknown}; choose from {MODES}")
    if args.device == "cuda" and not backend.cuda_available():
        try:
            backend.array_module("cuda")
        except RuntimeError as err:
            raise SystemExit(f"bench.py --device cuda: no usable GPU. {err}") from None

    ref = load_torch(args)
    engines = ("minilora", "torch") if ref is not None else ("minilora",)
    peak = matmul_peak(args.device, args.quick, ref)
    h = header(args, ref, peak)
    print_header(h, ref)

    every = list(CONFIGS) if args.device == "cuda" else list(CPU_ALL)
    configs = every if args.config == "all" else [args.config]
    report = {"header": h, "configs": {}}
    for config in configs:
        spec = CONFIGS[config]
        batch = make_batch(spec, args.seed)
        log(f"[{config}] building {len(modes) * len(engines)} models")
        runners = build_runners(spec, modes, args, batch, ref)
        agree = agreement(runners, modes)
        log(f"[{config}] timing {args.warmup} + {args.steps} rounds")
        record = time_interleaved(runners, modes, engines, args.warmup, args.steps, args.lead_in)
        memory = {}
        if args.memory:
            probed = [m for m in modes if m in TRAINING] if args.quick else modes
            log(f"[{config}] memory: {len(probed) * len(engines)} fresh processes")
            memory = measure_memory(config, probed, engines, args)
        summary = summarise(config, spec, modes, engines, record, runners, memory, peak, args)
        summary["agreement"] = agree
        print(render(config, summary, modes, engines, agree, args), flush=True)
        report["configs"][config] = summary
        del runners
    print(NOTES)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(jsonable(report), indent=1) + "\n")
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
