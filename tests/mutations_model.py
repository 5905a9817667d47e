"""More typical mistakes (issue 27), in the model-level LoRA parts: inject_lora and
mark_trainable. Format: mutations_graph.py."""

# ruff: noqa: E501  (the snippets are lines of the library's source, matched exactly)

CHOSEN = "chosen = [n for n in names if _matches(n, config.target_modules)]"
INJECT = [
    (
        "inject_lora",
        "lora.py",
        [(CHOSEN, "chosen = [n for n in names if any(t in n for t in config.target_modules)]")],
        "matched as a substring",
    ),
    (
        "inject_lora",
        "lora.py",
        [
            (
                CHOSEN,
                "chosen = [n for n in names if any(n.endswith(t) for t in config.target_modules)]",
            )
        ],
        "ends with 'q_proj' but is another layer",
    ),
    (
        "inject_lora",
        "lora.py",
        [(CHOSEN, 'chosen = [n for n in names if n.rsplit(".", 1)[-1] in config.target_modules]')],
        "by its full name",
    ),
    (
        "inject_lora",
        "lora.py",
        [
            (
                CHOSEN,
                "chosen = [n for n in names if any(n.startswith(t) for t in config.target_modules)]",
            )
        ],
        "matched as a prefix",
    ),
    (
        "inject_lora",
        "lora.py",
        [
            (
                "            if not isinstance(layer, LoRALinear):\n                layer = LoRALinear(layer)\n",
                "            if isinstance(layer, LoRALinear):\n                continue\n            if True:\n                layer = LoRALinear(layer)\n",
            )
        ],
        "must be kept AND get the new adapter",
    ),
    (
        "inject_lora",
        "lora.py",
        [
            (
                "            if not isinstance(layer, LoRALinear):\n                layer = LoRALinear(layer)\n",
                "            if True:\n                layer = LoRALinear(layer)\n",
            )
        ],
        "wrapped again",
    ),
    (
        "inject_lora",
        "lora.py",
        [
            (
                "                layer = LoRALinear(layer)\n",
                "                layer = LoRALinear(Linear(layer.in_features, layer.out_features))\n",
            )
        ],
        "wrap the model's own Linear",
    ),
    (
        "inject_lora",
        "lora.py",
        [("                model.set_submodule(name, layer)\n", "")],
        "set_submodule",
    ),
]

MARK = [
    (
        "mark_trainable",
        "lora.py",
        [
            (
                'trainable = ".lora_A." in name or ".lora_B." in name',
                'trainable = "lora_A" in name or "lora_B" in name',
            )
        ],
        "not a substring",
    ),
    (
        "mark_trainable",
        "lora.py",
        [('trainable = bias == "all" or (', "trainable = (")],
        "bias='all'",
    ),
    (
        "mark_trainable",
        "lora.py",
        [('(bias == "lora_only" and name in lora_bias_names)', '(bias == "lora_only")')],
        "bias='lora_only'",
    ),
    (
        "mark_trainable",
        "lora.py",
        [
            (
                "        p.requires_grad_(trainable)\n",
                "        if trainable:\n            p.requires_grad_(True)\n",
            )
        ],
        "still train",
    ),
    (
        "mark_trainable",
        "lora.py",
        [
            (
                'trainable = ".lora_A." in name or ".lora_B." in name',
                'trainable = ".lora_A." in name',
            )
        ],
        "A and B must train",
    ),
    (
        "mark_trainable",
        "lora.py",
        [
            (
                'trainable = ".lora_A." in name or ".lora_B." in name',
                'trainable = ".lora_A.default." in name or ".lora_B.default." in name',
            )
        ],
        "of every adapter train",
    ),
]

MUTATIONS_MODEL = INJECT + MARK
