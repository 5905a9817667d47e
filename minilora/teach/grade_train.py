"""The grader's checks of training: answer_mask and train_step.

The answer-only loss is checked on a hand-made tokenizer (one id per character), where the
right targets can be written down, and each off-by-one has its own symptom. The training step
is watched by an optimizer that records what it sees at each ``step()`` (the gradients, after
any clipping) on a tiny GPT with LoRA, so that the order of zero_grad, backward, clipping and
the step is graded by its effect: zero_grad before backward or after the step (the Hugging Face
Trainer's order) both pass. A short fine-tune on a copying task must bring the loss down.
"""

from __future__ import annotations

import numpy as np
from grade_tools import Check, close, fail, tiny_gpt, tokens

EXAMPLES = [("ab=", "ba\n"), ("hello?", "yes\n"), ("x=", "abc\n")]


class CharTokenizer:
    """One id per character: a..z, then a few symbols."""

    chars = "abcdefghijklmnopqrstuvwxyz=?\n "

    def encode(self, text):
        return np.array([self.chars.index(c) for c in text], dtype=np.int64)

    def decode(self, ids):
        return "".join(self.chars[int(i)] for i in ids)


def _expected(examples, ignore=-100, first=0, last=0):
    """(x, y) with the loss from answer token ``first`` to the ``last``-th from the end
    (0, 0: the right targets), and y over every next token."""
    tok = CharTokenizer()
    encoded = [(np.concatenate([tok.encode(p), tok.encode(a)]), len(p)) for p, a in examples]
    width = max(len(ids) for ids, _ in encoded) - 1
    x = np.zeros((len(encoded), width), dtype=np.int64)
    y = np.full((len(encoded), width), ignore, dtype=np.int64)
    everything = y.copy()
    for i, (ids, p) in enumerate(encoded):
        n = len(ids)
        x[i, : n - 1] = ids[:-1]
        y[i, p - 1 + first : n - 1 - last] = ids[p + first : n - last]
        everything[i, : n - 1] = ids[1:]
    return x, y, everything


# ---- answer_mask -----------------------------------------------------------------------------


def check_answer_targets():
    from minilora.work.tasks import task_batch

    for ignore in (-100, -1):
        x, y = task_batch(EXAMPLES, CharTokenizer(), 32, ignore_index=ignore)
        want_x, want_y, everything = _expected(EXAMPLES, ignore)
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != want_x.shape or not np.array_equal(x, want_x):
            fail(
                f"x is wrong: expected the tokens of prompt + answer without the last, padded "
                f"with 0 (first row {want_x[0].tolist()}, got {x[0].tolist()})"
            )
        if y.shape != want_y.shape:
            fail(f"y has shape {y.shape}, expected {want_y.shape} (x's)")
        if np.array_equal(y, want_y):
            continue
        named = [
            (
                everything,
                "the loss covers the prompt tokens too: set y to ignore_index except "
                "where the next token is an answer token",
            ),
            (
                _expected(EXAMPLES, ignore, first=1)[1],
                "the first answer token is masked: it is "
                "predicted at the last prompt position, p - 1 (y[p - 1] = ids[p])",
            ),
            (
                _expected(EXAMPLES, ignore, last=1)[1],
                "the last answer token (the terminator) is "
                "masked: the loss covers the answer up to its end, so the model learns to stop",
            ),
            (
                _expected(EXAMPLES, ignore, first=-1)[1],
                "one prompt token too many is in the loss: the first target is at position p - 1",
            ),
            (
                np.where(want_y != ignore, want_x, ignore),
                "the targets equal the inputs: y[t] is the token AFTER x[t] (ids[t + 1])",
            ),
        ]
        for wrong, fault in named:
            if np.array_equal(y, wrong):
                fail(fault)
        if np.array_equal(np.roll(y, 1, axis=1)[:, 1:], want_y[:, 1:]):
            fail("the targets are one position late: y[t] is the token after x[t]")
        if np.array_equal(np.roll(y, -1, axis=1)[:, :-1], want_y[:, :-1]):
            fail("the targets are one position early: y[t] is the token after x[t]")
        if ignore == -1 and np.any(y == -100):
            fail(f"ignore_index={ignore} is not used for the positions outside the answer")
        fail(f"y is wrong: expected {want_y[0].tolist()} for {EXAMPLES[0]!r}, got {y[0].tolist()}")


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
            "prompt tokens must contribute nothing, every answer token must count"
        )


