"""LoRA adapters between minilora and PEFT on GPT-2: separate q, k, v <-> the fused c_attn.

A PEFT adapter for ``GPT2LMHeadModel`` stores, for an adapted module P (say
``transformer.h.0.attn.c_attn``), ``base_model.model.P.lora_A.weight`` (r x in)
and ``base_model.model.P.lora_B.weight`` (out x r). These are the shapes of
nn.Linear(in, r) and nn.Linear(r, out) even though GPT-2's Conv1D stores its
own weight transposed: PEFT's ``fan_in_fan_out=True`` only transposes the
merged product B A. So A and B carry over with no transpose at all.

The fused c_attn (see ``minilora.interop.hf``) produces [q | k | v]; in (out, in) form
its weight is Wq, Wk, Wv stacked by rows, so an update s B A on c_attn changes
Wq by s B[0:C] A, Wk by s B[C:2C] A and Wv by s B[2C:3C] A.

Export: adapters on some of q, k, v (say q and v, rank r each) become one LoRA
on c_attn of rank 2r whose A stacks the A's and whose B is block-structured::

        A = [A_q]          B = [B_q   0 ]   <- rows of q
            [A_v]              [ 0    0 ]   <- rows of k: not adapted
                               [ 0   B_v]   <- rows of v

so that B A = [B_q A_q; 0; B_v A_v], the three updates exactly. The scaling
must not change: with rank n r, lora_alpha becomes n alpha (alpha / r), or
sqrt(n) alpha under rsLoRA (alpha / sqrt(r)). Where other modules keep rank r,
c_attn's rank and alpha go into PEFT's ``rank_pattern`` and ``alpha_pattern``.

Import: each of q, k and v gets the whole A and its rows of B, rank unchanged.
When B has the block structure above (as our exports do) each projection gets
back its own block instead, so minilora -> PEFT -> minilora returns the same
arrays. A minilora adapter has one rank; other per-module ranks are refused, as
is everything else that cannot be converted exactly (DoRA, LoRA biases, ...).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np

from minilora import backend
from minilora.interop.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    active_adapter_name,
    check_peft_config,
    peft_config_dict,
)
from minilora.lora import LoRAConfig, inject_lora, lora_layers
from minilora.tensor import no_grad
from minilora.work import io

PREFIX = "base_model.model."
QKV = ("q_proj", "k_proj", "v_proj")
OTHERS = {"attn.c_proj": "attn.o_proj", "mlp.c_fc": "mlp.fc_in", "mlp.c_proj": "mlp.fc_out"}
SIZES = {"attn.c_attn": (1, 3), "attn.c_proj": (1, 1), "mlp.c_fc": (1, 4), "mlp.c_proj": (4, 1)}
_KEY = re.compile(
    r"((?:transformer\.)?h\.(\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj))"
    r"\.lora_([AB])\.weight"
)
# PEFT options that change what an adapter computes, which minilora does not have.
UNSUPPORTED = {
    "use_dora": "DoRA (a learned magnitude per column)",
    "lora_bias": "a bias on lora_B",
    "modules_to_save": "fully trained extra modules",
    "layer_replication": "replicated layers",
    "trainable_token_indices": "trained token embeddings",
    "target_parameters": "LoRA on bare parameters",
    "alora_invocation_tokens": "activated LoRA",
    "use_qalora": "QA-LoRA",
    "velora_config": "VeLoRA",
    "monteclora_config": "MonteCLoRA",
    "kasa_config": "KaSA",
    "use_bdlora": "block-diagonal LoRA",
    "arrow_config": "Arrow routing",
    "megatron_config": "Megatron layers",
}


def _scaling(alpha: float, r: int, rslora: bool) -> float:
    return alpha / (math.sqrt(r) if rslora else r)


def _layers_or_names(paths, n_layer: int, leaf) -> list:
    """Short names for kinds adapted in every layer, full paths for the others (PEFT and
    minilora both match a target against a full module name or a dotted suffix of it)."""
    kinds = {}
    for path in paths:
        kinds.setdefault(leaf(path), []).append(path)
    out = []
    for kind, members in kinds.items():
        out += [kind] if len(members) == n_layer else sorted(members)
    return out


# ---- minilora -> PEFT ----------------------------------------------------------------


def peft_adapter(model, adapter_name: str | None = None, base_model_name: str | None = None):
    """(arrays, adapter_config.json) of a PEFT adapter for GPT2LMHeadModel, equal in effect."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers (call inject_lora or load_adapter first)")
    name = adapter_name or active_adapter_name(layers, "peft_adapter")
    ours = {}
    for path, layer in layers.items():
        if name not in layer.configs:
            continue
        if layer.merged:
            raise ValueError(f"{path}: the adapter is merged; call unmerge(model) first")
        cfg = layer.configs[name]
        if cfg.bias != "none":
            raise ValueError(
                f"adapter {name!r} trains biases (bias={cfg.bias!r}): a LoRA bias "
                "cannot be exported exactly (PEFT's GPT-2 fuses q, k, v biases)"
            )
        to64 = lambda t: backend.to_numpy(t.weight.data).astype(np.float64)
        ours[path] = (to64(layer.lora_A[name]), to64(layer.lora_B[name]), cfg)
    if not ours:
        raise ValueError(f"the model has no LoRA adapter named {name!r}")
    if len({cfg.use_rslora for _, _, cfg in ours.values()}) > 1:
        raise ValueError(f"adapter {name!r} mixes use_rslora true and false; PEFT has one flag")
    held = next(iter(ours.values()))[2]  # the config, from a layer that holds the adapter
    config, rslora = peft_config_dict(held, base_model_name), held.use_rslora
    C, modules = model.config.d_model, {}  # GPT-2 module path -> (A, B, r, alpha)
    for i in range(model.config.n_layer):
        b = f"blocks.{i}."
        qkv = [(j, *ours.pop(f"{b}attn.{p}")) for j, p in enumerate(QKV) if f"{b}attn.{p}" in ours]
        if qkv:
            first = qkv[0][3]
            A = np.concatenate([a for _, a, _, _ in qkv])  # (R, C): the A's stacked
            B = np.zeros((3 * C, len(A)))  # (3C, R): block j of rows, block of columns per A
            col = 0
            for j, a, bb, cfg in qkv:
                ratio = cfg.scaling / first.scaling  # 1 unless the projections' configs differ
                B[j * C : (j + 1) * C, col : col + len(a)] = bb if ratio == 1 else bb * ratio
                col += len(a)
            n = len(A) / first.r
            alpha = first.alpha * (math.sqrt(n) if rslora else n)  # scaling unchanged
            modules[f"transformer.h.{i}.attn.c_attn"] = (A, B, len(A), alpha)
        for theirs, mine in OTHERS.items():
            if b + mine in ours:
                a, bb, cfg = ours.pop(b + mine)
                modules[f"transformer.h.{i}.{theirs}"] = (a, bb, cfg.r, cfg.alpha)
    if ours:
        raise ValueError(f"LoRA on {sorted(ours)} has no GPT-2 counterpart")
    (top_r, top_alpha), _ = Counter((r, al) for _, _, r, al in modules.values()).most_common(1)[0]
    leaf = lambda path: path.split(".", 3)[3]  # transformer.h.0.attn.c_attn -> attn.c_attn

    def pattern(values: dict, top) -> dict:
        differing = {p: v for p, v in values.items() if v != top}
        out = {}
        for kind in sorted({leaf(p) for p in differing}):
            members = {p: v for p, v in values.items() if leaf(p) == kind}
            same = len(set(members.values())) == 1
            out.update(
                {kind: next(iter(members.values()))}
                if same
                else {p: v for p, v in differing.items() if leaf(p) == kind}
            )
        return out

    config.update(
        {
            "r": int(top_r),
            "lora_alpha": float(top_alpha),
            "fan_in_fan_out": True,
            "task_type": "CAUSAL_LM",
            "bias": "none",
            "use_rslora": bool(rslora),
            "target_modules": _layers_or_names(modules, model.config.n_layer, leaf),
            "rank_pattern": pattern({p: int(m[2]) for p, m in modules.items()}, top_r),
            "alpha_pattern": pattern({p: float(m[3]) for p, m in modules.items()}, top_alpha),
        }
    )
    arrays = {}
    for path, (A, B, _, _) in modules.items():
        arrays[f"{PREFIX}{path}.lora_A.weight"] = A.astype(np.float32)
        arrays[f"{PREFIX}{path}.lora_B.weight"] = B.astype(np.float32)
    return arrays, config


