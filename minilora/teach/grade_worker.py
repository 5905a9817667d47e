"""Grade one part in this process: ``python grade_worker.py ROOT PART OUT.json [SCALE [MEMORY]]``.

Run by ``minilora.teach.grade`` as a script, with ``PYTHONPATH=ROOT``, so that ``import
minilora`` is the package under ``ROOT`` (the reference package with the student's code in
PART's regions), never the grader's own. The checks are the ``grade_*`` files beside this
one, imported by plain name (this file's folder is ``sys.path[0]``). The fast paths are
turned off, so the plain code, the students' code, is what runs.

Limits: the process may use MEMORY bytes of address space (``resource.RLIMIT_AS``; default
3 GiB), and each check ``Check.seconds * SCALE`` seconds (a SIGALRM interrupts it). A check
that runs out of either fails with its own ``on_timeout`` message where it has one, and the
next check runs. OUT.json is rewritten after every check (to a temporary name, then renamed),
so if the whole process is killed the finished checks are kept:
``{"part", "checks": [{"name", "passed", "message", "seconds"}], "pending": [names], "error"}``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import traceback
from pathlib import Path

GIB = 1024**3
MODULES = (
    "grade_backward",
    "grade_engine",
    "grade_norms",
    "grade_lora",
    "grade_merge",
    "grade_model",
    "grade_train",
)


class CheckTimeout(BaseException):
    """Raised by the alarm: a BaseException, so that ``except Exception`` in the student's
    code cannot swallow it."""


# (exception type name, words its message contains or "", the likely fault): after a check's
# own hints. The first that fits is used.
GENERIC_HINTS = (
    (
        "RecursionError",
        "",
        "use a loop with an explicit stack, not recursion (graphs are thousands of ops deep)",
    ),
    ("MemoryError", "", "ran out of memory: a list or a stack that grows without end?"),
    (
        "AttributeError",
        "'numpy.ndarray' object has no attribute",
        "an array used where a "
        "Tensor is expected (arrays have no Tensor methods; .data of a Tensor is an array)",
    ),
    (
        "AttributeError",
        "'Tensor' object has no attribute",
        "a Tensor used where an array is expected (use .data for its values)",
    ),
    (
        "AttributeError",
        "has no attribute",
        "an attribute that this object does not have: the "
        "part may rely only on what its contract names (see the handout's README)",
    ),
    (
        "TypeError",
        "unsupported operand",
        "an operation between types that do not mix (a "
        "Tensor with a list, or None where an array is expected?)",
    ),
    (
        "TypeError",
        "NoneType",
        "None where a value is expected: a function that does not "
        "return its result, or a gradient of None used in arithmetic?",
    ),
    (
        "TypeError",
        "",
        "a value of the wrong type: compare what you pass with what the function expects",
    ),
    (
        "ValueError",
        "matmul",
        "a matrix product whose inner sizes do not match: check every .T "
        "and the order of the operands",
    ),
    (
        "ValueError",
        "broadcast",
        "two arrays whose shapes do not broadcast: one of them has the "
        "wrong shape (a missing keepdims=True, a wrong axis, a transposed operand?)",
    ),
    (
        "ValueError",
        "reshape",
        "a reshape to a shape with a different number of elements: an "
        "axis summed that should not be, or one not summed that should?",
    ),
    (
        "ValueError",
        "different dtypes",
        "two inputs of different dtypes: keep the dtype of the "
        "inputs (no float64 constants or astype)",
    ),
    (
        "IndexError",
        "",
        "an index or axis out of range: count the axes of the arrays (a batch axis in front?)",
    ),
    ("AxisError", "", "an axis the array does not have: count the axes (a batch axis in front?)"),
    ("KeyError", "", "a key that is not in the dict: which names does this part rely on?"),
    ("ZeroDivisionError", "", "a division by zero"),
    ("FloatingPointError", "", "a non-finite value where the library refuses one"),
)


def hint_for(err: BaseException, hints) -> str:
    names = {cls.__name__ for cls in type(err).__mro__}
    text = str(err)
    for kind, words, hint in tuple(hints) + GENERIC_HINTS:
        if kind in names and words in text:
            return hint
    return ""


def _message(err: BaseException, part: str, hints) -> str:
    text = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".strip()
    m = re.match(r"([a-z_]+): write this part", str(err))
    if isinstance(err, NotImplementedError) and m:
        if m[1] == part:
            return "not written yet (the region still raises NotImplementedError)"
        return f"needs part {m[1]}, which is not written"
    frames = traceback.extract_tb(err.__traceback__)
    place = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    hint = hint_for(err, hints)
    return f"raised {text}{place}" + (f"; likely fault: {hint}" if hint else "")


_armed = False  # the alarm interrupts a check only while one runs


def _on_alarm(signum, frame):
    if _armed:
        raise CheckTimeout()


def _alarm(seconds: float) -> None:
    """Interrupt the check after ``seconds``, and every half second after that (code that
    swallows one interruption gets the next); 0 disarms. Where there is no SIGALRM (Windows)
    only the part's own time limit applies."""
    global _armed
    _armed = seconds > 0
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, seconds, 0.5 if seconds > 0 else 0)


