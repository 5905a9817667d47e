"""``minilora finetune`` (a LoRA adapter on a bundled task or on your JSON Lines pairs, saved in
PEFT's layout) and ``minilora data export`` (a bundled task written as such pairs)."""

from __future__ import annotations

from minilora.cli.models import MODEL_HELP, load
from minilora.work import command as cmd
from minilora.work.command import USAGE, CommandError, about

TASKS = ("sql", "nli")  # minilora.work.tasks.TASKS (not imported here: --help stays light)
SPLITS = {"train": 4000, "val": 200, "test": 200}  # finetune --task's sizes (its --eval: test)
DATA_HELP = (
    "your own pairs: a JSON Lines file, one object per line with a string 'prompt' and a string "
    "'completion' (the keys of OpenAI's legacy fine-tuning files, which litgpt also reads); see "
    "minilora data export for an example"
)


def add_parsers(sub) -> None:
    """Add finetune and data to ``sub`` (argparse's sub-parsers)."""
    p = sub.add_parser(
        "finetune",
        help="train a LoRA adapter on a task or on your prompt/completion pairs, and save it",
        description="Fine-tune LoRA on a generated downstream task (--task) or on your own "
        "prompt/completion pairs (--data FILE.jsonl), with the loss on the completion only, "
        "and save the adapter in Hugging Face PEFT's layout. With --data, a seeded 10%% of the "
        "pairs is held out unless --val gives a file; at the end the validation loss and the "
        "exact match of greedy completions on the held-out pairs are printed. Each completion "
        "ends with the stop sequence (--stop), added where missing, so the model learns where "
        "an answer ends.",
    )
    p.add_argument("--model", default="char-small", help=MODEL_HELP)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--task", default="sql", choices=TASKS, help="sql or nli (the default)")
    source.add_argument("--data", default=None, metavar="FILE.jsonl", help=DATA_HELP)
    p.add_argument(
        "--val",
        default=None,
        metavar="FILE.jsonl",
        help="with --data: held-out pairs in the same format (default: a seeded 10%% of --data)",
    )
    p.add_argument("--steps", type=cmd.integer(1), default=600)
    p.add_argument("--batch-size", type=cmd.integer(1), default=16)
    p.add_argument("--lr", type=cmd.number(0, low_open=True), default=1e-2)
    p.add_argument(
        "--eval",
        type=cmd.integer(0),
        default=200,
        help="test questions (with --data: held-out pairs, at most) to score (0: skip)",
    )
    p.add_argument(
        "--stop",
        default="\n",
        help="with --data: the sequence that ends every completion (default: a newline)",
    )
    p.add_argument(
        "--skip-unencodable",
        action="store_true",
        help="with --data: drop (and count) pairs holding characters the tokenizer cannot "
        "encode, instead of stopping at the first",
    )
    p.add_argument(
        "--truncate",
        action="store_true",
        help="with --data: cut the start of a prompt too long for the model's context (counted), "
        "instead of refusing the pair",
    )
    p.add_argument("--out", required=True, help="adapter output directory")
    cmd.lora_arguments(p)
    cmd.common_arguments(p)
    cmd.outputs(p, ("out", "--out", "dir"))

    p = sub.add_parser(
        "data",
        help="write a bundled task as prompt/completion JSON Lines",
        description="Data sets as files: 'minilora data export sql train.jsonl' writes the SQL "
        "task's training pairs in the format finetune --data reads, so you see that format on "
        "a real example (and can edit it). The splits of one --seed never share a prompt.",
    )
    data = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    e = data.add_parser(
        "export",
        help="write a bundled task's split as JSON Lines",
        description="Write one split of a bundled task as JSON Lines of prompt/completion "
        f"pairs. Sizes: {', '.join(f'{k} {v}' for k, v in SPLITS.items())} (as finetune --task "
        "draws them, seed for seed).",
    )
    e.add_argument("task", choices=TASKS, metavar="TASK", help="sql or nli")
    e.add_argument("out", metavar="OUT.jsonl", help="the file to write")
    e.add_argument("--split", choices=tuple(SPLITS), default="train", help="default: train")
    e.add_argument("--seed", type=cmd.integer(0), default=0, help="the task's seed (default 0)")
    cmd.outputs(e, ("out", "OUT.jsonl", "file"))


