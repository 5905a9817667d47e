"""Is this change faster? Two versions of minilora in one process, stepped in turn.

    python benchmarks/ab_versions.py --before HEAD~1                # the working tree vs HEAD~1
    python benchmarks/ab_versions.py --before 44b2b7c --config medium --mode lora --steps 10
    python benchmarks/ab_versions.py --without functional.gelu      # a fast twin vs its formula
    python benchmarks/ab_versions.py --without all --config medium  # every twin vs none

``--without NAME`` compares the working tree with itself: the same model stepped with every
fast twin installed, and with twin NAME (``all``: every twin) removed for its steps, so each
twin's gain is measured version against version in one process (minilora/fast/, "kept only
while it pays"). ``--memory`` also reports each version's peak traced memory of a step.

On a shared machine the speed drifts by 10-20% within minutes, more than most changes
gain, and ratios against PyTorch (bench.py) move with PyTorch's own times. This script
removes both: it exports the ``before`` commit's ``minilora/`` with ``git archive``,
renames the package to ``minilora_before`` (every ``minilora`` word in its sources), builds
the same model with the same weights in both versions, and times their training steps
one after the other, step by step, so that any drift hits both alike. It prints the
median step of each and their ratio.
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (ROOT, HERE):  # run from a checkout without `pip install -e .`
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import numpy as np  # noqa: E402
from configs import CONFIGS, LORA_ALPHA, LORA_R, LORA_TARGETS, LR, WEIGHT_DECAY  # noqa: E402


def export_before(commit: str, into: Path) -> str:
    """Write ``commit``'s minilora/ into ``into``/minilora_before; return the package name."""
    tar = subprocess.run(
        ["git", "archive", commit, "minilora"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    package = into / "minilora_before"
    (into / "minilora").rename(package)
    for source in package.rglob("*.py"):
        text = source.read_text()
        source.write_text(re.sub(r"\bminilora\b", "minilora_before", text))
    return package.name


def training_step(package: str, spec: dict, mode: str):
    """One version's model (seed 0, the benchmark's batch) and a function that trains a step."""
    ml = importlib.import_module(package)
    gpt = importlib.import_module(f"{package}.transformer")
    lora = importlib.import_module(f"{package}.lora")
    optim = importlib.import_module(f"{package}.optim")
    try:  # where tune_malloc lives now, or (older versions) in backend
        importlib.import_module(f"{package}.work.memory").tune_malloc()
    except ModuleNotFoundError:
        importlib.import_module(f"{package}.backend").tune_malloc()
    ml.manual_seed(0)
    fields = ("vocab_size", "block_size", "n_layer", "n_head", "d_model")
    config = gpt.GPTConfig(**{k: spec[k] for k in fields}, dropout=0.0)
    model = gpt.GPT(config, generator=np.random.default_rng(0))
    if mode == "lora":
        adapters = lora.LoRAConfig(r=LORA_R, alpha=LORA_ALPHA, target_modules=LORA_TARGETS)
        lora.inject_lora(model, adapters, generator=np.random.default_rng(1))
    model.train(True)
    opt = optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    rng = np.random.default_rng(1000)
    shape = (spec["batch"], spec["block_size"])
    x, y = (rng.integers(0, spec["vocab_size"], shape) for _ in range(2))

    def step():
        opt.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        opt.step()

    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a commit, tag or branch of this repo")
    parser.add_argument("--without", help="a fast twin's name (minilora.fast.TWINS) or 'all'")
    parser.add_argument("--config", choices=("small", "medium"), default="small")
    parser.add_argument("--mode", choices=("full", "lora"), default="full")
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each (default 30)")
    parser.add_argument("--memory", action="store_true", help="also each version's peak memory")
    args = parser.parse_args(argv)
    if (args.before is None) == (args.without is None):
        parser.error("give one of --before COMMIT or --without TWIN")
    spec = CONFIGS[args.config]
    with tempfile.TemporaryDirectory() as tmp:
        if args.before is not None:
            sys.path.insert(0, tmp)
            before = export_before(args.before, Path(tmp))
            steps = {f"before ({args.before})": training_step(before, spec, args.mode)}
            steps["after (working tree)"] = training_step("minilora", spec, args.mode)
        else:
            steps = twin_against_formula(args.without, spec, args.mode)
        times = interleave(steps, args.steps)
        peaks = {name: peak_memory(step) for name, step in steps.items()} if args.memory else {}
    (b_name, b), (a_name, a) = ((k, 1000 * statistics.median(v)) for k, v in times.items())
    print(
        f"# {args.config} / {args.mode}: median of {args.steps} steps, interleaved step by step\n"
    )
    mem = " | peak MB" if peaks else ""
    print(f"| version | ms per step{mem} |\n|---|---|{'---|' if peaks else ''}")
    for name, ms in ((b_name, b), (a_name, a)):
        print(f"| {name} | {ms:.1f}" + (f" | {peaks[name] / 2**20:.1f}" if peaks else "") + " |")
    print(f"\nafter / before: {a / b:.3f}")
    if peaks:
        print(f"peak memory after / before: {peaks[a_name] / peaks[b_name]:.3f}")
    return 0


def twin_against_formula(name: str, spec: dict, mode: str) -> dict:
    """One model, stepped with twin ``name`` (or ``all``) removed, then with every twin."""
    from minilora import fast

    names = list(fast.TWINS) if name == "all" else [name]
    unknown = set(names) - set(fast.TWINS)
    if unknown:
        raise SystemExit(f"--without {name}: no such twin; the twins are {list(fast.TWINS)}")
    step = training_step("minilora", spec, mode)

    def without():
        fast.uninstall(names)
        try:
            step()
        finally:
            fast.install(names)

    return {f"before (without {name})": without, "after (every twin)": step}


def interleave(steps: dict, n: int) -> dict:
    """Median-ready step times of each version, stepped in turn so that drift hits both."""
    for step in steps.values():  # warm-up: first-touch allocations, BLAS threads
        for _ in range(3):
            step()
    times = {name: [] for name in steps}
    for _ in range(n):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return times


def peak_memory(step) -> int:
    """The peak of traced allocations during one step (NumPy reports its arrays to tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


if __name__ == "__main__":
    sys.exit(main())
