"""The ``minilora`` command: demo, pretrain, generate, finetune, merge, export-hf, import-hf,
reproduce (the paper's tables and figures) and exercises (course material).

Each sub-command's ``--help`` says what it does and what every option means.

An expected error is ONE line on stderr and exit status 2 (usage) or 1, found
before any work where it can be; ``minilora --debug COMMAND`` shows the traceback
(the rule and its helpers: ``minilora.work.command``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from pathlib import Path

from minilora.work import command as cmd
from minilora.work.command import USAGE, CommandError, about
from minilora.work.memory import tune_malloc


def build_parser() -> argparse.ArgumentParser:
    parser = cmd.Parser(
        prog="minilora",
        description="LoRA (Hu et al. 2021) from scratch on a tiny NumPy/CuPy autograd engine.",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="the main job: LoRA on the SQL task, before and after",
        description="Load the shipped base model, measure exact match on the SQL "
        "task, fine-tune LoRA, measure again, merge, and save the adapter.",
    )
    p.add_argument(
        "--steps",
        type=cmd.integer(1),
        default=None,
        help="training steps (default: the demo's recipe)",
    )
    p.add_argument(
        "--eval", type=cmd.integer(1), default=None, help="number of test questions to score"
    )
    p.add_argument(
        "--out", default="runs/demo", help="where the adapter is saved (default runs/demo)"
    )
    cmd.lora_arguments(p)
    cmd.common_arguments(p)
    cmd.outputs(p, ("out", "--out", "dir"))

    p = sub.add_parser(
        "pretrain",
        help="pretrain a GPT on the bundled corpus",
        description="Pretrain a character-level GPT on the English text of Python's "
        "documentation (pydoc_data.topics), or with --corpus mixed on that text plus as much "
        "generated SQL and sentence text, and save it as a checkpoint directory.",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output directory (checkpoints last/, best/ and the final model)",
    )
    p.add_argument("--steps", type=cmd.integer(1), default=2000)
    p.add_argument("--batch-size", type=cmd.integer(1), default=16)
    p.add_argument(
        "--block-size", type=cmd.integer(1), default=128, help="context length in characters"
    )
    p.add_argument("--n-layer", type=cmd.integer(1), default=4)
    p.add_argument("--n-head", type=cmd.integer(1), default=4)
    p.add_argument("--d-model", type=cmd.integer(1), default=128, help="a multiple of --n-head")
    p.add_argument("--lr", type=cmd.number(0, low_open=True), default=3e-3)
    p.add_argument(
        "--eval-every",
        type=cmd.integer(0),
        default=250,
        help="steps between evaluations (0: at the end)",
    )
    p.add_argument("--corpus", choices=("pydoc", "mixed"), default="pydoc", help=CORPUS_HELP)
    cmd.common_arguments(p)
    cmd.outputs(p, ("out", "--out", "dir"))

    p = sub.add_parser(
        "generate",
        help="sample text from a model (optionally with an adapter)",
        description="Continue a prompt with a model: the shipped 'char-small' or a "
        "checkpoint directory, optionally with a LoRA adapter directory.",
    )
    p.add_argument("--model", default="char-small", help=MODEL_HELP)
    p.add_argument("--adapter", default=None, help="a LoRA adapter directory to apply")
    p.add_argument(
        "--prompt", default="The ", help="text to continue (characters of the model's vocabulary)"
    )
    p.add_argument("--length", type=cmd.integer(0), default=100, help="characters to generate")
    p.add_argument("--temperature", type=cmd.number(0), default=0.8, help="0 means greedy")
    p.add_argument(
        "--top-k", type=cmd.integer(1), default=None, help="sample among the k most likely only"
    )
    cmd.common_arguments(p)

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

    p = sub.add_parser(
        "merge",
        help="merge an adapter into its base model and save the result",
        description="Compute W = W0 + (alpha/r) B A once and write a plain model "
        "that runs with no extra latency.",
    )
    p.add_argument("--model", default="char-small", help=MODEL_HELP)
    p.add_argument("--adapter", required=True, help="the LoRA adapter directory")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    cmd.outputs(p, ("out", "--out", "dir"))

    p = sub.add_parser(
        "export-hf",
        help="write a model (and adapter) for Hugging Face transformers and PEFT",
        description="Convert a minilora model to a Hugging Face GPT-2 checkpoint (config.json, "
        "model.safetensors, char_tokenizer.json) that "
        "transformers.GPT2LMHeadModel.from_pretrained(OUT) loads, and optionally a LoRA adapter "
        "to a PEFT adapter in OUT/adapter that peft.PeftModel.from_pretrained(model, "
        "'OUT/adapter') loads. q_proj, k_proj and v_proj are fused into GPT-2's c_attn; the "
        "result computes the same logits. Nothing is written unless the whole conversion "
        "succeeds.",
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("out", metavar="OUT", help="a new (or empty) output directory")
    p.add_argument(
        "--adapter",
        default=None,
        metavar="DIR",
        help="a minilora LoRA adapter directory, written as a PEFT adapter to OUT/adapter",
    )
    cmd.outputs(p, ("out", "OUT", "dir"))

    p = sub.add_parser(
        "import-hf",
        help="read a Hugging Face GPT-2 checkpoint (and a PEFT adapter for it)",
        description="Convert a Hugging Face GPT-2 checkpoint directory (config.json + "
        "model.safetensors, as GPT2LMHeadModel.save_pretrained writes them) into a minilora "
        "checkpoint, and optionally a PEFT LoRA adapter made for it into a minilora adapter in "
        "OUT/adapter. GPT-2's fused c_attn is split into q_proj, k_proj and v_proj. What cannot "
        "be converted exactly (another activation, an untied head, DoRA, a LoRA bias, ...) is "
        "refused by name, and nothing is written unless the whole conversion succeeds.",
    )
    p.add_argument("directory", metavar="DIR", help="a GPT-2 checkpoint directory")
    p.add_argument("out", metavar="OUT", help="a new (or empty) output directory")
    p.add_argument(
        "--adapter",
        default=None,
        metavar="DIR",
        help="a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors), "
        "written as a minilora adapter to OUT/adapter",
    )
    cmd.outputs(p, ("out", "OUT", "dir"))
    for module_name in COMMAND_MODULES:
        COMMANDS.update(importlib.import_module(module_name).add_cli(sub))
    for p in sub.choices.values():  # `minilora COMMAND --debug ...` works too
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


MODEL_HELP = "a shipped model (char-small, char-small-mixed) or a checkpoint directory"
CORPUS_HELP = "pydoc (char-small's) or mixed (char-small-mixed's: minilora.work.mixed_corpus)"
DEBUG_HELP = "on an error, show the traceback instead of one line (also MINILORA_DEBUG=1)"
TASKS = ("sql", "nli")  # minilora.work.tasks.TASKS (not imported here: --help stays light)


def main(argv=None) -> int:
    """Run the command line ``argv``; 0 on success. A failure prints one line on stderr and
    raises ``CommandExit`` (a SystemExit: status 2 for usage errors, 1 otherwise)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("MINILORA_DEBUG", "").strip() not in ("", "0")
    sub_command = getattr(args, "exercises_command", None) or getattr(args, "course_command", None)
    prog = " ".join(["minilora", args.command, sub_command or ""])
    prog = prog.strip()
    command = "minilora " + " ".join(shlex.quote(a) for a in argv)

    def work():
        cmd.check_device(args)
        cmd.check_outputs(args)
        tune_malloc()  # long work starts here (see minilora.work.memory)
        return COMMANDS[args.command](args, command) or 0

    return cmd.run(prog, work, debug)


