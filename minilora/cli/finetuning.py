"""``minilora finetune``: train a LoRA adapter on a bundled task and save it in PEFT's layout."""

from __future__ import annotations

from minilora.cli.models import MODEL_HELP, load
from minilora.work import command as cmd
from minilora.work.command import about

TASKS = ("sql", "nli")  # minilora.work.tasks.TASKS (not imported here: --help stays light)


def add_parsers(sub) -> None:
    """Add finetune to ``sub`` (argparse's sub-parsers)."""
    p = sub.add_parser(
        "finetune",
        help="train a LoRA adapter on a task and save it",
        description="Fine-tune LoRA on a generated downstream task and save the "
        "adapter in Hugging Face PEFT's layout.",
    )
    p.add_argument("--model", default="char-small", help=MODEL_HELP)
    p.add_argument("--task", default="sql", choices=TASKS, help="sql or nli")
    p.add_argument("--steps", type=cmd.integer(1), default=600)
    p.add_argument("--batch-size", type=cmd.integer(1), default=16)
    p.add_argument("--lr", type=cmd.number(0, low_open=True), default=1e-2)
    p.add_argument(
        "--eval", type=cmd.integer(0), default=200, help="test questions to score (0: skip)"
    )
    p.add_argument("--out", required=True, help="adapter output directory")
    cmd.lora_arguments(p)
    cmd.common_arguments(p)
    cmd.outputs(p, ("out", "--out", "dir"))


def _finetune(args, command):
    from minilora.interop.adapters import save_adapter
    from minilora.lora import LoRAConfig, inject_lora
    from minilora.work.finetune import evaluate, finetune, finetune_recipe
    from minilora.work.tasks import make_task

    lora = LoRAConfig(
        r=args.r,
        alpha=2.0 * args.r if args.alpha is None else args.alpha,
        dropout=args.dropout,
        target_modules=args.targets,
    )
    model, tokenizer = load(args.model, None, args.device)
    task = make_task(args.task, n_train=4000, n_val=200, n_test=max(args.eval, 1), seed=args.seed)
    config = finetune_recipe(
        args.steps, args.lr, args.batch_size, args.seed, eval_batches=8, progress=not args.quiet
    )
    with about("--r", f"{args.r} --targets {','.join(args.targets)}"):  # do they fit the model?
        inject_lora(model, lora)  # what finetune(..., lora) would do first
    result = finetune(model, tokenizer, task, config)
    save_adapter(model, args.out, base_model_name=args.model)
    print(
        f"trained {result.trainable:,d} of {result.total:,d} parameters for {args.steps} steps "
        f"in {result.seconds:.0f} s; final train loss {result.final_train_loss:.4f}"
    )
    if args.eval:
        print(
            f"exact match on {args.eval} test questions: "
            f"{evaluate(model, tokenizer, task.test):.3f}"
        )
    print(f"adapter saved to {args.out}")


HANDLERS = {"finetune": _finetune}
