"""Every fast path of minilora, in one place: faster twins of ops the core writes as formulas.

The core (engine, model, LoRA) writes each op once, as the math reads. An op marked
``@fast_twin`` there may be replaced by a twin here with the same signature; ``import
minilora`` calls ``install()``, and ``minilora.fast_paths(False)`` (or MINILORA_FAST_PATHS=0)
makes every op run its own body again. The student package leaves this folder out.

Each twin is tested equal to the formula it replaces (tests/test_fast_paths.py,
tests/test_lora_fused.py) and is kept only while it pays: its gain on a training step,
measured twin against formula in one process (``benchmarks/ab_versions.py --without NAME``),
is in benchmarks/RESULTS.md.

=========================  ==========================  =========================================
op of the core             twin                        what it saves
=========================  ==========================  =========================================
functional.layer_norm      norms.layer_norm            passes over x; keeps mean and rstd only
functional.gelu            norms.gelu                  temporaries; keeps x only
functional.attention       attention.attention         one op; skips the hidden corner
lora.LoRALinear.forward    lora.forward                one op; keeps A z (N x r) only
=========================  ==========================  =========================================
"""

from __future__ import annotations

from minilora import backend

from . import attention, lora, norms

TWINS = {
    "functional.layer_norm": norms.layer_norm,
    "functional.gelu": norms.gelu,
    "functional.attention": attention.attention,
    "lora.LoRALinear.forward": lora.forward,
}


def install(names=None) -> None:
    """Register the twins (all, or those named) with the core's switch."""
    for name in TWINS if names is None else names:
        backend.install_twin(name, TWINS[name])


def uninstall(names=None) -> None:
    """Remove the twins (all, or those named): their ops run their own bodies."""
    for name in TWINS if names is None else names:
        backend.install_twin(name, None)
