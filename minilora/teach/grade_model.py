"""The grader's checks of the model-level parts: inject_lora, mark_trainable, greedy.

Besides a small GPT, injection and freezing are checked on a model whose layer names nearly
match the targets (``xq_proj``, ``q_proj_extra``, ``flora_A``): a target names a layer by its
full name or a dotted suffix, so matching by substring, by suffix without the dot or by prefix
each wraps a layer it must not. A second adapter must be added to the layers already wrapped,
and train beside the first.
"""

from __future__ import annotations

import numpy as np
from grade_tools import Check, fail, tiny_gpt, tokens


def near_miss_model():
    """Linear layers named q_proj, block.q_proj (targets of 'q_proj') and xq_proj,
    q_proj_extra, block.xq_proj, block.q_proj_extra (not), beside a layer called flora_A."""
    from minilora.nn import Linear, Module

    def linears(module, names, seed):
        rng = np.random.default_rng(seed)
        for name in names:
            setattr(module, name, Linear(6, 6, generator=rng))

    class Block(Module):
        def __init__(self):
            linears(self, ("q_proj", "xq_proj", "q_proj_extra"), 1)

    class Net(Module):
        def __init__(self):
            linears(self, ("q_proj", "xq_proj", "q_proj_extra", "flora_A"), 0)
            self.block = Block()

    return Net()


def _lora_names(model):
    from minilora.lora import LoRALinear

    return sorted(n for n, m in model.named_modules() if isinstance(m, LoRALinear))


def _wrong_set(got, want, what):
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    why = "wrap every Linear that a target names (its full name or a dotted suffix), no other"
    if any("xq_proj" in n for n in extra) and not any("_extra" in n for n in extra):
        why = (
            "'xq_proj' ends with 'q_proj' but is another layer: match the full name or a "
            "suffix after a dot (name == t or name.endswith('.' + t))"
        )
    elif any("_extra" in n for n in extra) and any("xq_proj" in n for n in extra):
        why = (
            "a target is matched as a substring: match the full name or a suffix after a dot "
            "(name == t or name.endswith('.' + t))"
        )
    elif any("_extra" in n for n in extra):
        why = "a target is matched as a prefix: match the full name or a suffix after a dot"
    elif missing and not got:
        why = (
            "nothing was wrapped: match each target with the full name or a dotted suffix "
            "(`_matches`), and put each LoRALinear into the model with "
            "model.set_submodule(name, layer)"
        )
    fail(f"{what}: wrapped {got}; missing {missing[:3]}, extra {extra[:3]}: {why}")


def check_inject_targets():
    from minilora.lora import LoRAConfig, inject_lora

    model = tiny_gpt(n_layer=3)
    w0 = {n: m for n, m in model.named_modules()}
    inject_lora(model, LoRAConfig(r=4, alpha=8, target_modules=("q_proj", "v_proj")))
    want = sorted(f"blocks.{i}.attn.{t}" for i in range(3) for t in ("q_proj", "v_proj"))
    got = _lora_names(model)
    if got != want:
        _wrong_set(got, want, "targets ('q_proj', 'v_proj') on a GPT")
    for n in want:
        if model.get_submodule(n).base_layer is not w0[n]:
            fail(f"{n}: the LoRALinear wraps another Linear: wrap the model's own Linear (its W0)")


def check_inject_near_miss_names():
    from minilora.lora import LoRAConfig, inject_lora

    model = near_miss_model()
    inject_lora(model, LoRAConfig(r=2, alpha=4, target_modules=("q_proj",)))
    got = _lora_names(model)
    if got != ["block.q_proj", "q_proj"]:
        _wrong_set(got, ["block.q_proj", "q_proj"], "target 'q_proj' beside xq_proj, q_proj_extra")
    model = near_miss_model()
    inject_lora(model, LoRAConfig(r=2, alpha=4, target_modules=("block.q_proj",)))
    if _lora_names(model) != ["block.q_proj"]:
        fail(
            f"target 'block.q_proj' wrapped {_lora_names(model)}: a dotted target names the "
            "layer by its full name (or a dotted suffix of it), not by its last part alone"
        )


