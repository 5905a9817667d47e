"""The teaching notebooks run from a clean kernel, and their student versions fail only where asked.

Each notebook is executed top to bottom with nbclient
(``minilora.teach.notebook_tools.execute_notebook``); any error fails the test. The student
version (``minilora exercises strip``) must raise NotImplementedError in each exercise's
"check your answer" cell and in no other cell.

Needs the ``notebooks`` extra (nbclient, nbformat, ipykernel); skipped with the reason otherwise.
Notebooks 4 and 5 train small adapters (about a minute each on 2 quiet CPU cores), hence ``slow``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from minilora.teach.exercises import EXERCISES
from minilora.teach.notebook_tools import BEGIN, END, execute_notebook, strip_notebook

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
def test_notebook_runs_from_a_clean_kernel(name, tmp_path):
    _needs_jupyter()
    nb, _ = execute_notebook(NOTEBOOKS / f"{name}.ipynb", tmp_path / "out.ipynb", timeout=TIMEOUT)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]  # fmt: skip
    assert not errors


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
