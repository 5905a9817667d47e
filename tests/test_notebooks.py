"""The teaching notebooks run from a clean kernel, print what they are committed with, and their
student versions fail only where asked.

Each notebook is executed top to bottom with nbclient
(``minilora.teach.notebook_tools.execute_notebook``); any error fails the test, and so does a
**stale output**: a committed text output that a fresh run does not print (``stale_outputs``,
the guard). The student version (``minilora exercises strip``) must raise NotImplementedError in
each exercise's "check your answer" cell and in no other cell.

The guard compares, cell by cell, every text output (stdout, ``text/plain``, ``text/markdown``,
errors) and where each figure appears, after normalising what legitimately varies between two
runs of the same code: timings (a number with a unit of time), memory addresses, and how the
kernel happened to split one cell's stdout into pieces. It does not compare stderr (progress
bars, and warnings that name the interpreter's paths) or the pixels of figures (they change
with matplotlib's version). A cell whose output cannot be made deterministic carries the cell
tag ``nondeterministic`` and a comment ``# nondeterministic: <why>``; the guard skips exactly
those cells, and a test checks that each says why. The kernel runs with one BLAS thread and
the AVX2 code of OpenBLAS and numpy (``notebook_tools.KERNEL_ENV``), as ``notebooks/run_all.py``
does when it writes the committed outputs: OpenBLAS sums in another order on two threads, and
both compute differently with AVX-512 code, which changes training runs in their last bits.

Needs the ``notebooks`` extra (nbclient, nbformat, ipykernel); skipped with the reason otherwise.
Notebooks 4 and 5 train small adapters (minutes on one core: notebooks/README.md), hence ``slow``.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from minilora.teach.exercises import EXERCISES
from minilora.teach.notebook_tools import (
    BEGIN,
    END,
    KERNEL_ENV,
    execute_notebook,
    strip_notebook,
)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = [
    "01_autograd",
    "02_lora_layer",
    "03_tiny_gpt",
    "04_finetune_and_merge",
    "05_understanding_updates",
    "06_two_bases",
]
TRAINS = {"04_finetune_and_merge", "05_understanding_updates"}
TIMEOUT = 600  # seconds per cell: generous, for a loaded CI machine
NONDETERMINISTIC = "nondeterministic"  # the cell tag that exempts a cell's outputs
WHY = re.compile(r"^\s*# nondeterministic: \S", re.M)  # ... and the comment saying why
# What legitimately varies between two runs of the same code, and what it becomes.
VARIES = [
    (re.compile(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)? ?(?:ms|s|seconds?|minutes?)\b"), "<time>"),
    (re.compile(r"\b0x[0-9a-fA-F]{4,}\b"), "0x<address>"),
]


def _needs_jupyter():
    for module in ("nbclient", "nbformat", "ipykernel"):
        pytest.importorskip(
            module, reason=f"{module} is missing: pip install 'minilora[notebooks]'"
        )


def _params(names):
    return [pytest.param(n, marks=[pytest.mark.slow] if n in TRAINS else []) for n in names]


def _cells(path):
    return json.loads(Path(path).read_text())["cells"]


def _source(cell) -> str:
    s = cell["source"]
    return "".join(s) if isinstance(s, list) else s


def _is_check(cell) -> bool:
    return cell["cell_type"] == "code" and cell.get("metadata", {}).get("nbgrader", {}).get("grade")


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def _normalise(text: str) -> str:
    for pattern, replacement in VARIES:
        text = pattern.sub(replacement, text)
    return text


def output_texts(cell) -> list[str]:
    """What the guard compares of a code cell: its outputs as normalised texts, in order.

    Consecutive stdout pieces are joined (the kernel splits a cell's stdout where it likes);
    stderr is left out; a figure counts by its place and type only (``<image/png>``)."""
    texts = []
    for out in cell.get("outputs", []):
        kind = out["output_type"]
        if kind == "stream":
            if out["name"] != "stdout":
                continue
            piece = "[stdout]\n" + _text(out["text"])
            if texts and texts[-1].startswith("[stdout]\n"):
                piece = texts.pop() + _text(out["text"])
            texts.append(piece)
        elif kind in ("display_data", "execute_result"):
            for mime, value in sorted(out.get("data", {}).items()):
                if mime.startswith("text/"):
                    texts.append(f"[{mime}]\n{_text(value)}")
                elif mime.startswith("image/"):
                    texts.append(f"<{mime}>")
        elif kind == "error":
            texts.append(f"[error]\n{out['ename']}: {out['evalue']}")
    return [_normalise(t) for t in texts]


def stale_outputs(committed, fresh) -> list[str]:
    """Each code cell whose committed outputs differ from a fresh run's: its index, then both
    texts. ``committed`` and ``fresh`` are notebooks (JSON dicts or nbformat nodes) with the
    same cells; cells tagged ``nondeterministic`` are skipped."""
    old, new = committed["cells"], fresh["cells"]
    if len(old) != len(new):
        return [f"{len(old)} cells committed, {len(new)} in the fresh run"]
    stale = []
    for i, (a, b) in enumerate(zip(old, new)):
        if a["cell_type"] != "code":
            continue
        if NONDETERMINISTIC in a.get("metadata", {}).get("tags", []):
            continue
        before, after = output_texts(a), output_texts(b)
        if before != after:
            stale.append(
                f"cell {i}: the committed output is not what a fresh run prints\n"
                f"--- committed:\n{chr(10).join(before)}\n--- fresh run:\n{chr(10).join(after)}"
            )
    return stale


def test_every_notebook_is_listed_and_committed_with_outputs():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        cells = _cells(NOTEBOOKS / f"{name}.ipynb")
        code = [c for c in cells if c["cell_type"] == "code"]
        assert all(c.get("outputs") is not None for c in code)
        assert any(c["outputs"] for c in code), f"{name} is committed without outputs"
        assert not any(o["output_type"] == "error" for c in code for o in c["outputs"]), name
        images = [o for c in code for o in c["outputs"] if "image/png" in o.get("data", {})]
        assert 1 <= len(images) <= 6, f"{name}: {len(images)} figures"


def test_exercises_follow_nbgrader_conventions():
    """Every solution region is in an nbgrader solution cell and followed by a check cell."""
    total = 0
    for name in NAMES:
        cells = _cells(NOTEBOOKS / f"{name}.ipynb")
        checked = []
        for i, cell in enumerate(cells):
            src = _source(cell)
            if BEGIN in src:
                assert END in src and cell["metadata"]["nbgrader"]["solution"], (name, i)
                after = next(c for c in cells[i + 1 :] if c["cell_type"] == "code")
                assert _is_check(
                    after
                ) and "from minilora.teach.exercises import check_" in _source(after), (
                    f"{name} cell {i}: no check cell follows the exercise"
                )
                total += src.count(BEGIN)
            if _is_check(cell):
                checked += re.findall(r"check_(\w+)\(", _source(cell))
        assert checked == EXERCISES.get(name, []), name
        ids = [c["metadata"]["nbgrader"]["grade_id"] for c in cells if "nbgrader" in c["metadata"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate nbgrader grade_id"
    assert sum(len(v) for v in EXERCISES.values()) >= 8 and total >= 11


@pytest.mark.parametrize("name", _params(NAMES))
def test_notebook_runs_from_a_clean_kernel_and_prints_its_committed_outputs(
    name, tmp_path, monkeypatch
):
    _needs_jupyter()
    for key, value in KERNEL_ENV.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    path = NOTEBOOKS / f"{name}.ipynb"
    nb, _ = execute_notebook(path, tmp_path / "out.ipynb", timeout=TIMEOUT)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]  # fmt: skip
    assert not errors
    stale = stale_outputs(json.loads(path.read_text()), nb)
    assert not stale, (
        f"{name}: {len(stale)} cell(s) committed with outputs a fresh run does not print "
        f"(re-run it: python notebooks/run_all.py {name[:2]}, and commit it)\n\n"
        + "\n\n".join(stale)
    )


def _committed(name):
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())


def _cell_printing(nb, text):
    """The index of the code cell whose stdout contains ``text``."""
    return next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
                and any(text in _text(o.get("text", "")) for o in c["outputs"]))  # fmt: skip


def test_the_guard_reports_a_stale_output_with_its_cell_and_both_texts():
    committed = _committed("01_autograd")
    fresh = copy.deepcopy(committed)
    i = _cell_printing(committed, "a.grad =")
    out = next(o for o in fresh["cells"][i]["outputs"] if o["output_type"] == "stream")
    out["text"] = _text(out["text"]).replace("[8. 8. 8.]", "[9. 8. 8.]")
    stale = stale_outputs(committed, fresh)
    assert len(stale) == 1
    assert stale[0].startswith(f"cell {i}:")
    committed_part, fresh_part = stale[0].split("--- fresh run:")
    assert "a.grad = [8. 8. 8.]" in committed_part and "[9. 8. 8.]" not in committed_part
    assert "a.grad = [9. 8. 8.]" in fresh_part
    assert stale_outputs(committed, copy.deepcopy(committed)) == []  # itself: nothing stale


def test_the_guard_reports_a_missing_figure_and_a_missing_cell():
    committed = _committed("02_lora_layer")
    fresh = copy.deepcopy(committed)
    i = next(i for i, c in enumerate(fresh["cells"]) if c["cell_type"] == "code"
             and any("image/png" in o.get("data", {}) for o in c["outputs"]))  # fmt: skip
    fresh["cells"][i]["outputs"] = [
        o for o in fresh["cells"][i]["outputs"] if "image/png" not in o.get("data", {})
    ]
    stale = stale_outputs(committed, fresh)
    assert len(stale) == 1 and stale[0].startswith(f"cell {i}:") and "<image/png>" in stale[0]
    fresh["cells"] = fresh["cells"][:-1]
    assert "cells committed" in stale_outputs(committed, fresh)[0]


def test_the_guard_ignores_only_what_legitimately_varies():
    """Timings, addresses, stderr and stdout's split into pieces may differ; a number may not,
    and a changed cell is exempt only when tagged."""
    cell = {
        "cell_type": "code",
        "metadata": {},
        "outputs": [
            {"output_type": "stream", "name": "stdout", "text": "trained in 133 s, 725 ms/step\n"},
            {"output_type": "stream", "name": "stdout", "text": "exact match 0.44\n"},
            {"output_type": "stream", "name": "stderr", "text": "100%|####| 250/250\n"},
            {"output_type": "execute_result", "data": {"text/plain": "<Obj at 0x7f3a9c21d0>"}},
        ],
    }
    same = copy.deepcopy(cell)
    same["outputs"][:3] = [
        {"output_type": "stream", "name": "stdout", "text": "trained in 41 s, 296 ms/step\nex"},
        {"output_type": "stream", "name": "stdout", "text": "act match 0.44\n"},
    ]
    same["outputs"][-1]["data"]["text/plain"] = "<Obj at 0x55d0e1c2b8>"
    wrap = lambda *cells: {"cells": list(cells)}  # noqa: E731
    assert stale_outputs(wrap(cell), wrap(same)) == []
    other = copy.deepcopy(same)
    other["outputs"][1]["text"] = "act match 0.45\n"
    assert len(stale_outputs(wrap(cell), wrap(other))) == 1
    tagged = copy.deepcopy(cell)
    tagged["metadata"]["tags"] = [NONDETERMINISTIC]
    assert stale_outputs(wrap(tagged), wrap(other)) == []


def test_every_nondeterministic_cell_says_why():
    tagged = 0
    for name in NAMES:
        for i, cell in enumerate(_committed(name)["cells"]):
            if NONDETERMINISTIC in cell.get("metadata", {}).get("tags", []):
                tagged += 1
                assert cell["cell_type"] == "code", f"{name} cell {i}: tag a code cell"
                assert WHY.search(_source(cell)), (
                    f"{name} cell {i} is tagged {NONDETERMINISTIC!r} but has no comment "
                    "'# nondeterministic: <why>'"
                )
    assert tagged <= 3, f"{tagged} cells exempt from the guard: make them deterministic"


@pytest.mark.parametrize("name", [n for n in NAMES if n in EXERCISES])
def test_student_version_raises_only_in_the_check_cells(name, tmp_path):
    """Strip, then run up to the last check cell: exactly the check cells raise
    NotImplementedError. Later cells must not use the exercises' functions (checked
    by name), so the rest of the notebook still runs for a learner who skips one."""
    _needs_jupyter()
    student = tmp_path / f"{name}.ipynb"
    strip_notebook(NOTEBOOKS / f"{name}.ipynb", student)
    nb = json.loads(student.read_text())
    cells = nb["cells"]
    last = max(i for i, c in enumerate(cells) if _is_check(c))
    defined = set()
    for cell in cells[: last + 1]:
        if "raise NotImplementedError()" in _source(cell):
            defined |= set(re.findall(r"^def (\w+)\(", _source(cell), flags=re.M))
    for i, cell in enumerate(cells[last + 1 :], start=last + 1):
        used = {f for f in defined if re.search(rf"(?<![.\w]){f}\(", _source(cell))}
        assert not used, f"{name} cell {i} uses the exercise function(s) {used}"
    nb["cells"] = cells[: last + 1]  # nothing after the last check can raise (see above)
    student.write_text(json.dumps(nb))
    done, _ = execute_notebook(student, timeout=TIMEOUT, allow_errors=True)
    raised = {i: o.ename for i, c in enumerate(done.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"}  # fmt: skip
    checks = {i for i, c in enumerate(cells[: last + 1]) if _is_check(c)}
    assert set(raised) == checks, f"errors in cells {sorted(raised)}, check cells {sorted(checks)}"
    assert set(raised.values()) == {"NotImplementedError"}
