"""The fixed inputs of the notebooks' checkers that take a model, and a fault text that a crash
guess and a recorded wrong answer share: what both the checkers (``exercises_*.py``) and their
answers (``exercise_answers*.py``) use, and nothing that gives an answer away.
"""

from __future__ import annotations

import numpy as np

from minilora.teach.checking import tiny_gpt

GREEDY_PROMPTS = [(np.array([3, 1, 4], dtype=np.int64), 4), (np.array([2, 7, 1, 8, 2, 8]), 7)]
TARGET_PAIRS = [
    (np.array([5, 6, 7], dtype=np.int64), np.array([8, 9, 1], dtype=np.int64)),
    (np.array([4, 2, 2, 3, 5], dtype=np.int64), np.array([6, 1], dtype=np.int64)),
]
ONLY_LEADING = (
    "you summed only the leading axes that broadcasting added; an axis where `shape` "
    "has a 1 was stretched too and must be summed (keepdims=True)"
)


def lora_model():
    """The small GPT with LoRA (r 2 on q and v) that check_training_step trains."""
    from minilora.lora import LoRAConfig, inject_lora

    model = tiny_gpt(2)
    config = LoRAConfig(r=2, alpha=4.0, target_modules=("q_proj", "v_proj"))
    return inject_lora(model, config, generator=np.random.default_rng(3))


def training_batch():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 11, (4, 6))
    y = np.where(np.arange(6) < 2, -100, rng.integers(0, 11, (4, 6)))
    return x, y
