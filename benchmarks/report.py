"""Reporting: the run's header, the per-mode figures and ratios, Markdown tables, JSON."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import statistics
import sys

import numpy as np
from configs import LABEL
from environment import MALLOC_ENV, THREAD_VARS
from flops import model_flops
from models import loaded_torch

from minilora import backend


def versions(ref) -> dict:
    torch = loaded_torch()
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
    torch = loaded_torch()
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