def _pretrain(args, command):
    from minilora.transformer import GPTConfig
    from minilora.work.pretrained import SMALL_TRAINING, pretrain
    from minilora.work.train import TrainConfig

    if args.d_model % args.n_head:
        raise CommandError(
            f"--d-model {args.d_model} is not a multiple of --n-head {args.n_head}; each head "
            "gets d_model / n_head dimensions",
            USAGE,
        )
    model_config = GPTConfig(
        vocab_size=1,
        block_size=args.block_size,
        n_layer=args.n_layer,
        n_head=args.n_head,
        d_model=args.d_model,
    )
    train_config = TrainConfig(
        **{
            **SMALL_TRAINING.__dict__,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "warmup": min(SMALL_TRAINING.warmup, max(1, args.steps // 10)),
            "eval_every": args.eval_every,
            "seed": args.seed,
            "progress": not args.quiet,
        }
    )
    _, _, result = pretrain(
        model_config, train_config, args.out, command, device=args.device, corpus=args.corpus
    )
    print(
        f"pretrained {args.steps} steps in {result.seconds:.0f} s: train loss "
        f"{result.final_train_loss:.4f}, validation loss {result.history[-1]['val_loss']:.4f}"
    )
    print(f"saved to {args.out}")


def _load(model_spec, adapter, device, argument="--model", need_tokenizer=True):
    """The model (a shipped name or a checkpoint directory), with ``adapter`` loaded if given."""
    from minilora.interop.adapters import load_adapter
    from minilora.work.pretrained import PRETRAINED, resolve_model

    if model_spec not in PRETRAINED and not Path(model_spec).is_dir():
        raise CommandError(
            f"{argument} {model_spec}: no such checkpoint directory, and not a shipped model "
            f"(shipped: {', '.join(PRETRAINED)})"
        )
    with about(argument, model_spec):
        model, tokenizer, meta = resolve_model(model_spec, device)
    if tokenizer is None and need_tokenizer:
        raise CommandError(f"{argument} {model_spec}: the checkpoint has no tokenizer")
    if adapter:
        with about("--adapter", adapter):
            load_adapter(model, adapter)
    return model, tokenizer


def _generate(args, command):
    if not args.prompt:
        raise CommandError("--prompt '': expected at least one character to continue", USAGE)
    model, tokenizer = _load(args.model, args.adapter, args.device)
    with about("--prompt", repr(args.prompt), USAGE):
        prompt = tokenizer.encode(args.prompt)
    out = model.generate(
        prompt, args.length, temperature=args.temperature, top_k=args.top_k, seed=args.seed
    )
    print(tokenizer.decode(out[0]))


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
    model, tokenizer = _load(args.model, None, args.device)
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


def _merge(args, command):
    from minilora.lora import merge_and_unload
    from minilora.work.io import save_model

    model, tokenizer = _load(args.model, args.adapter, None)
    with about("--adapter", args.adapter):  # a damaged adapter: nothing merged, nothing written
        merge_and_unload(model)
    save_model(
        model, Path(args.out), tokenizer, {"command": command, "merged_adapter": args.adapter}
    )
    print(f"merged model saved to {args.out}")


def _demo(args, command):
    from minilora.demo import run_demo

    run_demo(
        steps=args.steps,
        n_eval=args.eval,
        out=args.out,
        r=args.r,
        alpha=args.alpha,
        targets=args.targets,
        dropout=args.dropout,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )


def _export_hf(args, command):
    from minilora.interop.hf import save_gpt2

    model, tokenizer = _load(args.model, args.adapter, None, "MODEL", need_tokenizer=False)
    with about("OUT", args.out):
        save_gpt2(model, args.out, tokenizer, base_model_name=args.model)
    print(
        f"GPT-2 checkpoint written to {args.out}: load it with "
        f"transformers.GPT2LMHeadModel.from_pretrained({str(args.out)!r})"
    )
    if args.adapter:
        print(
            f"PEFT adapter written to {Path(args.out) / 'adapter'}: load it with "
            "peft.PeftModel.from_pretrained(model, that directory)"
        )


def _import_hf(args, command):
    from minilora.interop.hf import import_gpt2

    for argument, path in (("DIR", args.directory), ("--adapter", args.adapter)):
        if path is not None and not Path(path).is_dir():
            raise CommandError(f"{argument} {path}: no such directory")
    import_gpt2(args.directory, args.out, args.adapter, meta={"command": command})
    print(f"minilora checkpoint written to {args.out}")
    if args.adapter:
        adapter = Path(args.out) / "adapter"
        print(
            f"LoRA adapter written to {adapter} (minilora generate --model {args.out} "
            f"--adapter {adapter})"
        )


# Sub-commands that live beside the code they run: each module's add_cli(subparsers) adds its
# parsers and returns {name: handler(args, command)}.
COMMAND_MODULES = (
    "minilora.paper.reproduce",
    "minilora.teach.exercises",
    "minilora.teach.student",
    "minilora.teach.grade",
)

COMMANDS = {
    "demo": _demo,
    "pretrain": _pretrain,
    "generate": _generate,
    "finetune": _finetune,
    "merge": _merge,
    "export-hf": _export_hf,
    "import-hf": _import_hf,
}

if __name__ == "__main__":
    sys.exit(main())
