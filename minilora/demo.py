"""``minilora demo``: LoRA on the shipped base model, from "cannot" to "can", in a few minutes.

1. load the pretrained char-small GPT and the English-to-SQL task;
2. show what the base model writes for a question and score it (exact match);
3. inject LoRA (h = W0 x + (alpha/r) B A x on W_q and W_v) and count what trains;
4. fine-tune A and B only, with a progress bar;
5. score again and show the same question;
6. merge B A into W0 and measure the largest logit difference merged vs unmerged;
7. save the adapter in PEFT's layout and say where.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from minilora import backend
from minilora.interop.adapters import save_adapter
from minilora.lora import LoRAConfig, count_parameters, merge, unmerge
from minilora.tensor import no_grad
from minilora.work.finetune import complete, evaluate, finetune, finetune_recipe
from minilora.work.pretrained import load_pretrained
from minilora.work.tasks import make_task, task_batch

# The demo's recipe (see README: its measured output).
DEMO_STEPS = 1200
DEMO_LR = 2e-2
DEMO_BATCH = 16
DEMO_EVAL = 200


def _show(model, tokenizer, prompt: str) -> str:
    return complete(model, tokenizer, [prompt])[0].rstrip("\n")


def run_demo(
    steps=None,
    n_eval=None,
    out="runs/demo",
    r=8,
    alpha=None,
    targets=("q_proj", "v_proj"),
    dropout=0.0,
    seed=0,
    device=None,
    progress=True,
    print_fn=print,
) -> dict:
    """Run the demo and return its figures (also printed as a short report)."""
    steps = DEMO_STEPS if steps is None else steps
    n_eval = DEMO_EVAL if n_eval is None else n_eval
    alpha = 2.0 * r if alpha is None else alpha
    started = time.perf_counter()
    say = print_fn

    model, tokenizer, meta = load_pretrained("char-small", device=device)
    cfg = model.config
    say(
        f"base model: char-small, {cfg.n_layer} layers, d_model {cfg.d_model}, "
        f"context {cfg.block_size}, validation loss {meta.get('final_val_loss', '?')} "
        "(pretrained on Python's documentation)"
    )
    task = make_task("sql", n_train=4000, n_val=200, n_test=n_eval, seed=seed)
    question, answer = task.test[0]
    say(
        f"\ntask: English question -> SQL, {len(task.train)} training pairs, "
        f"{len(task.test)} test questions"
    )
    say(f"  question : {question!r}")
    say(f"  reference: {answer.strip()!r}")
    say(f"  base model writes: {_show(model, tokenizer, question)!r}")
    before = evaluate(model, tokenizer, task.test)
    say(f"  base model exact match: {before:.3f}")

    lora = LoRAConfig(r=r, alpha=alpha, dropout=dropout, target_modules=targets)
    config = finetune_recipe(steps, DEMO_LR, DEMO_BATCH, seed, eval_batches=4, progress=progress)
    say(
        f"\nLoRA: r={r}, alpha={alpha:g} (scaling {lora.scaling:g}) on {', '.join(targets)}; "
        f"{steps} steps of AdamW, lr {DEMO_LR:g}, batch {DEMO_BATCH}"
    )
    result = finetune(model, tokenizer, task, config, lora)
    counts = count_parameters(model)
    say(f"  {counts}")
    say(
        f"  trained in {result.seconds:.0f} s ({1000 * result.step_seconds:.0f} ms per step), "
        f"final train loss {result.final_train_loss:.3f}"
    )

    after = evaluate(model, tokenizer, task.test)
    say(f"\nafter LoRA the model writes: {_show(model, tokenizer, question)!r}")
    say(f"exact match: {before:.3f} -> {after:.3f} on {len(task.test)} test questions")

    x, _ = task_batch(task.test[:16], tokenizer, cfg.block_size)
    with no_grad():
        unmerged_logits = backend.to_numpy(model(x)[0].data)
        merge(model)
        merged_logits = backend.to_numpy(model(x)[0].data)
        unmerge(model)
    difference = float(np.abs(merged_logits - unmerged_logits).max())
    say(
        f"merged W = W0 + (alpha/r) B A: largest |logit difference| merged vs unmerged = "
        f"{difference:.2e} (float32)"
    )

    path = save_adapter(model, Path(out), base_model_name="char-small")
    files = ", ".join(sorted(p.name for p in path.iterdir()))
    say(f"adapter saved to {path}/ ({files})")
    total = time.perf_counter() - started
    say(f"demo finished in {total:.0f} s")
    return {
        "exact_match_before": before,
        "exact_match_after": after,
        "trainable": counts.trainable,
        "total": counts.total,
        "merge_max_abs_diff": difference,
        "seconds": total,
        "train_seconds": result.seconds,
        "adapter_dir": str(path),
    }
