#!/usr/bin/env python
"""Benchmark minilora against PyTorch: full fine-tuning, LoRA, and inference.

Run from the repository root::

    python benchmarks/bench.py                      # small and medium, CPU, 20 steps
    python benchmarks/bench.py --config small --steps 30 --json out/bench.json
    python benchmarks/bench.py --quick              # 2 steps, small only: does it run?
    python benchmarks/bench.py --device cuda        # CuPy backend against PyTorch on the GPU

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
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

CONFIGS = {
    "small": {
        "vocab_size": 65,
        "n_layer": 4,
        "n_head": 4,
        "d_model": 128,
        "block_size": 64,
        "batch": 32,
    },
    "medium": {
        "vocab_size": 65,
        "n_layer": 6,
        "n_head": 8,
        "d_model": 384,
        "block_size": 128,
        "batch": 16,
    },
}
MODES = ("full", "lora", "infer_base", "infer_unmerged", "infer_merged")
TRAINING = ("full", "lora")
LABEL = {
    "full": "full fine-tuning",
    "lora": "LoRA r=8 (q, v)",
    "infer_base": "infer base",
    "infer_unmerged": "infer LoRA unmerged",
    "infer_merged": "infer LoRA merged",
}
LORA_R, LORA_ALPHA, LORA_TARGETS = 8, 16.0, ("q_proj", "v_proj")
LR, WEIGHT_DECAY = 1e-3, 0.01

MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),  # glibc's largest allowed value on 64-bit
    "MALLOC_TRIM_THRESHOLD_": str(1024 * 1024 * 1024),
}
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
REEXEC_MARK = "_MINILORA_BENCH_REEXEC"

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


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
    return env


def prepare_environment() -> None:
    """Re-exec this script once if threads or malloc settings must change.

    glibc reads MALLOC_* and OpenBLAS reads its thread count when the process
    (or the library) starts, so they can only be set for a fresh process.
    """
    args, _ = build_parser().parse_known_args()
    env = wanted_environment(args)
    if all(os.environ.get(k) == env.get(k) for k in (*THREAD_VARS, *MALLOC_ENV)):
        return
    if os.environ.get(REEXEC_MARK):
        raise SystemExit("bench.py: the environment did not take after re-exec; giving up")
    env[REEXEC_MARK] = "1"
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


if __name__ == "__main__":
    prepare_environment()

# NumPy (and its BLAS) must load after the environment is settled above.
import numpy as np  # noqa: E402

if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import minilora  # noqa: E402
from minilora import backend  # noqa: E402
from minilora.lora import LoRAConfig, inject_lora, lora_layers  # noqa: E402
from minilora.lora import merge as minilora_merge  # noqa: E402
from minilora.optim import AdamW  # noqa: E402
from minilora.tensor import no_grad  # noqa: E402
from minilora.transformer import GPT, GPTConfig  # noqa: E402

torch = None  # imported by load_torch() when wanted


def load_torch(args):
    """Import torch and torch_reference, or return None (the PyTorch columns are skipped)."""
    global torch
    if args.no_torch:
        return None
    try:
        import torch as _torch
    except ImportError:
        return None
    torch = _torch
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("note: this torch has no CUDA device; the PyTorch columns are skipped")
            return None
        torch.backends.cuda.matmul.allow_tf32 = False  # plain float32, as CuPy's default
    import torch_reference

    return torch_reference


# ---- model FLOPs ------------------------------------------------------------------


def model_flops(spec: dict, mode: str, r: int = LORA_R) -> int:
    """Matmul FLOPs of one step (a multiply-add counts 2), after shared/PERFORMANCE.md.

    L = n_layer, C = d_model, V = vocab, T = context, tok = batch x T.

    N      = 12 L C^2 + V C : the weights of every matmul: q, k, v, o (4 C^2) and the
             MLP (8 C^2) per block, and the LM head (V x C, tied to the token
             embedding). Biases, LayerNorms and embedding lookups are no matmuls.
    N_lora = 2 L (2 r C)    : A (r x C) and B (C x r) on q_proj and v_proj of each block.
    attn   = 4 L T C tok    : Q K^T and att V, 2 T C FLOPs each per token and layer,
             over the full T x T square (neither engine skips the masked half).

    full   = 6 N tok + 3 attn
             forward 2 N tok + attn; backward: input gradients 2 N tok, weight
             gradients 2 N tok, and both operands' gradients of the two attention
             products, 2 attn. The embeddings train, so block 0 needs input
             gradients too.
    lora   = (4 N - 6 C^2) tok + (6 N_lora - 4 r C) tok + 3 attn - attn / (2 L)
             forward 2 (N + N_lora) tok + attn. Weight gradients for A and B
             only: 2 N_lora tok. Input gradients 2 (N + N_lora) tok except where
             the input needs none: block 0 reads the frozen embeddings, so its
             q_proj, k_proj, v_proj (3 C^2 weights, 6 C^2 tok) and its two A
             matrices (4 r C tok) get no input gradient; its keys need no gradient
             either (k_proj has no adapter), so the Q K^T backward skips dK there:
             2 T C tok = attn / (2 L). Both engines skip exactly these products
             (minilora's linear and matmul compute an operand's gradient only if
             it requires one, as torch.autograd does). PERFORMANCE.md's
             approximation (4 N - 6 C^2) tok + 6 N_lora tok + 3 attn is 0.6%
             (small) and 0.3% (medium) higher.
    infer_base, infer_merged = 2 N tok + attn
    infer_unmerged           = 2 (N + N_lora) tok + attn
    """
    L, C, V, T = spec["n_layer"], spec["d_model"], spec["vocab_size"], spec["block_size"]
    tok = spec["batch"] * T
    N = 12 * L * C * C + V * C
    n_lora = L * len(LORA_TARGETS) * 2 * r * C
    attn = 4 * L * T * C * tok
    if mode == "full":
        return 6 * N * tok + 3 * attn
    if mode == "lora":
        first_a = len(LORA_TARGETS) * 2 * r * C  # block 0's A input gradients, per token
        return (4 * N - 6 * C * C) * tok + (6 * n_lora - first_a) * tok + 3 * attn - attn // (2 * L)
    if mode == "infer_unmerged":
        return 2 * (N + n_lora) * tok + attn
    return 2 * N * tok + attn  # infer_base, infer_merged


# ---- the matmul peak ----------------------------------------------------------------


def _median_gflops(run, n: int, reps: int, sync=lambda: None) -> float:
    run()
    sync()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def matmul_peak(device: str, quick: bool, torch_ref) -> dict:
    """Median float32 GFLOP/s of square matmuls; 'peak' is the best size's median."""
    rng = np.random.default_rng(0)
    sizes = (1024, 2048) if device == "cpu" else (4096, 8192)
    reps = 3 if quick else 7
    out = {"what": "NumPy" if device == "cpu" else "CuPy", "sizes": {}, "torch": {}}
    if quick and device == "cpu":
        sizes = (1024,)
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        if device == "cuda":
            cp = backend.array_module("cuda")
            a, b = cp.asarray(a), cp.asarray(b)
            out["sizes"][n] = _median_gflops(lambda a=a, b=b: a @ b, n, reps, cuda_sync)
        else:
            c = np.empty_like(a)
            out["sizes"][n] = _median_gflops(lambda a=a, b=b, c=c: np.matmul(a, b, out=c), n, reps)
        if torch_ref is not None:
            ta = torch.as_tensor(backend.to_numpy(a), device=device)
            tb = torch.as_tensor(backend.to_numpy(b), device=device)
            out["torch"][n] = _median_gflops(lambda a=ta, b=tb: a @ b, n, reps, torch_sync(device))
    out["peak"] = max(out["sizes"].values())
    return out