# ---- train_step ----------------------------------------------------------------------------


def _setup(seed=0, nan=False):
    """A tiny GPT with LoRA (B random, so every adapter weight has a gradient), a batch, and
    the gradients of that batch's loss computed apart."""
    from minilora.lora import LoRAConfig, inject_lora

    model = tiny_gpt(seed=seed)
    inject_lora(model, LoRAConfig(r=4, alpha=8), generator=np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = (p.data + 0.2 * rng.standard_normal(p.shape)).astype(np.float32)
    if nan:
        params[0].data[0, 0] = np.nan
    idx = tokens(seed, shape=(4, 9))
    x, y = idx[:, :-1], idx[:, 1:]
    _, loss = model(x, y)
    loss.backward()
    grads = [p.grad.copy() for p in params]
    model.zero_grad()
    return model, params, x, y, loss.item(), grads


def _watcher(params, lr=1e-12):
    from minilora.optim import SGD

    class Watcher(SGD):
        """SGD that records the gradients it steps with."""

        seen: list = []

        def step(self):
            self.seen.append([None if p.grad is None else p.grad.copy() for p in self.params])
            super().step()

    opt = Watcher(params, lr=lr)
    opt.seen = []
    return opt


def _norm(grads):
    return float(np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads)))


def _same(grads, want, rtol=1e-4):
    return all(g is not None and close(g, w, rtol, 1e-7) for g, w in zip(grads, want))


def check_step_gradients():
    """Two steps with grad_clip=0 at a tiny learning rate: each step sees this batch's
    gradients alone, unclipped."""
    from minilora.work.train import train_step

    model, params, x, y, _, want = _setup()
    opt = _watcher(params)
    for k in range(2):
        train_step(model, opt, x, y, 0.0)
        if len(opt.seen) != k + 1:
            fail(
                f"after {k + 1} call(s) optimizer.step() ran {len(opt.seen)} times: call it "
                "once per step, after backward"
            )
        seen = opt.seen[-1]
        if all(g is None for g in seen):
            fail(
                "at optimizer.step() no parameter has a gradient: call loss.backward() before "
                "the step, and zero_grad before backward (or after the step), not in between"
            )
        if _same(seen, want):
            continue
        if _norm(seen) < 1e-6 * _norm(want):
            fail("with grad_clip=0 the gradients were clipped to 0: clip only when grad_clip > 0")
        doubled = [close(g, 2 * w, 1e-4, 1e-7) for g, w in zip(seen, want) if g is not None]
        if k == 1 and all(doubled):
            fail(
                "the second step's gradients are twice the first's: gradients accumulate in "
                ".grad, so call optimizer.zero_grad() before loss.backward() (or after the "
                "step)"
            )
        if k == 1 and any(doubled):
            fail(
                f"{sum(doubled)} of {len(doubled)} gradients accumulated into the second step: "
                "clear every gradient (optimizer.zero_grad()), not some"
            )
        ratio = _norm(seen) / _norm(want)
        fail(
            f"step {k + 1}: the gradients at optimizer.step() are not this batch's (norm "
            f"{_norm(seen):.4g}, expected {_norm(want):.4g}, ratio {ratio:.3g})"
        )


