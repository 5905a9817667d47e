"""What the benchmark measures: model configurations, modes and training settings.

Imports nothing but the standard library: ``bench.py`` reads these (through its
argument parser) before it may load NumPy, see ``environment.py``.
"""

CONFIGS = {
    "small": {
        "vocab_size": 65,
        "n_layer": 4,
        "n_head": 4,
        "d_model": 128,
        "block_size": 64,
        "batch": 32,
    },
    "medium": {
        "vocab_size": 65,
        "n_layer": 6,
        "n_head": 8,
        "d_model": 384,
        "block_size": 128,
        "batch": 16,
    },
    # GPT-2 small's shape (124M parameters with GPT-2's 50,257-token vocabulary; 92M with this
    # one), the GPU's target. Not in "all" on the CPU, where one step takes several seconds.
    "gpt2s": {
        "vocab_size": 8192,
        "n_layer": 12,
        "n_head": 12,
        "d_model": 768,
        "block_size": 256,
        "batch": 8,
    },
}
CPU_ALL = ("small", "medium")  # what --config all runs on the CPU (on a GPU: every config)
MODES = ("full", "lora", "infer_base", "infer_unmerged", "infer_merged")
TRAINING = ("full", "lora")
LABEL = {
    "full": "full fine-tuning",
    "lora": "LoRA r=8 (q, v)",
    "infer_base": "infer base",
    "infer_unmerged": "infer LoRA unmerged",
    "infer_merged": "infer LoRA merged",
}
LORA_R, LORA_ALPHA, LORA_TARGETS = 8, 16.0, ("q_proj", "v_proj")
LR, WEIGHT_DECAY = 1e-3, 0.01
