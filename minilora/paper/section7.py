"""Section 7 of the LoRA paper on char-small: Figures 3 and 4 and Table 7.

Hu et al. 2021 (arXiv 2106.09685, v2) look inside the learned dW = B A of GPT-3:

* Figure 3 (7.2, Eq. 4): adapters with r = 8 and r = 64 from the same base on
  the same task share their top direction (phi(1, j) > 0.5), little else.
* Figure 4 (7.2): two seeds at r = 64; dWq shares more directions than dWv;
  two random Gaussian matrices share none beyond chance.
* Table 7 (7.3): ||U^T Wq V^T||_F with U, V the top-r singular vectors of dWq is
  far below the same with Wq's own: dW amplifies directions W does not
  emphasise, by ||dW||_F / ||U^T W V^T||_F (about 21.5 at r = 4, 2 at r = 64).

Base char-small (4 blocks, d_model 128), task SQL (WikiSQL's place). The paper
looks at layer 48 of 96, a middle one; we use block ``n_layer // 2`` (block 2)
and list every block's headline numbers too. Each reproduction is
``fn(budget, out_dir, progress=True) -> Path``: it trains (or loads) its
adapters, writes ``<name>.md`` and a PNG into ``out_dir`` and returns the
Markdown. Adapters are cached in ``out_dir/adapters/<key>/`` (PEFT layout,
``minilora.interop.adapters``), keyed by every setting: the three share the r = 64 run
and a re-run trains nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from minilora.interop.adapters import load_adapter, save_adapter
from minilora.paper import analysis
from minilora.work import io

BASE = "char-small"
TASK = "sql"
TARGETS = ("q_proj", "v_proj")
ALPHA = 16.0  # the paper's rule: alpha fixed at the first r tried (8, alpha = 2r), not tuned
LR = 2e-2


@dataclass(frozen=True)
class Budget:
    """How much training: ``quick`` is a smoke test (seconds), ``full`` learns the task."""

    steps: int
    batch_size: int
    n_train: int
    n_eval: int  # test questions scored by exact match (0: none)
    eval_batches: int


BUDGETS = {
    "quick": Budget(steps=30, batch_size=8, n_train=400, n_eval=0, eval_batches=2),
    "full": Budget(steps=1000, batch_size=16, n_train=4000, n_eval=200, eval_batches=8),
}


@dataclass(frozen=True)
class RunSpec:
    """Every setting of one adapter training run; its ``key`` names the cache entry."""

    r: int
    seed: int
    steps: int
    batch_size: int
    n_train: int
    alpha: float = ALPHA
    lr: float = LR
    task: str = TASK
    targets: tuple = TARGETS
    base: str = BASE

    def key(self) -> str:
        settings = json.dumps(asdict(self), sort_keys=True)
        digest = hashlib.sha1(settings.encode()).hexdigest()[:8]
        return f"{self.task}-r{self.r}-seed{self.seed}-{self.steps}steps-{digest}"


def _budget(budget: str) -> Budget:
    """``full-recorded`` is ``full`` read from the committed adapters (``recorded``)."""
    budget = "full" if budget == "full-recorded" else budget
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; valid budgets: {sorted(BUDGETS)}")
    return BUDGETS[budget]


def recorded(spec: RunSpec) -> Path:
    """A committed adapter: ``records/section7/<key>/`` (a copy of ``OUT/adapters/<key>/``)."""
    from minilora.paper import experiments

    return experiments.RECORDS / "section7" / spec.key()


def _spec(b: Budget, r: int, seed: int = 0) -> RunSpec:
    return RunSpec(r=r, seed=seed, steps=b.steps, batch_size=b.batch_size, n_train=b.n_train)


def _task(spec: RunSpec, n_test: int = 0):
    from minilora.work.tasks import make_task

    return make_task(spec.task, n_train=spec.n_train, n_val=200, n_test=n_test, seed=0)


def train_adapter(spec: RunSpec, n_eval: int, eval_batches: int, progress: bool):
    """Train one adapter from the base model: returns (model, facts about the run)."""
    from minilora.lora import LoRAConfig, inject_lora
    from minilora.work.finetune import evaluate, finetune, finetune_recipe
    from minilora.work.pretrained import load_pretrained

    model, tokenizer, _ = load_pretrained(spec.base)
    task = _task(spec, n_eval)
    lora = LoRAConfig(r=spec.r, alpha=spec.alpha, target_modules=spec.targets)
    # the seed draws A's initialisation (here) and the batches (in train)
    inject_lora(model, lora, generator=np.random.default_rng(spec.seed))
    config = finetune_recipe(
        spec.steps, spec.lr, spec.batch_size, spec.seed, eval_batches, progress=progress
    )
    result = finetune(model, tokenizer, task, config)
    info = {
        "spec": asdict(spec),
        "date": time.strftime("%Y-%m-%d"),
        "train_seconds": round(result.seconds, 1),
        "step_ms": round(1000 * result.step_seconds, 1),
        "final_train_loss": round(result.final_train_loss, 4),
        "val_loss": round(result.history[-1]["val_loss"], 4),
        "exact_match": evaluate(model, tokenizer, task.test) if n_eval else None,
        "n_eval": n_eval,
    }
    return model, info


def adapter(spec: RunSpec, b: Budget, out_dir: Path, progress: bool = True):
    """The trained adapter for ``spec``: committed (``recorded``), cached, or trained now.

    Returns (model with the adapter, run facts, whether it came from the cache).
    The entry is written into a temporary directory and renamed into place, so
    an interrupted run leaves no half-written adapter behind.
    """
    from minilora.work.pretrained import load_pretrained

    directory = Path(out_dir) / "adapters" / spec.key()
    for found in (recorded(spec), directory):  # the committed one first, then the cache
        if (found / "run.json").is_file():
            model, _, _ = load_pretrained(spec.base)
            load_adapter(model, found)
            if progress:
                print(f"section 7: using the adapter in {found}")
            return model, io.read_json(found / "run.json"), True
    if progress:
        print(f"section 7: training r={spec.r} seed={spec.seed} for {spec.steps} steps")
    model, info = train_adapter(spec, b.n_eval, b.eval_batches, progress)
    with io.atomic_directory(directory) as tmp:
        save_adapter(model, tmp, base_model_name=spec.base)
        io.write_json(tmp / "run.json", info)  # its presence marks a whole entry
    return model, info, False


def _adapters(b: Budget, specs, out_dir: Path, progress: bool):
    """The models for ``specs`` and the (spec, facts, cached) rows for the header."""
    runs = [adapter(s, b, out_dir, progress) for s in specs]
    return [m for m, _, _ in runs], [(s, i, c) for s, (_, i, c) in zip(specs, runs)]


def _lora_layer(model, block: int, name: str):
    return model.get_submodule(f"blocks.{block}.attn.{name}")


def _A(model, block: int, name: str) -> np.ndarray:
    return np.asarray(_lora_layer(model, block, name).lora_A["default"].weight.data, np.float64)


def _block(model) -> int:
    return model.config.n_layer // 2


def _header(title: str, budget: str, runs) -> list[str]:
    lines = [f"# {title} on {BASE} ({budget} budget)", ""]
    if budget == "quick":
        lines += [
            f"**Quick budget: a smoke test.** {runs[0][0].steps} training steps leave A close "
            "to its random initialisation; these numbers check the code path, not the paper.",
            "",
        ]
    lines += [
        f"Task {TASK}, LoRA on {' and '.join(TARGETS)} of every block, alpha {ALPHA:g} "
        f"(scaling alpha/r), AdamW lr {LR:g}, no weight decay, cosine schedule.",
        "",
        "| adapter | r | seed | steps | batch | val loss | exact match | train s | cache |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for spec, info, cached in runs:
        em = info.get("exact_match")
        em = "-" if em is None else f"{em:.3f} (n={info['n_eval']})"
        lines.append(
            f"| `{spec.key()}` | {spec.r} | {spec.seed} | {spec.steps} | {spec.batch_size} | "
            f"{info['val_loss']:.4f} | {em} | {info['train_seconds']:.0f} | "
            f"{'loaded' if cached else 'trained now'} |"
        )
    return lines + [""]


def _heatmaps(path: Path, panels, title: str) -> None:
    """One PNG with a phi heatmap per (label, grid) panel; i down, j across, from 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False, layout="constrained"
    )
    for ax, (label, grid) in zip(axes[0], panels):
        ni, nj = grid.shape
        im = ax.imshow(
            grid, vmin=0, vmax=1, cmap="viridis", aspect="auto",
            extent=(0.5, nj + 0.5, ni + 0.5, 0.5), interpolation="nearest",
        )  # fmt: skip
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("j")
        ax.set_ylabel("i")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.9, label="phi(i, j)")
    fig.suptitle(title, fontsize=10)
    try:
        io.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=80, bbox_inches="tight"))
    finally:
        plt.close(fig)


