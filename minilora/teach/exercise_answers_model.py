"""The answers of the notebooks' exercises that take a model (notebooks 2-4): the reference's
greedy tokens, answer-only targets and training run, the bytes of AdamW's state, and the hints
of every such checker. Left out of the student package like ``exercise_answers.py``, which
describes the format; the inputs here are the checkers' own (fixed seeds).
"""

from __future__ import annotations

import numpy as np

from minilora.teach.checking import tiny_gpt
from minilora.teach.exercise_inputs import (
    GREEDY_PROMPTS,
    TARGET_PAIRS,
    lora_model,
    training_batch,
)


def _greedy(model, prompt, n, position=-1, append=True) -> np.ndarray:
    """Greedy decoding, and two typical mistakes (the wrong position, no append)."""
    from minilora.tensor import no_grad

    ids, new = [int(t) for t in prompt], []
    block = model.config.block_size
    with no_grad():
        for _ in range(n):
            context = ids[-block:] if append else list(prompt)[-block:]
            logits, _ = model(np.array(context, dtype=np.int64)[None, :])
            token = int(np.argmax(logits.numpy()[0, position]))
            new.append(token)
            ids.append(token)
    return np.array(new, dtype=np.int64)


def greedy_decode() -> dict:
    model = tiny_gpt(1, scale=0.7)
    cases = []
    for prompt, n in GREEDY_PROMPTS:
        cases.append(
            {
                "want": model.generate(prompt[None, :], n, temperature=0)[0, len(prompt) :],
                "first_position": _greedy(model, prompt, n, position=0),
                "prompt_only": _greedy(model, prompt, n, append=False),
            }
        )
    hint = (
        "repeat max_new_tokens times: logits, _ = model(ids[-block_size:][None, :]); take "
        "np.argmax of the logits at the last position (logits.data[0, -1]), append it to ids; "
        "return only the new tokens."
    )
    return {"cases": cases, "hints": {"": hint}}


def _targets(prompt, answer, first=None):
    ids = np.concatenate([prompt, answer]).astype(np.int64)
    x, y = ids[:-1].copy(), ids[1:].copy()
    y[: (len(prompt) - 1) if first is None else first] = -100
    return x, y


def answer_targets() -> dict:
    cases = []
    for prompt, answer in TARGET_PAIRS:
        x, y = _targets(prompt, answer)
        p = len(prompt)
        swapped = np.concatenate([prompt, answer])[1:]
        swapped[p - 1 :] = -100  # the prompt kept, the answer masked
        cases.append(
            {
                "x": x,
                "y": y,
                "unmasked": np.concatenate([prompt, answer])[1:],
                "first_masked": _targets(prompt, answer, first=p)[1],
                "prompt_kept": _targets(prompt, answer, first=p - 2)[1],
                "answer_masked": swapped,
            }
        )
    hint = (
        "ids = concatenate(prompt, answer); x = ids[:-1]; y = ids[1:] with y[:len(prompt) - 1] "
        "= -100 (position t predicts token t + 1, so the first answer token is predicted at "
        "position len(prompt) - 1)."
    )
    return {"cases": cases, "hints": {"": hint}}


def train_step() -> dict:
    """Three reference steps (zero_grad, forward, backward, step) with AdamW(lr=1e-2)."""
    from minilora import optim

    model = lora_model()
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.numpy().copy() for p in params]
    opt = optim.AdamW(params, lr=1e-2)
    x, y = training_batch()
    losses, weights = [], []
    for _ in range(3):
        opt.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        weights.append([p.numpy().copy() for p in params])
    hint = (
        "optimizer.zero_grad(); _, loss = model(x, y); loss.backward(); optimizer.step(); "
        "return loss.item()."
    )
    return {"losses": losses, "weights": weights, "start": start, "hints": {"": hint}}


def adamw_state_bytes() -> dict:
    """The bytes of two moments for every parameter of the checker's GPT with LoRA (the fault
    of counting frozen ones too)."""
    from minilora.lora import LoRAConfig, inject_lora
    from minilora.transformer import GPT, GPTConfig

    config = GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, d_model=8)
    model = GPT(config, generator=np.random.default_rng(0))
    inject_lora(model, LoRAConfig(r=2, alpha=4), generator=np.random.default_rng(1))
    everything = 2 * sum(p.data.nbytes for p in model.parameters())
    hint = (
        "AdamW keeps two arrays (m and v) the size of each *trainable* parameter "
        "(p.requires_grad); frozen ones cost nothing. Bytes = 2 * sum(p.data.nbytes)."
    )
    return {"everything": everything, "hints": {"": hint}}


def init_lora() -> dict:
    hint = (
        "A = rng.uniform(-1/sqrt(d_in), 1/sqrt(d_in), size=(r, d_in)) (loralib's Kaiming "
        "uniform) or rng.normal(0, 1/r, (r, d_in)); B = np.zeros((d_out, r))."
    )
    return {"hints": {"": hint}}


def add_lora() -> dict:
    hint = (
        "for each (path, module) in list(model.named_modules()): if it is a Linear and "
        "path.split('.')[-1] is in targets, layer = LoRALinear(module); "
        "layer.add_adapter('default', LoRAConfig(r=r, alpha=alpha), generator=rng); "
        "model.set_submodule(path, layer). Then p.requires_grad_('lora_' in n) for every "
        "(n, p) in model.named_parameters()."
    )
    return {"hints": {"": hint}}


def exact_match() -> dict:
    hint = (
        "compare each prediction with its answer after .strip() (surrounding spaces and "
        "newlines do not count; case does), and divide the hits by the number of answers."
    )
    return {"hints": {"": hint}}


MODEL_EXERCISES = {
    "init_lora": init_lora,
    "add_lora": add_lora,
    "greedy_decode": greedy_decode,
    "exact_match": exact_match,
    "answer_targets": answer_targets,
    "train_step": train_step,
    "adamw_state_bytes": adamw_state_bytes,
}