def cuda_sync():
    backend.array_module("cuda").cuda.Device().synchronize()


def torch_sync(device: str):
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


# ---- building the models ------------------------------------------------------------


def gpt_config(spec: dict) -> GPTConfig:
    fields = ("vocab_size", "block_size", "n_layer", "n_head", "d_model")
    return GPTConfig(**{k: spec[k] for k in fields}, dropout=0.0)


def make_batch(spec: dict, seed: int):
    rng = np.random.default_rng(seed + 1000)
    shape = (spec["batch"], spec["block_size"])
    idx = rng.integers(0, spec["vocab_size"], shape, dtype=np.int64)
    targets = rng.integers(0, spec["vocab_size"], shape, dtype=np.int64)
    return idx, targets


def build_minilora_model(spec: dict, mode: str, seed: int) -> tuple[GPT, dict]:
    """The CPU model for ``mode`` and a copy of its (unmerged) state dict for PyTorch."""
    minilora.manual_seed(seed)
    model = GPT(gpt_config(spec), generator=np.random.default_rng(seed))
    if mode != "full" and mode != "infer_base":
        config = LoRAConfig(r=LORA_R, alpha=LORA_ALPHA, target_modules=LORA_TARGETS)
        inject_lora(model, config, generator=np.random.default_rng(seed + 1))
        if mode.startswith("infer"):  # B = 0 would make the merge a no-op
            rng = np.random.default_rng(seed + 2)
            for layer in lora_layers(model).values():
                w = layer.lora_B["default"].weight
                w.data = rng.normal(0.0, 0.02, w.shape).astype(np.float32)
    state = {k: np.array(v, copy=True) for k, v in model.state_dict().items()}
    return model, state


