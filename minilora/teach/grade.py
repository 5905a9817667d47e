"""``minilora grade STUDENT_DIR``: grade a student package part by part with the project's proofs.

STUDENT_DIR is the folder that holds the student's ``minilora/`` (what ``minilora course
make`` wrote; the package folder itself is accepted too). For each part the grader

1. copies THIS installation's package (the reference) to a temporary folder and puts the
   student's code into the regions of the graded part only (``# BEGIN STUDENT: <part>``);
   everything else is the reference, so each part is graded alone, one mistake costs points
   in one part only, and nothing the student changed outside the regions is run. The ANSWER
   regions of the graded part (the fast paths that would reveal it) are stubbed, and the
   grading runs with the fast paths off, so no reference code can stand in for the student's;
2. runs ``grade_worker.py`` (beside this file) in a new Python process with ``PYTHONPATH``
   set to that folder, so ``import minilora`` is that package, never this one. The process
   has a memory limit (``--memory``, GiB of address space) and each check a time limit (a
   few seconds, times ``--time-scale``); a check that runs out fails with its own message
   and the next one runs. ``--timeout`` bounds the whole part;
3. collects one result per check: passed, or a message naming the likely fault.

Each part's contract (what its region must define, what it may rely on, whether autograd may
do its backward) is written in ``parts.CONTRACTS`` and in the handout's README. The checks
(``grade_backward.py``, ``grade_engine.py``, ``grade_norms.py``, ``grade_lora.py``,
``grade_merge.py``, ``grade_model.py``, ``grade_train.py``) are left out of the student
package: they would give the answers away. There, ``minilora grade`` says so and stops.

Usage::

    minilora grade STUDENT_DIR                        # every part, a table of scores
    minilora grade STUDENT_DIR --part lora_forward,merge
    minilora grade STUDENT_DIR --json scores.json     # for nbgrader-style courses

The exit status is 0 whatever the scores (a failing part is a grade, not an error); it is
1 or 2 only when the grader itself cannot run (no package in STUDENT_DIR, a bad --part, a
student package without the grader).
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
    MarkerError,
    package_sources,
    regions,
    strip_source,
    transplant,
)

HERE = Path(__file__).resolve().parent
WORKER = HERE / "grade_worker.py"
CHECK_FILES = (
    "grade_worker.py",
    "grade_tools.py",
    "grade_backward.py",
    "grade_engine.py",
    "grade_norms.py",
    "grade_lora.py",
    "grade_merge.py",
    "grade_model.py",
    "grade_train.py",
)
# what a grading copy of the reference leaves out: data no check reads, and the grader itself
SKIP = shutil.ignore_patterns("__pycache__", "pretrained", "records", "golden", "grade*.py")
GIB = 1024**3


class GraderMissing(RuntimeError):
    """The grader's checks are not here: a student package (they would give answers away)."""


def check_grader() -> None:
    missing = [f for f in CHECK_FILES if not (HERE / f).is_file()]
    if missing:
        raise GraderMissing(
            f"the grader's checks are not in this package (minilora/teach/{missing[0]} is "
            "missing): this is a student package, and the checks would give the answers away; "
            "course staff grade it with a full copy of minilora (minilora grade THIS_FOLDER), "
            "and the notebooks' check cells check the exercises"
        )


def find_package(student_dir) -> Path:
    """The student's ``minilora`` package folder inside ``student_dir`` (or ``student_dir``)."""
    path = Path(student_dir)
    for candidate in (path / "minilora", path):
        if (candidate / "__init__.py").is_file() and candidate.name == "minilora":
            return candidate
    raise FileNotFoundError(f"{path}: no minilora package here (expected {path / 'minilora'})")


def count_regions(source: str, part: str, where: str = "source") -> int:
    return sum(p == part and role == "STUDENT" for p, *_, role in regions(source, where))


