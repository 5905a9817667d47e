"""The grader's checks of training and decoding: answer_mask, train_step, mark_trainable, greedy.

The answer-only loss is checked on a hand-made tokenizer (one id per character), where
the right targets can be written down; the training step on a tiny GPT with LoRA, where a
missing ``zero_grad`` doubles the second step's gradients; and a short fine-tune on a
copying task must bring the loss down clearly in 40 steps (about a second on a CPU).
"""

from __future__ import annotations

import numpy as np
from grade_tools import close, diagnose, fail, tiny_gpt, tokens

EXAMPLES = [("ab=", "ba\n"), ("hello?", "yes\n"), ("x=", "abc\n")]


class CharTokenizer:
    """One id per character: a..z, then a few symbols."""

    chars = "abcdefghijklmnopqrstuvwxyz=?\n "

    def encode(self, text):
        return np.array([self.chars.index(c) for c in text], dtype=np.int64)

    def decode(self, ids):
        return "".join(self.chars[int(i)] for i in ids)


def _expected(examples, ignore=-100):
    tok = CharTokenizer()
    encoded = [(np.concatenate([tok.encode(p), tok.encode(a)]), len(p)) for p, a in examples]
    width = max(len(ids) for ids, _ in encoded) - 1
    x = np.zeros((len(encoded), width), dtype=np.int64)
    y = np.full((len(encoded), width), ignore, dtype=np.int64)
    everything = y.copy()
    for i, (ids, p) in enumerate(encoded):
        x[i, : len(ids) - 1] = ids[:-1]
        y[i, p - 1 : len(ids) - 1] = ids[p:]
        everything[i, : len(ids) - 1] = ids[1:]
    return x, y, everything


# ---- answer_mask -----------------------------------------------------------------------------


def check_answer_targets():
    from minilora.work.tasks import task_batch

    for ignore in (-100, -1):
        x, y = task_batch(EXAMPLES, CharTokenizer(), 32, ignore_index=ignore)
        want_x, want_y, everything = _expected(EXAMPLES, ignore)
        if np.shape(x) != want_x.shape or not np.array_equal(x, want_x):
            fail(
                f"x is wrong: expected the tokens of prompt + answer without the last, padded "
                f"with 0 (first row {want_x[0].tolist()}, got {np.asarray(x)[0].tolist()})"
            )
        y = np.asarray(y)
        if y.shape == want_y.shape and np.array_equal(y, everything):
            fail(
                "the loss covers the prompt tokens too: set y to ignore_index except where "
                "the next token is an answer token"
            )
        if y.shape == want_y.shape and np.array_equal(np.roll(y, 1, axis=1)[:, 1:], want_y[:, 1:]):
            fail("the targets are one position late: y[t] is the token after x[t]")
        if y.shape == want_y.shape and np.array_equal(
            np.roll(y, -1, axis=1)[:, :-1], want_y[:, :-1]
        ):
            fail("the targets are one position early: y[t] is the token after x[t]")
        if y.shape != want_y.shape or not np.array_equal(y, want_y):
            ours = ignore if ignore != -100 else -1
            if np.any(y == ours) or (ignore == -1 and np.any(y == -100)):
                fail(f"ignore_index={ignore} is not used for the positions outside the answer")
            fail(
                f"y is wrong: expected {want_y[0].tolist()} for {EXAMPLES[0]!r}, got "
                f"{y[0].tolist() if y.ndim == 2 else y.tolist()}"
            )


def check_prompt_contributes_nothing():
    from minilora.tensor import no_grad
    from minilora.work.tasks import task_batch

    model = tiny_gpt(vocab=30)
    x, y = task_batch(EXAMPLES, CharTokenizer(), 16)
    with no_grad():
        logits, loss = model(x, y)
    z = logits.data.astype(np.float64)
    _, want_y, _ = _expected(EXAMPLES)
    keep = want_y != -100
    logp = z - z.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    want = -logp[keep, want_y[keep]].mean()
    if not close(loss.item(), want, rtol=1e-4, atol=1e-5):
        fail(
            f"the loss is {loss.item():.5g}; over the answer tokens only it is {want:.5g}: "
            "prompt tokens must contribute nothing"
        )


