"""LoRA adapters on disk, in the layout of Hugging Face PEFT (written without torch).

An adapter is a directory with two files:

* ``adapter_model.safetensors``: for every adapted Linear at module path P,
  ``base_model.model.P.lora_A.weight`` (r x d_in) and
  ``base_model.model.P.lora_B.weight`` (d_out x r), float32; plus trained
  biases when the config's ``bias`` is not "none".
* ``adapter_config.json``: PEFT's LoraConfig keys (``peft_type`` "LORA", ``r``,
  ``lora_alpha``, ``target_modules``, ...).

Loading checks every field of the config for its type (``check_peft_config``),
every weight for NaN and inf, and every key and shape against the model, and
lists all that do not fit.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from minilora import backend
from minilora.lora import LoRAConfig, inject_lora, lora_layers, restore, snapshot
from minilora.tensor import no_grad
from minilora.work import io

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PREFIX = "base_model.model."


def peft_config_dict(config: LoRAConfig, base_model_name: str | None) -> dict:
    """The adapter_config.json that PEFT's LoraConfig reads."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name,
        "r": int(config.r),
        "lora_alpha": float(config.alpha),
        "lora_dropout": float(config.dropout),
        "target_modules": list(config.target_modules),
        "bias": config.bias,
        "use_rslora": bool(config.use_rslora),
        "fan_in_fan_out": False,
        "init_lora_weights": True if config.init == "kaiming" else "gaussian",
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": False,
        "revision": None,
    }


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # JSON true is a Python int


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _names(v) -> bool:
    return isinstance(v, str) or (
        isinstance(v, list) and bool(v) and all(isinstance(t, str) for t in v)
    )


# init_lora_weights values whose saved A and B are all there is to the adapter. PiSSA,
# OLoRA, CorDA and LoftQ also change the base weights (the adapter needs that changed
# base, unless saved with path_initial_model_for_weight_conversion, which writes true);
# MiCA is another layer.
PLAIN_INITS = ("gaussian", "eva", "orthogonal")  # and true or false
# Every field of adapter_config.json that minilora reads: (accepts, what is expected).
FIELDS = {
    "r": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "lora_alpha": (lambda v: _number(v) and v > 0, "a number > 0"),
    "lora_dropout": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "target_modules": (_names, "a module name or a non-empty list of module names"),
    "bias": (lambda v: v in ("none", "all", "lora_only"), "'none', 'all' or 'lora_only'"),
    "use_rslora": (lambda v: isinstance(v, bool), "true or false"),
    "fan_in_fan_out": (lambda v: isinstance(v, bool), "true or false"),
    "use_dora": (lambda v: isinstance(v, bool), "true or false"),
    "init_lora_weights": (
        lambda v: isinstance(v, bool) or v in PLAIN_INITS,
        "true, false, 'gaussian', 'eva' or 'orthogonal' (PiSSA, OLoRA, CorDA and LoftQ "
        "adapters need the base weights they changed; MiCA is not LoRA's layer)",
    ),
    "rank_pattern": (
        lambda v: (
            v is None or (isinstance(v, dict) and all(_int(x) and x >= 1 for x in v.values()))
        ),
        "an object of module name -> integer rank >= 1",
    ),
    "alpha_pattern": (
        lambda v: (
            v is None or (isinstance(v, dict) and all(_number(x) and x > 0 for x in v.values()))
        ),
        "an object of module name -> number > 0",
    ),
}


def check_peft_config(d, path="adapter_config.json") -> dict:
    """Refuse an adapter_config.json whose fields minilora reads have the wrong type or value.

    Absent fields are not checked here (each reader has its defaults or requires them).
    """
    if not isinstance(d, dict):
        raise io.CheckpointError(f"{path}: expected a JSON object, got {type(d).__name__}")
    for key, (accepts, expected) in FIELDS.items():
        if key in d and not accepts(d[key]):
            raise io.CheckpointError(
                f"{path}: field {key!r} is {d[key]!r} ({type(d[key]).__name__}); "
                f"expected {expected}"
            )
    return d


def config_from_peft(d: dict, path="adapter_config.json") -> LoRAConfig:
    """A LoRAConfig from PEFT's dict; what minilora cannot represent is refused by name."""
    check_peft_config(d, path)
    if d.get("peft_type") != "LORA":
        raise io.CheckpointError(f"{path}: peft_type is {d.get('peft_type')!r}, expected 'LORA'")
    for key, plain in (("use_dora", False), ("fan_in_fan_out", False)):
        if d.get(key, plain) != plain:
            raise io.CheckpointError(
                f"{path}: {key}={d[key]!r} is not supported here (expected {plain!r}); "
                "for GPT-2 adapters use minilora.interop.hf"
            )
    for key in ("rank_pattern", "alpha_pattern"):
        if d.get(key):
            raise io.CheckpointError(
                f"{path}: {key}={d[key]!r} (per-module ranks) is not supported"
            )
    init = d.get("init_lora_weights", True)
    try:
        targets = d["target_modules"]
        return LoRAConfig(
            r=int(d["r"]),
            alpha=float(d["lora_alpha"]),
            dropout=float(d.get("lora_dropout", 0.0)),
            # PEFT allows one string; tuple("q_proj") would split it into letters
            target_modules=(targets,) if isinstance(targets, str) else tuple(targets),
            init="gaussian" if init == "gaussian" else "kaiming",
            use_rslora=bool(d.get("use_rslora", False)),
            bias=d.get("bias", "none"),
        )
    except KeyError as err:
        raise io.CheckpointError(f"{path}: the required key {err} is missing") from None
    except (TypeError, ValueError) as err:
        raise io.CheckpointError(f"{path}: {err}") from None