def write_peft_adapter(model, directory, adapter_name=None, base_model_name=None) -> Path:
    """Write ``adapter_model.safetensors`` + ``adapter_config.json`` that PEFT loads for GPT-2.

    The directory is replaced as a whole (``io.atomic_directory``).
    """
    arrays, config = peft_adapter(model, adapter_name, base_model_name)
    directory = Path(directory)
    with io.atomic_directory(directory) as tmp:
        io.save_arrays(tmp / ADAPTER_WEIGHTS, arrays, metadata={"format": "pt"})
        io.write_json(tmp / ADAPTER_CONFIG, config)
    return directory


# ---- PEFT -> minilora ----------------------------------------------------------------


def _pattern_value(patterns: dict, key: str, default):
    """PEFT's rule (peft.utils.other.get_pattern_key): the first pattern matching a suffix."""
    for p in patterns or {}:
        if re.match(rf"(.*\.)?({p})$", key):
            return patterns[p]
    return default


def _split_qkv(A, B, R: int, C: int):
    """c_attn's (A, B) as {projection: (A, B)} of rank R each, or None if it cannot be.

    First choice: the block structure of our exports, where the projections whose
    rows of B are nonzero own one block of R columns each, in order. Next, every
    projection takes the whole A and its rows of B (when c_attn's rank is R).
    Last, blocks assigned to projections in order, zero rows allowed (a B that is
    still zero: any assignment has the same, zero, effect).
    """
    rows = [B[j * C : (j + 1) * C] for j in range(3)]
    used = tuple(j for j in range(3) if rows[j].any())

    def blocks(chosen):  # projection chosen[g] owns columns g R .. (g + 1) R
        if len(chosen) * R != len(A) or any(rows[j].any() for j in range(3) if j not in chosen):
            return None
        for g, j in enumerate(chosen):
            outside = np.ones(len(A), dtype=bool)
            outside[g * R : (g + 1) * R] = False
            if rows[j][:, outside].any():
                return None
        return {
            QKV[j]: (A[g * R : (g + 1) * R], rows[j][:, g * R : (g + 1) * R])
            for g, j in enumerate(chosen)
        }

    if used and (split := blocks(used)) is not None:
        return split
    if len(A) == R:  # every projection gets the whole A and its rows of B
        return {p: (A, rows[j]) for j, p in enumerate(QKV)}
    for n in (1, 2, 3):
        for chosen in itertools.combinations(range(3), n):
            if (split := blocks(chosen)) is not None:
                return split
    return None


