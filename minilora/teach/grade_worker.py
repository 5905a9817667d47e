"""Grade one part in this process: ``python grade_worker.py ROOT PART OUT.json``.

Run by ``minilora.teach.grade`` as a script, with ``PYTHONPATH=ROOT``, so that ``import
minilora`` is the package under ``ROOT`` (the student's code for PART, the finished code
for every other part), never the grader's own. The checks are the ``grade_*`` files
beside this one, imported by plain name (this file's folder is ``sys.path[0]``). The fast
paths are turned off, so the plain code, the students' code, is what runs. Writes
``{"checks": [{"name", "passed", "message"}], "error": ...}`` to OUT.json.
"""

from __future__ import annotations

import json
import re
import sys
import time
import traceback
from pathlib import Path


def _message(err: BaseException, part: str, hint: str) -> str:
    text = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".strip()
    m = re.match(r"([a-z_]+): write this part", str(err))
    if isinstance(err, NotImplementedError) and m:
        if m[1] == part:
            return "not written yet (the region still raises NotImplementedError)"
        return f"needs part {m[1]}, which is not written"
    if isinstance(err, RecursionError):
        return "RecursionError: use a loop with an explicit stack, not recursion"
    where = traceback.extract_tb(err.__traceback__)[-1]
    place = f" (at {Path(where.filename).name}:{where.lineno})"
    return f"raised {text}{place}" + (f"; likely fault: {hint}" if hint else "")


def run_part(part: str) -> list[dict]:
    import importlib

    checks = {}
    for module in ("grade_engine", "grade_lora", "grade_train"):
        checks.update(importlib.import_module(module).CHECKS)
    if part not in checks:
        raise KeyError(f"no checks for part {part!r}; parts: {sorted(checks)}")
    from minilora import backend

    results = []
    for name, check, hint in checks[part]:
        backend.fast_paths(False)
        start = time.perf_counter()
        try:
            check()
            passed, message = True, ""
        except AssertionError as err:
            passed, message = False, str(err) or "failed"
        except Exception as err:  # the student's code raised: say what and where
            passed, message = False, _message(err, part, hint)
        seconds = round(time.perf_counter() - start, 3)
        results.append({"name": name, "passed": passed, "message": message, "seconds": seconds})
    return results


def main(argv) -> int:
    root, part, out = argv
    report = {"part": part, "checks": [], "error": None}
    try:
        from minilora import backend

        found = Path(backend.__file__).resolve()
        if Path(root).resolve() not in found.parents:
            raise RuntimeError(f"imported minilora from {found}, not from {root}")
        report["checks"] = run_part(part)
    except Exception as err:  # the package does not even import
        report["error"] = f"{type(err).__name__}: {err}"
    Path(out).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