def check_inject_second_adapter():
    from minilora.lora import LoRAConfig, LoRALinear, inject_lora

    model = tiny_gpt(n_layer=2)
    inject_lora(model, LoRAConfig(r=2, alpha=4, target_modules=("blocks.1.attn.q_proj",)))
    if _lora_names(model) != ["blocks.1.attn.q_proj"]:
        fail(f"target 'blocks.1.attn.q_proj' wrapped {_lora_names(model)}: match the full name")
    inject_lora(model, LoRAConfig(r=2, alpha=4, target_modules=("q_proj",)), "second")
    layer = model.get_submodule("blocks.1.attn.q_proj")
    if isinstance(layer.base_layer, LoRALinear):
        fail("a LoRALinear was wrapped again: keep the one that is there, add the adapter to it")
    if set(layer.configs) != {"default", "second"}:
        fail(
            f"after a second inject_lora the layer holds adapters {sorted(layer.configs)}: a "
            "LoRALinear already there must be kept AND get the new adapter (put it in `layers`)"
        )
    if _lora_names(model) != ["blocks.0.attn.q_proj", "blocks.1.attn.q_proj"]:
        fail(f"the second inject_lora wrapped {_lora_names(model)}")


def check_inject_counts_and_bit_for_bit():
    from minilora.lora import LoRAConfig, count_parameters, inject_lora
    from minilora.tensor import no_grad

    n_layer, d_model, r = 3, 16, 4
    model, idx = tiny_gpt(n_layer=n_layer, d_model=d_model), tokens()
    with no_grad():
        before = model(idx)[0].data.copy()
    inject_lora(model, LoRAConfig(r=r, alpha=8))
    want = 2 * (2 * n_layer) * d_model * r  # |Theta| = 2 x L_hat x d_model x r
    got = count_parameters(model).trainable
    if got != want:
        fail(
            f"{got} trainable parameters; the paper's 2 x L_hat x d_model x r = 2 x "
            f"{2 * n_layer} x {d_model} x {r} = {want}"
        )
    with no_grad():
        after = model(idx)[0].data
    if not np.array_equal(before, after):
        fail("the injected model's logits differ from the base model's (dW = 0 at the start)")


# ---- mark_trainable ---------------------------------------------------------------------------


def _trainable(model):
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


def _is_adapter(name):
    return ".lora_A." in name or ".lora_B." in name


def check_mark_only_a_and_b():
    from minilora.lora import LoRAConfig, inject_lora, mark_only_lora_as_trainable

    model = tiny_gpt()
    inject_lora(model, LoRAConfig(r=2, alpha=4))
    model.requires_grad_(True)
    mark_only_lora_as_trainable(model)
    trainable = _trainable(model)
    frozen_lora = [n for n, p in model.named_parameters() if _is_adapter(n) and not p.requires_grad]
    w0 = [n for n in trainable if "base_layer" in n]
    others = [n for n in trainable if not _is_adapter(n)]
    if w0:
        fail(f"W0 is still trainable ({w0[0]}): freeze everything but lora_A and lora_B")
    if others:
        fail(
            f"{len(others)} other parameters still train ({others[0]}, ...): freeze them "
            "(set requires_grad False for every parameter that is not A or B)"
        )
    if frozen_lora:
        fail(f"{frozen_lora[0]} is frozen: A and B must train")
    for bias, want in (("all", ".bias"), ("lora_only", "base_layer.bias")):
        mark_only_lora_as_trainable(model, bias)
        biases = sorted(n for n in _trainable(model) if n.endswith("bias"))
        expected = sorted(n for n, _ in model.named_parameters() if n.endswith(want))
        if biases != expected:
            fail(f"bias={bias!r}: trainable biases {biases[:2]}..., expected {expected[:2]}...")
        if [n for n in _trainable(model) if not n.endswith("bias") and not _is_adapter(n)]:
            fail(f"bias={bias!r}: weights other than A and B train")


def check_mark_near_miss_and_second_adapter():
    from minilora.lora import LoRAConfig, inject_lora, mark_only_lora_as_trainable

    model = near_miss_model()
    inject_lora(model, LoRAConfig(r=2, alpha=4, target_modules=("q_proj",)))
    inject_lora(model, LoRAConfig(r=2, alpha=4, target_modules=("q_proj",)), "second")
    model.requires_grad_(True)
    mark_only_lora_as_trainable(model)
    want = sorted(n for n, _ in model.named_parameters() if _is_adapter(n))
    got = _trainable(model)
    if "flora_A.weight" in got:
        fail(
            "flora_A.weight trains: it is not an adapter; match '.lora_A.' and '.lora_B.' "
            "with their dots, not a substring of the name"
        )
    frozen = sorted(set(want) - set(got))
    if frozen:
        fail(
            f"{frozen[0]} is frozen: the A and B of every adapter train (here 'default' and "
            "'second')"
        )
    if got != want:
        fail(f"trainable {sorted(set(got) - set(want))[:3]}: only A and B train")


