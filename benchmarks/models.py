"""The benchmarked models: a minilora and a PyTorch model per mode, from identical weights.

A runner (``MiniloraRunner``, ``TorchRunner``) holds one model, its batch and,
for the training modes, its AdamW; ``step()`` runs one step of its mode and
waits for the device. PyTorch is imported only by ``load_torch``;
``loaded_torch()`` returns it afterwards (None before, or with ``--no-torch``).
"""

from __future__ import annotations

import numpy as np
from configs import LORA_ALPHA, LORA_R, LORA_TARGETS, LR, TRAINING, WEIGHT_DECAY

import minilora
from minilora import backend
from minilora.lora import LoRAConfig, inject_lora, lora_layers
from minilora.lora import merge as minilora_merge
from minilora.optim import AdamW
from minilora.tensor import no_grad
from minilora.transformer import GPT, GPTConfig
from minilora.work.memory import tune_malloc

tune_malloc()  # as a training run does (MINILORA_MALLOC_TUNING=0 turns it off)

torch = None  # imported by load_torch() when wanted


def load_torch(args):
    """Import torch and torch_reference, or return None (the PyTorch columns are skipped)."""
    global torch
    if args.no_torch:
        return None
    try:
        import torch as _torch
    except ImportError:
        return None
    torch = _torch
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("note: this torch has no CUDA device; the PyTorch columns are skipped")
            return None
        torch.backends.cuda.matmul.allow_tf32 = False  # plain float32, as CuPy's default
    import torch_reference

    return torch_reference


def loaded_torch():
    """The torch module once ``load_torch`` has imported it, else None."""
    return torch


def cuda_sync():
    backend.array_module("cuda").cuda.Device().synchronize()


def torch_sync(device: str):
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def gpt_config(spec: dict) -> GPTConfig:
    fields = ("vocab_size", "block_size", "n_layer", "n_head", "d_model")
    return GPTConfig(**{k: spec[k] for k in fields}, dropout=0.0)


def make_batch(spec: dict, seed: int):
    rng = np.random.default_rng(seed + 1000)
    shape = (spec["batch"], spec["block_size"])
    idx = rng.integers(0, spec["vocab_size"], shape, dtype=np.int64)
    targets = rng.integers(0, spec["vocab_size"], shape, dtype=np.int64)
    return idx, targets


def build_minilora_model(spec: dict, mode: str, seed: int) -> tuple[GPT, dict]:
    """The CPU model for ``mode`` and a copy of its (unmerged) state dict for PyTorch."""
    minilora.manual_seed(seed)
    model = GPT(gpt_config(spec), generator=np.random.default_rng(seed))
    if mode != "full" and mode != "infer_base":
        config = LoRAConfig(r=LORA_R, alpha=LORA_ALPHA, target_modules=LORA_TARGETS)
        inject_lora(model, config, generator=np.random.default_rng(seed + 1))
        if mode.startswith("infer"):  # B = 0 would make the merge a no-op
            rng = np.random.default_rng(seed + 2)
            for layer in lora_layers(model).values():
                w = layer.lora_B["default"].weight
                w.data = rng.normal(0.0, 0.02, w.shape).astype(np.float32)
    state = {k: np.array(v, copy=True) for k, v in model.state_dict().items()}
    return model, state


class MiniloraRunner:
    engine = "minilora"

    def __init__(self, spec: dict, mode: str, device: str, batch, seed: int):
        self.mode, self.device = mode, device
        self.model, self.state = build_minilora_model(spec, mode, seed)
        if mode == "infer_merged":
            minilora_merge(self.model)
        self.model.to(device)
        self.model.train(mode in TRAINING)
        self.x = backend.to_device(batch[0], device)
        self.y = backend.to_device(batch[1], device)
        self.opt = None
        if mode in TRAINING:
            self.opt = AdamW(self.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        self.sync = cuda_sync if device == "cuda" else (lambda: None)

    def step(self) -> None:
        if self.opt is not None:
            self.opt.zero_grad()
            _, loss = self.model(self.x, self.y)
            loss.backward()
            self.opt.step()
        else:
            with no_grad():
                self.model(self.x)
        self.sync()

    def logits(self) -> np.ndarray:
        with no_grad():
            return self.model(self.x)[0].numpy()

    def state_bytes(self) -> dict:
        params = self.model.parameters()
        return {
            "params": sum(p.data.nbytes for p in params),
            "grads": sum(p.grad.nbytes for p in params if p.grad is not None),
            "optimizer": self.opt.state_bytes() if self.opt is not None else 0,
        }


class TorchRunner:
    engine = "torch"

    def __init__(self, spec, mode, device, batch, seed, state, ref, attention):
        self.mode, self.device, self.ref = mode, device, ref
        torch.manual_seed(seed)
        model = ref.TorchGPT.from_config(gpt_config(spec), attention=attention)
        if mode != "full" and mode != "infer_base":
            ref.inject_lora(model, LORA_R, LORA_ALPHA, LORA_TARGETS)
        ref.load_minilora_state(model, state)
        if mode == "infer_merged":
            ref.merge(model)
        self.model = model.to(device).train(mode in TRAINING)
        self.x = torch.as_tensor(batch[0], device=device)
        self.y = torch.as_tensor(batch[1], device=device)
        self.opt = None
        if mode in TRAINING:
            trainable = [p for p in model.parameters() if p.requires_grad]
            self.opt = torch.optim.AdamW(trainable, lr=LR, weight_decay=WEIGHT_DECAY)
        self.sync = torch_sync(device)

    def step(self) -> None:
        if self.opt is not None:
            self.opt.zero_grad(set_to_none=True)
            loss = self.ref.loss_fn(self.model(self.x), self.y)
            loss.backward()
            self.opt.step()
        else:
            with torch.no_grad():
                self.model(self.x)
        self.sync()

    def logits(self) -> np.ndarray:
        with torch.no_grad():
            return self.model(self.x).cpu().numpy()

    def state_bytes(self) -> dict:
        return self.ref.state_bytes(self.model, self.opt)


def build_runners(spec, modes, args, batch, ref) -> dict:
    runners = {}
    for mode in modes:
        m = MiniloraRunner(spec, mode, args.device, batch, args.seed)
        runners[mode, "minilora"] = m
        if ref is not None:
            runners[mode, "torch"] = TorchRunner(
                spec, mode, args.device, batch, args.seed, m.state, ref, args.torch_attention
            )
        m.state = None
    return runners


def agreement(runners: dict, modes) -> dict:
    """Max |logits difference|: minilora vs torch per mode, and merged vs unmerged."""
    out, logits = {}, {}
    for (mode, engine), runner in runners.items():
        logits[mode, engine] = runner.logits()
    for mode in modes:
        if (mode, "torch") in logits:
            diff = np.abs(logits[mode, "minilora"] - logits[mode, "torch"]).max()
            out[f"{mode}: minilora vs torch"] = float(diff)
    for engine in ("minilora", "torch"):
        if ("infer_merged", engine) in logits and ("infer_unmerged", engine) in logits:
            diff = np.abs(logits["infer_merged", engine] - logits["infer_unmerged", engine]).max()
            out[f"{engine}: merged vs unmerged"] = float(diff)
    return out
