"""The course kit: the student package (minilora course make) and its grader (minilora grade).

The stripped package scores zero on every part, the reference scores full marks, and each
typical mistake in MUTATIONS, applied to a copy of the reference, loses points in its own
part with a message that names the fault. Each part is graded alone in a subprocess
(about a second a part), so the whole file runs in well under a minute.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from grading import failed_messages, grade_changed
from mutations import MUTATIONS  # the typical mistakes, one per entry

from minilora.cli import main
from minilora.teach import grade, student

PACKAGE = student.PACKAGE


def copy_reference(root: Path) -> Path:
    shutil.copytree(PACKAGE, root / "minilora", ignore=grade.SKIP)
    return root


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    student.make_student_package(out)
    return out


# ---- the markers and the student package -------------------------------------------------------


def test_every_part_is_marked_once_per_region_and_strips_back():
    found = student.marked_parts()
    assert set(found) == set(student.PARTS), set(found) ^ set(student.PARTS)
    for rel, source in student.package_sources().items():
        if not student.regions(source, rel):
            continue
        stripped = student.strip_source(source)
        assert "NotImplementedError" in stripped
        back, missing = student.transplant(stripped, source, set(student.PARTS))
        assert back == source and not missing, rel


def test_markers_that_do_not_pair_up_are_refused():
    with pytest.raises(student.MarkerError, match="without its END"):
        student.regions("x = 1\n    # BEGIN STUDENT: softmax\n")
    with pytest.raises(student.MarkerError, match="without its BEGIN"):
        student.regions("# END STUDENT: softmax\n")


def test_the_student_package(student_dir):
    pkg = student_dir / "minilora"
    readme = (student_dir / "README.md").read_text()
    assert all(f"`{part}`" in readme for part in student.PARTS)
    assert not list((pkg / "teach").glob("grade_*.py"))  # the checks would give answers away
    lora = (pkg / "lora.py").read_text()
    assert 'raise NotImplementedError("lora_forward: write this part' in lora
    assert "scaling * B(A(F.dropout" not in lora
    assert "def forward(self, x: Tensor) -> Tensor:" in lora and "Eq. 3" in lora  # kept
    code = (
        "import minilora, minilora.backend as b; from minilora.lora import LoRALinear; "
        "print(len(b._twins), minilora.__file__)"
    )
    env = {"PYTHONPATH": str(student_dir), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=student_dir,
    ).stdout.split()
    assert out[0] == "0" and out[1].startswith(str(pkg))  # no fast twin: the formulas run
    assert not (pkg / "fast").exists()


# ---- no answers in the student package ---------------------------------------------------------

# code that would give a part away: the fast paths' bodies and the reference regions' key lines
KEY_LINES = [
    "(g * out).sum(axis=axis, keepdims=True)",  # softmax's backward
    "(gp * probs).sum(axis=-1, keepdims=True)",  # ... as a fast twin might write it
    "e / e.sum(axis=-1, keepdims=True)",  # softmax's forward, as attention wrote it
    "(G * xhat).mean(axis=-1, keepdims=True)",  # layer norm's backward
    "(gxhat * xhat).mean(axis=-1, keepdims=True)",  # ... as a fast twin might write it
    "scaling * B(A(F.dropout",  # Eq. 3
    "mm(za, lora_B.data.T)",  # ... as fast/lora.py writes it
    "mm(rows.T, za) * scaling",  # ... and its backward
    "grad.sum(axis=tuple(range(lead)) + stretched",  # unbroadcast
    "mm(g, b.data.swapaxes(-1, -2))",  # matmul's backward
    "B = zeros_linear(config.r, self.out_features, dtype)",  # lora_init
    "self.configs[name].scaling * (B @ A)",  # merge
    # the notebooks' checkers' formulas (now in exercise_answers*.py, left out of the copy)
    "xhat * (g * xhat).mean(-1, keepdims=True)",  # layer norm's backward
    'i["g"] - (i["g"] * s).sum(0, keepdims=True)',  # softmax's backward
    "target = target.sum(axis=i, keepdims=True)",  # unbroadcast
    'i["W0"] - i["alpha"] / i["r"] * i["B"] @ i["A"]',  # merge
    "s * (G @ B).T @ x",  # LoRA's gradients
    "h = h0 + s * (x @ A.T) @ B.T",  # Eq. 3
    "y[: (len(prompt) - 1) if first is None else first] = -100",  # the answer mask
    "np.sum((U1 @ U2.T) ** 2)",  # section 7's phi
]
# generic lines that reference regions share with the rest of the library (no answer in them)
BOILERPLATE = {
    "xp = backend.get_array_module(x.data)",
    "xp = backend.get_array_module(q.data)",
    "hidden = xp.asarray(hidden)",
    "if training and dropout_p > 0.0:",
    "if bias is not None:",
    "out = out.reshape(*x.shape[:-1], weight.shape[0])",
    'if name.endswith("bias"):',
    "if not math.isfinite(value):",
    # notebook 4's check cell trains beside the learner with its own reference step: the two
    # generic lines of every training loop, not the part's answer (clipping, the step's order)
    "_, loss = model(x, y)",
    "optimizer.zero_grad()",
}
HIDDEN = {  # part: (file, function): the fast paths hidden in the student package
    "lora_forward": ("fast/lora.py", "lora_linear"),
    "layer_norm": ("fast/norms.py", "layer_norm"),
    "softmax": ("fast/attention.py", "attention"),
}


def outside_regions(source: str) -> list[str]:
    """The lines of ``source`` outside every marked region, stripped."""
    lines = source.splitlines()
    inside = {i for _, b, e, _, _ in student.regions(source) for i in range(b, e + 1)}
    return [line.strip() for i, line in enumerate(lines) if i not in inside]


def test_the_fast_paths_that_reveal_a_part_are_marked_answer_regions():
    answers = student.marked_parts(roles=("ANSWER",))
    for part, (file, _) in HIDDEN.items():
        assert file in answers.get(part, []), (part, answers)
    assert set(answers) <= set(student.PARTS)
    # the ANSWER regions do not count as the places students write
    assert "fast/lora.py" not in student.marked_parts()["lora_forward"]


def test_the_student_package_holds_no_reference_answer_code(student_dir):
    pkg = student_dir / "minilora"
    copy = student.package_sources(pkg)
    for rel, source in copy.items():  # every region of either kind is exactly its stub
        for part, body, role in student.region_bodies(source):
            assert [line.strip() for line in body] == [student.stub(part, role)], (rel, part)
    for file, _ in HIDDEN.values():  # the fast twins that would reveal a part: left out
        assert file not in copy and not (pkg / file).exists(), file
    everything = "\n".join(copy.values())
    for line in KEY_LINES:
        assert line not in everything, line
    # no code line of a reference region appears anywhere outside the regions of the copy
    reference = set()
    for source in student.package_sources().values():
        for _, body, _ in student.region_bodies(source):
            reference |= {
                t for t in (line.strip() for line in body) if len(t) >= 20 and t[0] != "#"
            }
    # the notebooks' checkers' answers, the golden vectors and their references stay out
    assert not [f for f in copy if f.startswith(("teach/exercise_answers", "teach/golden"))]
    assert not (pkg / "teach" / "golden").exists()
    leaked = {
        (rel, line)
        for rel, source in copy.items()
        for line in outside_regions(source)
        if line in reference and line not in BOILERPLATE
    }
    assert not leaked, sorted(leaked)


def test_without_the_fast_folder_the_written_parts_train_and_merge(tmp_path):
    """The reference without minilora/fast/ (the student package, every part written): no
    twin is installed, and a LoRA GPT trains a step with dropout and merges on the formulas."""
    import shutil

    pkg = copy_reference(tmp_path) / "minilora"
    shutil.rmtree(pkg / "fast")
    code = """
