"""Appendix E of the paper: LoRA combined with a prefix method, beside each alone.

LoRA+PreEmbed and LoRA+PreLayer (``baselines.COMBINED``) train LoRA's A and B (r = 8 on Wq,
Wv, alpha 16) and the prefix method's special vectors (l_p = l_i = 8) together. The paper
finds that the combinations can help, LoRA+PreLayer most on MNLI, with no uniform win (its
appendix E). Every run follows the protocol at LoRA's chosen rate for the task (the combined
methods are not swept: a LoRA model with a few more trainable vectors; said in the table),
3 seeds, base ``char-small``; the single-method rows are Table 4's own runs.
"""

from __future__ import annotations

from pathlib import Path

from minilora.paper import protocol as P
from minilora.paper.budgets import TASKS, get_budget, records_of
from minilora.paper.experiments import Run
from minilora.paper.report import header, mean_sd, write

LORA = {"r": 8, "alpha": P.ALPHA, "targets": ("q", "v")}
PREFIX = {"l_p": 8, "l_i": 8}
ROWS = [
    ("lora", LORA), ("preembed", {}), ("prelayer", {}),
    ("lora+preembed", {**LORA, **PREFIX}), ("lora+prelayer", {**LORA, **PREFIX}),
]  # fmt: skip


def _rate(b, method: str, task: str, records, compute=None):
    """The rate a row runs at: its own sweep's, LoRA's for the combinations."""
    swept = "lora" if method.startswith("lora+") else method
    return P.choose_rate(b, swept, task, records, compute)[0]


def appendix_e_runs(b, records=None, compute=None) -> tuple[list[Run], list[Run]]:
    records = records or P.Records()
    tasks = TASKS[:1] if b.name == "quick" else TASKS
    ready, waiting = [], []
    for task in tasks:
        for method, settings in ROWS:
            lr = _rate(b, method, task, records, compute)
            for seed in b.seeds:
                lr_or_default = lr if lr is not None else P.DEFAULT_LR[method.split("+")[0]]
                run = P.protocol_run(b, method, task, settings, seed, lr_or_default)
                (ready if lr is not None else waiting).append(run)
    return ready, waiting


def appendix_e(budget, out_dir: Path, progress: bool = True) -> Path:
    """LoRA, PreEmbed, PreLayer and their combinations with LoRA, on both tasks."""
    b, out_dir = get_budget(budget), Path(out_dir)
    recs = records_of(appendix_e_runs, "appendix_e", b, out_dir, progress)
    tasks = TASKS[:1] if b.name == "quick" else TASKS
    lines = header(
        "Appendix E (LoRA with a prefix method)", b, list(recs.values()),
        "LoRA r = 8 on Wq, Wv and the prefix methods (l_p = l_i = 8), alone and combined; the "
        "combinations run at LoRA's chosen rate.",
    )  # fmt: skip
    lines += [
        f"Mean ± standard deviation over seeds {list(b.seeds)}.",
        "",
        "| method | trainable | " + " | ".join(t.upper() for t in tasks) + " | lr |",
        "|---|---:|" + "---:|" * len(tasks) + "---|",
    ]
    for method, settings in ROWS:
        key = Run(method, "sql", settings).settings
        cell = {t: [rec for r, rec in recs.items() if (r.method, r.settings, r.task) ==
                    (method, key, t) and rec.get("score") is not None] for t in tasks}  # fmt: skip
        first = next((c[0] for c in cell.values() if c), None)
        lines.append(
            f"| {Run(method, 'sql', settings).label()} | "
            f"{'—' if first is None else format(first['trainable'], ',')} | "
            + " | ".join(
                mean_sd([x["score"] for x in cell[t]]) if cell[t] else "not yet run" for t in tasks
            )
            + " | "
            + " / ".join(f"{cell[t][0]['run']['lr']:g}" if cell[t] else "—" for t in tasks)
            + " |"
        )
    return write(out_dir / "appendix_e.md", lines)


__all__ = ["ROWS", "appendix_e", "appendix_e_runs"]
