"""The core (engine, model, LoRA) imports numpy and the standard library only."""

import subprocess
import sys

CORE = [
    "minilora",
    "minilora.backend",
    "minilora.tensor",
    "minilora.ops",
    "minilora.functional",
    "minilora.nn",
    "minilora.transformer",
    "minilora.lora",
    "minilora.gradcheck",
]


def test_core_imports_no_third_party_module_but_numpy():
    code = (
        "import sys\n"
        f"for name in {CORE!r}: __import__(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(eval(out.stdout))
    for forbidden in ("safetensors", "tqdm", "cupy", "torch", "matplotlib"):
        assert forbidden not in loaded, f"the core imported {forbidden}"
    assert "numpy" in loaded
