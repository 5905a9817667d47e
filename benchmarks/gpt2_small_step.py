#!/usr/bin/env python
"""One LoRA training step of a GPT-2-small-shaped model, minilora beside PyTorch.

Run from the repository root::

    python benchmarks/gpt2_small_step.py                 # CPU, batch 8, 10 timed steps
    python benchmarks/gpt2_small_step.py --steps 3 --batch 2   # quicker
    python benchmarks/gpt2_small_step.py --device cuda   # CuPy against PyTorch on the GPU

The model is GPT-2 small's shape with GPT-2's own vocabulary: 12 layers, 12
heads, d_model 768, vocabulary 50,257 (124M parameters), here with a context of
128 tokens, random weights (GPT-2's initialisation; no download) and a random
token batch. The step is what ``minilora finetune`` runs per batch: LoRA r=8,
alpha=16 on q_proj and v_proj, AdamW on A and B only; forward, loss, backward,
optimizer step, everything else frozen. ``--modes lora,full`` adds full
fine-tuning for comparison.

It reuses ``bench.py``'s machinery: the same models built from identical weights
(the PyTorch model is ``torch_reference.TorchGPT`` loaded with minilora's state
dict), the logits checked equal before anything is timed, threads pinned and
malloc thresholds raised by re-executing the script (``environment.py``), and
the two engines timed in alternation, each timed step right after an untimed one
of the same engine (``measure.time_interleaved``). It prints the median and the
fastest step, tokens per second, the model FLOPs of the step (matmuls only,
``flops.model_flops``) and minilora / PyTorch. The machine's load matters: time
on a quiet machine and say which CPU or GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(HERE.parent))
if str(HERE) not in sys.path:  # bench.py's modules
    sys.path.insert(0, str(HERE))

from configs import LABEL, MODES  # noqa: E402 (standard library only, before NumPy loads)
from environment import prepare_environment  # noqa: E402

GPT2_SMALL = {"vocab_size": 50257, "n_layer": 12, "n_head": 12, "d_model": 768}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="One LoRA step of a GPT-2-small-shaped model: minilora beside PyTorch.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    p.add_argument("--context", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per engine (default 10)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--lead-in", type=int, default=1, help="untimed steps before each timed one")
    p.add_argument("--modes", default="lora", help="comma-separated: lora, full (default lora)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=2, help="BLAS and torch threads (default 2)")
    p.add_argument("--malloc-tuned", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--torch-attention", choices=["explicit", "sdpa"], default="explicit")
    p.add_argument("--no-torch", action="store_true", help="time minilora alone")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> int:
    from flops import model_flops
    from measure import time_interleaved
    from models import agreement, build_runners, load_torch, make_batch
    from report import machine, table, versions

    args = build_parser().parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(","))
    if not set(modes) <= {"lora", "full"} or args.steps < 1 or args.batch < 1:
        raise SystemExit("--modes takes lora and/or full; --steps and --batch must be >= 1")
    assert set(modes) <= set(MODES)
    spec = {**GPT2_SMALL, "block_size": args.context, "batch": args.batch}
    ref = load_torch(args)
    engines = ("minilora", "torch") if ref is not None else ("minilora",)
    v = versions(ref)
    print(
        f"machine: {machine()}; device {args.device}; threads {args.threads}; "
        f"malloc tuned: {args.malloc_tuned}"
    )
    print(", ".join(f"{k} {val}" for k, val in v.items()))
    print(
        f"model: GPT-2 small's shape {GPT2_SMALL}, context {args.context}, batch "
        f"{args.batch}, random weights; {args.warmup} warm-up + {args.steps} timed rounds"
    )
    batch = make_batch(spec, args.seed)
    print("building the models ...", file=sys.stderr, flush=True)
    runners = build_runners(spec, modes, args, batch, ref)
    agree = agreement(runners, modes)
    print("timing ...", file=sys.stderr, flush=True)
    record = time_interleaved(runners, modes, engines, args.warmup, args.steps, args.lead_in)
    tokens = args.batch * args.context
    rows = []
    for mode in modes:
        gflop = model_flops(spec, mode) / 1e9
        medians = {e: statistics.median(record[mode, e]["times_s"]) for e in engines}
        for engine in engines:
            times = record[mode, engine]["times_s"]
            med = medians[engine]
            ratio = f"{med / medians['torch']:.2f}" if "torch" in medians else "-"
            rows.append(
                [
                    LABEL[mode],
                    engine,
                    f"{med * 1e3:.0f}",
                    f"{min(times) * 1e3:.0f}",
                    f"{tokens / med:,.0f}",
                    f"{gflop:.0f}",
                    f"{gflop / med:.0f}",
                    ratio if engine == "minilora" else "",
                ]
            )
    columns = ["step", "engine", "median ms", "min ms", "tok/s", "GFLOP", "GFLOP/s", "m/t"]
    print(table("One training step, GPT-2 small's shape", columns, rows))
    for key, diff in agree.items():
        print(f"largest |logit difference| before timing, {key}: {diff:.2e}")
    return 0


if __name__ == "__main__":
    prepare_environment(build_parser())
    sys.exit(main())