class MiniloraRunner:
    engine = "minilora"

    def __init__(self, spec: dict, mode: str, device: str, batch, seed: int):
        self.mode, self.device = mode, device
        self.model, self.state = build_minilora_model(spec, mode, seed)
        if mode == "infer_merged":
            minilora_merge(self.model)
        self.model.to(device)
        self.model.train(mode in TRAINING)
        self.x = backend.to_device(batch[0], device)
        self.y = backend.to_device(batch[1], device)
        self.opt = None
        if mode in TRAINING:
            self.opt = AdamW(self.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        self.sync = cuda_sync if device == "cuda" else (lambda: None)

    def step(self) -> None:
        if self.opt is not None:
            self.opt.zero_grad()
            _, loss = self.model(self.x, self.y)
            loss.backward()
            self.opt.step()
        else:
            with no_grad():
                self.model(self.x)
        self.sync()

    def logits(self) -> np.ndarray:
        with no_grad():
            return self.model(self.x)[0].numpy()

    def state_bytes(self) -> dict:
        params = self.model.parameters()
        return {
            "params": sum(p.data.nbytes for p in params),
            "grads": sum(p.grad.nbytes for p in params if p.grad is not None),
            "optimizer": self.opt.state_bytes() if self.opt is not None else 0,
        }


class TorchRunner:
    engine = "torch"

    def __init__(self, spec, mode, device, batch, seed, state, ref, attention):
        self.mode, self.device, self.ref = mode, device, ref
        torch.manual_seed(seed)
        model = ref.TorchGPT.from_config(gpt_config(spec), attention=attention)
        if mode != "full" and mode != "infer_base":
            ref.inject_lora(model, LORA_R, LORA_ALPHA, LORA_TARGETS)
        ref.load_minilora_state(model, state)
        if mode == "infer_merged":
            ref.merge(model)
        self.model = model.to(device).train(mode in TRAINING)
        self.x = torch.as_tensor(batch[0], device=device)
        self.y = torch.as_tensor(batch[1], device=device)
        self.opt = None
        if mode in TRAINING:
            trainable = [p for p in model.parameters() if p.requires_grad]
            self.opt = torch.optim.AdamW(trainable, lr=LR, weight_decay=WEIGHT_DECAY)
        self.sync = torch_sync(device)

    def step(self) -> None:
        if self.opt is not None:
            self.opt.zero_grad(set_to_none=True)
            loss = self.ref.loss_fn(self.model(self.x), self.y)
            loss.backward()
            self.opt.step()
        else:
            with torch.no_grad():
                self.model(self.x)
        self.sync()

    def logits(self) -> np.ndarray:
        with torch.no_grad():
            return self.model(self.x).cpu().numpy()

    def state_bytes(self) -> dict:
        return self.ref.state_bytes(self.model, self.opt)


def build_runners(spec, modes, args, batch, ref) -> dict:
    runners = {}
    for mode in modes:
        m = MiniloraRunner(spec, mode, args.device, batch, args.seed)
        runners[mode, "minilora"] = m
        if ref is not None:
            runners[mode, "torch"] = TorchRunner(
                spec, mode, args.device, batch, args.seed, m.state, ref, args.torch_attention
            )
        m.state = None
    return runners


def agreement(runners: dict, modes) -> dict:
    """Max |logits difference|: minilora vs torch per mode, and merged vs unmerged."""
    out, logits = {}, {}
    for (mode, engine), runner in runners.items():
        logits[mode, engine] = runner.logits()
    for mode in modes:
        if (mode, "torch") in logits:
            diff = np.abs(logits[mode, "minilora"] - logits[mode, "torch"]).max()
            out[f"{mode}: minilora vs torch"] = float(diff)
    for engine in ("minilora", "torch"):
        if ("infer_merged", engine) in logits and ("infer_unmerged", engine) in logits:
            diff = np.abs(logits["infer_merged", engine] - logits["infer_unmerged", engine]).max()
            out[f"{engine}: merged vs unmerged"] = float(diff)
    return out


# ---- timing -------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_interleaved(runners: dict, modes, engines, warmup: int, steps: int, lead_in: int) -> dict:
    """One timed step of every (mode, engine) per round, engines alternating who goes first.

    Each timed step comes right after ``lead_in`` untimed steps of the same mode
    and engine, as in a training loop. Without them a PyTorch step that follows
    a NumPy one is up to 1.7x slower here: OpenBLAS's and OpenMP's worker threads
    spin for a while after their work and take the 2 cores from the other pool.
    """
    record = {key: {"times_s": [], "faults": []} for key in runners}
    for rnd in range(warmup + steps):
        order = engines if rnd % 2 == 0 else engines[::-1]
        for mode in modes:
            for engine in order:
                runner = runners[mode, engine]
                for _ in range(lead_in):
                    runner.step()
                f0 = minor_faults()
                t0 = time.perf_counter()
                runner.step()
                t1 = time.perf_counter()
                f1 = minor_faults()
                if rnd >= warmup:
                    record[mode, engine]["times_s"].append(t1 - t0)
                    record[mode, engine]["faults"].append(f1 - f0)
    return record


# ---- memory probes (fresh processes) -------------------------------------------------


def _proc_status() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) * 1024
    return out