def run_check(check, part: str, scale: float) -> tuple[bool, str]:
    from minilora import backend

    backend.fast_paths(False)
    limit = check.seconds * scale
    try:
        _alarm(limit)
        try:
            check.run()
        finally:
            _alarm(0)
        return True, ""
    except CheckTimeout:
        why = check.on_timeout or "an endless loop, or work that grows without end?"
        return False, f"did not finish in {limit:.0f} s; likely fault: {why}"
    except MemoryError:
        why = check.on_timeout or "a list or a stack that grows without end?"
        return False, f"ran out of memory; likely fault: {why}"
    except AssertionError as err:
        return False, str(err) or "failed"
    except Exception as err:  # the student's code raised: say what, where, and why likely
        return False, _message(err, part, check.hints)


def load_checks(part: str) -> list:
    import importlib

    checks = {}
    for module in MODULES:
        checks.update(importlib.import_module(module).CHECKS)
    if part not in checks:
        raise KeyError(f"no checks for part {part!r}; parts: {sorted(checks)}")
    return checks[part]


def write(out: Path, report: dict) -> None:
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report))
    os.replace(tmp, out)


def limit_memory(nbytes: int) -> bool:
    """Cap this process's address space at ``nbytes``; False where the system has no such
    limit (Windows) or refuses it (macOS), and the grading goes on without one."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            nbytes = min(nbytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, hard))
    except (ImportError, ValueError, OSError):
        return False
    return True


def main(argv) -> int:
    root, part, out = argv[:3]
    scale = float(argv[3]) if len(argv) > 3 else 1.0
    memory = int(argv[4]) if len(argv) > 4 else 3 * GIB
    out = Path(out)
    report = {"part": part, "checks": [], "pending": [], "error": None}
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, _on_alarm)
    try:
        limit_memory(memory)
        from minilora import backend

        found = Path(backend.__file__).resolve()
        if Path(root).resolve() not in found.parents:
            raise RuntimeError(f"imported minilora from {found}, not from {root}")
        checks = load_checks(part)
        report["pending"] = [c.name for c in checks]
        write(out, report)
        for check in checks:
            start = time.perf_counter()
            passed, message = run_check(check, part, scale)
            seconds = round(time.perf_counter() - start, 3)
            report["checks"].append(
                {"name": check.name, "passed": passed, "message": message, "seconds": seconds}
            )
            report["pending"].pop(0)
            write(out, report)
    except (Exception, CheckTimeout) as err:  # the package does not even import
        report["error"] = f"{type(err).__name__}: {err}"
        write(out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
