"""Checkers for notebooks 3-5: greedy decoding, exact match, the answer-only training step,
AdamW's state, and section 7's subspace similarity."""

from __future__ import annotations

import numpy as np

from minilora.teach.checking import (
    _as_tuple,
    _call,
    _check,
    _fail,
    _fresh_case,
    _host,
    _passed,
    tiny_gpt,
)


def _greedy_reference(model, prompt, n, crop=True, position=-1, append=True) -> np.ndarray:
    """Greedy decoding, and its typical mistakes (no crop, wrong position, no append)."""
    from minilora.tensor import no_grad

    ids, new = list(int(t) for t in prompt), []
    block = model.config.block_size
    with no_grad():
        for _ in range(n):
            context = (ids[-block:] if crop else ids) if append else list(prompt)[-block:]
            logits, _ = model(np.array(context, dtype=np.int64)[None, :])
            token = int(np.argmax(_host(logits)[0, position]))
            new.append(token)
            ids.append(token)
    return np.array(new, dtype=np.int64)


def check_greedy_decode(greedy_decode) -> bool:
    """``greedy_decode(model, prompt_ids, max_new_tokens) -> new_ids`` (temperature 0).

    Compared with ``model.generate(..., temperature=0)`` on a small random GPT
    (block_size 8): a prompt that fits with its continuation, then one that must slide.
    """
    name = "greedy_decode"
    hint = (
        "repeat max_new_tokens times: logits, _ = model(ids[-block_size:][None, :]); take "
        "np.argmax of the logits at the last position (logits.data[0, -1]), append it to ids; "
        "return only the new tokens."
    )
    if not callable(greedy_decode):
        _fail("pass your function itself, e.g. check_greedy_decode(greedy_decode)")
    model = tiny_gpt(1, scale=0.7)
    block = model.config.block_size
    prompts = [(np.array([3, 1, 4], dtype=np.int64), 4), (np.array([2, 7, 1, 8, 2, 8]), 7)]
    for prompt, n in prompts:
        want = model.generate(prompt[None, :], n, temperature=0)[0, len(prompt) :]

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
        elif np.array_equal(got, _greedy_reference(model, prompt, n, position=0)):
            fault = (
                "you took the logits of the first position: the next token is predicted at "
                "the last one (logits[0, -1])"
            )
        elif np.array_equal(got, _greedy_reference(model, prompt, n, append=False)):
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
        f"Correct: {name} equals model.generate(temperature=0) on {len(prompts)} prompts "
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
    hint = (
        "compare each prediction with its answer after .strip() (surrounding spaces and "
        "newlines do not count; case does), and divide the hits by the number of answers."
    )
    for predictions, answers, want in cases:
        args = {"predictions": list(predictions), "answers": list(answers)}
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
                f"exact_match({predictions!r}, {answers!r}) returned {got!r}, expected {want}.",
                fault,
                hint,
            )
    return _passed("exact_match", len(cases), 0.0)


def _answer_targets_reference(prompt, answer, ignore_index=-100, first=None):
    ids = np.concatenate([prompt, answer]).astype(np.int64)
    x, y = ids[:-1].copy(), ids[1:].copy()
    y[: (len(prompt) - 1) if first is None else first] = ignore_index
    return x, y


def _train_reference(model, optimizer, x, y, zero=True, step=True) -> float:
    if zero:
        optimizer.zero_grad()
    _, loss = model(x, y)
    loss.backward()
    if step:
        optimizer.step()
    return loss.item()


def _lora_model():
    from minilora.lora import LoRAConfig, inject_lora

    model = tiny_gpt(2)
    config = LoRAConfig(r=2, alpha=4.0, target_modules=("q_proj", "v_proj"))
    return inject_lora(model, config, generator=np.random.default_rng(3))


