"""Where minilora spends the time that PyTorch does not: one training step, op by op, side by side.

    python benchmarks/op_breakdown.py --config small --mode full --steps 10

Both engines run the same model, weights and batch (benchmarks/models.py). Each side's
forward and backward are timed per kind of op, with each engine's own instrument:

* minilora: every op's forward (from the previous op's end to its ``make_result``) and its
  backward closure, timed with ``time.perf_counter`` by wrapping ``make_result``; the rest of
  ``loss.backward()`` (the topological order, the sums of gradients that meet at a tensor,
  the copies into ``.grad``) is the "backward walk";
* PyTorch: ``torch.profiler``'s self CPU time of each ATen op, sorted into the same kinds.

The optimizer step is timed apart, on both sides, with ``perf_counter``. Both instruments
add their own overhead, so the rows compare kinds of work, not exact step times; the last
line gives the step times without instruments (median, interleaved). This is the profile
behind benchmarks/RESULTS.md's account of the remaining gap.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE.parent, HERE):  # run from a checkout without `pip install -e .`
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import models  # noqa: E402
from configs import CONFIGS  # noqa: E402

KINDS = (
    "linear layers (products, bias)",
    "attention (products, mask, softmax)",
    "layer norm",
    "GELU",
    "embedding",
    "loss (cross entropy)",
    "residual adds, gradient sums",
    "reshapes, transposes, copies",
    "backward walk (order, gradient sums)",
    "other",
)
MINILORA_KIND = {
    "linear": KINDS[0],
    "lora_linear": KINDS[0],
    "attention": KINDS[1],
    "layer_norm": KINDS[2],
    "gelu": KINDS[3],
    "embedding": KINDS[4],
    "cross_entropy": KINDS[5],
    "add": KINDS[6],
    "reshape": KINDS[7],
    "transpose": KINDS[7],
}
TORCH_KIND = {
    "aten::mm": KINDS[0],
    "aten::addmm": KINDS[0],
    "aten::sum": KINDS[0],  # the bias gradients
    "aten::bmm": KINDS[1],
    "aten::_softmax": KINDS[1],
    "aten::_softmax_backward_data": KINDS[1],
    "aten::masked_fill_": KINDS[1],
    "aten::mul": KINDS[1],  # the scores' scale
    "aten::native_layer_norm": KINDS[2],
    "aten::native_layer_norm_backward": KINDS[2],
    "aten::gelu": KINDS[3],
    "aten::gelu_backward": KINDS[3],
    "aten::embedding": KINDS[4],
    "aten::index_select": KINDS[4],
    "aten::embedding_dense_backward": KINDS[4],
    "aten::index_add_": KINDS[4],
    "aten::_log_softmax": KINDS[5],
    "aten::_log_softmax_backward_data": KINDS[5],
    "aten::nll_loss_forward": KINDS[5],
    "aten::nll_loss_backward": KINDS[5],
    "aten::add": KINDS[6],
    "aten::add_": KINDS[6],  # also the autograd engine's gradient sums
    "aten::copy_": KINDS[7],
    "aten::clone": KINDS[7],
    "aten::empty_like": KINDS[7],
}


def minilora_kinds(runner, steps: int) -> dict:
    """ms per step of each kind: forward + backward of every op, by wrapping make_result."""
    tensor_module = importlib.import_module("minilora.tensor")
    original = tensor_module.make_result
    spent = collections.defaultdict(float)
    last = [0.0]

    def timed_make_result(data, parents, backward, op):
        now = time.perf_counter()
        spent[op] += now - last[0]

        def timed_backward(g, _backward=backward, _op=op):
            start = time.perf_counter()
            grads = _backward(g)
            spent[_op] += time.perf_counter() - start
            return grads

        out = original(data, parents, timed_backward, op)
        last[0] = time.perf_counter()
        return out

    patched = [m for m in sys.modules.values() if getattr(m, "make_result", None) is original]
    for module in patched:
        module.make_result = timed_make_result
    walk = 0.0  # the whole of loss.backward(), less its ops' backward closures below
    try:
        for _ in range(steps):
            runner.opt.zero_grad()
            last[0] = time.perf_counter()
            _, loss = runner.model(runner.x, runner.y)
            in_ops = sum(spent.values())
            start = time.perf_counter()
            loss.backward()
            walk += time.perf_counter() - start - (sum(spent.values()) - in_ops)
    finally:
        for module in patched:
            module.make_result = original
    kinds = collections.defaultdict(float)
    for op, seconds in spent.items():
        kinds[MINILORA_KIND.get(op, KINDS[-1])] += 1000 * seconds / steps
    kinds[KINDS[-2]] = 1000 * walk / steps
    return kinds


def torch_kinds(runner, steps: int) -> dict:
    """ms per step of each kind: torch.profiler's self CPU time of each ATen op."""
    torch = models.loaded_torch()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            runner.opt.zero_grad(set_to_none=True)
            runner.ref.loss_fn(runner.model(runner.x), runner.y).backward()
    kinds = collections.defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            kinds[TORCH_KIND.get(event.key, KINDS[-1])] += event.self_cpu_time_total / 1000 / steps
    return kinds


def optimizer_ms(runner, steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        runner.opt.step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def step_ms(runners, steps: int) -> list:
    """Median step time of each runner without instruments, the runners interleaved."""
    times = [[] for _ in runners]
    for _ in range(steps):
        for runner, kept in zip(runners, times):
            runner.step()
            start = time.perf_counter()
            runner.step()
            kept.append(time.perf_counter() - start)
    return [1000 * statistics.median(kept) for kept in times]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small")
    parser.add_argument("--mode", choices=("full", "lora"), default="full")
    parser.add_argument("--steps", type=int, default=10, help="instrumented steps (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="BLAS and torch threads")
    args = parser.parse_args(argv)
    options = argparse.Namespace(no_torch=False, threads=args.threads, device="cpu")
    ref = models.load_torch(options)
    if ref is None:
        print("op_breakdown.py needs torch: pip install -e '.[bench]'")
        return 1
    spec = CONFIGS[args.config]
    batch = models.make_batch(spec, 0)
    mine = models.MiniloraRunner(spec, args.mode, "cpu", batch, seed=0)
    _, state = models.build_minilora_model(spec, args.mode, 0)
    theirs = models.TorchRunner(spec, args.mode, "cpu", batch, 0, state, ref, "explicit")
    for _ in range(3):  # warm-up: first-touch allocations, thread pools
        mine.step(), theirs.step()

    m, t = minilora_kinds(mine, args.steps), torch_kinds(theirs, args.steps)
    m["optimizer step"], t["optimizer step"] = (optimizer_ms(r, args.steps) for r in (mine, theirs))
    plain_m, plain_t = step_ms([mine, theirs], args.steps)
    gap = sum(m.values()) - sum(t.values())
    print(f"# {args.config} / {args.mode}, CPU, {args.threads} threads: ms per step by kind\n")
    print("| kind of work | minilora | PyTorch | difference | share of the gap |")
    print("|---|---|---|---|---|")
    for kind in (*KINDS, "optimizer step"):
        d = m[kind] - t[kind]
        print(f"| {kind} | {m[kind]:.1f} | {t[kind]:.1f} | {d:+.1f} | {d / gap:.0%} |")
    print(
        f"| **sum (instrumented)** | {sum(m.values()):.1f} | {sum(t.values()):.1f} | {gap:+.1f} |"
    )
    print(
        f"\nWithout instruments (median of {args.steps}, interleaved): minilora {plain_m:.1f} ms,"
    )
    print(f"PyTorch {plain_t:.1f} ms, m/t {plain_m / plain_t:.2f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