def adapter_state_dict(model, adapter_name: str | None = None) -> dict:
    """PEFT-named arrays of one adapter: A and B of every LoRA layer (+ trained biases)."""
    state, config = {}, None
    for path, layer in lora_layers(model).items():
        name = adapter_name or layer.active_adapter
        if name not in layer.configs:
            continue
        config = layer.configs[name]
        state[f"{PREFIX}{path}.lora_A.weight"] = layer.lora_A[name].weight.data
        state[f"{PREFIX}{path}.lora_B.weight"] = layer.lora_B[name].weight.data
    if config is not None and config.bias != "none":
        for pname, p in model.named_parameters():
            if pname.endswith("bias") and p.requires_grad:
                state[PREFIX + pname] = p.data
    if not state:
        raise ValueError(f"the model has no LoRA adapter named {adapter_name!r}")
    return state


def active_adapter_name(layers: dict, caller: str) -> str:
    """The adapter to save when none is named: the active one of the first layer that has one.

    With two adapters on different layers ("default" on q_proj, "b" on v_proj),
    each is active in its own layers; the first in the model's order wins.
    """
    name = next((layer.active_adapter for layer in layers.values() if layer.active_adapter), None)
    if name is None:
        raise ValueError(f"{caller}: no adapter is active; name one with adapter_name=")
    return name


def save_adapter(
    model, directory, adapter_name: str | None = None, base_model_name: str | None = None
) -> Path:
    """Write ``adapter_model.safetensors`` and ``adapter_config.json`` into ``directory``.

    The directory is replaced as a whole (``io.atomic_directory``): an error or an
    interruption leaves the old adapter there, loadable.
    """
    directory = Path(directory)
    layers = lora_layers(model)
    if not layers:
        raise ValueError("save_adapter: the model has no LoRA layers (call inject_lora first)")
    if any(layer.merged for layer in layers.values()):
        raise RuntimeError("save_adapter on a merged model: unmerge(model) first")
    name = adapter_name or active_adapter_name(layers, "save_adapter")
    if not any(name in layer.configs for layer in layers.values()):
        raise ValueError(f"save_adapter: the model has no LoRA adapter named {name!r}")
    config = next(layer.configs[name] for layer in layers.values() if name in layer.configs)
    state = {
        k: np.asarray(backend.to_numpy(v), dtype=np.float32)
        for k, v in adapter_state_dict(model, name).items()
    }
    with io.atomic_directory(directory) as tmp:
        io.save_arrays(tmp / ADAPTER_WEIGHTS, state, metadata={"format": "pt"})
        io.write_json(tmp / ADAPTER_CONFIG, peft_config_dict(config, base_model_name))
    return directory


def load_adapter(model, directory, adapter_name: str = "default"):
    """Inject the adapter stored in ``directory`` into ``model`` as ``adapter_name``; returns model.

    Every key of the file must name a LoRA weight of the model with the right
    shape, and every LoRA weight must be in the file; otherwise a CheckpointError
    lists all mismatches (an adapter for another model or another rank). A config
    field of the wrong type, or a NaN or inf in a weight, is refused by name.
    """
    directory = Path(directory)
    config = config_from_peft(io.read_json(directory / ADAPTER_CONFIG), directory / ADAPTER_CONFIG)
    state = io.load_arrays(directory / ADAPTER_WEIGHTS)
    io.check_finite(state, directory / ADAPTER_WEIGHTS)
    before = snapshot(model)
    try:
        inject_lora(model, config, adapter_name)
    except ValueError as err:
        raise io.CheckpointError(
            f"{directory}: the adapter does not fit this model: {err}"
        ) from None
    expected = {}
    for path, layer in lora_layers(model).items():
        if adapter_name in layer.configs:
            expected[f"{PREFIX}{path}.lora_A.weight"] = layer.lora_A[adapter_name].weight
            expected[f"{PREFIX}{path}.lora_B.weight"] = layer.lora_B[adapter_name].weight
    params = dict(model.named_parameters())
    for key in state:
        if key.endswith("bias") and key[len(PREFIX) :] in params:
            expected[key] = params[key[len(PREFIX) :]]
    problems = [f"missing in file: {k}" for k in expected if k not in state]
    problems += [f"not in model: {k}" for k in state if k not in expected]
    problems += [
        f"shape of {k}: file {tuple(state[k].shape)}, model {expected[k].shape}"
        for k in state
        if k in expected and tuple(state[k].shape) != expected[k].shape
    ]
    if problems:
        restore(model, before)  # the model as it was: no half-loaded adapter, nothing frozen
        raise io.CheckpointError(
            f"{directory / ADAPTER_WEIGHTS} does not fit this model:\n  " + "\n  ".join(problems)
        )
    with no_grad():
        for key, p in expected.items():
            p.data = backend.to_device(state[key].astype(p.dtype), p.device)
    return model
