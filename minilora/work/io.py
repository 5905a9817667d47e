"""Reading and writing weights: safetensors for arrays, JSON for everything else.

Two promises: nothing is lost (every file and every checkpoint directory is
written under a temporary name beside its target and renamed into place, so
an interrupted save leaves the old one whole: ``minilora.work.files``), and
loading never runs code (safetensors and JSON hold data only; there is no
pickle anywhere in minilora).

A model checkpoint is a directory::

    config.json         {"format": "minilora", "model_type": "gpt", "config": {...},
                         "tokenizer": {...}, "meta": {...}}
    model.safetensors   the state dict, float32
    tokenizer.json      only for a BPE tokenizer (``minilora.work.bpe``)

config.json's "tokenizer" says which tokenizer the model reads: ``{"type": "char",
"chars": ...}`` (the default, the whole vocabulary inline) or ``{"type": "bpe",
"file": "tokenizer.json", ...}``. A checkpoint with a BPE tokenizer has
format_version 2, so that a minilora too old to read it says so.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from minilora import backend
from minilora.tensor import Tensor
from minilora.work.files import CheckpointError, atomic_directory, write_atomic

__all__ = [
    "CheckpointError",
    "atomic_directory",
    "bfloat16_to_float32",
    "check_finite",
    "load_arrays",
    "load_model",
    "read_json",
    "save_arrays",
    "save_model",
    "write_atomic",
    "write_json",
]

FORMAT = "minilora"
FORMAT_VERSION = 2  # the newest written: 1 with a character tokenizer (or none), 2 with a BPE
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def write_json(path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None


def save_arrays(path, arrays: dict, metadata: dict | None = None) -> None:
    """Save name -> array (NumPy or CuPy, or a Tensor) as a safetensors file, atomically."""
    from safetensors.numpy import save

    plain = {  # a Tensor's values are its .data; an array's .data is its raw buffer
        k: np.ascontiguousarray(backend.to_numpy(v.data if isinstance(v, Tensor) else v))
        for k, v in arrays.items()
    }
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    write_atomic(path, save(plain, metadata=meta or None))


def load_arrays(path) -> dict:
    """Load a safetensors file as name -> NumPy array; a damaged file gives a CheckpointError.

    NumPy has no bfloat16: BF16 tensors (torch's ``model.to(torch.bfloat16)``)
    come back as float32, exactly (``bfloat16_to_float32``). float16 stays float16.
    """
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    raw, bf16 = _bfloat16_as_uint16(path.read_bytes())
    try:
        arrays = load(raw)
    except Exception as err:  # safetensors raises its own error types for bad headers/sizes
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or damaged?): {err}"
        ) from None
    for key in bf16:
        arrays[key] = bfloat16_to_float32(arrays[key])
    return arrays


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values, given as their raw uint16 bits, as float32 (exactly).

    A bfloat16 is the top half of a float32: the same sign bit, the same 8
    exponent bits, the first 7 of its 23 mantissa bits. Shifted 16 places left
    into a uint32, the bits are that float32, its low 16 mantissa bits zero.
    """
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def _bfloat16_as_uint16(raw: bytes) -> tuple[bytes, list[str]]:
    """``raw`` with every BF16 tensor relabelled U16 (same bytes), and those tensors' names.

    A safetensors file is: the header's length n (8 bytes, little-endian), n bytes
    of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
    {...}}``, then the data. Offsets count from the end of the header, so the
    header may change length. Anything that does not parse is returned as it
    is, for safetensors to report as damaged.
    """
    if len(raw) < 8:
        return raw, []
    (n,) = struct.unpack("<Q", raw[:8])
    try:
        header = json.loads(raw[8 : 8 + n])
    except (ValueError, UnicodeDecodeError):
        return raw, []
    if not isinstance(header, dict):
        return raw, []
    bf16 = [
        k
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and v.get("dtype") == "BF16"
    ]
    if not bf16:
        return raw, []
    for k in bf16:
        header[k]["dtype"] = "U16"
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads its header to 8 bytes with spaces
    return struct.pack("<Q", len(text)) + text + raw[8 + n :], bf16


def check_finite(arrays: dict, path) -> None:
    """Refuse NaN or inf in any floating-point array, naming the file, the key and where."""
    for key, value in arrays.items():
        a = np.asarray(backend.to_numpy(getattr(value, "data", value)))
        if a.dtype.kind not in "fc" or np.isfinite(a).all():
            continue
        bad = ~np.isfinite(a)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise CheckpointError(
            f"{path}: tensor {key!r} holds {int(bad.sum())} non-finite value(s) of {a.size} "
            f"(the first, {a[first]}, at index {first}); expected finite numbers "
            "(was it saved after training diverged?)"
        )


def save_model(model, directory, tokenizer=None, meta: dict | None = None) -> Path:
    """Write ``model`` (a GPT), its config, tokenizer and free-form ``meta`` to ``directory``.

    The directory is replaced as a whole (``atomic_directory``): an error or an
    interruption leaves the old checkpoint there, loadable.
    """
    directory = Path(directory)
    state = {k: v.astype(np.float32) for k, v in map_numpy(model.state_dict()).items()}
    tokenizer_files = tokenizer.files() if hasattr(tokenizer, "files") else {}
    with atomic_directory(directory) as tmp:
        save_arrays(tmp / WEIGHTS_NAME, state)
        for name, data in tokenizer_files.items():
            write_atomic(tmp / name, data)
        write_json(
            tmp / CONFIG_NAME,
            {
                "format": FORMAT,
                "format_version": 2 if tokenizer_files else 1,
                "model_type": "gpt",
                "config": model.config.to_dict(),
                "tokenizer": tokenizer.to_dict() if tokenizer is not None else None,
                "meta": meta or {},
            },
        )
    return directory


def read_checkpoint_config(directory) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a directory (expected a minilora checkpoint)")
    info = read_json(directory / CONFIG_NAME)
    if info.get("format") != FORMAT:
        raise CheckpointError(
            f"{directory / CONFIG_NAME}: not a minilora checkpoint "
            f"(its 'format' is {info.get('format')!r}, expected {FORMAT!r})"
        )
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{directory}: format_version {info['format_version']} is newer than this "
            f"minilora understands ({FORMAT_VERSION}); upgrade minilora"
        )
    return info


