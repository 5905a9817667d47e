"""The ``minilora`` command: demo, pretrain, generate, finetune, merge, export-hf, import-hf,
reproduce (the paper's tables and figures) and exercises (course material).

Each sub-command's ``--help`` says what it does and what every option means.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from pathlib import Path

from minilora import backend


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed", type=int, default=0, help="random seed (runs repeat bit for bit on the CPU)"
    )
    p.add_argument(
        "--device",
        default=None,
        choices=["cpu", "cuda"],
        help="where to compute (default: $MINILORA_DEVICE or cpu)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _lora_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--r", type=int, default=8, help="LoRA rank r (default 8)")
    p.add_argument(
        "--alpha", type=float, default=None, help="LoRA alpha; dW is scaled by alpha/r (default 2r)"
    )
    p.add_argument(
        "--targets",
        default="q_proj,v_proj",
        help="comma-separated Linear names to adapt (default q_proj,v_proj)",
    )
    p.add_argument("--dropout", type=float, default=0.0, help="dropout on the adapter input")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minilora",
        description="LoRA (Hu et al. 2021) from scratch on a tiny NumPy/CuPy autograd engine.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="the main job: LoRA on the SQL task, before and after",
        description="Load the shipped base model, measure exact match on the SQL "
        "task, fine-tune LoRA, measure again, merge, and save the adapter.",
    )
    p.add_argument(
        "--steps", type=int, default=None, help="training steps (default: the demo's recipe)"
    )
    p.add_argument("--eval", type=int, default=None, help="number of test questions to score")
    p.add_argument(
        "--out", default="runs/demo", help="where the adapter is saved (default runs/demo)"
    )
    _lora_args(p)
    _add_common(p)

    p = sub.add_parser(
        "pretrain",
        help="pretrain a GPT on the bundled corpus",
        description="Pretrain a character-level GPT on the English text of Python's "
        "documentation (pydoc_data.topics) and save it as a checkpoint directory.",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output directory (checkpoints last/, best/ and the final model)",
    )
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--block-size", type=int, default=128, help="context length in characters")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-every", type=int, default=250)
    _add_common(p)

    p = sub.add_parser(
        "generate",
        help="sample text from a model (optionally with an adapter)",
        description="Continue a prompt with a model: the shipped 'char-small' or a "
        "checkpoint directory, optionally with a LoRA adapter directory.",
    )
    p.add_argument("--model", default="char-small", help="'char-small' or a checkpoint directory")
    p.add_argument("--adapter", default=None, help="a LoRA adapter directory to apply")
    p.add_argument("--prompt", default="The ", help="text to continue")
    p.add_argument("--length", type=int, default=100, help="characters to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0 means greedy")
    p.add_argument("--top-k", type=int, default=None)
    _add_common(p)

    p = sub.add_parser(
        "finetune",
        help="train a LoRA adapter on a task and save it",
        description="Fine-tune LoRA on a generated downstream task and save the "
        "adapter in Hugging Face PEFT's layout.",
    )
    p.add_argument("--model", default="char-small", help="'char-small' or a checkpoint directory")
    p.add_argument("--task", default="sql", help="sql or nli")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--eval", type=int, default=200, help="test questions to score (0: skip)")
    p.add_argument("--out", required=True, help="adapter output directory")
    _lora_args(p)
    _add_common(p)

    p = sub.add_parser(
        "merge",
        help="merge an adapter into its base model and save the result",
        description="Compute W = W0 + (alpha/r) B A once and write a plain model "
        "that runs with no extra latency.",
    )
    p.add_argument("--model", default="char-small", help="'char-small' or a checkpoint directory")
    p.add_argument("--adapter", required=True, help="the LoRA adapter directory")
    p.add_argument("--out", required=True, help="output checkpoint directory")

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
    p.add_argument("model", metavar="MODEL", help="'char-small' or a minilora checkpoint directory")
    p.add_argument("out", metavar="OUT", help="a new (or empty) output directory")
    p.add_argument(
        "--adapter",
        default=None,
        metavar="DIR",
        help="a minilora LoRA adapter directory, written as a PEFT adapter to OUT/adapter",
    )

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
    for module_name in COMMAND_MODULES:
        COMMANDS.update(importlib.import_module(module_name).add_cli(sub))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    backend.tune_malloc()  # long work starts here (see backend.tune_malloc)
    command = "minilora " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    return COMMANDS[args.command](args, command) or 0


def _pretrain(args, command):
    from minilora.transformer import GPTConfig
    from minilora.work.pretrained import SMALL_TRAINING, pretrain
    from minilora.work.train import TrainConfig

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
    _, _, result = pretrain(model_config, train_config, args.out, command, device=args.device)
    print(
        f"pretrained {args.steps} steps in {result.seconds:.0f} s: train loss "
        f"{result.final_train_loss:.4f}, validation loss {result.history[-1]['val_loss']:.4f}"
    )
    print(f"saved to {args.out}")


def _load(model_spec, adapter, device):
    from minilora.interop.adapters import load_adapter
    from minilora.work.pretrained import resolve_model

    model, tokenizer, meta = resolve_model(model_spec, device)
    if tokenizer is None:
        raise SystemExit(f"{model_spec}: the checkpoint has no tokenizer; cannot encode text")
    if adapter:
        load_adapter(model, adapter)
    return model, tokenizer


def _generate(args, command):
    model, tokenizer = _load(args.model, args.adapter, args.device)
    prompt = tokenizer.encode(args.prompt)
    if args.length < 0:
        raise SystemExit(f"--length {args.length}: expected a number of characters >= 0")
    out = model.generate(
        prompt, args.length, temperature=args.temperature, top_k=args.top_k, seed=args.seed
    )
    print(tokenizer.decode(out[0]))


def _finetune(args, command):
    from minilora.interop.adapters import save_adapter
    from minilora.lora import LoRAConfig
    from minilora.work.finetune import evaluate, finetune, finetune_recipe
    from minilora.work.tasks import make_task

    model, tokenizer = _load(args.model, None, args.device)
    task = make_task(args.task, n_train=4000, n_val=200, n_test=max(args.eval, 1), seed=args.seed)
    lora = LoRAConfig(
        r=args.r,
        alpha=args.alpha or 2.0 * args.r,
        dropout=args.dropout,
        target_modules=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
    )
    config = finetune_recipe(
        args.steps, args.lr, args.batch_size, args.seed, eval_batches=8, progress=not args.quiet
    )
    result = finetune(model, tokenizer, task, config, lora)
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
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
        dropout=args.dropout,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )


def _export_hf(args, command):
    from minilora.interop.adapters import load_adapter
    from minilora.interop.hf import save_gpt2
    from minilora.work.io import CheckpointError
    from minilora.work.pretrained import resolve_model

    try:
        model, tokenizer, _ = resolve_model(args.model)
        if args.adapter:
            load_adapter(model, args.adapter)
        save_gpt2(model, args.out, tokenizer, base_model_name=args.model)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        raise SystemExit(f"minilora export-hf: {err}") from None
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
    from minilora.work.io import CheckpointError

    try:
        import_gpt2(args.directory, args.out, args.adapter, meta={"command": command})
    except (CheckpointError, ValueError) as err:
        raise SystemExit(f"minilora import-hf: {err}") from None
    print(f"minilora checkpoint written to {args.out}")
    if args.adapter:
        adapter = Path(args.out) / "adapter"
        print(
            f"LoRA adapter written to {adapter} (minilora generate --model {args.out} "
            f"--adapter {adapter})"
        )


# Sub-commands that live beside the code they run: each module's add_cli(subparsers) adds its
# parsers and returns {name: handler(args, command)}.
COMMAND_MODULES = ("minilora.paper.reproduce", "minilora.teach.exercises")

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
