"""Table 1 of Hu et al. 2021 (arXiv 2106.09685, section 3): inference latency of one forward pass.

The paper's claim: adapter layers must run one after another, so they add
latency, and the overhead grows as the batch (and with it the work per layer)
shrinks (GPT-2 medium: AdapterH +3.0% at batch 32 x 512 tokens, +30.3% at
1 x 128); LoRA, merged into W = W0 + B A, adds none.

Here: the shipped base model, AdapterH and AdapterL (``minilora.paper.baselines``,
r = 4), LoRA r = 8 on Wq, Wv merged and unloaded (plain Linear layers again),
and, for comparison, the same LoRA unmerged. Every model is timed in this one
process, interleaved (each repeat times every model once, in a rotating
order), in eval mode under ``no_grad``; the table reports the median time and
the percent overhead against the base model's median at the same shape. A run
writes its timings to ``OUT/table1.json``; committed as ``records/table1/table1.json``,
they are what ``--budget full-recorded`` shows (timings belong to a machine and a
moment: they are measured once, quietly, and kept, not re-measured on every call).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from minilora.tensor import no_grad

# (batch, sequence length) per budget; the paper's 32x512, 16x256, 1x128 scaled to a
# context of 128, plus batch 1 at the full context
SHAPES = {
    "quick": [(8, 32), (1, 32)],
    "full": [(32, 128), (16, 64), (1, 32), (16, 128), (1, 128)],
}
REPEATS = {"quick": 5, "full": 30}
MODELS = ("base", "AdapterH", "AdapterL", "LoRA merged", "LoRA unmerged")
RECORD = "table1.json"  # a run's timings: OUT/table1.json; committed as records/table1/table1.json


def repeats(budget: str, batch: int, length: int) -> int:
    """Timed passes per model: the budget's number, up to 10 times more for small shapes
    (their timings are short, so noisier; the medians need more of them)."""
    return REPEATS[budget] * max(1, min(10, 4096 // (batch * length)))


def build_models(seed: int = 0) -> dict:
    """The five models of the table, each from a fresh copy of the base model."""
    from minilora.lora import merge_and_unload
    from minilora.paper.baselines import apply_method
    from minilora.work.pretrained import load_pretrained

    def fresh():
        return load_pretrained("char-small")[0]

    models = {
        "base": fresh(),
        "AdapterH": apply_method(fresh(), "adapterh", None, np.random.default_rng(seed)),
        "AdapterL": apply_method(fresh(), "adapterl", None, np.random.default_rng(seed)),
        "LoRA merged": merge_and_unload(
            apply_method(fresh(), "lora", None, np.random.default_rng(seed))
        ),
        "LoRA unmerged": apply_method(fresh(), "lora", None, np.random.default_rng(seed)),
    }
    for model in models.values():
        model.eval()
    return models


@no_grad()
def time_forward(models: dict, batch: int, length: int, repeats: int, seed: int = 0) -> dict:
    """Median seconds of one forward pass of each model on (batch, length) token ids."""
    vocab = next(iter(models.values())).config.vocab_size
    ids = np.random.default_rng(seed).integers(vocab, size=(batch, length))
    names = list(models)
    for name in names:  # warm-up, not timed
        models[name](ids)
    times = {name: [] for name in names}
    for rep in range(repeats):
        for k in range(len(names)):
            name = names[(rep + k) % len(names)]  # rotate the order every repeat
            start = time.perf_counter()
            models[name](ids)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def table1(budget: str, out_dir: Path, progress: bool = True) -> Path:
    """Write ``table1.md`` (and ``table1.png``): latency overhead against the base model."""
    from tqdm.auto import tqdm

    from minilora.paper import experiments
    from minilora.paper.budgets import get_budget
    from minilora.paper.experiments import machine
    from minilora.paper.report import plot as _plot
    from minilora.paper.report import write as _write
    from minilora.work.io import read_json, write_json

    get_budget(budget)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    measured = "quick" if budget == "quick" else "full"
    record = experiments.RECORDS / "table1" / RECORD  # a folder of its own: not a run record
    if budget == "full-recorded" and record.is_file():  # the committed timings, as measured
        timings = read_json(record)
    else:
        models = build_models()
        timings = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        timings["shapes"] = [
            [batch, length, time_forward(models, batch, length, repeats(measured, batch, length))]
            for batch, length in tqdm(SHAPES[measured], desc="table1", disable=not progress)
        ]  # fmt: skip
        write_json(out_dir / RECORD, timings)  # copy it to minilora/paper/records to commit it
    results = {(batch, length): t for batch, length, t in timings["shapes"]}
    lines = [f"# Table 1 (LoRA section 3): inference latency on char-small ({budget} budget)", ""]
    if budget == "quick":
        lines += ["**Quick budget: a smoke test, not results** (few repeats, small shapes).", ""]
    lines += [
        f"One forward pass (eval mode, no_grad), median of {REPEATS[measured]} interleaved "
        "repeats per model (up to 10 times more at small shapes), on "
        f"{timings['machine']}, {timings['date']}"
        + (
            " (the committed timings, `records/table1/table1.json`)"
            if record.is_file() and budget == "full-recorded"
            else ""
        )  # fmt: skip
        + ". Overhead = "
        "median / base median - 1. Paper (GPT-2 medium, 32x512 / 16x256 / 1x128): "
        "AdapterL +2.2% / +5.0% / +20.7%, AdapterH +3.0% / +8.4% / +30.3%.",
        "",
        "| batch x length | base ms | " + " | ".join(MODELS[1:]) + " |",
        "|---|---:|" + "---:|" * (len(MODELS) - 1),
    ]
    series = {name: [] for name in MODELS[1:]}
    for (batch, length), t in results.items():
        cells = []
        for name in MODELS[1:]:
            overhead = 100 * (t[name] / t["base"] - 1)
            cells.append(f"{overhead:+.1f}%")
            series[name].append((batch * length, overhead / 100))
        lines.append(f"| {batch} x {length} | {1000 * t['base']:.2f} | " + " | ".join(cells) + " |")
    _plot(
        out_dir / "table1.png",
        {k: sorted(v) for k, v in series.items()},
        "tokens per forward pass (batch x length)",
        f"Table 1 ({budget}): latency overhead against the base model",
        ylabel="overhead (%)",
    )
    lines += ["", "![overhead against tokens per pass](table1.png)"]
    return _write(out_dir / "table1.md", lines)


__all__ = ["MODELS", "SHAPES", "build_models", "repeats", "table1", "time_forward"]