def _lora_config(args):
    from minilora.lora import LoRAConfig

    return LoRAConfig(
        r=args.r,
        alpha=2.0 * args.r if args.alpha is None else args.alpha,
        dropout=args.dropout,
        target_modules=args.targets,
    )


def _finetune(args, command):
    if args.data is None:
        only_with_data = {
            "--val": args.val is not None,
            "--skip-unencodable": args.skip_unencodable,
            "--truncate": args.truncate,
            "--stop": args.stop != "\n",
        }
        for flag, given in only_with_data.items():
            if given:
                raise CommandError(f"{flag} applies only with --data FILE.jsonl", USAGE)
        return _finetune_task(args)
    return _finetune_data(args)


def _train(args, model, tokenizer, task):
    """Inject LoRA, train on ``task`` (a TaskData), save the adapter; returns the result."""
    from minilora.interop.adapters import save_adapter
    from minilora.lora import inject_lora
    from minilora.work.finetune import finetune, finetune_recipe

    config = finetune_recipe(
        args.steps, args.lr, args.batch_size, args.seed, eval_batches=8, progress=not args.quiet
    )
    with about("--r", f"{args.r} --targets {','.join(args.targets)}"):  # do they fit the model?
        inject_lora(model, _lora_config(args))  # what finetune(..., lora) would do first
    result = finetune(model, tokenizer, task, config)
    save_adapter(model, args.out, base_model_name=args.model)
    print(
        f"trained {result.trainable:,d} of {result.total:,d} parameters for {args.steps} steps "
        f"in {result.seconds:.0f} s; final train loss {result.final_train_loss:.4f}"
    )
    return result


def _finetune_task(args):
    from minilora.work.finetune import evaluate
    from minilora.work.tasks import make_task

    _lora_config(args)
    model, tokenizer = load(args.model, None, args.device)
    task = make_task(args.task, n_train=4000, n_val=200, n_test=max(args.eval, 1), seed=args.seed)
    _train(args, model, tokenizer, task)
    if args.eval:
        print(
            f"exact match on {args.eval} test questions: "
            f"{evaluate(model, tokenizer, task.test):.3f}"
        )
    print(f"adapter saved to {args.out}")


def _finetune_data(args):
    from minilora.work.finetune import answer_loss, evaluate
    from minilora.work.pairs import held_out_split, read_pairs
    from minilora.work.tasks import TaskData

    _lora_config(args)
    model, tokenizer = load(args.model, None, args.device)
    block_size = model.config.block_size

    def read(argument, path):
        try:  # the errors name the file and line
            pairs = read_pairs(
                path, tokenizer, block_size, args.stop, args.skip_unencodable, args.truncate
            )
        except (ValueError, OSError) as err:
            raise CommandError(f"{argument} {err}") from err
        for line in pairs.report():
            print(line)
        return pairs

    train = read("--data", args.data).examples
    if args.val is not None:
        val = read("--val", args.val).examples
        shared = len({p for p, _ in val} & {p for p, _ in train})
        if shared:
            print(f"note: {shared} prompt(s) of {args.val} are also in {args.data}")
        held = f"{len(val)} pairs of {args.val}"
    else:
        train, val = held_out_split(train, args.seed)
        held = f"{len(val)} of {len(train) + len(val)} pairs held out (seed {args.seed})"
    print(f"fine-tuning on {len(train)} pairs; validation: {held}")
    _train(args, model, tokenizer, TaskData("data", train, val, val))
    if args.eval:
        scored = val[: args.eval]
        longest = max(len(tokenizer.encode(c)) for _, c in scored)
        loss = answer_loss(model, tokenizer, scored)
        print(f"validation loss on {len(scored)} held-out pairs: {loss:.4f}")
        match = evaluate(model, tokenizer, scored, stop=args.stop, max_new_tokens=longest + 1)
        print(f"exact match on {len(scored)} held-out pairs: {match:.3f}")
    print(
        f"adapter saved to {args.out} (minilora generate --model {args.model} --adapter "
        f"{args.out} --prompt ... --temperature 0)"
    )


def _data(args, command):
    from minilora.work.pairs import write_pairs
    from minilora.work.tasks import make_task

    task = make_task(args.task, SPLITS["train"], SPLITS["val"], SPLITS["test"], seed=args.seed)
    examples = getattr(task, args.split)
    write_pairs(args.out, examples)
    print(f"{len(examples)} {args.task} {args.split} pairs written to {args.out}")


HANDLERS = {"finetune": _finetune, "data": _data}