def read_peft_adapter(directory, config) -> tuple[LoRAConfig, dict]:
    """A PEFT adapter for GPT-2 as (LoRAConfig, {our module path: (A, B)}), checked against
    ``config`` (our GPTConfig); anything that cannot be converted exactly is refused by name."""
    directory = Path(directory)
    cfg_path, w_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    d = check_peft_config(io.read_json(cfg_path), cfg_path)
    if d.get("peft_type") != "LORA":
        raise io.CheckpointError(
            f"{cfg_path}: peft_type is {d.get('peft_type')!r}, expected 'LORA'"
        )
    if d.get("bias", "none") != "none":
        raise io.CheckpointError(
            f"{cfg_path}: field 'bias' is {d['bias']!r}: the adapter trains "
            "biases (a LoRA bias), which minilora cannot convert; expected 'none'"
        )
    for field, what in UNSUPPORTED.items():
        if d.get(field):
            raise io.CheckpointError(
                f"{cfg_path}: field {field!r} is {d[field]!r}: {what} cannot "
                "be converted to minilora exactly; expected it unset"
            )
    rslora, C = bool(d.get("use_rslora", False)), config.d_model
    found = {}  # (layer, GPT-2 kind) -> {"A": array, "B": array, "key": module key}
    arrays = io.load_arrays(w_path)
    io.check_finite(arrays, w_path)
    for key, value in arrays.items():
        m = _KEY.fullmatch(key.removeprefix(PREFIX))
        if m is None:
            what = (
                "DoRA's magnitude vector"
                if "magnitude" in key
                else "a LoRA bias"
                if key.endswith("bias")
                else "an unknown target: only attn.c_attn, attn.c_proj, "
                "mlp.c_fc and mlp.c_proj map to minilora's Linear layers"
            )
            raise io.CheckpointError(f"{w_path}: key {key!r} is {what}; cannot convert it")
        module, layer, kind, ab = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        if layer >= config.n_layer:
            raise io.CheckpointError(
                f"{w_path}: key {key!r} names layer {layer}, but the model "
                f"has n_layer={config.n_layer}"
            )
        found.setdefault((layer, kind), {"key": module})[ab] = np.asarray(value, np.float64)
    if not found:
        raise io.CheckpointError(
            f"{w_path}: no LoRA weights (expected keys like "
            f"{PREFIX}transformer.h.0.attn.c_attn.lora_A.weight)"
        )
    units = {}  # (layer, kind) -> (A, B, scaling)
    for (layer, kind), f in sorted(found.items()):
        module = f"{PREFIX}{f['key']}"
        if "A" not in f or "B" not in f:
            raise io.CheckpointError(
                f"{w_path}: {module}.lora_{'B' if 'A' in f else 'A'}.weight "
                "is missing (found its partner)"
            )
        r = _pattern_value(d.get("rank_pattern"), f["key"], d.get("r", 8))
        n_in, n_out = (C * k for k in SIZES[kind])
        for ab, got, want in (("A", f["A"].shape, (r, n_in)), ("B", f["B"].shape, (n_out, r))):
            if got != want:
                raise io.CheckpointError(
                    f"{w_path}: {module}.lora_{ab}.weight has shape {got}, expected {want} "
                    f"(rank {r} from {cfg_path.name}, n_embd={C}): it does not fit this model"
                )
        alpha = _pattern_value(d.get("alpha_pattern"), f["key"], d.get("lora_alpha", 8))
        units[layer, kind] = (f["A"], f["B"], _scaling(float(alpha), r, rslora))
    other_ranks = {len(A) for (_, kind), (A, _, _) in units.items() if kind != "attn.c_attn"}
    fused = {k: u for k, u in units.items() if k[1] == "attn.c_attn"}
    if other_ranks:  # c_attn must come to the rank of the other modules
        candidates = sorted(other_ranks) if len(other_ranks) == 1 else []
    else:  # c_attn alone: the smallest rank its B's block structure allows
        candidates = sorted({len(A) // n for A, _, _ in fused.values() for n in (1, 2, 3)})
    for R in candidates:
        split = {k: _split_qkv(A, B, R, C) for k, (A, B, _) in fused.items()}
        if all(s is not None for s in split.values()):
            break
    else:
        ranks = {f"h.{layer}.{kind}": len(A) for (layer, kind), (A, _, _) in units.items()}
        raise io.CheckpointError(
            f"{w_path}: per-module ranks {ranks} do not fit minilora, whose adapter has one rank r "
            "(c_attn may have rank n*r only with B block-structured per q, k, v)"
        )
    s0, alpha0 = next(iter(units.values()))[2], float(d.get("lora_alpha", 8))
    alpha = alpha0 if _scaling(alpha0, R, rslora) == s0 else s0 * (math.sqrt(R) if rslora else R)
    s = _scaling(alpha, R, rslora)
    weights = {}
    for (layer, kind), (A, B, scale) in units.items():
        if kind == "attn.c_attn":
            parts = {f"attn.{p}": ab for p, ab in split[layer, kind].items()}
        else:
            parts = {OTHERS[kind]: (A, B)}
        for name, (a, b) in parts.items():  # a pattern's other scaling folds into B
            weights[f"blocks.{layer}.{name}"] = (a, b if scale == s else b * (scale / s))
    targets = _layers_or_names(weights, config.n_layer, lambda p: p.rsplit(".", 1)[1])
    init = "gaussian" if d.get("init_lora_weights") == "gaussian" else "kaiming"
    try:
        lora = LoRAConfig(
            r=R,
            alpha=alpha,
            dropout=float(d.get("lora_dropout", 0.0)),
            target_modules=tuple(targets),
            init=init,
            use_rslora=rslora,
        )
    except ValueError as err:
        raise io.CheckpointError(f"{cfg_path}: {err}") from None
    return lora, weights


def apply_adapter(model, lora: LoRAConfig, weights: dict, adapter_name="default", source=None):
    """Inject ``lora`` into ``model`` and set its A and B to ``weights``; returns model."""
    try:
        inject_lora(model, lora, adapter_name, generator=np.random.default_rng(0))
    except ValueError as err:
        where = f"{source}: " if source is not None else ""
        raise io.CheckpointError(f"{where}the adapter does not fit this model: {err}") from None
    with no_grad():
        for path, (A, B) in weights.items():
            layer = model.get_submodule(path)
            for ab, value in ((layer.lora_A[adapter_name], A), (layer.lora_B[adapter_name], B)):
                p = ab.weight
                p.data = backend.to_device(np.asarray(value, dtype=p.dtype), p.device)
    return model


def inject_peft_adapter(model, directory, adapter_name: str = "default"):
    """Read a PEFT adapter for GPT-2 from ``directory`` and inject it into ``model`` (ours)."""
    lora, weights = read_peft_adapter(directory, model.config)
    return apply_adapter(model, lora, weights, adapter_name, source=directory)