def check_step_returns_the_loss():
    from minilora.optim import AdamW
    from minilora.work.train import train_step

    model, params, x, y, want, _ = _setup()
    before = [p.data.copy() for p in params]
    got = train_step(model, AdamW(params, lr=1e-2), x, y, 1.0)
    if not isinstance(got, float):
        fail(
            f"train_step returned {type(got).__name__}; expected the loss as a float (loss.item())"
        )
    if not np.isclose(got, want, rtol=1e-5):
        fail(
            f"train_step returned {got:.6g}; this batch's loss before the step is {want:.6g}: "
            "return the loss computed for the step, not one computed after it"
        )
    if all(np.array_equal(p.data, b) for p, b in zip(params, before)):
        fail("no parameter changed: call optimizer.step() after backward")


def check_step_clips_before_the_step():
    from minilora.work.train import train_step

    model, params, x, y, _, want = _setup()
    opt = _watcher(params)
    clip = 1e-3
    train_step(model, opt, x, y, clip)
    if not opt.seen:
        fail("optimizer.step() was never called")
    seen = opt.seen[-1]
    if any(g is None for g in seen):
        fail("at optimizer.step() some parameters have no gradient")
    after = [p.grad for p in params]
    if _norm(seen) > clip * 1.01:
        if all(g is not None for g in after) and _norm(after) <= clip * 1.01:
            fail(
                "the gradients were clipped after optimizer.step(): clip before the step, so "
                "that the step uses the clipped gradients"
            )
        if all(_norm([g]) <= clip * 1.01 for g in seen):
            fail(
                "each gradient was clipped on its own: clip their joint (global) norm "
                "(clip_grad_norm(optimizer.params, grad_clip))"
            )
        fail(
            f"with grad_clip={clip} the gradients at the step have norm {_norm(seen):.3g}: clip "
            "their global norm to grad_clip before the step"
        )
    scale = _norm(seen) / _norm(want)
    if not _same(seen, [scale * w for w in want], 1e-3):
        fail(
            "the clipped gradients do not point the way of the batch's gradient: scale all of "
            "them by one factor (grad_clip / global norm)"
        )


def check_step_non_finite_loss():
    from minilora.work.train import train_step

    model, params, x, y, loss, _ = _setup(nan=True)
    before = [p.data.copy() for p in params]
    opt = _watcher(params, lr=1e-3)
    got = train_step(model, opt, x, y, 1.0)
    if opt.seen or not all(
        np.array_equal(p.data, b, equal_nan=True) for p, b in zip(params, before)
    ):
        fail(
            "a NaN loss was stepped into the weights: when the loss is not finite, return it "
            "without a step (the caller stops the training)"
        )
    if not isinstance(got, float) or np.isfinite(got):
        fail(f"with a NaN loss train_step returned {got!r}; expected the loss (nan) as a float")


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
    model.requires_grad_(True)  # everything trains: a random base is no base for LoRA alone
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


NAN_HINTS = (
    (
        "FloatingPointError",
        "",
        "a non-finite loss returns (as a float) without a step: the caller stops the training",
    ),
    (
        "RuntimeError",
        "",
        "a non-finite loss returns (as a float) without a step: the caller stops the training",
    ),
)

CHECKS = {
    "answer_mask": [
        Check(
            "targets on the answer tokens only",
            check_answer_targets,
            (
                (
                    "IndexError",
                    "",
                    "x holds the tokens but the last (ids[:-1]); y[t] is the token after x[t]",
                ),
                (
                    "ValueError",
                    "",
                    "x holds the tokens but the last (ids[:-1]); y[t] is the token after x[t]",
                ),
            ),
        ),
        Check("prompt tokens add nothing to the loss", check_prompt_contributes_nothing),
    ],
    "train_step": [
        Check("each step sees its batch's gradients (grad_clip=0)", check_step_gradients),
        Check("returns the loss before the step, updates", check_step_returns_the_loss),
        Check("clips the global norm before the step", check_step_clips_before_the_step),
        Check("a NaN loss changes nothing", check_step_non_finite_loss, NAN_HINTS),
        Check("a short fine-tune learns", check_short_finetune_learns, seconds=15),
    ],
}
