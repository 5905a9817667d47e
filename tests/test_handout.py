"""The handout, used as its README says, on a fresh copy (issue 27).

``minilora course make OUT`` writes the handout; then, exactly as OUT/README.md says: the
PYTHONPATH set-up and ``python -m minilora.cli --help`` (the README's set-up block, run by
bash), ``pip install -e .`` (offline, into a bare virtual environment that sees this one's
numpy: ``--no-build-isolation --no-deps --no-index``), ``python -m minilora.cli grade .``
(which must say, in one line, that the grader is not in the handout), the notebooks' check
cells importable from the handout, and course staff grading a part the student wrote.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minilora.teach import student

ROOT = Path(__file__).resolve().parent.parent


def run(args, cwd, env_path=None, shell=False, check=True):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MINILORA_DEVICE")}
    if env_path is not None:
        env["PYTHONPATH"] = str(env_path)
    out = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, shell=shell, timeout=300
    )
    if check:
        assert out.returncode == 0, (args, out.stdout[-2000:], out.stderr[-2000:])
    return out


@pytest.fixture(scope="module")
def handout(tmp_path_factory):
    out = tmp_path_factory.mktemp("handout") / "course"
    run([sys.executable, "-m", "minilora.cli", "course", "make", str(out)], ROOT, ROOT)
    return out


def readme_block(readme: str, after: str) -> list[str]:
    """The indented command lines of the first code block after the words ``after``."""
    rest = readme[readme.index(after) :].split("\n\n", 2)[1]
    return [line.strip().split("  #")[0].strip() for line in rest.splitlines() if line.strip()]


def test_the_readme_set_up_with_pythonpath_runs_as_written(handout):
    readme = (handout / "README.md").read_text()
    block = readme_block(readme, "first on\nPython's path:")
    assert block == ["export PYTHONPATH=$PWD", "python -m minilora.cli --help"], block
    script = "\n".join(["set -e", *block, 'python -c "import minilora; print(minilora.__file__)"'])
    out = run(["bash", "-c", script.replace("python ", f"{sys.executable} ")], handout, None)
    assert "grade" in out.stdout and "course" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == str(handout / "minilora" / "__init__.py")


def test_grade_in_the_handout_says_in_one_line_that_the_grader_is_not_there(handout):
    out = run([sys.executable, "-m", "minilora.cli", "grade", "."], handout, handout, check=False)
    assert out.returncode == 1, out
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert "not in this package" in out.stderr and "full copy of minilora" in out.stderr


def _can_build_editable() -> bool:
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools

    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.mark.skipif(not _can_build_editable(), reason="setuptools >= 70.1 (or wheel) needed")
def test_the_readme_set_up_with_pip_install_runs_as_written(handout, tmp_path):
    readme = (handout / "README.md").read_text()
    block = readme_block(readme, "or install it")
    assert block == ["pip install -e .", "minilora --help"], block
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    site = run([str(python), "-c", "import site; print(site.getsitepackages()[0])"], tmp_path)
    here = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site.stdout.strip()) / "this_env.pth").write_text("\n".join(here) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    offline = ["--no-build-isolation", "--no-deps", "--no-index", "--quiet"]
    run([*pip, "install", *offline, "-e", "."], handout)  # block[0], offline
    out = run([str(venv / "bin" / "minilora"), "--help"], tmp_path)
    assert "grade" in out.stdout
    out = run([str(python), "-c", "import minilora; print(minilora.__file__)"], tmp_path)
    assert out.stdout.strip() == str(handout / "minilora" / "__init__.py")


def test_the_notebooks_check_cells_import_in_the_handout(handout):
    names = set()
    for nb in sorted((handout / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            source = "".join(cell["source"])
            names |= set(re.findall(r"from minilora\.teach\.exercises import (check_\w+)", source))
    assert len(names) >= 14, names
    code = f"from minilora.teach.exercises import {', '.join(sorted(names))}; print('ok')"
    assert run([sys.executable, "-c", code], handout, handout).stdout.strip() == "ok"


def test_course_staff_grade_a_part_the_student_wrote(handout, tmp_path):
    """From the full copy: the handout as made scores 0 in a part; with the student's code
    written between the markers (here the reference's), full marks."""
    argv = [sys.executable, "-m", "minilora.cli", "grade", str(handout), "--part", "greedy"]
    out = run([*argv, "--json", str(tmp_path / "before.json")], ROOT, ROOT)
    assert json.loads((tmp_path / "before.json").read_text())["score"] == 0, out.stdout
    path = handout / "minilora" / "transformer.py"
    written, missing = student.transplant(
        path.read_text(), (student.PACKAGE / "transformer.py").read_text(), {"greedy"}
    )
    assert not missing
    path.write_text(written)
    run([*argv, "--json", str(tmp_path / "after.json")], ROOT, ROOT)
    report = json.loads((tmp_path / "after.json").read_text())
    assert report["score"] == report["max"] >= 2, report