import numpy as np, minilora as ml
from minilora import backend, lora
from minilora.lora_config import LoRAConfig
from minilora.transformer import GPT, GPTConfig
assert backend.fast_paths_enabled() and not backend._twins
ml.manual_seed(0)
gpt = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8, dropout=0.1))
lora.inject_lora(gpt, LoRAConfig(r=2, dropout=0.1))
gpt.train()
idx = np.random.default_rng(0).integers(0, 11, (2, 8))
_, loss = gpt(idx, idx)
loss.backward()
lora.merge(gpt)
lora.unmerge(gpt)
print("trained", loss.item())
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("trained")


# ---- the grader ------------------------------------------------------------------------------


def test_the_stripped_package_scores_zero_everywhere(student_dir):
    report = grade.grade(student_dir)
    assert set(report["parts"]) == set(student.PARTS)
    for part, result in report["parts"].items():
        assert result["score"] == 0, (part, result)
        assert all("not written yet" in c["message"] for c in result["checks"]), result


def test_the_reference_scores_full_marks(tmp_path):
    report = grade.grade(copy_reference(tmp_path))
    failed = {p: r["checks"] for p, r in report["parts"].items() if r["score"] != r["max"]}
    assert not failed, failed
    assert report["score"] == report["max"] >= 35


@pytest.mark.parametrize(
    "part, file, changes, words", MUTATIONS, ids=[f"{m[0]}-{i}" for i, m in enumerate(MUTATIONS)]
)
def test_a_typical_mistake_loses_points_in_its_part_with_the_fault_named(
    tmp_path, part, file, changes, words
):
    result = grade_changed(tmp_path, part, file, changes)
    assert result["score"] < result["max"], result
    assert words in failed_messages(result), failed_messages(result)


def test_there_are_at_least_15_mutations_over_most_parts():
    assert len(MUTATIONS) >= 15
    assert len({m[0] for m in MUTATIONS}) >= 13


def test_grade_command_writes_json_and_exits_0(tmp_path, capsys):
    root = copy_reference(tmp_path / "ref")
    out = tmp_path / "scores.json"
    assert main(["grade", str(root), "--part", "greedy,merge", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["parts"]) == {"greedy", "merge"}
    assert report["score"] == report["max"]
    assert "ok greedy" in capsys.readouterr().out


def test_grade_command_refuses_an_unknown_part_and_a_missing_package(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["grade", str(tmp_path), "--part", "greedy"])
    assert err.value.code == 1 and "no minilora package" in capsys.readouterr().err
    root = copy_reference(tmp_path / "ref")
    with pytest.raises(SystemExit) as err:
        main(["grade", str(root), "--part", "nope"])
    assert err.value.code == 2 and "--part nope" in capsys.readouterr().err


def test_course_make_command(tmp_path, capsys):
    assert main(["course", "make", str(tmp_path / "kit")]) == 0
    assert "15 parts" in capsys.readouterr().out
    assert (tmp_path / "kit" / "minilora" / "lora.py").is_file()