def _write(path: Path, lines: list[str]) -> Path:
    io.write_atomic(path, ("\n".join(lines) + "\n").encode())
    return path


def figure3(budget: str, out_dir: Path, progress: bool = True) -> Path:
    """Figure 3 (section 7.2, Eq. 4): phi(A_r=8, A_r=64, i, j), i <= 8, j <= 64."""
    b, out_dir = _budget(budget), Path(out_dir)
    (m8, m64), runs = _adapters(b, [_spec(b, 8), _spec(b, 64)], out_dir, progress)
    block, k = _block(m8), m8.config.d_model
    grids = {
        n: analysis.subspace_similarity_grid(_A(m8, block, n), _A(m64, block, n), 8, 64)
        for n in TARGETS
    }
    png = out_dir / "figure3.png"
    _heatmaps(
        png,
        [(f"dW{n[0]}, block {block}: A(r=8) vs A(r=64)", g) for n, g in grids.items()],
        f"Figure 3 on {BASE} ({budget}): phi(i, j), Eq. 4",
    )
    lines = _header("Figure 3 (LoRA section 7.2)", budget, runs)
    lines += [
        f"Block {block} (of {m8.config.n_layer}; the paper's layer 48 of 96 is a middle one). "
        f"phi(i, j) = ||U_8[:i] U_64[:j]^T||_F^2 / min(i, j) with U the right-singular vectors "
        f"of A (rows of Vh). Two independent random subspaces of R^{k} give E[phi] = "
        f"max(i, j) / {k}, so phi(1, 1) ~ {1 / k:.3f} and mean_j phi(1, j) ~ "
        f"{np.mean(np.arange(1, 65)) / k:.3f} by chance.",
        "",
        f"![Figure 3]({png.name})",
        "",
        "| matrix | phi(1,1) | mean_j phi(1,j) | phi(2,2) | phi(4,4) | phi(8,8) | "
        "top direction shared (phi(1,1) > 0.5) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, g in grids.items():
        lines.append(
            f"| dW{n[0]} | {g[0, 0]:.3f} | {g[0].mean():.3f} | {g[1, 1]:.3f} | {g[3, 3]:.3f} | "
            f"{g[7, 7]:.3f} | {'yes' if g[0, 0] > 0.5 else 'no'} |"
        )
    lines += ["", "Every block, phi(1, 1) for dWq / dWv:", ""]
    for blk in range(m8.config.n_layer):
        vals = [
            analysis.subspace_similarity(_A(m8, blk, n), _A(m64, blk, n), 1, 1) for n in TARGETS
        ]
        lines.append(f"- block {blk}: " + " / ".join(f"{v:.3f}" for v in vals))
    lines += [
        "",
        "Paper (GPT-3, layer 48): phi(1, j) > 0.5 for the top direction; the rest near 0.",
    ]
    return _write(out_dir / "figure3.md", lines)


def _shared(grid, top: int = 8) -> tuple[float, int]:
    """Mean phi over i, j <= top, and how many i <= 64 have phi(i, i) > 0.5."""
    return float(grid[:top, :top].mean()), int((np.diag(grid) > 0.5).sum())


def figure4(budget: str, out_dir: Path, progress: bool = True) -> Path:
    """Figure 4 (section 7.2): phi(A_seed0, A_seed1, i, j) at r = 64, and two random matrices."""
    b, out_dir = _budget(budget), Path(out_dir)
    specs = [_spec(b, 64, seed) for seed in (0, 1)]
    (m0, m1), runs = _adapters(b, specs, out_dir, progress)
    block, k = _block(m0), m0.config.d_model
    grids = {
        n: analysis.subspace_similarity_grid(_A(m0, block, n), _A(m1, block, n)) for n in TARGETS
    }
    rng = np.random.default_rng(0)
    random_grid = analysis.subspace_similarity_grid(
        rng.standard_normal((64, k)), rng.standard_normal((64, k))
    )
    png = out_dir / "figure4.png"
    panels = [(f"dW{n[0]}, block {block}: seed 0 vs seed 1", g) for n, g in grids.items()]
    panels.append(("two random Gaussian 64 x 128 matrices", random_grid))
    _heatmaps(png, panels, f"Figure 4 on {BASE} ({budget}): phi(i, j), r = 64")
    lines = _header("Figure 4 (LoRA section 7.2)", budget, runs)
    lines += [
        f"Block {block}, r = 64, i, j <= 64. Chance level for random subspaces of R^{k}: "
        f"E[phi(i, j)] = max(i, j) / {k} (mean over i, j <= 8: "
        f"{np.mean(np.maximum.outer(np.arange(1, 9), np.arange(1, 9))) / k:.3f}).",
        "",
        f"![Figure 4]({png.name})",
        "",
        "| matrices | phi(1,1) | mean phi, i,j <= 8 | mean phi, i,j <= 64 | "
        "#i with phi(i,i) > 0.5 |",
        "|---|---|---|---|---|",
    ]
    rows = [(f"dW{n[0]} seeds 0 / 1", g) for n, g in grids.items()]
    for label, g in rows + [("random / random", random_grid)]:
        mean8, count = _shared(g)
        lines.append(f"| {label} | {g[0, 0]:.3f} | {mean8:.3f} | {g.mean():.3f} | {count} |")
    q8, v8 = _shared(grids["q_proj"])[0], _shared(grids["v_proj"])[0]
    lines += [
        "",
        f"dWq shares more top directions than dWv (mean phi, i,j <= 8): {('no', 'yes')[q8 > v8]} "
        f"({q8:.3f} vs {v8:.3f}).",
        "",
        "Every block, mean phi over i, j <= 8 for dWq / dWv:",
        "",
    ]
    for blk in range(m0.config.n_layer):
        vals = [
            analysis.subspace_similarity_grid(_A(m0, blk, n), _A(m1, blk, n), 8, 8).mean()
            for n in TARGETS
        ]
        lines.append(f"- block {blk}: " + " / ".join(f"{v:.3f}" for v in vals))
    lines += ["", "Paper (GPT-3, layer 48): dWq shares more directions than dWv; random: none."]
    return _write(out_dir / "figure4.md", lines)


# --------------------------------------------------------------------------- Table 7

# Table 7 of the paper: dWq, Wq, random columns; r ||Wq||_F / 12288; ||dWq||_F; factor
PAPER_TABLE7 = {
    4: ("0.32", "21.67", "0.02", "0.020", "6.91", "about 21.5"),
    64: ("1.90", "37.71", "0.33", "0.323", "", "about 2"),
}


def _amplification(model, block: int, r: int, name: str = "q_proj"):
    layer = _lora_layer(model, block, name)
    dW = layer.delta_weight("default", dtype=np.float64)
    return analysis.amplification(layer.base_layer.weight, dW, r)


def table7(budget: str, out_dir: Path, progress: bool = True) -> Path:
    """Table 7 (section 7.3): ||U^T Wq V^T||_F for U, V from dWq, Wq and a random matrix."""
    b, out_dir = _budget(budget), Path(out_dir)
    specs = [_spec(b, r) for r in (4, 64)]
    models, runs = _adapters(b, specs, out_dir, progress)
    block = _block(models[0])
    lines = _header("Table 7 (LoRA section 7.3)", budget, runs)
    lines += [
        f"Wq of block {block} (d = k = {models[0].config.d_model}). U, V: the top-r left and "
        "right singular vectors of dWq (column dWq), of Wq itself (Wq) or of a seeded Gaussian "
        "matrix (random); each cell is ||U^T Wq V^T||_F. random expected = r ||Wq||_F / sqrt(dk). "
        "Factor = ||dWq||_F / (dWq column).",
        "",
        "| | r | dWq | Wq | random | random expected | ||Wq||_F | ||dWq||_F | factor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    factors = {}
    for spec, model in zip(specs, models):
        a = _amplification(model, block, spec.r)
        factors[spec.r] = a.factor
        p = PAPER_TABLE7[spec.r]
        lines += [
            f"| measured | {spec.r} | {a.w_norm:.3f} | {a.w_top_norm:.2f} | {a.random_norm:.3f} | "
            f"{a.random_expected:.3f} | {a.w_fro:.2f} | {a.dw_fro:.3f} | {a.factor:.2f} |",
            f"| paper (GPT-3 layer 48) | {spec.r} | {p[0]} | {p[1]} | {p[2]} | {p[3]} | 61.95 | "
            f"{p[4]} | {p[5]} |",
        ]
    lines += [
        "",
        f"Amplification larger at r = 4 than at r = 64: {('no', 'yes')[factors[4] > factors[64]]} "
        f"({factors[4]:.2f} vs {factors[64]:.2f}).",
        "",
        "Every block, factor at r = 4 / r = 64 (Wq), and dWq column / random column at r = 4:",
        "",
    ]
    for blk in range(models[0].config.n_layer):
        a4, a64 = (_amplification(m, blk, s.r) for s, m in zip(specs, models))
        lines.append(
            f"- block {blk}: {a4.factor:.2f} / {a64.factor:.2f}; "
            f"{a4.w_norm:.3f} / {a4.random_norm:.3f}"
        )
    return _write(out_dir / "table7.md", lines)


REPRODUCTIONS = {"figure3": figure3, "figure4": figure4, "table7": table7}
