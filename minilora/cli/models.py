"""``minilora demo``, ``pretrain``, ``generate`` and ``merge``: making and running a model.

``load`` (a shipped model's name or a checkpoint directory, with an adapter) is shared
by every sub-command that reads a model.
"""

from __future__ import annotations

from pathlib import Path

from minilora.work import command as cmd
from minilora.work.command import USAGE, CommandError, about

MODEL_HELP = "a shipped model (char-small, char-small-mixed) or a checkpoint directory"
CORPUS_HELP = (
    "pydoc (char-small's), mixed (char-small-mixed's: minilora.work.mixed_corpus) or tasklang "
    "(char-small-tasklang's: minilora.work.tasklang_corpus)"
)
CORPORA = ("pydoc", "mixed", "tasklang")  # minilora.work.mixed_corpus.CORPORA (tested equal)


def add_parsers(sub) -> None:
    """Add demo, pretrain, generate and merge to ``sub`` (argparse's sub-parsers)."""
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
        help="pretrain a GPT on the bundled corpus or on your text files",
        description="Pretrain a character-level GPT on the English text of Python's "
        "documentation (pydoc_data.topics), or with --corpus mixed on that text plus as much "
        "generated SQL and sentence text, with --corpus tasklang on that text plus as much text "
        "in the tasks' own formats about other things, or with --text on your own UTF-8 text "
        "files (the tokenizer is then built from their characters plus printable ASCII; each "
        "file's last 10%% validates), and save it as a checkpoint directory.",
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
    source = p.add_mutually_exclusive_group()
    source.add_argument("--corpus", choices=CORPORA, default="pydoc", help=CORPUS_HELP)
    source.add_argument(
        "--text",
        nargs="+",
        metavar="FILE",
        default=None,
        help="your own plain-text files (UTF-8) instead of a bundled corpus",
    )
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
        "--prompt",
        default="The ",
        help="text to continue (for a character-level model: characters of its vocabulary)",
    )
    p.add_argument(
        "--length",
        type=cmd.integer(0),
        default=100,
        help="tokens to generate (characters, for a character-level model)",
    )
    p.add_argument("--temperature", type=cmd.number(0), default=0.8, help="0 means greedy")
    p.add_argument(
        "--top-k", type=cmd.integer(1), default=None, help="sample among the k most likely only"
    )
    p.add_argument(
        "--stop",
        default=None,
        metavar="TEXT",
        help="end the output after the first TEXT the model writes (e.g. a newline, the stop "
        "sequence of finetune --data)",
    )
    cmd.common_arguments(p)

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


def load(model_spec, adapter, device, argument="--model", need_tokenizer=True):
    """(model, tokenizer): a shipped name or a checkpoint directory, with ``adapter`` if given."""
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
    text = None
    if args.text:  # read and checked before any work: a text too short is refused now
        from minilora.work.text_files import read_pretraining_text

        try:
            text = read_pretraining_text(args.text)  # errors name the file
        except (ValueError, OSError) as err:
            raise CommandError(f"--text {err}") from err
        with about("--text", " ".join(args.text)):
            text.check_fits(args.block_size)
    _, _, result = pretrain(
        model_config,
        train_config,
        args.out,
        command,
        device=args.device,
        corpus=args.corpus,
        text=text,
    )
    print(
        f"pretrained {args.steps} steps in {result.seconds:.0f} s: train loss "
        f"{result.final_train_loss:.4f}, validation loss {result.history[-1]['val_loss']:.4f}"
    )
    print(f"saved to {args.out}")


def _generate(args, command):
    if not args.prompt:
        raise CommandError("--prompt '': expected at least one character to continue", USAGE)
    model, tokenizer = load(args.model, args.adapter, args.device)
    with about("--prompt", repr(args.prompt), USAGE):
        prompt = tokenizer.encode(args.prompt)
    out = model.generate(
        prompt, args.length, temperature=args.temperature, top_k=args.top_k, seed=args.seed
    )
    text = tokenizer.decode(out[0])
    continuation = tokenizer.decode(out[0, len(prompt) :])
    if args.stop and args.stop in continuation:  # the prompt's own stops do not count
        text = tokenizer.decode(prompt) + continuation.split(args.stop)[0] + args.stop
    print(text)


def _merge(args, command):
    from minilora.lora import merge_and_unload
    from minilora.work.io import save_model

    model, tokenizer = load(args.model, args.adapter, None)
    with about("--adapter", args.adapter):  # a damaged adapter: nothing merged, nothing written
        merge_and_unload(model)
    save_model(
        model, Path(args.out), tokenizer, {"command": command, "merged_adapter": args.adapter}
    )
    print(f"merged model saved to {args.out}")


HANDLERS = {"demo": _demo, "pretrain": _pretrain, "generate": _generate, "merge": _merge}
