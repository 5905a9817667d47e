"""What every exercise checker shares: the error it raises, the hint switch, comparing a
learner's outputs with the answers (``recorded.answers``) under the one tolerance rule
(``RULE``, which the golden manifest states too), and turning a crash inside the learner's
function into a diagnosis (the inputs' shapes, one likely fault). The checkers themselves are
in exercises_engine.py, exercises_lora.py and exercises_model.py; notebooks import them all
from ``minilora.teach.exercises``. ``likely_fault`` and ``tiny_gpt`` serve the package grader
too.
"""

from __future__ import annotations

import os
import re

import numpy as np

RULE = (
    "normwise, per output: pass if max|got - want| <= atol + rtol * max|want| (max over all "
    "elements of that output), with atol and rtol of the dtype you computed in"
)
TOLERANCE = {
    "float64": {"rtol": 1e-9, "atol": 1e-12},
    "float32": {"rtol": 1e-4, "atol": 1e-6},
}


def within(got, want, dtype: str = "float64") -> tuple[bool, float]:
    """(passes, max|got - want|) under the normwise tolerance of ``dtype`` (``RULE``; the golden
    manifest states it too)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return False, float("inf")
    tol = TOLERANCE[dtype]
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    return diff <= tol["atol"] + tol["rtol"] * scale, diff


class ExerciseError(AssertionError):
    """A learner's answer differs from the reference; the message says how."""


# ---- hints on or off -----------------------------------------------------------------------

_HIDE_HINTS: bool | None = None  # None: follow the environment variable


def hide_hints(hide: bool | None = True) -> None:
    """Leave the "Hint:" lines (which give the formula) out of every message, for graded work.

    ``hide_hints(True)`` hides them, ``hide_hints(False)`` shows them, ``hide_hints(None)``
    follows the environment variable ``MINILORA_HIDE_HINTS`` (set to 1 to hide; the default
    shows them). The "Likely fault:" line, which names the mistake but not the answer, stays.
    """
    global _HIDE_HINTS
    _HIDE_HINTS = hide


def hints_hidden() -> bool:
    if _HIDE_HINTS is not None:
        return _HIDE_HINTS
    return os.environ.get("MINILORA_HIDE_HINTS", "").strip().lower() not in ("", "0", "false", "no")


def _message(what: str, fault: str = "", hint: str = "") -> str:
    """The one message format: what is wrong, at most one "Likely fault:" line, then the hint."""
    fault = f"\nLikely fault: {fault.rstrip('.')}." if fault else ""
    hint = f"\nHint: {hint}" if hint and not hints_hidden() else ""
    return f"{what}{fault}{hint}"


def _fail(what: str, fault: str = "", hint: str = ""):
    raise ExerciseError(_message(what, fault, hint))


class _Wrong(Exception):
    """One output differs: ``what`` says how, ``fault`` is the shape-based guess (or "")."""

    def __init__(self, what: str, fault: str = ""):
        super().__init__(what)
        self.what, self.fault = what, fault


# ---- comparing one output ----------------------------------------------------------------


def likely_fault(got: np.ndarray, want: np.ndarray, subject: str = "your result") -> str:
    """A guess at the fault, in words: transposed, all zeros, wrong sign, off by a factor ("" if
    none fits). The notebooks' checkers and the package grader (``grade_tools.diagnose``) share it.
    """
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    close = lambda a, b: a.shape == b.shape and np.allclose(a, b, rtol=1e-6, atol=1e-9)
    transposed = f"{subject} is the transpose of the answer (check the order of a matmul, or a .T)"
    if got.ndim == 2 and got.shape != want.shape and close(got.T, want):
        return transposed
    if got.shape != want.shape:
        return ""
    if got.ndim == 2 and got.shape[0] == got.shape[1] and close(got.T, want):
        return transposed
    if not np.any(got) and np.any(want):
        return f"{subject} is all zeros"
    if close(got, -want):
        return f"{subject} has the wrong sign (it is the negative of the answer)"
    dot = float(np.vdot(got, want))
    if dot and np.any(want):
        c = dot / float(np.vdot(want, want))
        if close(got, c * want):
            return (
                f"{subject} is {c:.4g} times the answer: a missing or extra factor "
                "(a scaling like alpha / r, a 1/n of a mean, a 2 from a square)"
            )
    return ""


def _host(x):
    """A Tensor's or a CuPy array's values on the CPU; anything else as it is.

    Only a Tensor is unwrapped: an array's own ``.data`` is a buffer, not its values.
    """
    from minilora import backend
    from minilora.tensor import Tensor

    x = x.data if isinstance(x, Tensor) else x
    return backend.to_numpy(x) if backend.get_array_module_or_none(x) is not None else x


def _compare(function: str, output: str, got, want) -> float:
    """max|got - want| if ``got`` passes the golden tolerance rule, else raise _Wrong.

    The rule is ``RULE`` (the golden manifest states it too): max|got - want| <= atol +
    rtol * max|want|, with the tolerance of the dtype ``got`` was computed in (float32 answers
    get float32's; everything else float64's).
    """
    want = np.asarray(want, dtype=np.float64)
    if got is None:
        raise _Wrong(f"{function}: {output} is None", "you forgot to return it")
    try:
        got = np.asarray(_host(got))
        dtype = "float32" if got.dtype in (np.float32, np.float16) else "float64"
        got = got.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise _Wrong(f"{function}: {output} is not an array of numbers ({err})") from None
    fault = likely_fault(got, want)
    if got.shape != want.shape:
        raise _Wrong(f"{function}: {output} has shape {got.shape}, expected {want.shape}", fault)
    if not np.all(np.isfinite(got)):
        raise _Wrong(f"{function}: {output} contains NaN or inf", fault)
    ok, largest = within(got, want, dtype)
    if ok:
        return largest
    diff = np.abs(got - want)
    index = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    raise _Wrong(
        f"{function}: {output} is wrong: the largest difference is {diff.max():.3g} at index "
        f"{tuple(int(i) for i in index)} (yours {got[index]:.6g}, expected {want[index]:.6g})",
        fault,
    )


