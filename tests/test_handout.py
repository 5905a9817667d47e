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


# every checker with its correct answer (tests/answers.py, plain NumPy); those that take a model
# run the package's parts, so they pass once the parts are written
CHECKS = """
import answers as A
from minilora.teach import exercises as E
alone = [
    (E.check_matmul_backward, A.matmul_backward), (E.check_unbroadcast, A.unbroadcast),
    (E.check_softmax_backward, A.softmax_backward),
    (E.check_layer_norm_backward, A.layer_norm_backward), (E.check_lora_init, A.init_lora),
    (E.check_lora_forward, A.lora_forward), (E.check_lora_grads, A.lora_backward),
    (E.check_merge, A.merge_weight, A.unmerge_weight),
    (E.check_lora_param_count, lambda L, d, r, n: 2 * L * d * r * n),
    (E.check_subspace_similarity, A.subspace_similarity), (E.check_exact_match, A.exact_match),
]
with_parts = [
    (E.check_greedy_decode, A.greedy_decode), (E.check_inject_lora, A.add_lora),
    (E.check_training_step, A.answer_targets, A.train_step),
    (E.check_adamw_state_bytes, A.adamw_state_bytes),
]
for check, *answer in alone + with_parts:
    try:
        print(check.__name__, check(*answer))
    except NotImplementedError as err:
        print(check.__name__, "needs", err)
try:
    E.check_softmax_backward(lambda x, g: -A.softmax_backward(x, g))
except AssertionError as err:
    print("wrong sign:", "Likely fault: your result has the wrong sign" in str(err))
    print("no hint:", "Hint:" not in str(err))
"""


def _run_checks(handout) -> dict:
    tests = Path(__file__).resolve().parent
    env = f"{handout}{os.pathsep}{tests}"
    out = run([sys.executable, "-c", CHECKS], handout, env).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def test_the_handouts_checkers_accept_correct_answers_from_recorded_answers(handout):
    """Without any part written, the exercises that take arrays pass on correct answers and
    name a wrong one's fault, with no hint (the handout holds no formula); those that run a
    model say which part of the package they need."""
    seen = _run_checks(handout)
    for name in ("check_matmul_backward", "check_layer_norm_backward", "check_merge",
                 "check_subspace_similarity", "check_lora_init", "check_exact_match"):  # fmt: skip
        assert seen[name].endswith("True"), (name, seen[name])
    assert seen["check_inject_lora"].startswith("needs"), seen
    assert "inject_lora: write this part" in seen["check_training_step"], seen
    assert seen["wrong"] == "sign: True" and seen["no"] == "hint: True", seen


def test_with_every_part_written_every_check_cell_passes(tmp_path):
    out = tmp_path / "course"
    run([sys.executable, "-m", "minilora.cli", "course", "make", str(out)], ROOT, ROOT)
    for rel in student.marked_parts().values():
        for file in set(rel):
            path = out / "minilora" / file
            written, missing = student.transplant(
                path.read_text(), (student.PACKAGE / file).read_text(), set(student.PARTS)
            )
            assert not missing, (file, missing)
            path.write_text(written)
    seen = _run_checks(out)
    checks = {k: v for k, v in seen.items() if k.startswith("check_")}
    assert len(checks) == 15 and all(v.endswith("True") for v in checks.values()), checks


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
