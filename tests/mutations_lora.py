"""More typical mistakes (issue 27), in the LoRA layer's parts: lora_init, lora_forward, merge,
unmerge. Format: mutations_graph.py."""

# ruff: noqa: E501  (the snippets are lines of the library's source, matched exactly)

from mutations_graph import REGION

FORWARD = "return self.base_layer(x) + scaling * B(A(F.dropout(x, p, self.training)))"

INIT = [
    (
        "lora_init",
        "lora.py",
        [
            (
                "a = rng.uniform(-bound, bound, A.weight.shape)",
                "a = np.random.default_rng().uniform(-bound, bound, A.weight.shape)",
            )
        ],
        "not drawn from the generator",
    ),
    (
        "lora_init",
        "lora.py",
        [
            (
                "a = rng.normal(0.0, 1.0 / config.r, A.weight.shape)",
                "a = np.random.normal(0.0, 1.0 / config.r, A.weight.shape)",
            )
        ],
        "not drawn from the generator",
    ),
    (
        "lora_init",
        "lora.py",
        [
            (
                "a = rng.uniform(-bound, bound, A.weight.shape)",
                "a = np.random.default_rng(0).uniform(-bound, bound, A.weight.shape)",
            )
        ],
        "two seeds gave the same A",
    ),
    (
        "lora_init",
        "lora.py",
        [
            (
                "bound = 1.0 / math.sqrt(self.in_features)",
                "bound = 1.0 / math.sqrt(self.out_features)",
            )
        ],
        "kaiming's bound uses d_in",
    ),
    (
        "lora_init",
        "lora.py",
        [
            (
                "a = rng.normal(0.0, 1.0 / config.r, A.weight.shape)",
                "a = rng.normal(0.0, 1.0 / math.sqrt(config.r), A.weight.shape)",
            )
        ],
        "the std is 1/r",
    ),
    ("lora_init", "lora.py", [('if config.init == "kaiming":', "if True:")], "follow config.init"),
    (
        "lora_init",
        "lora.py",
        [("A.weight.data = a.astype(dtype)", "A.weight.data = a")],
        "A is float64",
    ),
    (
        "lora_init",
        "lora.py",
        [
            (
                "B = zeros_linear(config.r, self.out_features, dtype)",
                "B = zeros_linear(self.out_features, config.r, dtype)",
            )
        ],
        "expected A (r, d_in)",
    ),
]

LORA_FORWARD = [
    (
        "lora_forward",
        "lora.py",
        [("B(A(F.dropout(x, p, self.training)))", "B(A(F.dropout(x, p, True)))")],
        "applied in evaluation mode",
    ),
    (
        "lora_forward",
        "lora.py",
        [(FORWARD, "return self.base_layer(x) + scaling * F.dropout(B(A(x)), p, self.training)")],
        "applied to the adapter's output",
    ),
    (
        "lora_forward",
        "lora.py",
        [(FORWARD, "return self.base_layer(x) + scaling * B(A(x))")],
        "never applied",
    ),
    (
        "lora_forward",
        "lora.py",
        [(FORWARD, "return self.base_layer(x) + scaling * B(F.dropout(A(x), p, self.training))")],
        "between A and B",
    ),
    (
        "lora_forward",
        "lora.py",
        [
            (
                FORWARD,
                "return self.base_layer(x) + (config.alpha / config.r) * B(A(F.dropout(x, p, self.training)))",
            )
        ],
        "written out as alpha/r",
    ),
    (
        "lora_forward",
        "lora.py",
        [
            (
                FORWARD,
                "h = F.dropout(x, p, self.training).data @ A.weight.data.T @ B.weight.data.T\n        return self.base_layer(x) + Tensor(scaling * h)",
            )
        ],
        "compute with the layers (Tensors)",
    ),
    (
        "lora_forward",
        "lora.py",
        [
            (
                FORWARD,
                "return self.base_layer(x) + (1 / scaling) * B(A(F.dropout(x, p, self.training)))",
            )
        ],
        "scaled by r/alpha",
    ),
    (
        "lora_forward",
        "lora.py",
        [
            (
                FORWARD,
                "return x @ self.base_layer.weight.T + scaling * B(A(F.dropout(x, p, self.training)))",
            )
        ],
        "bias is missing",
    ),
    (
        "lora_forward",
        "lora.py",
        [(FORWARD, "return self.base_layer(x) + scaling * A(B(F.dropout(x, p, self.training)))")],
        "A and B swapped",
    ),
]