class _CupyLiveBytes:
    """A CuPy memory hook: live bytes handed out by the pool, and their peak."""

    def __init__(self):
        cp = backend.array_module("cuda")

        class Hook(cp.cuda.MemoryHook):
            name = "bench_live_bytes"

            def __init__(hook):
                hook.live = hook.peak = 0

            def malloc_postprocess(hook, **kw):
                hook.live += kw["mem_size"]
                hook.peak = max(hook.peak, hook.live)

            def free_postprocess(hook, **kw):
                hook.live -= kw["mem_size"]

        self.hook = Hook()


def run_probe(spec_json: str) -> None:
    """Internal (``--_probe``): build one (engine, mode), run steps, print memory figures."""
    p = json.loads(spec_json)
    args = argparse.Namespace(**p["args"])
    spec, mode, engine = CONFIGS[p["config"]], p["mode"], p["engine"]
    batch = make_batch(spec, args.seed)
    steps = max(2, min(args.warmup + 1, 4))
    result = {"engine": engine, "mode": mode, "steps": steps}
    if engine == "torch":
        ref = load_torch(args)
        _, state = build_minilora_model(spec, mode, args.seed)
        runner = TorchRunner(
            spec, mode, args.device, batch, args.seed, state, ref, args.torch_attention
        )
        del state
    else:
        runner = MiniloraRunner(spec, mode, args.device, batch, args.seed)
        runner.state = None
    # load the BLAS (and its per-thread buffers) before the baseline is read
    if engine == "torch":
        torch.ones(256, 256, device=args.device) @ torch.ones(256, 256, device=args.device)
    else:
        np.ones((256, 256), np.float32) @ np.ones((256, 256), np.float32)
    import gc

    gc.collect()
    try:  # reset the high-water mark to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        result["hwm_reset"] = True
    except OSError:
        result["hwm_reset"] = False
    before = _proc_status()
    hook = None
    if args.device == "cuda":
        if engine == "torch":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            dev_before = torch.cuda.memory_allocated()
        else:
            hook = _CupyLiveBytes().hook
            hook.__enter__()
    for _ in range(steps):
        runner.step()
    after = _proc_status()
    result["rss_before"] = before["VmRSS"]
    result["rss_peak"] = after["VmHWM"]
    if not result["hwm_reset"]:  # the HWM may come from imports; a lower bound on the step
        result["rss_peak"] = max(after["VmHWM"], before["VmRSS"])
    result["rss_rise"] = result["rss_peak"] - before["VmRSS"]
    if args.device == "cuda":
        if engine == "torch":
            result["device_rise"] = torch.cuda.max_memory_allocated() - dev_before
        else:
            hook.__exit__(None, None, None)
            result["device_rise"] = hook.peak
    if engine == "minilora" and args.device == "cpu":
        tracemalloc.start()
        runner.step()
        result["array_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print("PROBE " + json.dumps(result))


def measure_memory(config: str, modes, engines, args) -> dict:
    """Run one probe process per (mode, engine), ``--probe-jobs`` at a time."""
    probe_args = {
        k: getattr(args, k) for k in ("device", "threads", "seed", "warmup", "torch_attention")
    }
    probe_args.update(no_torch=False, malloc_tuned=args.malloc_tuned)
    todo = [(mode, engine) for mode in modes for engine in engines]
    results, running = {}, []
    while todo or running:
        while todo and len(running) < max(1, args.probe_jobs):
            mode, engine = todo.pop(0)
            spec = {"config": config, "mode": mode, "engine": engine, "args": probe_args}
            cmd = [sys.executable, str(Path(__file__).resolve()), "--_probe", json.dumps(spec)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            running.append(((mode, engine), proc))
        key, proc = running.pop(0)
        out, err = proc.communicate()
        lines = [ln for ln in out.splitlines() if ln.startswith("PROBE ")]
        if proc.returncode or not lines:
            print(f"warning: memory probe {key} failed:\n{err.strip()[-2000:]}", file=sys.stderr)
            continue
        results[key] = json.loads(lines[-1][len("PROBE ") :])
    return results


# ---- reporting ------------------------------------------------------------------------


def versions(ref) -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        out["blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # older NumPy: no dict form
        out["blas"] = "unknown"
    out["torch"] = torch.__version__ if torch is not None else "not installed"
    try:
        import cupy

        out["cupy"] = cupy.__version__
    except ImportError:
        out["cupy"] = "not installed"
    except Exception as err:  # broken CUDA install
        out["cupy"] = f"unusable ({err})"
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.1f} GiB"
    except (ValueError, OSError):
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores{mem}"


def header(args, ref, peak) -> dict:
    h = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(ref),
        "blas_threads": {v: os.environ.get(v) for v in THREAD_VARS},
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "malloc": (
            {k: os.environ.get(k) for k in MALLOC_ENV}
            if args.malloc_tuned
            else "glibc defaults (MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ unset)"
        ),
        "command": shlex.join(["python", *sys.argv]),
        "device": args.device,
        "torch_attention": args.torch_attention if ref is not None else None,
        "steps": args.steps,
        "warmup": args.warmup,
        "lead_in": args.lead_in,
        "seed": args.seed,
        "matmul_gflops": peak,
    }
    if args.device == "cuda":
        cp = backend.array_module("cuda")
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props["name"]
        h["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
    return h


def print_header(h: dict, ref) -> None:
    v = h["versions"]
    print("# minilora benchmark\n")
    print(f"- date: {h['date']}")
    print(f"- machine: {h['machine']}" + (f"; GPU: {h['gpu']}" if "gpu" in h else ""))
    print(
        f"- python {v['python']}, numpy {v['numpy']} (BLAS: {v['blas']}), "
        f"torch {v['torch']}, cupy {v['cupy']}"
    )
    threads = ", ".join(f"{k}={val}" for k, val in h["blas_threads"].items())
    print(f"- threads: {threads}; torch.set_num_threads({h['torch_threads']})")
    malloc = h["malloc"]
    if isinstance(malloc, dict):
        malloc = "tuned: " + " ".join(f"{k}={val}" for k, val in malloc.items())
    print(f"- malloc: {malloc}")
    print(f"- command: `{h['command']}`")
    print(
        f"- device: {h['device']}; {h['steps']} timed steps after {h['warmup']} warm-up "
        f"rounds, interleaved (minilora and torch alternate, one thing at a time; each timed "
        f"step follows {h['lead_in']} untimed step(s) of the same mode and engine); "
        f"seed {h['seed']}"
    )
    if ref is not None:
        print(
            f"- PyTorch model: benchmarks/torch_reference.py, tied head, "
            f"{h['torch_attention']} attention"
        )
    else:
        print("- PyTorch: not measured (not installed or --no-torch)")
    pk = h["matmul_gflops"]
    sizes = ", ".join(f"{n}^3 {g:.0f}" for n, g in pk["sizes"].items())
    line = f"- float32 matmul peak ({pk['what']}, median GFLOP/s): {sizes} -> peak {pk['peak']:.0f}"
    if pk["torch"]:
        line += "; torch: " + ", ".join(f"{n}^3 {g:.0f}" for n, g in pk["torch"].items())
    print(line)


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def fmt(x, kind: str) -> str:
    if x is None:
        return "-"
    if kind == "ms":
        return f"{x * 1e3:.1f}" if x < 10 else f"{x * 1e3:.0f}"
    if kind == "int":
        return f"{x:,.0f}"
    if kind == "pct":
        return f"{100 * x:.1f}%"
    if kind == "mib":
        return f"{x / 2**20:.1f}"
    if kind == "ratio":
        return f"{x:.2f}"
    return f"{x:.3g}"


def table(title: str, columns: list, rows: list) -> str:
    lines = [f"\n**{title}**\n", "| " + " | ".join(columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summarise(config, spec, modes, engines, record, runners, memory, peak, args) -> dict:
    """Per (mode, engine) figures, and the ratios of the LoRA paper's claims."""
    tok = spec["batch"] * spec["block_size"]
    figures = {}
    for mode in modes:
        flops = model_flops(spec, mode)
        for engine in engines:
            rec = record[mode, engine]
            med = statistics.median(rec["times_s"])
            mem = memory.get((mode, engine), {})
            sb = runners[mode, engine].state_bytes()
            figures[mode, engine] = {
                "median_s": med,
                "times_s": rec["times_s"],
                "tok_per_s": tok / med,
                "flops": flops,
                "gflop_per_s": flops / med / 1e9,
                "frac_peak": flops / med / 1e9 / peak["peak"],
                "faults_per_step": statistics.mean(rec["faults"]),
                "state_bytes": sb,
                "state_total": sum(sb.values()),
                "peak_mem": mem.get("device_rise" if args.device == "cuda" else "rss_rise"),
                "array_peak": mem.get("array_peak"),
                "memory_probe": mem,
            }
    claims = {}
    pairs = {
        "LoRA step / full step": ("lora", "full", "median_s"),
        "merged inference / base inference": ("infer_merged", "infer_base", "median_s"),
        "unmerged inference / base inference": ("infer_unmerged", "infer_base", "median_s"),
        "training state full / LoRA": ("full", "lora", "state_total"),
        "peak memory full / LoRA": ("full", "lora", "peak_mem"),
    }
    for name, (a, b, key) in pairs.items():
        if a not in modes or b not in modes:
            continue
        row = {e: ratio(figures[a, e][key], figures[b, e][key]) for e in engines}
        if all(v is None for v in row.values()):
            continue  # e.g. peak memory with --no-memory
        if key == "median_s":
            row["model FLOPs"] = model_flops(spec, a) / model_flops(spec, b)
        claims[name] = row
    m_over_t = {}
    if "torch" in engines:
        keys = ("median_s", "tok_per_s", "frac_peak", "peak_mem", "faults_per_step", "state_total")
        for mode in modes:
            m, t = figures[mode, "minilora"], figures[mode, "torch"]
            m_over_t[mode] = {k: ratio(m[k], t[k]) for k in keys}
    return {"spec": spec, "figures": figures, "claims": claims, "minilora_over_torch": m_over_t}


def render(config: str, summary: dict, modes, engines, agree: dict, args) -> str:
    spec, fig = summary["spec"], summary["figures"]
    both = len(engines) == 2
    dims = (
        f"vocab {spec['vocab_size']}, {spec['n_layer']} layers, {spec['n_head']} heads, "
        f"d_model {spec['d_model']}, context {spec['block_size']}, batch {spec['batch']}"
    )
    out = [f"\n## {config} ({dims})"]
    if agree:
        out.append(
            "\nlogits agree, max |difference|: "
            + "; ".join(f"{k} {v:.1e}" for k, v in agree.items())
        )

    def trio(key, kind, mode, min_den=0.0):
        m = fig[mode, "minilora"][key]
        if not both:
            return [fmt(m, kind)]
        t = fig[mode, "torch"][key]
        r = ratio(m, t) if t is not None and t >= min_den else None
        return [fmt(m, kind), fmt(t, kind), fmt(r, "ratio")]

    def heads(name):
        return [f"minilora {name}", f"torch {name}", "m/t"] if both else [f"minilora {name}"]

    cols = ["mode", "GFLOP", *heads("ms"), *heads("tok/s"), *heads("%peak")]
    rows = [
        [LABEL[m], f"{fig[m, 'minilora']['flops'] / 1e9:.2f}"]
        + trio("median_s", "ms", m)
        + trio("tok_per_s", "int", m)
        + trio("frac_peak", "pct", m)
        for m in modes
    ]
    out.append(table(f"{config}: step time (median of {args.steps})", cols, rows))

    cols, arrays = ["mode"], args.memory and args.device == "cpu"
    if args.memory:
        cols += heads("peak mem MiB")
    if arrays:
        cols.append("minilora arrays MiB")
    cols += [*heads("faults/step"), *heads("state MiB")]
    rows = []
    for m in modes:
        row = [LABEL[m]]
        if args.memory:
            row += trio("peak_mem", "mib", m)
        if arrays:
            row.append(fmt(fig[m, "minilora"]["array_peak"], "mib"))
        # a ratio over fewer than one fault per step says nothing
        row += trio("faults_per_step", "int", m, min_den=1.0) + trio("state_total", "mib", m)
        rows.append(row)
    out.append(table(f"{config}: memory", cols, rows))

    cols = ["ratio", "minilora", *(["torch"] if both else []), "model FLOPs"]
    rows = []
    for name, row in summary["claims"].items():
        rows.append(
            [name]
            + [fmt(row.get(e), "ratio") for e in engines]
            + [fmt(row.get("model FLOPs"), "ratio")]
        )
    out.append(table(f"{config}: the paper's claims", cols, rows))
    return "\n".join(out)


NOTES = """
Notes: ms = median step time; %peak = model FLOP/s over the float32 matmul peak above;
peak mem = rise of the resident set (GPU: live device bytes) over its size before the first
step, in a fresh process running that mode alone; minilora arrays = peak NumPy array bytes of
one step (tracemalloc); faults/step = minor page faults per timed step; state = parameters +
gradients + optimizer state after the last step; m/t = minilora / PyTorch."""


def json_key(key) -> str:
    return "/".join(map(str, key)) if isinstance(key, tuple) else str(key)


def jsonable(obj):
    if isinstance(obj, dict):
        return {json_key(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


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

    configs = list(CONFIGS) if args.config == "all" else [args.config]
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