def _as_tuple(result, n: int, function: str, names) -> tuple:
    if n == 1:
        return (result,)
    if not isinstance(result, (tuple, list)) or len(result) != n:
        _fail(f"{function} must return {n} values ({', '.join(names)}), got {result!r}"[:300])
    return tuple(result)


def _passed(function: str, cases: int, largest: float) -> bool:
    print(
        f"Correct: {function} matches the reference on {cases} case{'s' * (cases > 1)} "
        f"(largest difference {largest:.1e})."
    )
    return True


def _describe(inputs: dict) -> str:
    """The inputs by name with their shapes (arrays) or values (numbers, shapes)."""
    parts = []
    for k, v in inputs.items():
        if isinstance(v, np.ndarray) and v.ndim:
            parts.append(f"{k} {tuple(v.shape)}")
        elif isinstance(v, (int, float, str, tuple, list, np.number, np.ndarray)):
            parts.append(f"{k} = {v!r}")
        else:
            parts.append(f"{k} (a {type(v).__name__})")
    return ", ".join(parts)


def _crash_fault(err: Exception) -> str:
    """A guess from NumPy's own error message, for a function that raised."""
    text = str(err)
    if "matmul" in text or "not aligned" in text or "core dimension" in text:
        return (
            "a matrix product whose inner sizes do not match: an operand needs (or must lose) "
            "a .T; compare the shapes above with the sizes each product needs"
        )
    if "broadcast" in text:
        return (
            "two arrays of different shapes were added or multiplied element-wise: one of "
            "them was built with the wrong shape (a product in the wrong order, or transposed)"
        )
    if "reshape" in text:
        return "your result has the wrong number of elements for the shape it must take"
    if isinstance(err, (IndexError, np.exceptions.AxisError)):
        return "an index or axis that the array does not have"
    return ""


def _call(name: str, fn, args: dict, crash=None):
    """``fn(*args)``; a stub says 'not implemented', any other exception becomes a diagnosis."""
    try:
        return fn(*args.values())
    except NotImplementedError as err:  # the student version's stub: say so, as nbgrader does
        part = re.match(r"([a-z_]+): write this part", str(err))
        if part:  # a part of the student package that this exercise runs
            raise NotImplementedError(
                f"{name} runs the package's part {part[1]}, which is not written yet ({err})"
            ) from None
        raise NotImplementedError(
            f"{name}: not implemented yet: replace `raise NotImplementedError()` in the "
            "exercise cell with your code"
        ) from None
    except Exception as err:  # the learner's code crashed: explain it with the shapes
        fault = (crash(err, args) if crash else "") or _crash_fault(err)
        code = getattr(fn, "__code__", None)
        lines, where = [], err.__traceback__
        while where is not None:  # the deepest line in the learner's own file
            if code is not None and where.tb_frame.f_code.co_filename == code.co_filename:
                lines.append(where.tb_lineno)
            where = where.tb_next
        line = f" (line {lines[-1]} of your cell)" if lines else ""
        _fail(
            f"{name} raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            f"{line}\nwhen called with {_describe(args)}",
            fault,
        )


def _check(name: str, fn, outputs, found: dict, crash=None) -> bool:
    """Run ``fn`` on every case of exercise ``name`` (``found``: its answers, from
    ``recorded.answers``); compare every output.

    Each case lists the outputs of known wrong answers: when the learner's output matches one,
    the message names that fault (and only that one). ``crash(err, inputs) -> fault`` guesses
    the fault of an exception raised inside ``fn``.
    """
    if not callable(fn):
        _fail(f"pass your function itself, e.g. check_...({name}), not {fn!r}")
    largest = 0.0
    for inputs, want, wrongs in found["cases"]:
        args = {k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}
        got = _as_tuple(_call(name, fn, args, crash), len(outputs), name, outputs)
        for out, value in zip(outputs, got):
            try:
                diff = _compare(name, out, value, want[out])
            except _Wrong as wrong:
                fault = wrong.fault
                for named, outs in wrongs.items():
                    try:
                        _compare(name, out, value, outs[out])
                    except (_Wrong, ValueError, KeyError, TypeError):
                        continue
                    fault = named
                    break
                _fail(f"{wrong.what}.", fault, found["hints"].get(out, ""))
            largest = max(largest, diff)
    return _passed(name, len(found["cases"]), largest)


# ---- a small GPT for the checks -------------------------------------------------------------


def tiny_gpt(seed=0, scale=None, n_layer=2, d_model=16, vocab=11, block=8, dtype=None):
    """A small random GPT (2 heads), the notebooks' checkers' and the package grader's. With
    ``scale``, every parameter is redrawn from N(0, scale^2): a fresh GPT's greedy text repeats
    one token, this one's varies. ``dtype``: the parameters cast to it (float32 by default)."""
    from minilora.transformer import GPT, GPTConfig

    config = GPTConfig(
        block_size=block, vocab_size=vocab, n_layer=n_layer, n_head=2, d_model=d_model
    )
    model = GPT(config, generator=np.random.default_rng(seed))
    if scale is not None:
        rng = np.random.default_rng(seed)
        for p in model.parameters():
            p.data = (scale * rng.standard_normal(p.shape)).astype(p.data.dtype)
    for p in model.parameters() if dtype else ():
        p.data = p.data.astype(dtype)
    return model
