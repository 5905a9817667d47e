"""``minilora grade STUDENT_DIR``: grade a student package part by part with the project's proofs.

STUDENT_DIR is the folder that holds the student's ``minilora/`` (what ``minilora course
make`` wrote; the package folder itself is accepted too). For each part the grader

1. copies the student's package to a temporary folder and puts the finished code back into
   the regions of every OTHER part (from this installation's own marked source), so each
   part is graded alone and one mistake costs points in one part only; the ANSWER regions
   (the fast paths that would reveal a part) get the reference back too, except those of
   the graded part, which are stubs (the grading runs with the fast paths off, so they are
   never called; stubbed, no reference code of the part can stand in for the student's);
2. runs ``grade_worker.py`` (beside this file) in a new Python process with
   ``PYTHONPATH`` set to that folder, so ``import minilora`` is the student's package,
   never this one, with the fast paths off and a time limit per part;
3. collects one result per check: passed, or a message naming the likely fault.

The checks (``grade_engine.py``, ``grade_lora.py``, ``grade_train.py``): float64 finite
differences of each op's backward; topological order and accumulation; dW = 0 at the
start bit for bit; merge equivalence and unmerge restoring W0; only A and B train and
frozen weights get no gradient; the paper's count 2 x L_hat x d_model x r; the answer-only
loss; greedy decoding equal to argmax; a short fine-tune that must learn. On the CPU the
whole grading takes about a minute.

Usage::

    minilora grade STUDENT_DIR                        # every part, a table of scores
    minilora grade STUDENT_DIR --part lora_forward,merge
    minilora grade STUDENT_DIR --json scores.json     # for nbgrader-style courses

The exit status is 0 whatever the scores (a failing part is a grade, not an error); it is
1 or 2 only when the grader itself cannot run (no package in STUDENT_DIR, a bad --part).
The JSON file holds ``{"parts": {part: {"score", "max", "checks": [...]}}, "score", "max"}``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minilora.teach.student import (
    LEFT_OUT_FOLDERS,
    PACKAGE,
    PARTS,
    marked_parts,
    package_sources,
    regions,
    strip_source,
    transplant,
)

WORKER = Path(__file__).resolve().parent / "grade_worker.py"
SKIP = shutil.ignore_patterns("__pycache__", "pretrained", "golden", "grade*.py")


def find_package(student_dir) -> Path:
    """The student's ``minilora`` package folder inside ``student_dir`` (or ``student_dir``)."""
    path = Path(student_dir)
    for candidate in (path / "minilora", path):
        if (candidate / "__init__.py").is_file() and candidate.name == "minilora":
            return candidate
    raise FileNotFoundError(f"{path}: no minilora package here (expected {path / 'minilora'})")


def hybrid(student_pkg: Path, part: str, root: Path, reference=None) -> list[str]:
    """Write to ``root/minilora`` the student's package with every part but ``part`` finished.

    Returns notes: regions the student's files lack (graded as the student left them)."""
    reference = reference if reference is not None else package_sources(PACKAGE)
    target = root / "minilora"
    shutil.copytree(student_pkg, target, ignore=SKIP)
    others = set(PARTS) - {part}
    notes = []
    for rel, ref_source in reference.items():
        if not regions(ref_source, rel) or rel.split("/")[0] in LEFT_OUT_FOLDERS:
            continue  # no region, or a folder the student package leaves out (fast/)
        path = target / rel
        if not path.is_file():
            notes.append(f"minilora/{rel} is missing")
            continue
        new, missing = transplant(path.read_text(), ref_source, others)
        # the part's own ANSWER regions stay stubs: grading never runs reference code for
        # the part it grades, whatever the student's copy holds there
        path.write_text(strip_source(new, {part}, roles=("ANSWER",)))
        notes += [f"the markers of {p} in minilora/{rel} are missing" for p in missing]
    return notes


