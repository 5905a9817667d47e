"""Measuring: the matmul peak, interleaved step timing, and memory in fresh processes.

Memory is measured by re-running ``bench.py`` with the internal ``--_probe``
option, one process per (mode, engine): ``measure_memory`` starts them and
``run_probe`` is what each of them runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from configs import CONFIGS
from models import (
    MiniloraRunner,
    TorchRunner,
    build_minilora_model,
    cuda_sync,
    load_torch,
    loaded_torch,
    make_batch,
    torch_sync,
)

from minilora import backend

BENCH_SCRIPT = Path(__file__).resolve().parent / "bench.py"  # re-run for each memory probe


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
            torch = loaded_torch()
            ta = torch.as_tensor(backend.to_numpy(a), device=device)
            tb = torch.as_tensor(backend.to_numpy(b), device=device)
            out["torch"][n] = _median_gflops(lambda a=ta, b=tb: a @ b, n, reps, torch_sync(device))
    out["peak"] = max(out["sizes"].values())
    return out


# ---- timing -------------------------------------------------------------------------


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
    torch = loaded_torch()  # None unless engine == "torch"
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
            # the probe re-checks its environment against these flags, so pass them on
            malloc = "--malloc-tuned" if args.malloc_tuned else "--no-malloc-tuned"
            cmd = [
                sys.executable,
                str(BENCH_SCRIPT),
                "--threads",
                str(args.threads),
                malloc,
                "--_probe",
                json.dumps(spec),
            ]
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