# ---- train_step ----------------------------------------------------------------------------


def _lora_model(seed=0):
    from minilora.lora import LoRAConfig, inject_lora

    model = tiny_gpt(seed=seed)
    inject_lora(model, LoRAConfig(r=4, alpha=8), generator=np.random.default_rng(seed))
    return model


def check_step_clears_gradients():
    from minilora.optim import SGD

    model = _lora_model()
    idx = tokens(shape=(4, 9))
    x, y = idx[:, :-1], idx[:, 1:]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = SGD(params, lr=1e-12)
    from minilora.work.train import train_step

    train_step(model, optimizer, x, y, 0.0)
    first = [None if p.grad is None else p.grad.copy() for p in params]
    train_step(model, optimizer, x, y, 0.0)
    if any(g is None for g in first) or any(p.grad is None for p in params):
        fail("after the step the trainable parameters have no .grad: call loss.backward()")
    g1 = np.concatenate([g.ravel() for g in first])
    g2 = np.concatenate([p.grad.ravel() for p in params])
    if np.allclose(g2, 2 * g1, rtol=1e-4, atol=1e-9) and np.abs(g1).max() > 0:
        fail(
            "the second step's gradients are twice the first's: gradients accumulate in "
            ".grad, so call optimizer.zero_grad() before loss.backward()"
        )
    diagnose(g2, g1, "the gradients of a repeated step")


def check_step_updates_and_returns_loss():
    from minilora.optim import AdamW
    from minilora.tensor import no_grad
    from minilora.work.train import train_step

    model = _lora_model()
    idx = tokens(shape=(4, 9))
    x, y = idx[:, :-1], idx[:, 1:]
    with no_grad():
        want = model(x, y)[1].item()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.data.copy() for p in params]
    got = train_step(model, AdamW(params, lr=1e-2), x, y, 1.0)
    if not isinstance(got, float) or not np.isclose(got, want, rtol=1e-5):
        fail(f"train_step returned {got!r}; expected the batch's loss {want:.5g} as a float")
    if all(np.array_equal(p.data, b) for p, b in zip(params, before)):
        fail("no parameter changed: call optimizer.step() after backward")
    optimizer = AdamW(params, lr=1e-2)
    train_step(model, optimizer, x, y, 1e-3)
    norm = np.sqrt(sum(float((p.grad**2).sum()) for p in params))
    if norm > 1e-3 * 1.01:
        fail(f"with grad_clip=1e-3 the gradient norm is {norm:.3g}: clip (clip_grad_norm)")


def check_short_finetune_learns():
    from minilora.lora import LoRAConfig, inject_lora
    from minilora.tensor import no_grad
    from minilora.work.tasks import sample_task_batch
    from minilora.work.train import TrainConfig, train

    rng = np.random.default_rng(0)
    letters = "abcdefgh"
    examples = [("".join(w) + "=", "".join(w) + "\n") for w in rng.choice(list(letters), (64, 3))]
    model = tiny_gpt(vocab=30, d_model=32, block=16, seed=1)
    inject_lora(model, LoRAConfig(r=8, alpha=16))
    for p in model.parameters():  # everything trains: a random base is no base for LoRA alone
        p.requires_grad_(True)
    tok = CharTokenizer()

    def get_batch(split, batch_rng):
        return sample_task_batch(examples, 16, batch_rng, tok, 16)

    with no_grad():
        start = np.mean(
            [model(*get_batch("val", np.random.default_rng(k)))[1].item() for k in range(3)]
        )
    config = TrainConfig(
        steps=40,
        batch_size=16,
        lr=3e-2,
        warmup=2,
        weight_decay=0.0,
        eval_every=0,
        eval_batches=3,
        progress=False,
    )
    result = train(model, get_batch, config)
    if not result.best_val_loss < 0.6 * start:
        fail(
            f"40 steps of fine-tuning took the loss from {start:.3f} to "
            f"{result.best_val_loss:.3f}; it should fall by 40% at least (reference: 3.38 to 1.28)"
        )


