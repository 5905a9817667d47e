"""Checkers for notebooks 3-5: greedy decoding, exact match, the answer-only training step,
AdamW's state, and section 7's subspace similarity. The answers they compare with (the
reference's tokens, targets, losses and weights) come from ``recorded.answers``; the reference
code is not here."""

from __future__ import annotations

import numpy as np

from minilora.teach.checking import _as_tuple, _call, _check, _fail, _host, _passed, tiny_gpt
from minilora.teach.exercise_inputs import (
    GREEDY_PROMPTS,
    TARGET_PAIRS,
    lora_model,
    training_batch,
)
from minilora.teach.recorded import answers, hint_of


def check_greedy_decode(greedy_decode) -> bool:
    """``greedy_decode(model, prompt_ids, max_new_tokens) -> new_ids`` (temperature 0).

    Compared with ``model.generate(..., temperature=0)`` on a small random GPT
    (block_size 8): a prompt that fits with its continuation, then one that must slide.
    """
    name = "greedy_decode"
    found = answers(name)
    hint = found["hints"].get("", "")
    if not callable(greedy_decode):
        _fail("pass your function itself, e.g. check_greedy_decode(greedy_decode)")
    model = tiny_gpt(1, scale=0.7)
    block = model.config.block_size
    for (prompt, n), recorded in zip(GREEDY_PROMPTS, found["cases"]):
        want = recorded["want"]

        def crash(err, i, n=n, prompt=prompt):
            if "longer than block_size" in str(err):
                return (
                    f"the input grew past block_size = {block}: feed the model only the "
                    "last block_size tokens (ids[-block_size:])"
                )
            return ""

        args = {"model": model, "prompt_ids": prompt.copy(), "max_new_tokens": n}
        got = _call(name, greedy_decode, args, crash)
        what = f"{name}(prompt {prompt.tolist()}, max_new_tokens={n})"
        try:
            got = np.asarray(_host(got)).reshape(-1).astype(np.int64)
        except (TypeError, ValueError):
            _fail(f"{what} returned {got!r}, not a list of token ids.", "", hint)
        if np.array_equal(got, want):
            continue
        fault = ""
        if len(got) == len(prompt) + n and np.array_equal(got[len(prompt) :], want):
            fault = "you returned the prompt too: return only the new tokens"
        elif np.array_equal(got, recorded["first_position"]):
            fault = (
                "you took the logits of the first position: the next token is predicted at "
                "the last one (logits[0, -1])"
            )
        elif np.array_equal(got, recorded["prompt_only"]):
            fault = (
                "each step reads the prompt again: append every new token to the input "
                "before predicting the next one"
            )
        elif len(got) != n:
            fault = f"you returned {len(got)} tokens, max_new_tokens is {n}"
        elif not np.array_equal(
            got, np.asarray(greedy_decode(model, prompt.copy(), n)).reshape(-1)
        ):
            fault = "two calls give different tokens: you sample; greedy takes the argmax"
        _fail(f"{what} gave {got.tolist()}, expected {want.tolist()}.", fault, hint)
    print(
        f"Correct: {name} equals model.generate(temperature=0) on {len(GREEDY_PROMPTS)} prompts "
        f"(one longer than block_size = {block} with its continuation)."
    )
    return True


# ---- notebook 4: fine-tuning -------------------------------------------------------------


