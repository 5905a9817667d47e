"""Section 7 on converged adapters: the protocol's LoRA runs, read back from their records.

``minilora.paper.section7`` trains its own short runs. This reads the adapters the protocol
keeps (``experiments.keeps_adapter``: LoRA on Wq and Wv at r = 4, 8 and 64, trained to the
best validation checkpoint, with each A as it was drawn) and asks section 7's questions of
them, over every pair of seeds there is rather than one pair:

* **Figure 4 across seeds**: phi(A_seed1, A_seed2, i, j) (Eq. 4) for Wq and Wv, mean over
  blocks and seed pairs, beside two nulls: phi(A as drawn, A as trained) of the same run (how
  much of A is still its random start: A gets small gradients while B is near zero, section
  7.2's caveat) and max(i, j) / k, the expectation for unrelated subspaces.
* **Figure 3 across ranks**: phi(A_r=8, A_r=64) of the same seed, top directions.
* **Figure 8**: phi between the top-i right singular directions of W and of dW, and where
  dW's input directions lie among W's, strongest to weakest (``analysis.direction_profile``):
  does dW read what W reads most, or what W does not emphasise?
* **Table 7**: ‖dW‖_F beside ‖W‖_F (the paper's dWq at r = 4 is 6.91 against ‖Wq‖_F = 61.95,
  about a ninth) and the amplification factor ‖dW‖_F / ‖U^T W V^T‖_F.

Each cell needs its records and their adapter files; cells without them say so.

Section 7 in three files, one story: ``analysis`` defines the measures (Eq. 4's phi, Table 7's
projections, where dW reads); this module answers the section's questions on the protocol's own
adapters (the verdicts of docs/REPRODUCTION.md); ``section7`` keeps the first, shorter runs that
the document quotes as history.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from minilora.paper import analysis
from minilora.paper import protocol as P
from minilora.paper.budgets import TASKS, get_budget
from minilora.paper.experiments import RECORDS, Cache, run_all
from minilora.paper.report import plot, write
from minilora.work.pretrained import load_pretrained

RANKS = (4, 8, 64)
PROJECTIONS = ("q", "v")
BASES = ("char-small", "char-small-mixed")
TOP = 8  # the i, j of the phi grids (Figure 4 shows up to 8 of r = 64's directions)


def _settings(r: int) -> dict:
    return {"r": r, "alpha": P.ALPHA, "targets": ("q", "v")}


def converged_runs(b, records=None) -> list:
    """Every run this reads: LoRA on Wq, Wv at RANKS, each task and base, at the chosen rate."""
    records = records or P.Records()
    seeds = b.seeds if len(b.seeds) > 1 else (0, 1)  # a pair at the least
    quick = b.name == "quick"  # a smoke test: one base, one task
    runs = []
    for base in BASES[:1] if quick else BASES:
        for task in TASKS[:1] if quick else TASKS:
            lr, _ = P.choose_rate(b, "lora", task, records, base=base)
            if lr is not None:
                runs += [
                    P.protocol_run(b, "lora", task, _settings(r), s, lr, base)
                    for r in RANKS for s in seeds
                ]  # fmt: skip
    return runs


def _adapters(b, out_dir: Path, progress: bool) -> dict:
    """{(base, task, r, seed): {name: array}} of every run whose adapter file there is."""
    cache = out_dir / "cache"
    runs = converged_runs(b, P.Records(cache))
    if b.compute:
        run_all(runs, cache, progress, desc="converged")
    found = {}
    for run in runs:
        for directory in (RECORDS, cache):
            tensors = Cache(directory).tensors(run)
            if tensors is not None:
                key = (run.base, run.task, dict(run.settings)["r"], run.seed)
                found[key] = tensors
                break
    return found


def _A(tensors: dict, block: int, proj: str, init: bool = False) -> np.ndarray:
    name = f"blocks.{block}.attn.{proj}_proj.lora_A.default.weight"
    return tensors[name + (".init" if init else "")].astype(np.float64)


def _dW(tensors: dict, block: int, proj: str, r: int) -> np.ndarray:
    name = f"blocks.{block}.attn.{proj}_proj.lora_"
    B = tensors[name + "B.default.weight"].astype(np.float64)
    return (P.ALPHA / r) * B @ _A(tensors, block, proj)


def _grid(A1, A2) -> np.ndarray:
    top = min(TOP, A1.shape[0], A2.shape[0])
    return analysis.subspace_similarity_grid(A1, A2, top, top)


def _fmt(values) -> str:
    values = list(values)
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def converged(budget, out_dir: Path, progress: bool = True) -> Path:
    """Section 7's analyses on the protocol's adapters (see the module's docstring)."""
    b, out_dir = get_budget(budget), Path(out_dir)
    found = _adapters(b, out_dir, progress)
    lines = [f"# Section 7 on converged adapters ({b.name} budget)", ""]
    if b.name == "quick":
        lines += ["**Quick budget: a smoke test, not results** (a few steps per adapter).", ""]
    lines += [
        "LoRA on Wq and Wv (alpha 16) at r = 4, 8 and 64, trained under the protocol (the rate "
        "chosen per base and task, the best validation checkpoint); the adapters are the files "
        "kept beside the records (`experiments.keeps_adapter`).",
        "",
        f"{len(found)} kept adapters found. phi is Eq. 4 over the top {TOP} directions (i, j "
        f"<= {TOP}), averaged over the grid, then over blocks; ± is the spread over seed pairs.",
        "",
        "## Across seeds (Figure 4) and the nulls",
        "",
        "| base | task | r | proj | seed pairs | phi(seed, seed) | phi(A drawn, A trained) "
        "| phi(A drawn, A drawn) | random max(i,j)/k |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    panels = []
    for base in BASES:
        for task in TASKS:
            for r in RANKS:
                seeds = sorted(s for (bb, t, rr, s) in found if (bb, t, rr) == (base, task, r))
                if not seeds:
                    continue
                runs = {s: found[base, task, r, s] for s in seeds}
                n_layer = 1 + max(int(k.split(".")[1]) for k in runs[seeds[0]])
                k = _A(runs[seeds[0]], 0, "q").shape[1]
                for proj in PROJECTIONS:
                    pairs, starts, drawn, grids = [], [], [], []
                    for s1, s2 in list(combinations(seeds, 2))[:3]:
                        g = [_grid(_A(runs[s1], blk, proj), _A(runs[s2], blk, proj))
                             for blk in range(n_layer)]  # fmt: skip
                        pairs.append(float(np.mean(g)))
                        grids.append(np.mean(g, axis=0))
                        drawn.append(float(np.mean([
                            _grid(_A(runs[s1], blk, proj, True), _A(runs[s2], blk, proj, True))
                            for blk in range(n_layer)
                        ])))  # fmt: skip
                    for s in seeds:
                        starts.append(float(np.mean([
                            _grid(_A(runs[s], blk, proj, True), _A(runs[s], blk, proj))
                            for blk in range(n_layer)
                        ])))  # fmt: skip
                    top = min(TOP, r)
                    chance = np.mean([max(i, j) / k for i in range(1, top + 1)
                                      for j in range(1, top + 1)])  # fmt: skip
                    lines.append(
                        f"| {base} | {task} | {r} | W{proj} | {len(pairs)} | {_fmt(pairs)} | "
                        f"{_fmt(starts)} | {_fmt(drawn)} | {chance:.3f} |"
                    )
                    if grids:
                        label = f"{base}, {task}, r={r}, W{proj}"
                        panels.append((-r, label, np.mean(grids, axis=0)))
    lines += _across_ranks(found)
    table7, profiles = _table7(found)
    lines += table7
    if profiles:
        k = len(next(iter(profiles.values())))
        at = sorted({*range(0, k, max(1, k // 32)), k - 1})  # a mark every few directions
        series = {label: [(i + 1, float(np.cumsum(p)[i] / p.sum())) for i in at]
                  for label, p in profiles.items()}  # fmt: skip
        series["unrelated subspaces"] = [(i + 1, (i + 1) / k) for i in at]
        plot(
            out_dir / "converged-directions.png", series, "W's right singular directions, "
            "strongest first", "Figure 8: where dW's input directions lie among W's "
            "(cumulative share)", logx=False, ylabel="share of dW's top-r subspace (%)",
        )  # fmt: skip
        lines += ["", "![where dW's directions lie](converged-directions.png)"]
    if panels:
        from minilora.paper.section7 import _heatmaps

        panels = [(label, grid) for _, label, grid in sorted(panels, key=lambda p: p[0])[:4]]
        _heatmaps(out_dir / "converged.png", panels, "phi across seeds (mean over blocks)")
        lines += ["", "![phi across seeds](converged.png)"]
    return write(out_dir / "converged.md", lines)


def _across_ranks(found: dict, low: int = 8, high: int = 64) -> list[str]:
    """Figure 3 on converged adapters: phi(A_r=low, A_r=high, i, j) of the same base, task and
    seed, per block; the top directions' overlap phi(1, 1), the grid's mean, and the same grid
    for the two A's as drawn (the null: how alike two random starts of these shapes are)."""
    lines = [
        "",
        f"## Across ranks (Figure 3): r = {low} against r = {high}, the same seed",
        "",
        f"phi(A_r={low}, A_r={high}, i, j) over i, j <= {TOP}, mean over blocks; ± is the spread "
        "over seeds. phi(1, 1) asks whether the two adapters' top input directions coincide (the "
        "paper: yes, above 0.5 for GPT-3); random unit vectors give about 1 / k.",
        "",
        "| base | task | proj | seeds | phi(1, 1) | phi, grid mean | phi, A as drawn | random "
        "max(i,j)/k |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    cells = sorted({(b, t) for (b, t, r, s) in found if r == low and (b, t, high, s) in found})
    for base, task in cells:
        seeds = sorted(s for (b, t, r, s) in found if (b, t, r) == (base, task, low)
                       and (base, task, high, s) in found)  # fmt: skip
        a = found[base, task, low, seeds[0]]
        n_layer = 1 + max(int(name.split(".")[1]) for name in a)
        k = _A(a, 0, "q").shape[1]
        chance = np.mean([max(i, j) / k for i in range(1, TOP + 1) for j in range(1, TOP + 1)])
        for proj in PROJECTIONS:
            top, mean, drawn = [], [], []
            for s in seeds:
                lo, hi = found[base, task, low, s], found[base, task, high, s]
                grids = [_grid(_A(lo, blk, proj), _A(hi, blk, proj)) for blk in range(n_layer)]
                top.append(float(np.mean([g[0, 0] for g in grids])))
                mean.append(float(np.mean(grids)))
                drawn.append(float(np.mean([
                    _grid(_A(lo, blk, proj, True), _A(hi, blk, proj, True))
                    for blk in range(n_layer)
                ])))  # fmt: skip
            lines.append(
                f"| {base} | {task} | W{proj} | {len(seeds)} | {_fmt(top)} | {_fmt(mean)} | "
                f"{_fmt(drawn)} | {chance:.3f} |"
            )
    if not cells:
        lines.append(f"| — | — | — | 0 | no seed has both r = {low} and r = {high} | | | |")
    return lines


def _table7(found: dict) -> tuple[list[str], dict]:
    """Table 7's norms and Figure 8's overlap of W's and dW's directions, per cell; and each
    cell's direction profile (mean over blocks and seeds), for the plot."""
    lines = [
        "",
        "## dW against W (Table 7, Figure 8)",
        "",
        "Mean over blocks and seeds. ‖W‖_F: the base's projection; ‖dW‖_F: (alpha/r) B A; ratio: "
        "‖dW‖_F / ‖W‖_F; factor: ‖dW‖_F / ‖U^T W V^T‖_F with U, V dW's top-r singular vectors "
        "(section 7.3); "
        "phi(W, dW): Eq. 4 between the top-8 right singular directions of W and of dW "
        "(random: 8 / k); weaker half: the share of dW's top-r input subspace that lies along "
        "W's weaker half of directions (`analysis.direction_profile`; random: 0.5).",
        "",
        "| base | task | r | proj | seeds | ‖W‖_F | ‖dW‖_F | ratio | factor | phi(W, dW) "
        "| weaker half |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    profiles = {}
    bases = {}
    for base, task, r in sorted({key[:3] for key in found}):
        if base not in bases:
            bases[base] = load_pretrained(base)[0]
        model = bases[base]
        seeds = [s for (bb, t, rr, s) in found if (bb, t, rr) == (base, task, r)]
        for proj in PROJECTIONS:
            rows, profile = [], []
            for s in seeds:
                for blk, block in enumerate(model.blocks):
                    W = getattr(block.attn, f"{proj}_proj").weight.numpy().astype(np.float64)
                    dW = _dW(found[base, task, r, s], blk, proj, r)
                    amp = analysis.amplification(W, dW, r)
                    phi = analysis.subspace_similarity(W, dW, 8, min(8, r))
                    p = analysis.direction_profile(W, dW, r)
                    weak = p[len(p) // 2 :].sum() / r
                    rows.append(
                        (amp.w_fro, amp.dw_fro, amp.dw_fro / amp.w_fro, amp.factor, phi, weak)
                    )
                    profile.append(p)
            m = np.mean(rows, axis=0)
            lines.append(
                f"| {base} | {task} | {r} | W{proj} | {len(seeds)} | {m[0]:.2f} | {m[1]:.3f} | "
                f"{m[2]:.3f} | {m[3]:.1f} | {m[4]:.3f} | {m[5]:.3f} |"
            )
            profiles[f"{base}, {task}, r={r}, W{proj}"] = np.mean(profile, axis=0)
    return lines, profiles


__all__ = ["RANKS", "converged", "converged_runs"]