def check_frozen_get_no_gradient():
    from minilora.lora import LoRAConfig, inject_lora

    model, idx = tiny_gpt(), tokens()
    inject_lora(model, LoRAConfig(r=2, alpha=4))
    _, loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    for n, p in model.named_parameters():
        if not _is_adapter(n) and p.grad is not None:
            fail(f"{n} is frozen but got a gradient: it must not require grad")
    if any(p.grad is None for n, p in model.named_parameters() if ".lora_B." in n):
        fail("lora_B got no gradient: A and B must require grad")


# ---- greedy ---------------------------------------------------------------------------------


def check_greedy_is_argmax():
    from minilora.transformer import sample_next

    logits = np.random.default_rng(8).standard_normal((5, 11)).astype(np.float32)
    got = np.asarray(sample_next(logits.copy(), 0.0, None, None))
    again = np.asarray(sample_next(logits.copy(), 0.0, None, np.random.default_rng(1)))
    want = logits.argmax(axis=-1)
    if got.shape != want.shape:
        if got.shape == logits.argmax(axis=0).shape:
            fail("argmax over the wrong axis: one token per row, the argmax of axis -1")
        if got.shape == (5, 1):
            fail("greedy returned shape (5, 1): one token id per row, shape (B,)")
        fail(f"greedy returned shape {got.shape}; expected one token per row {want.shape}")
    if not np.array_equal(got, again):
        fail("two greedy calls gave different tokens: temperature 0 means argmax, no sampling")
    if np.allclose(got, logits.max(axis=-1)):
        fail("greedy returned the largest logits, not their positions: token ids are the argmax")
    if np.array_equal(got, logits.argmin(axis=-1)):
        fail("greedy took the least likely token (argmin): take the argmax")
    if not np.array_equal(got, want):
        fail(f"greedy gave {got.tolist()}, the argmax of each row is {want.tolist()}")
    if got.dtype.kind not in "iu":
        fail(f"greedy returned {got.dtype}; token ids are integers")


def check_generate_greedy():
    from minilora.tensor import no_grad

    model, idx = tiny_gpt(), tokens(shape=(2, 4))
    out = model.generate(idx, 6, temperature=0)
    seq = idx.copy()
    with no_grad():
        for _ in range(6):
            nxt = model(seq)[0].data[:, -1, :].argmax(-1)
            seq = np.concatenate([seq, nxt[:, None]], axis=1)
    if not np.array_equal(np.asarray(out), seq):
        fail("generate(temperature=0) does not take the argmax at every step")


INJECT_HINTS = (
    (
        "KeyError",
        "no adapter named",
        "no layer got the adapter, so nothing was wrapped: a "
        "target names a layer by its full name or a dotted suffix (`_matches`); put each "
        "LoRALinear into the model (model.set_submodule(name, layer)) and into `layers`",
    ),
    (
        "KeyError",
        "sub-module",
        "put the LoRALinear where the Linear was: "
        "model.set_submodule(name, layer) with the Linear's full name",
    ),
    (
        "TypeError",
        "LoRALinear wraps a Linear",
        "a LoRALinear was wrapped again: keep the one that is there, add the adapter to it",
    ),
)

CHECKS = {
    "inject_lora": [
        Check("every target wrapped, nothing else", check_inject_targets, INJECT_HINTS),
        Check(
            "near-miss names (xq_proj, q_proj_extra)", check_inject_near_miss_names, INJECT_HINTS
        ),
        Check("dotted names; a second adapter", check_inject_second_adapter, INJECT_HINTS),
        Check(
            "2 x L_hat x d_model x r; dW = 0 bit for bit",
            check_inject_counts_and_bit_for_bit,
            INJECT_HINTS,
        ),
    ],
    "mark_trainable": [
        Check("only A and B train (bias modes)", check_mark_only_a_and_b),
        Check("near-miss names; a second adapter", check_mark_near_miss_and_second_adapter),
        Check("frozen weights get no gradient", check_frozen_get_no_gradient),
    ],
    "greedy": [
        Check(
            "argmax per row, integer ids, deterministic",
            check_greedy_is_argmax,
            (("AxisError", "", "argmax(axis=-1): one token per row"),),
        ),
        Check("generate(temperature=0)", check_generate_greedy),
    ],
}