def check_exact_match(exact_match) -> bool:
    """``exact_match(predictions, answers) -> float``: the fraction equal after strip()."""
    cases = [
        (["SELECT a FROM t", "x"], ["SELECT a FROM t", "y"], 0.5),
        ([" SELECT a FROM t\n", "SELECT b"], ["SELECT a FROM t", "SELECT b "], 1.0),
        (["select a from t"], ["SELECT a FROM t"], 0.0),
        (["a", "b", "c", "d"], ["a", "b", "c", "x"], 0.75),
    ]
    hint = hint_of("exact_match")
    for predictions, expected, want in cases:
        args = {"predictions": list(predictions), "answers": list(expected)}
        got = _call("exact_match", exact_match, args)
        try:
            ok = got is not None and np.isclose(float(got), want)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            fault = ""
            if got is None:
                fault = "you forgot to return the result"
            elif isinstance(got, (int, np.integer)) and not isinstance(got, bool):
                fault = "you returned the number of hits: divide by the number of answers"
            elif want == 1.0:
                fault = "surrounding spaces and newlines count in your comparison: .strip() both"
            elif want == 0.0:
                fault = "your comparison ignores case: SQL keywords must match exactly"
            _fail(
                f"exact_match({predictions!r}, {expected!r}) returned {got!r}, expected {want}.",
                fault,
                hint,
            )
    return _passed("exact_match", len(cases), 0.0)


def check_training_step(answer_targets, train_step=None) -> bool:
    """``answer_targets(prompt_ids, answer_ids) -> (x, y)`` with the loss on answer tokens
    only (y = -100 elsewhere), and ``train_step(model, optimizer, x, y) -> loss``.

    ``train_step`` is run for three steps on a small GPT with LoRA and must give the
    reference's losses and weights (recorded from zero_grad, forward, backward, step).
    """
    from minilora import optim

    name = "answer_targets"
    found = answers(name)
    hint = found["hints"].get("", "")
    if not callable(answer_targets):
        _fail("pass your function itself, e.g. check_training_step(answer_targets, train_step)")
    for (prompt, answer), ref in zip(TARGET_PAIRS, found["cases"]):
        args = {"prompt_ids": prompt.copy(), "answer_ids": answer.copy()}
        got = _as_tuple(_call(name, answer_targets, args), 2, name, ("x", "y"))
        try:
            x, y = (np.asarray(_host(v)).astype(np.int64).reshape(-1) for v in got)
        except (TypeError, ValueError):
            _fail(f"{name} returned {got!r}, not two arrays of token ids.", "", hint)
        want_x, want_y = ref["x"], ref["y"]
        if np.array_equal(x, want_x) and np.array_equal(y, want_y):
            continue
        n, p = len(prompt) + len(answer), len(prompt)
        fault = ""
        if len(x) == n or (len(y) == n and not np.array_equal(x, want_x)):
            fault = "y must be x shifted left by one: y[t] is the token after x[t] (x = ids[:-1])"
        elif not np.array_equal(x, want_x):
            fault = "x must be every token but the last (ids[:-1])"
        elif np.array_equal(y, ref["unmasked"]):
            fault = (
                "the prompt tokens are in the loss: y must be -100 where the next token is "
                "still in the prompt"
            )
        elif np.array_equal(y, ref["first_masked"]):
            fault = (
                f"off by one: you masked the first answer token too; it is predicted at "
                f"position {p - 1}, from the last prompt token"
            )
        elif np.array_equal(y, ref["prompt_kept"]):
            fault = (
                "off by one: one prompt token is still in the loss (mask positions 0 to "
                "len(prompt) - 2)"
            )
        elif np.array_equal(y, ref["answer_masked"]):
            fault = "you masked the answer and kept the prompt: it is the other way round"
        _fail(
            f"{name}(prompt {prompt.tolist()}, answer {answer.tolist()}) gave x = {x.tolist()}, "
            f"y = {y.tolist()}; expected x = {want_x.tolist()}, y = {want_y.tolist()}.",
            fault,
            hint,
        )
    if train_step is None:
        return _passed(name, 2, 0.0)
    name = "train_step"
    ref = answers(name)
    hint = ref["hints"].get("", "")
    x, y = training_batch()
    model = lora_model()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optim.AdamW(params, lr=1e-2)
    l_you, w_you = [], []
    for _ in range(3):
        args = {"model": model, "optimizer": opt, "x": x.copy(), "y": y.copy()}
        loss = _call(name, train_step, args)
        try:
            l_you.append(float(_host(loss)))
        except (TypeError, ValueError):
            _fail(f"{name} returned {loss!r}, not the loss.", "return loss.item()", hint)
        w_you.append([np.array(_host(p)) for p in params])
    l_ref, w_ref, start = ref["losses"], ref["weights"], ref["start"]
    same = lambda ws, wt: all(np.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(ws, wt))
    for step in range(3):
        if same(w_you[step], w_ref[step]) and np.isclose(l_you[step], l_ref[step]):
            continue
        moved = max(float(np.abs(a - b).max()) for a, b in zip(w_you[step], w_ref[step]))
        fault = ""
        if same(w_you[0], start):
            fault = (
                "the weights did not move: call optimizer.step() after loss.backward() (and "
                "zero_grad() before backward, not between backward and step)"
            )
        elif step == 1 and not same(w_you[1], w_you[0]) and np.isclose(l_you[0], l_ref[0]):
            fault = (
                "gradients accumulate from one step to the next: call optimizer.zero_grad() "
                "before loss.backward() (leaves add into .grad)"
            )
        elif not np.isclose(l_you[step], l_ref[step]):
            fault = "the loss you return is not this batch's loss before the step"
        _fail(
            f"{name}: after step {step + 1} your losses are "
            f"{np.round(l_you[: step + 1], 6).tolist()} and the weights differ by up to "
            f"{moved:.3g} from the reference's "
            f"(losses {np.round(l_ref[: step + 1], 6).tolist()}).",
            fault,
            hint,
        )
    return _passed("answer_targets and train_step", 5, 0.0)