MERGE = [
    (
        "merge",
        "lora.py",
        [
            (
                "return (self.configs[name].scaling * (B @ A)).astype(",
                "return (self.configs[name].alpha / self.configs[name].r * (B @ A)).astype(",
            )
        ],
        "written out as alpha/r",
    ),
    (
        "merge",
        "lora.py",
        [
            (
                "return (self.configs[name].scaling * (B @ A)).astype(",
                "return (self.configs[name].scaling * (A.T @ B.T)).astype(",
            )
        ],
        "transposed",
    ),
    (
        "merge",
        "lora.py",
        [
            (
                "        merged = self.base_layer.weight.data + self.delta_weight()\n",
                "        self.base_layer.weight.data += self.delta_weight()\n        merged = self.base_layer.weight.data\n",
            )
        ],
        "added twice",
    ),
    (
        "merge",
        "lora.py",
        [
            (
                "merged = self.base_layer.weight.data + self.delta_weight()",
                "merged = self.base_layer.weight.data - self.delta_weight()",
            )
        ],
        "merge subtracted dW",
    ),
    (
        "merge",
        "lora.py",
        [
            (
                "        if dtype is not None:\n            return self.configs",
                "        if False:\n            return self.configs",
            )
        ],
        "is float32 for float64",
    ),
    (
        "merge",
        "lora.py",
        [
            (
                "return (self.configs[name].scaling * (B @ A)).astype(self.base_layer.weight.dtype)",
                "return self.configs[name].scaling * (B.astype(np.float64) @ A)",
            )
        ],
        "is float64 for float32",
    ),
    (
        "merge",
        "lora.py",
        [
            (
                "merged = self.base_layer.weight.data + self.delta_weight()",
                'merged = self.base_layer.weight.data + self.delta_weight("default")',
            )
        ],
        "not the active one",
    ),
]

W = "self.base_layer.weight.data"
UNMERGE = [
    (
        "unmerge",
        "lora.py",
        [
            (
                REGION,
                f"""        config = self.configs[self.merged_adapter]
        A = self.lora_A[self.merged_adapter].weight.data
        B = self.lora_B[self.merged_adapter].weight.data
        {W} = {W} - (config.alpha / config.r) * (B @ A)
""",
            )
        ],
        "written out as alpha/r",
    ),
    (
        "unmerge",
        "lora.py",
        [
            (
                REGION,
                f"        {W} = {W}.astype(np.float64) - self.delta_weight(self.merged_adapter, np.float64)\n",
            )
        ],
        "is float64 for float32",
    ),
    ("unmerge", "lora.py", [(REGION, "        pass\n")], "left the merged W"),
    (
        "unmerge",
        "lora.py",
        [(REGION, f"        {W} = self._saved_w0\n")],
        "rely only on what the reference merge leaves",
    ),
    (
        "unmerge",
        "lora.py",
        [
            (
                REGION,
                f"""        A = self.lora_A[self.merged_adapter].weight.data
        B = self.lora_B[self.merged_adapter].weight.data
        {W} = {W} - B @ A
""",
            )
        ],
        "forgot the scaling",
    ),
    (
        "unmerge",
        "lora.py",
        [
            (
                "self.delta_weight(\n            self.merged_adapter\n        )",
                'self.delta_weight("default")',
            )
        ],
        "not the merged one",
    ),
]

MUTATIONS_LORA = INIT + LORA_FORWARD + MERGE + UNMERGE
