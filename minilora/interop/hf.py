"""GPT-2 checkpoints in and out: minilora's GPT <-> Hugging Face transformers' layout.

NumPy and safetensors only; torch is never needed here. A directory written by
``save_gpt2`` loads with ``transformers.GPT2LMHeadModel.from_pretrained(dir)``
(no missing or unexpected keys), and ``load_gpt2`` reads what
``GPT2LMHeadModel.save_pretrained(dir)`` writes. Adapters: ``hf_adapters``.

Two differences of layout, no difference of arithmetic:

* **Conv1D stores its weight transposed.** GPT-2 was written in TensorFlow,
  and transformers keeps its ``Conv1D`` layer: ``y = x @ W + b`` with ``W`` of
  shape (in, out). Our ``Linear`` computes ``y = x @ W.T + b`` with ``W`` of
  shape (out, in), as ``torch.nn.Linear``. So every GPT-2 weight of
  ``c_attn``, ``c_proj`` and ``c_fc`` is the transpose of ours; biases and
  LayerNorm parameters carry over as they are.
* **q, k and v are one fused layer.** GPT-2's ``attn.c_attn`` maps C to 3C in
  one product; the outputs are [q | k | v] side by side, then each is cut into
  heads. Its weight (C, 3C) is therefore [Wq^T | Wk^T | Wv^T], and its bias
  [bq | bk | bv]. We keep three Linear layers because LoRA adapts Wq and Wv
  separately (paper, section 4.2); importing cuts c_attn in three, exporting
  stacks them again.

Names: wte, wpe, h.{i}.ln_1, h.{i}.attn.c_attn, h.{i}.attn.c_proj (our o_proj),
h.{i}.ln_2, h.{i}.mlp.c_fc (our fc_in), h.{i}.mlp.c_proj (our fc_out), ln_f,
under the prefix ``transformer.`` (``GPT2LMHeadModel``) or none (``GPT2Model``).
The LM head is tied to wte in both models, so ``lm_head.weight`` is not stored.

Every conversion is checked completely before anything is written, and a
directory is written under a temporary name beside the target and renamed into
place (``io.atomic_directory``): an error or an interruption leaves no
half-written target. The target must be new or empty: an export never
replaces a directory.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from minilora import backend
from minilora.interop.hf_tokenizer import (
    CHAR_NAME,
    read_tokenizer,
    special_token_ids,
    write_tokenizer,
)
from minilora.transformer import GPT, GPTConfig
from minilora.work import io

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
TOKENIZER_NAME = CHAR_NAME  # our character vocabulary, plain JSON (GPT-2's BPE: hf_tokenizer)
ADAPTER_SUBDIR = "adapter"
# GPT-2's "gelu_new" and torch's tanh-approximate GELU are one formula, ours (functional.gelu).
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
_BUFFER = re.compile(r"h\.\d+\.attn\.(masked_)?bias")  # causal-mask buffers of old checkpoints


# ---- config --------------------------------------------------------------------------


def gpt2_config_dict(config: GPTConfig, tokenizer=None) -> dict:
    """The config.json of transformers' GPT2LMHeadModel for our ``config``."""
    bos, eos = special_token_ids(tokenizer)
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.d_model,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,  # 4 * n_embd
        "activation_function": "gelu_new",
        "layer_norm_epsilon": config.layer_norm_eps,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
        "bos_token_id": bos,  # GPT-2's <|endoftext|>; a character vocabulary has none
        "eos_token_id": eos,
        "use_cache": True,
        "dtype": "float32",
    }


def config_from_gpt2(d: dict, path="config.json") -> GPTConfig:
    """Our GPTConfig from a GPT-2 config.json; what our GPT cannot compute is refused by name.

    Missing fields take GPT2Config's defaults, as transformers does. The three
    dropout rates (used only in training) become our one ``dropout``: resid_pdrop.
    """
    if d.get("model_type") != "gpt2":
        raise io.CheckpointError(
            f"{path}: model_type is {d.get('model_type')!r}, expected 'gpt2' "
            "(only GPT-2 checkpoints can be imported)"
        )
    n_embd = d.get("n_embd", 768)
    must = {  # field: (value found or GPT-2's default, accepted values, what we need)
        "activation_function": (
            d.get("activation_function", "gelu_new"),
            ACTIVATIONS,
            "the tanh GELU ('gelu_new')",
        ),
        "tie_word_embeddings": (
            d.get("tie_word_embeddings", True),
            (True,),
            "true (our LM head is the token embedding)",
        ),
        "n_inner": (d.get("n_inner"), (None, 4 * n_embd), f"null or 4 * n_embd = {4 * n_embd}"),
        "scale_attn_weights": (d.get("scale_attn_weights", True), (True,), "true (1/sqrt(D))"),
        "scale_attn_by_inverse_layer_idx": (
            d.get("scale_attn_by_inverse_layer_idx", False),
            (False,),
            "false",
        ),
        "add_cross_attention": (d.get("add_cross_attention", False), (False,), "false"),
    }
    for field, (value, accepted, expected) in must.items():
        if value not in accepted or isinstance(value, bool) != isinstance(accepted[0], bool):
            raise io.CheckpointError(
                f"{path}: field {field!r} is {value!r}; minilora's GPT needs {expected}"
            )
    sizes = {
        "vocab_size": d.get("vocab_size", 50257),
        "block_size": d.get("n_positions", 1024),
        "n_layer": d.get("n_layer", 12),
        "n_head": d.get("n_head", 12),
        "d_model": n_embd,
    }
    try:
        return GPTConfig(
            **sizes,
            dropout=float(d.get("resid_pdrop", 0.1)),
            bias=True,
            layer_norm_eps=float(d.get("layer_norm_epsilon", 1e-5)),
        )
    except (ValueError, TypeError) as err:
        raise io.CheckpointError(f"{path}: {err}") from None