def hybrid(student_pkg: Path, part: str, root: Path, reference=None) -> tuple[list, list]:
    """Write to ``root/minilora`` the reference package with the student's code in ``part``.

    Returns (problems, notes): problems make the part score 0 (the student's file or its
    markers for ``part`` are missing or broken); notes are reported beside the score."""
    reference = reference if reference is not None else package_sources(PACKAGE)
    target = root / "minilora"
    shutil.copytree(PACKAGE, target, ignore=SKIP)
    problems, notes = [], []
    for rel, ref_source in reference.items():
        if rel.split("/")[0] in LEFT_OUT_FOLDERS or not any(
            p == part for p, *_ in regions(ref_source, rel)
        ):
            continue
        stubbed = strip_source(ref_source, {part})  # no reference code for the part runs
        own_file = student_pkg / rel
        if not own_file.is_file():
            problems.append(f"minilora/{rel} is missing")
            (target / rel).write_text(stubbed)
            continue
        try:
            own = own_file.read_text()
            found, want = count_regions(own, part, rel), count_regions(ref_source, part, rel)
        except (MarkerError, UnicodeDecodeError) as err:
            problems.append(f"minilora/{rel}: {err}")
            (target / rel).write_text(stubbed)
            continue
        if found != want:
            problems.append(
                f"minilora/{rel} has {found} region(s) '# BEGIN/END STUDENT: {part}', the "
                f"handout {want}: put your code back between the markers"
            )
            (target / rel).write_text(stubbed)
            continue
        new, _ = transplant(stubbed, own, {part})
        (target / rel).write_text(new)
    return problems, notes


def grade_part(
    student_pkg: Path,
    part: str,
    timeout: float = 120,
    reference=None,
    scale: float = 1.0,
    memory: float = 3.0,
) -> dict:
    """Grade one part: {"score", "max", "checks": [...], "notes": [...], "seconds"}.

    ``timeout``: seconds for the whole part; ``scale``: multiplies each check's own time
    limit; ``memory``: GiB of address space for the grading process."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"minilora-grade-{part}-") as tmp:
        root = Path(tmp)
        problems, notes = hybrid(student_pkg, part, root, reference)
        report = {"checks": [], "pending": [], "error": "; ".join(problems) or None}
        if not problems:
            report = run_worker(root, part, timeout, scale, memory)
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


def run_worker(root: Path, part: str, timeout: float, scale: float, memory: float) -> dict:
    """Run the worker on ``root`` for ``part``; its report, the unfinished checks failed."""
    out = root / "result.json"
    env = {**os.environ, "PYTHONPATH": str(root), "MINILORA_FAST_PATHS": "0"}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("MINILORA_DEVICE", None)
    args = [sys.executable, str(WORKER), str(root), part, str(out), str(scale)]
    why = "the grading process died during this check (a crash in the package?)"
    try:
        subprocess.run(
            [*args, str(int(memory * GIB))],
            cwd=root,
            env=env,
            timeout=timeout,
            capture_output=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        why = f"the part's time limit ({timeout:.0f} s) ran out during this check: an endless loop?"
    if not out.is_file():
        return {
            "checks": [],
            "pending": [],
            "error": "the grading process died before its "
            "first check (a crash in the package, or the memory limit?)",
        }
    report = json.loads(out.read_text())
    for k, name in enumerate(report.get("pending") or []):
        message = why if k == 0 else "not run: the part stopped at an earlier check"
        report["checks"].append({"name": name, "passed": False, "message": message})
    return report


def grade(
    student_dir, parts=None, timeout: float = 120, progress=None, scale=1.0, memory=3.0
) -> dict:
    """Grade ``parts`` (all if None) of the package in ``student_dir`` (``grade_part``)."""
    check_grader()
    student_pkg = find_package(student_dir)
    parts = list(parts) if parts else list(PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"--part {','.join(unknown)}: no such part; parts: {', '.join(PARTS)}")
    reference = package_sources(PACKAGE)
    results = {}
    for part in parts:
        results[part] = grade_part(student_pkg, part, timeout, reference, scale, memory)
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

    try:
        check_grader()
    except GraderMissing as err:
        raise CommandError(str(err)) from None
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
        scale=args.time_scale,
        memory=args.memory,
    )
    print(f"total {report['score']}/{report['max']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


def add_cli(subparsers) -> dict:
    """Add ``minilora grade STUDENT_DIR [--part P,...] [--json FILE] [--timeout S]``."""
    from minilora.work.command import integer, names, number

    g = subparsers.add_parser(
        "grade",
        help="grade a student package part by part",
        description="Run the project's proofs against the minilora package in STUDENT_DIR "
        "(the folder that holds minilora/), one part at a time; print a score per part.",
    )
    g.add_argument("student_dir")
    g.add_argument("--part", type=names, default=None, help="comma-separated parts (default all)")
    g.add_argument("--json", default=None, help="also write the scores to this JSON file")
    g.add_argument("--timeout", type=integer(1), default=120, help="seconds per part (default 120)")
    g.add_argument(
        "--time-scale",
        type=number(0, low_open=True),
        default=1.0,
        help="multiply each check's time limit (a few seconds) by this (default 1)",
    )
    g.add_argument(
        "--memory",
        type=number(0, low_open=True),
        default=3.0,
        help="GiB of memory for each grading process (default 3)",
    )
    return {"grade": lambda args, command: grade_command(args)}