def load_model(directory, device: str | None = None):
    """Load a checkpoint directory: returns (model, tokenizer or None, meta)."""
    from minilora.transformer import GPT, GPTConfig

    directory = Path(directory)
    info = read_checkpoint_config(directory)
    try:
        config = GPTConfig.from_dict(info["config"])
        tokenizer = (
            tokenizer_from_dict(info["tokenizer"], directory) if info.get("tokenizer") else None
        )
    except KeyError as err:
        raise CheckpointError(f"{directory / CONFIG_NAME}: the key {err} is missing") from None
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{directory / CONFIG_NAME}: {err}") from None
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        unit = "characters" if hasattr(tokenizer, "chars") else "tokens"
        raise CheckpointError(
            f"{directory / CONFIG_NAME}: the tokenizer has {tokenizer.vocab_size} {unit} "
            f"(token ids 0..{tokenizer.vocab_size - 1}), but the model's config has "
            f"vocab_size={config.vocab_size}; expected a tokenizer of at most "
            f"{config.vocab_size} {unit} (are the tokenizer and the weights from "
            "different checkpoints?)"
        )
    model = GPT(config)
    try:
        model.load_state_dict(load_arrays(directory / WEIGHTS_NAME))
    except KeyError as err:
        raise CheckpointError(
            f"{directory / WEIGHTS_NAME} does not fit its config: {err.args[0]}"
        ) from None
    if device is not None:
        model.to(device)
    return model, tokenizer, info.get("meta", {})


def tokenizer_from_dict(d: dict, directory):
    """The tokenizer config.json's "tokenizer" names: a CharTokenizer or a BPETokenizer."""
    from minilora.work.data import CharTokenizer

    kind = d.get("type") if isinstance(d, dict) else None
    if kind == "bpe":
        from minilora.work.bpe import BPETokenizer

        return BPETokenizer.from_dict(d, directory)
    if kind == "char":
        return CharTokenizer.from_dict(d)
    raise ValueError(
        f'the tokenizer is {d!r:.80}; expected {{"type": "char", "chars": ...}} or '
        '{"type": "bpe", "file": "tokenizer.json"}'
    )


def map_numpy(state: dict) -> dict:
    return {k: backend.to_numpy(v) for k, v in state.items()}
