"""Is this change faster? Two versions of minilora in one process, stepped in turn.

    python benchmarks/ab_versions.py --before HEAD~1                # the working tree vs HEAD~1
    python benchmarks/ab_versions.py --before 44b2b7c --config medium --mode lora --steps 10

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
    parser.add_argument("--before", required=True, help="a commit, tag or branch of this repo")
    parser.add_argument("--config", choices=("small", "medium"), default="small")
    parser.add_argument("--mode", choices=("full", "lora"), default="full")
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each (default 30)")
    args = parser.parse_args(argv)
    spec = CONFIGS[args.config]
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, tmp)
        before = export_before(args.before, Path(tmp))
        steps = {f"before ({args.before})": training_step(before, spec, args.mode)}
        steps["after (working tree)"] = training_step("minilora", spec, args.mode)
        for step in steps.values():  # warm-up: first-touch allocations, BLAS threads
            for _ in range(3):
                step()
        times = {name: [] for name in steps}
        for _ in range(args.steps):
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    (b_name, b), (a_name, a) = ((k, 1000 * statistics.median(v)) for k, v in times.items())
    print(
        f"# {args.config} / {args.mode}: median of {args.steps} steps, interleaved step by step\n"
    )
    print(f"| version | ms per step |\n|---|---|\n| {b_name} | {b:.1f} |\n| {a_name} | {a:.1f} |")
    print(f"\nafter / before: {a / b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