def grade_part(student_pkg: Path, part: str, timeout: float = 300, reference=None) -> dict:
    """Grade one part: {"score", "max", "checks": [...], "notes": [...], "seconds"}."""
    start = time.perf_counter()
    files = marked_parts().get(part, [])
    with tempfile.TemporaryDirectory(prefix=f"minilora-grade-{part}-") as tmp:
        root = Path(tmp)
        notes = hybrid(student_pkg, part, root, reference)
        own = package_sources(root / "minilora")
        lost = [f for f in files if f"# BEGIN STUDENT: {part}" not in own.get(f, "")]
        report = {"checks": [], "error": None}
        if lost:
            report["error"] = (
                f"the markers '# BEGIN/END STUDENT: {part}' are missing in "
                f"{', '.join('minilora/' + f for f in lost)}: put your code back between them"
            )
        else:
            out = root / "result.json"
            env = {**os.environ, "PYTHONPATH": str(root), "MINILORA_FAST_PATHS": "0"}
            env.pop("MINILORA_DEVICE", None)
            try:
                subprocess.run(
                    [sys.executable, str(WORKER), str(root), part, str(out)],
                    cwd=root,
                    env=env,
                    timeout=timeout,
                    capture_output=True,
                    check=False,
                )
                report = json.loads(out.read_text()) if out.is_file() else report
                if not out.is_file():
                    report["error"] = "the grading process died (a crash in the package?)"
            except subprocess.TimeoutExpired:
                report["error"] = f"timed out after {timeout:.0f} s: an endless loop?"
    checks = report.get("checks") or []
    if report.get("error"):
        checks = [{"name": "the part runs", "passed": False, "message": report["error"]}]
    return {
        "score": sum(c["passed"] for c in checks),
        "max": max(len(checks), 1),
        "checks": checks,
        "notes": notes,
        "seconds": round(time.perf_counter() - start, 2),
    }


def grade(student_dir, parts=None, timeout: float = 300, progress=None) -> dict:
    """Grade ``parts`` (all if None) of the package in ``student_dir``."""
    student_pkg = find_package(student_dir)
    parts = list(parts) if parts else list(PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"--part {','.join(unknown)}: no such part; parts: {', '.join(PARTS)}")
    reference = package_sources(PACKAGE)
    results = {}
    for part in parts:
        results[part] = grade_part(student_pkg, part, timeout, reference)
        if progress:
            progress(part, results[part])
    return {
        "student_dir": str(Path(student_dir).resolve()),
        "parts": results,
        "score": sum(r["score"] for r in results.values()),
        "max": sum(r["max"] for r in results.values()),
    }


def format_part(part: str, result: dict) -> str:
    mark = "ok " if result["score"] == result["max"] else "   "
    lines = [f"{mark}{part:16s} {result['score']:2d}/{result['max']:<2d} ({result['seconds']} s)"]
    failed = [c for c in result["checks"] if not c["passed"]]
    if len(failed) > 1 and len({c["message"] for c in failed}) == 1:  # e.g. not written yet
        lines.append(f"      - every check: {failed[0]['message']}")
    else:
        lines += [f"      - {c['name']}: {c['message']}" for c in failed]
    lines += [f"      note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def grade_command(args) -> int:
    from minilora.work.command import USAGE, CommandError, about, check_output

    if args.json:
        check_output(args.json, "--json", "file")
    with about("STUDENT_DIR", args.student_dir):
        find_package(args.student_dir)
    unknown = [p for p in args.part or () if p not in PARTS]
    if unknown:
        raise CommandError(
            f"--part {','.join(unknown)}: no such part; expected some of {', '.join(PARTS)}", USAGE
        )
    report = grade(
        args.student_dir,
        args.part,
        args.timeout,
        progress=lambda part, r: print(format_part(part, r), flush=True),
    )
    print(f"total {report['score']}/{report['max']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


def add_cli(subparsers) -> dict:
    """Add ``minilora grade STUDENT_DIR [--part P,...] [--json FILE] [--timeout S]``."""
    from minilora.work.command import integer, names

    g = subparsers.add_parser(
        "grade",
        help="grade a student package part by part",
        description="Run the project's proofs against the minilora package in STUDENT_DIR "
        "(the folder that holds minilora/), one part at a time; print a score per part.",
    )
    g.add_argument("student_dir")
    g.add_argument("--part", type=names, default=None, help="comma-separated parts (default all)")
    g.add_argument("--json", default=None, help="also write the scores to this JSON file")
    g.add_argument("--timeout", type=integer(1), default=300, help="seconds per part (default 300)")
    return {"grade": lambda args, command: grade_command(args)}