def check_training_step(answer_targets, train_step=None) -> bool:
    """``answer_targets(prompt_ids, answer_ids) -> (x, y)`` with the loss on answer tokens
    only (y = -100 elsewhere), and ``train_step(model, optimizer, x, y) -> loss``.

    ``train_step`` is run for three steps on a small GPT with LoRA beside the reference
    (zero_grad, forward, backward, step) and must give the same losses and weights.
    """
    from minilora import optim

    name = "answer_targets"
    hint = (
        "ids = concatenate(prompt, answer); x = ids[:-1]; y = ids[1:] with y[:len(prompt) - 1] "
        "= -100 (position t predicts token t + 1, so the first answer token is predicted at "
        "position len(prompt) - 1)."
    )
    if not callable(answer_targets):
        _fail("pass your function itself, e.g. check_training_step(answer_targets, train_step)")
    for prompt, answer in (([5, 6, 7], [8, 9, 1]), ([4, 2, 2, 3, 5], [6, 1])):
        prompt, answer = np.array(prompt, dtype=np.int64), np.array(answer, dtype=np.int64)
        args = {"prompt_ids": prompt.copy(), "answer_ids": answer.copy()}
        got = _as_tuple(_call(name, answer_targets, args), 2, name, ("x", "y"))
        try:
            x, y = (np.asarray(_host(v)).astype(np.int64).reshape(-1) for v in got)
        except (TypeError, ValueError):
            _fail(f"{name} returned {got!r}, not two arrays of token ids.", "", hint)
        want_x, want_y = _answer_targets_reference(prompt, answer)
        if np.array_equal(x, want_x) and np.array_equal(y, want_y):
            continue
        ids, p = np.concatenate([prompt, answer]), len(prompt)
        fault = ""
        if len(x) == len(ids) or (len(y) == len(ids) and not np.array_equal(x, want_x)):
            fault = "y must be x shifted left by one: y[t] is the token after x[t] (x = ids[:-1])"
        elif not np.array_equal(x, want_x):
            fault = "x must be every token but the last (ids[:-1])"
        elif np.array_equal(y, ids[1:]):
            fault = (
                "the prompt tokens are in the loss: y must be -100 where the next token is "
                "still in the prompt"
            )
        elif np.array_equal(y, _answer_targets_reference(prompt, answer, first=p)[1]):
            fault = (
                f"off by one: you masked the first answer token too; it is predicted at "
                f"position {p - 1}, from the last prompt token"
            )
        elif np.array_equal(y, _answer_targets_reference(prompt, answer, first=p - 2)[1]):
            fault = (
                "off by one: one prompt token is still in the loss (mask positions 0 to "
                "len(prompt) - 2)"
            )
        elif np.all(y[p - 1 :] == -100) and np.any(y[: p - 1] != -100):
            fault = "you masked the answer and kept the prompt: it is the other way round"
        _fail(
            f"{name}(prompt {prompt.tolist()}, answer {answer.tolist()}) gave x = {x.tolist()}, "
            f"y = {y.tolist()}; expected x = {want_x.tolist()}, y = {want_y.tolist()}.",
            fault,
            hint,
        )
    if train_step is None:
        return _passed(name, 2, 0.0)
    name, hint = (
        "train_step",
        (
            "optimizer.zero_grad(); _, loss = model(x, y); loss.backward(); optimizer.step(); "
            "return loss.item()."
        ),
    )
    rng = np.random.default_rng(4)
    x = rng.integers(0, 11, (4, 6))
    y = np.where(np.arange(6) < 2, -100, rng.integers(0, 11, (4, 6)))
    runs = {}
    for label, fn in (("yours", train_step), ("reference", _train_reference)):
        model = _lora_model()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = optim.AdamW(params, lr=1e-2)
        losses, weights = [], []
        for _ in range(3):
            args = {"model": model, "optimizer": opt, "x": x.copy(), "y": y.copy()}
            loss = _call(name, fn, args) if label == "yours" else fn(*args.values())
            try:
                losses.append(float(_host(loss)))
            except (TypeError, ValueError):
                _fail(f"{name} returned {loss!r}, not the loss.", "return loss.item()", hint)
            weights.append([np.array(_host(p)) for p in params])
        runs[label] = (losses, weights)
    (l_you, w_you), (l_ref, w_ref) = runs["yours"], runs["reference"]
    for step in range(3):
        moved = max(float(np.abs(a - b).max()) for a, b in zip(w_you[step], w_ref[step]))
        if moved == 0 and np.isclose(l_you[step], l_ref[step]):
            continue
        fault = ""
        unchanged = all(np.array_equal(a, b) for a, b in zip(w_you[step], w_you[0]))
        start = [np.array(_host(p)) for p in _lora_model().parameters() if p.requires_grad]
        if all(np.array_equal(a, b) for a, b in zip(w_you[0], start)):
            fault = (
                "the weights did not move: call optimizer.step() after loss.backward() (and "
                "zero_grad() before backward, not between backward and step)"
            )
        elif step == 1 and not unchanged and np.isclose(l_you[0], l_ref[0]):
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

    hint = (
        "AdamW keeps two arrays (m and v) the size of each *trainable* parameter "
        "(p.requires_grad); frozen ones cost nothing. Bytes = 2 * sum(p.data.nbytes)."
    )
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
            everything = 2 * sum(p.data.nbytes for p in model.parameters())
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
    hint = (
        "take the right-singular vectors (rows of Vh from np.linalg.svd(A, "
        "full_matrices=False)), keep the top i of A1 and top j of A2, and return "
        "||U1 U2^T||_F^2 / min(i, j)."
    )

    def phi(i, norm=None, left=False):
        def top(A, n):
            u, _, vh = np.linalg.svd(A, full_matrices=False)
            return u[:, :n].T if left else vh[:n]

        U1, U2 = top(i["A1"], i["i"]), top(i["A2"], i["j"])
        return {"phi": np.sum((U1 @ U2.T) ** 2) / (norm or min(i["i"], i["j"]))}

    def crash(err, i):
        if "matmul" in str(err) or "broadcast" in str(err):
            return (
                "you used the left-singular vectors (U, columns of length r), which A1 "
                f"{i['A1'].shape} and A2 {i['A2'].shape} do not share: compare the rows of Vh "
                "(length k, the input directions)"
            )
        return ""

    variants = {
        "you divided by max(i, j), not min(i, j)": lambda i: phi(i, max(i["i"], i["j"])),
        "the normalisation 1 / min(i, j) is missing": lambda i: phi(i, 1),
    }
    extra = [_fresh_case("subspace_similarity", 14, i=2, j=2)]
    return _check(
        "subspace_similarity", subspace_similarity, ("phi",), {"phi": hint}, extra, variants, crash
    )