# ---- mark_trainable ----------------------------------------------------------------------


def check_mark_only_a_and_b():
    from minilora.lora import LoRAConfig, inject_lora, mark_only_lora_as_trainable

    model = tiny_gpt()
    inject_lora(model, LoRAConfig(r=2, alpha=4))
    for p in model.parameters():
        p.requires_grad_(True)
    mark_only_lora_as_trainable(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    frozen_lora = [n for n, p in model.named_parameters() if ".lora_" in n and not p.requires_grad]
    w0 = [n for n in trainable if "base_layer" in n]
    others = [n for n in trainable if ".lora_" not in n]
    if w0:
        fail(f"W0 is still trainable ({w0[0]}): freeze everything but lora_A and lora_B")
    if others:
        fail(f"{len(others)} other parameters still train ({others[0]}, ...): freeze them")
    if frozen_lora:
        fail(f"{frozen_lora[0]} is frozen: A and B must train")
    for bias, want in (("all", ".bias"), ("lora_only", "base_layer.bias")):
        mark_only_lora_as_trainable(model, bias)
        biases = sorted(
            n for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")
        )
        expected = sorted(n for n, _ in model.named_parameters() if n.endswith(want))
        if biases != expected:
            fail(f"bias={bias!r}: trainable biases {biases[:2]}..., expected {expected[:2]}...")


def check_frozen_get_no_gradient():
    from minilora.lora import LoRAConfig, inject_lora

    model, idx = tiny_gpt(), tokens()
    inject_lora(model, LoRAConfig(r=2, alpha=4))
    _, loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    for n, p in model.named_parameters():
        if ".lora_" not in n and p.grad is not None:
            fail(f"{n} is frozen but got a gradient: it must not require grad")
    grads = [p.grad for n, p in model.named_parameters() if ".lora_B." in n]
    if any(g is None for g in grads):
        fail("lora_B got no gradient: A and B must require grad")


# ---- greedy ---------------------------------------------------------------------------------


def check_greedy_is_argmax():
    from minilora.transformer import sample_next

    logits = np.random.default_rng(8).standard_normal((5, 11))
    got = sample_next(logits.copy(), 0.0, None, None)
    again = sample_next(logits.copy(), 0.0, None, np.random.default_rng(1))
    want = logits.argmax(axis=-1)
    got = np.asarray(got)
    if got.shape != want.shape:
        if got.shape == logits.argmax(axis=0).shape:
            fail("argmax over the wrong axis: one token per row, the argmax of axis -1")
        fail(f"greedy returned shape {got.shape}; expected one token per row {want.shape}")
    if not np.array_equal(got, np.asarray(again)):
        fail("two greedy calls gave different tokens: temperature 0 means argmax, no sampling")
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


CHECKS = {
    "mark_trainable": [
        ("only A and B train (bias modes)", check_mark_only_a_and_b, ""),
        ("frozen weights get no gradient", check_frozen_get_no_gradient, ""),
    ],
    "answer_mask": [
        ("targets on the answer tokens only", check_answer_targets, "y[p-1 : n-1] = ids[p:]"),
        ("prompt tokens add nothing to the loss", check_prompt_contributes_nothing, ""),
    ],
    "train_step": [
        ("gradients cleared every step", check_step_clears_gradients, ""),
        ("returns the loss, updates, clips", check_step_updates_and_returns_loss, ""),
        ("a short fine-tune learns", check_short_finetune_learns, ""),
    ],
    "greedy": [
        ("argmax per row, deterministic", check_greedy_is_argmax, "argmax(axis=-1)"),
        ("generate(temperature=0)", check_generate_greedy, ""),
    ],
}
