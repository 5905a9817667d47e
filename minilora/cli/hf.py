"""``minilora export-hf`` and ``import-hf``: models and adapters to and from Hugging Face's
transformers and PEFT (``minilora.interop.hf``)."""

from __future__ import annotations

from pathlib import Path

from minilora.cli.models import MODEL_HELP, load
from minilora.work import command as cmd
from minilora.work.command import CommandError, about


def add_parsers(sub) -> None:
    """Add export-hf and import-hf to ``sub`` (argparse's sub-parsers)."""
    p = sub.add_parser(
        "export-hf",
        help="write a model (and adapter) for Hugging Face transformers and PEFT",
        description="Convert a minilora model to a Hugging Face GPT-2 checkpoint (config.json, "
        "model.safetensors and the tokenizer: char_tokenizer.json, or for a BPE tokenizer.json "
        "and tokenizer_config.json, which transformers.AutoTokenizer loads) that "
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
        "model.safetensors, as GPT2LMHeadModel.save_pretrained writes them) and its tokenizer "
        "(GPT-2's BPE from tokenizer.json, or vocab.json + merges.txt, with the optional "
        "'tokenizers' library: pip install \"minilora[bpe]\"; or minilora's "
        "char_tokenizer.json) into a minilora checkpoint, and optionally a PEFT LoRA adapter "
        "made for it into a minilora adapter in OUT/adapter. GPT-2's fused c_attn is split "
        "into q_proj, k_proj and v_proj. What cannot be converted exactly (another activation, "
        "an untied head, DoRA, a LoRA bias, ...) is refused by name, and nothing is written "
        "unless the whole conversion succeeds.",
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


def _export_hf(args, command):
    from minilora.interop.hf import save_gpt2

    model, tokenizer = load(args.model, args.adapter, None, "MODEL", need_tokenizer=False)
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


HANDLERS = {"export-hf": _export_hf, "import-hf": _import_hf}
