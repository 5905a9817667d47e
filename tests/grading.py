"""Helpers for the grader's tests: a package with one part changed, graded in that part only.

A mutation or an alternative is (part, file, changes, ...): each change is (original text,
new text), the original found exactly once in the reference file, or (REGION, body): the
body of the part's first region in the file replaced. The graded package holds only
``__init__.py`` and the changed file: the grader takes everything else from the reference
(``minilora.teach.grade.hybrid``), so nothing more needs copying.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mutations_graph import REGION

from minilora.teach import grade, student

PACKAGE = student.PACKAGE


def replace_region(source: str, part: str, body: str) -> str:
    found = [r for r in student.regions(source) if r[0] == part and r[4] == "STUDENT"]
    assert found, f"no region {part} here"
    _, begin, end, _, _ = found[0]
    lines = source.splitlines(keepends=True)
    return "".join(lines[: begin + 1]) + body + "".join(lines[end:])


def changed(part: str, file: str, changes) -> str:
    source = (PACKAGE / file).read_text()
    for old, new in changes:
        if old == REGION:
            source = replace_region(source, part, new)
            continue
        assert source.count(old) == 1, f"the snippet is not in {file} once: {old!r}"
        source = source.replace(old, new)
    return source


def package_with(root: Path, part: str, file: str, changes) -> Path:
    """``root/minilora`` holding ``__init__.py`` and ``file`` with ``changes``; the package."""
    pkg = root / "minilora"
    (pkg / file).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(PACKAGE / "__init__.py", pkg / "__init__.py")
    (pkg / file).write_text(changed(part, file, changes))
    return pkg


def grade_changed(tmp_path: Path, part: str, file: str, changes) -> dict:
    """The grade of ``part`` in a package with ``changes`` (grade_part's result)."""
    return grade.grade_part(package_with(tmp_path, part, file, changes), part)


def failed_messages(result: dict) -> str:
    return " | ".join(c["message"] for c in result["checks"] if not c["passed"])