def check_adamw_state_bytes(adamw_state_bytes) -> bool:
    """``adamw_state_bytes(model) -> int``: bytes of AdamW's moments for the trainable params.

    Checked against the bytes an AdamW optimizer really holds after one step, on a small
    GPT with LoRA (frozen base) and on the same GPT fully trainable.
    """
    from minilora import optim
    from minilora.lora import LoRAConfig, inject_lora
    from minilora.transformer import GPT, GPTConfig

    found = answers("adamw_state_bytes")
    hint = found["hints"].get("", "")
    config = GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, d_model=8)
    for lora in (True, False):
        model = GPT(config, generator=np.random.default_rng(0))
        if lora:
            inject_lora(model, LoRAConfig(r=2, alpha=4), generator=np.random.default_rng(1))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = optim.AdamW(params, lr=1e-3)
        _, loss = model(np.zeros((1, 4), dtype=np.int64), np.zeros((1, 4), dtype=np.int64))
        loss.backward()
        opt.step()
        want = opt.state_bytes()
        got = _call("adamw_state_bytes", adamw_state_bytes, {"model": model})
        if got != want:
            what = "with LoRA (base frozen)" if lora else "fully trainable"
            everything = found["everything"]
            fault = (
                "you counted every parameter: frozen ones have no AdamW state"
                if lora and got == everything else
                f"your count is {got / want:.3g} times the answer: AdamW keeps two moments, "
                "m and v, of 4 bytes per float32 number"
                if isinstance(got, (int, float, np.number)) and got and want else ""
            )  # fmt: skip
            _fail(
                f"adamw_state_bytes on a small GPT {what}: you said {got!r}, AdamW holds "
                f"{want} bytes.",
                fault,
                hint,
            )
    return _passed("adamw_state_bytes", 2, 0.0)


# ---- notebook 5: understanding the updates -----------------------------------------------


def check_subspace_similarity(subspace_similarity) -> bool:
    """``subspace_similarity(A1, A2, i, j) -> phi`` of section 7.2, Eq. 4."""

    def crash(err, i):
        if "matmul" in str(err) or "broadcast" in str(err):
            return (
                "you used the left-singular vectors (U, columns of length r), which A1 "
                f"{i['A1'].shape} and A2 {i['A2'].shape} do not share: compare the rows of Vh "
                "(length k, the input directions)"
            )
        return ""

    name = "subspace_similarity"
    return _check(name, subspace_similarity, ("phi",), answers(name), crash)