# ---- weights -------------------------------------------------------------------------

# (GPT-2 name in block i, our name in block i, is a Conv1D weight to transpose)
_BLOCK = [
    ("ln_1", "ln_1", False),
    ("ln_2", "ln_2", False),
    ("attn.c_proj", "attn.o_proj", True),
    ("mlp.c_fc", "mlp.fc_in", True),
    ("mlp.c_proj", "mlp.fc_out", True),
]


def gpt2_shapes(config: GPTConfig) -> dict:
    """Every key GPT-2 stores (without the ``transformer.`` prefix) and its shape."""
    C, V, P = config.d_model, config.vocab_size, config.block_size
    shapes = {"wte.weight": (V, C), "wpe.weight": (P, C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for i in range(config.n_layer):
        for name, (n_in, n_out) in {
            "ln_1": (None, C),
            "ln_2": (None, C),
            "attn.c_attn": (C, 3 * C),
            "attn.c_proj": (C, C),
            "mlp.c_fc": (C, 4 * C),
            "mlp.c_proj": (4 * C, C),
        }.items():
            shapes[f"h.{i}.{name}.weight"] = (n_out,) if n_in is None else (n_in, n_out)
            shapes[f"h.{i}.{name}.bias"] = (n_out,)
    return shapes


def to_gpt2_state(model: GPT) -> dict:
    """Our GPT's weights (base weights, if LoRA is injected) as GPT-2 arrays, float32."""
    from minilora.lora import lora_layers

    merged = [n for n, layer in lora_layers(model).items() if layer.merged]
    if merged:
        raise ValueError(
            f"the adapter is merged into {merged[0]} (and others): the base weights "
            "are not available; call unmerge(model) or merge_and_unload(model) first"
        )
    ours = {
        n.replace(".base_layer", ""): backend.to_numpy(p.data).astype(np.float32)
        for n, p in model.named_parameters()
        if ".lora_A." not in n and ".lora_B." not in n
    }
    config = model.config
    shapes = gpt2_shapes(config)

    def get(name, shape):  # a model built with bias=False stores no biases: they are zeros
        return ours[name] if name in ours else np.zeros(shape, np.float32)

    out = {k: ours[k] for k in ("wte.weight", "wpe.weight")}
    out["ln_f.weight"], out["ln_f.bias"] = ours["ln_f.weight"], get("ln_f.bias", (config.d_model,))
    for i in range(config.n_layer):
        h, b = f"h.{i}.", f"blocks.{i}."
        qkv = [f"{b}attn.{p}_proj" for p in "qkv"]
        out[h + "attn.c_attn.weight"] = np.concatenate([ours[n + ".weight"] for n in qkv]).T
        out[h + "attn.c_attn.bias"] = np.concatenate(
            [get(n + ".bias", (config.d_model,)) for n in qkv]
        )
        for theirs, mine, conv1d in _BLOCK:
            w = ours[f"{b}{mine}.weight"]
            out[f"{h}{theirs}.weight"] = w.T if conv1d else w
            out[f"{h}{theirs}.bias"] = get(f"{b}{mine}.bias", shapes[f"{h}{theirs}.bias"])
    return {"transformer." + k: np.ascontiguousarray(v) for k, v in out.items()}


def from_gpt2_state(state: dict, config: GPTConfig, path="model.safetensors") -> dict:
    """GPT-2 arrays (with or without ``transformer.``) -> our state dict, every key checked."""
    plain = {k.removeprefix("transformer."): v for k, v in state.items()}
    plain.pop("lm_head.weight", None)  # the tied head: wte itself (config.json says so)
    for key in [k for k in plain if _BUFFER.fullmatch(k)]:
        del plain[key]
    shapes = gpt2_shapes(config)
    problems = [
        f"missing key {k} (expected shape {s})" for k, s in shapes.items() if k not in plain
    ]
    problems += [
        f"unexpected key {k} (shape {tuple(v.shape)})" for k, v in plain.items() if k not in shapes
    ]
    problems += [
        f"key {k}: shape {tuple(plain[k].shape)}, expected {s}"
        for k, s in shapes.items()
        if k in plain and tuple(plain[k].shape) != s
    ]
    if problems:
        raise io.CheckpointError(
            f"{path} does not fit its config.json (n_layer={config.n_layer}, "
            f"n_embd={config.d_model}, vocab_size={config.vocab_size}, "
            f"n_positions={config.block_size}):\n  " + "\n  ".join(problems)
        )
    ours = {k: plain[k] for k in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias")}
    for i in range(config.n_layer):
        h, b = f"h.{i}.", f"blocks.{i}."
        weights = np.split(plain[h + "attn.c_attn.weight"].T, 3, axis=0)  # (3C, C) -> 3 x (C, C)
        biases = np.split(plain[h + "attn.c_attn.bias"], 3)
        for p, w, bias in zip("qkv", weights, biases):
            ours[f"{b}attn.{p}_proj.weight"], ours[f"{b}attn.{p}_proj.bias"] = w, bias
        for theirs, mine, conv1d in _BLOCK:
            w = plain[f"{h}{theirs}.weight"]
            ours[f"{b}{mine}.weight"] = w.T if conv1d else w
            ours[f"{b}{mine}.bias"] = plain[f"{h}{theirs}.bias"]
    return {k: np.ascontiguousarray(v) for k, v in ours.items()}


def _read_weights(directory: Path) -> tuple[dict, Path]:
    """The arrays of model.safetensors, or of every shard a safetensors index names."""
    if (directory / WEIGHTS_NAME).is_file():
        return io.load_arrays(directory / WEIGHTS_NAME), directory / WEIGHTS_NAME
    if (directory / INDEX_NAME).is_file():
        index = io.read_json(directory / INDEX_NAME)
        state = {}
        for shard in sorted(set(index.get("weight_map", {}).values())):
            state.update(io.load_arrays(directory / shard))
        return state, directory / INDEX_NAME
    found = sorted(p.name for p in directory.iterdir())
    raise io.CheckpointError(
        f"{directory}: no {WEIGHTS_NAME} (found {found}); only safetensors weights are read "
        "(save with save_pretrained(dir, safe_serialization=True))"
    )


def load_gpt2(directory, dtype=np.float32):
    """Read a GPT-2 checkpoint directory: returns (GPT in eval mode, its tokenizer or None).

    The tokenizer: ours (char_tokenizer.json) or GPT-2's BPE (tokenizer.json, or
    vocab.json + merges.txt), read by ``minilora.interop.hf_tokenizer``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise io.CheckpointError(f"{directory}: not a directory (expected a GPT-2 checkpoint)")
    config = config_from_gpt2(io.read_json(directory / CONFIG_NAME), directory / CONFIG_NAME)
    state, weights_path = _read_weights(directory)
    model = GPT(config, generator=np.random.default_rng(0))
    model.to(dtype=dtype)
    model.load_state_dict(from_gpt2_state(state, config, weights_path))
    model.eval()  # as from_pretrained: GPT-2's dropout (0.1) only while training
    return model, read_tokenizer(directory, config.vocab_size)


# ---- writing whole directories -------------------------------------------------------


def write_gpt2(model: GPT, directory, tokenizer=None) -> None:
    """Write config.json, model.safetensors and the tokenizer's files into ``directory``."""
    directory = Path(directory)
    io.save_arrays(directory / WEIGHTS_NAME, to_gpt2_state(model), metadata={"format": "pt"})
    io.write_json(directory / CONFIG_NAME, gpt2_config_dict(model.config, tokenizer))
    if tokenizer is not None:
        write_tokenizer(tokenizer, directory, model.config.block_size)


def save_gpt2(
    model: GPT,
    directory,
    tokenizer=None,
    adapter_name: str | None = None,
    base_model_name: str | None = None,
) -> Path:
    """Export ``model`` as a transformers GPT-2 checkpoint directory (new or empty).

    If LoRA is injected (and not merged), the base weights go to ``directory`` and
    the adapter (the active one, or ``adapter_name``) to ``directory/adapter`` as
    a PEFT adapter for that model.
    """
    from minilora.interop.hf_adapters import write_peft_adapter
    from minilora.lora import lora_layers

    to_gpt2_state(model)  # refuse a merged model before creating anything
    with io.atomic_directory(directory, replace=False) as tmp:
        write_gpt2(model, tmp, tokenizer)
        if lora_layers(model):
            write_peft_adapter(model, tmp / ADAPTER_SUBDIR, adapter_name, base_model_name)
    return Path(directory)


def import_gpt2(source, out, adapter=None, meta: dict | None = None) -> Path:
    """Convert a GPT-2 checkpoint (and a PEFT adapter for it) into a minilora checkpoint.

    Writes ``out`` (config.json + model.safetensors, minilora's format) and, with
    ``adapter``, ``out/adapter`` in minilora's adapter layout.
    """
    from minilora.interop.adapters import save_adapter
    from minilora.interop.hf_adapters import inject_peft_adapter

    model, tokenizer = load_gpt2(source)
    meta = {"imported_from": str(source), **(meta or {})}
    with io.atomic_directory(out, replace=False) as tmp:
        io.save_model(model, tmp, tokenizer, meta)
        if adapter is not None:
            inject_peft_adapter(model, adapter)
            save_adapter(model, tmp / ADAPTER_SUBDIR, base_model_name=str(out))
    return Path(out)
