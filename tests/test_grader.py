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

from minilora.cli import main
from minilora.teach import grade, student

PACKAGE = student.PACKAGE

# (part, file, [(original, mutated), ...], words the failing message must contain)
MUTATIONS = [
    (
        "lora_forward",
        "lora.py",
        [
            (
                "scaling * B(A(F.dropout(x, p, self.training)))",
                "scaling * (F.dropout(x, p, self.training) @ A.weight @ B.weight)",
            )
        ],
        "transposed",
    ),
    (
        "lora_forward",
        "lora.py",
        [("return self.base_layer(x) + scaling * B(A(", "return self.base_layer(x) + B(A(")],
        "scaling alpha/r is missing",
    ),
    (
        "lora_forward",
        "lora.py",
        [
            (
                "return self.base_layer(x) + scaling * B(A(F.dropout(x, p, self.training)))",
                "return F.dropout(self.base_layer(x) + scaling * B(A(x)), p, self.training)",
            )
        ],
        "dropout goes on the adapter's input",
    ),
    (
        "lora_init",
        "lora.py",
        [
            (
                "B.weight.data = np.zeros_like(B.weight.data)",
                "B.weight.data = rng.normal(0.0, 0.02, B.weight.shape).astype(dtype)",
            )
        ],
        "B is not zero",
    ),
    (
        "lora_init",
        "lora.py",
        [("A.weight.data = a.astype(dtype)", "A.weight.data = np.zeros_like(a).astype(dtype)")],
        "A is zero too",
    ),
    (
        "softmax",
        "functional.py",
        [("out = e / e.sum(axis=axis, keepdims=True)", "out = e / e.sum(axis=0, keepdims=True)")],
        "normalised along axis 0",
    ),
    (
        "softmax",
        "functional.py",
        [
            (
                "return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)",
                "return (out * ((g * out).sum(axis=axis, keepdims=True) - g),)",
            )
        ],
        "wrong sign",
    ),
    (
        "unbroadcast",
        "broadcasting.py",
        [("stretched = tuple(lead + i for i, n", "stretched = tuple(i for i, n")],
        "wrong axes",
    ),
    (
        "unbroadcast",
        "broadcasting.py",
        [
            (
                "stretched, keepdims=True).reshape(shape)",
                "stretched)",
            )
        ],
        "keepdims",
    ),
    (
        "matmul_backward",
        "ops.py",
        [
            (
                "ga = unbroadcast(mm(g, b.data.swapaxes(-1, -2)), a.shape)",
                "ga = unbroadcast(mm(g, b.data), a.shape)",
            )
        ],
        "transposes swapped",
    ),
    (
        "backward",
        "tensor.py",
        [
            (
                "for node in reversed(_topological_order(self)):",
                "for node in _topological_order(self):",
            )
        ],
        "reversed topological order",
    ),
    (
        "backward",
        "tensor.py",
        [
            (
                "pending[key] = parent_grad if key not in pending else pending[key] + parent_grad",
                "pending[key] = parent_grad",
            )
        ],
        "add them up",
    ),
    (
        "backward",
        "tensor.py",
        [("node.grad += g", "node.grad = g")],
        "leaves accumulate",
    ),
    (
        "topo_order",
        "tensor.py",
        [
            (
                "        if children_done:\n            order.append(node)\n",
                "        if children_done:\n",
            ),
            (
                "        seen.add(id(node))\n",
                "        seen.add(id(node))\n        order.append(node)\n",
            ),
        ],
        "post-order",
    ),
    (
        "layer_norm",
        "functional.py",
        [
            (
                "var = ((x.data - mu) ** 2).mean(axis=-1, keepdims=True)",
                "var = x.data.var(axis=-1, ddof=1, keepdims=True)",
            )
        ],
        "n - 1",
    ),
    (
        "unmerge",
        "lora.py",
        [
            (
                "self.base_layer.weight.data = self.base_layer.weight.data - self.delta_weight(",
                "self.base_layer.weight.data = self.base_layer.weight.data + self.delta_weight(",
            )
        ],
        "minus sign",
    ),
    (
        "merge",
        "lora.py",
        [("return (self.configs[name].scaling * (B @ A)).astype(", "return (B @ A).astype(")],
        "scaling alpha/r is missing",
    ),
    (
        "mark_trainable",
        "lora.py",
        [
            (
                'trainable = ".lora_A." in name or ".lora_B." in name\n',
                'trainable = ".lora_A." in name or ".lora_B." in name or "base_layer" in name\n',
            )
        ],
        "W0 is still trainable",
    ),
    (
        "inject_lora",
        "lora.py",
        [
            (
                "chosen = [n for n in names if _matches(n, config.target_modules)]",
                "chosen = [n for n in names if _matches(n, config.target_modules[:1])]",
            )
        ],
        "missing ['blocks.0.attn.v_proj'",
    ),
    (
        "answer_mask",
        "work/tasks.py",
        [("y[i, p - 1 : len(ids) - 1] = ids[p:]", "y[i, : len(ids) - 1] = ids[1:]")],
        "covers the prompt tokens",
    ),
    (
        "greedy",
        "transformer.py",
        [("return logits.argmax(axis=-1)", "return logits.argmin(axis=-1)")],
        "argmin",
    ),
    (
        "greedy",
        "transformer.py",
        [
            (
                "return logits.argmax(axis=-1)",
                "return np.array([np.random.default_rng().choice(len(p), p=np.exp(p - p.max()) / "
                "np.exp(p - p.max()).sum()) for p in logits])",
            )
        ],
        "no sampling",
    ),
    (
        "train_step",
        "work/train.py",
        [("    optimizer.zero_grad()\n    loss.backward()\n", "    loss.backward()\n")],
        "optimizer.zero_grad()",
    ),
]


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
    assert not list((pkg / "teach").glob("grade*.py"))  # the checks would give answers away
    lora = (pkg / "lora.py").read_text()
    assert 'raise NotImplementedError("lora_forward: write this part' in lora
    assert "scaling * B(A(F.dropout" not in lora
    assert "def forward(self, x: Tensor) -> Tensor:" in lora and "Eq. 3" in lora  # kept
    code = (
        "import minilora, minilora.backend as b; from minilora.lora import LoRALinear; "
        "print(b.fast_paths_enabled(), minilora.__file__)"
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
    assert out[0] == "False" and out[1].startswith(str(pkg))


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
    root = copy_reference(tmp_path)
    path = root / "minilora" / file
    source = path.read_text()
    for old, new in changes:
        assert source.count(old) == 1, f"the snippet is not in {file} once: {old!r}"
        source = source.replace(old, new)
    path.write_text(source)
    result = grade.grade(root, [part])["parts"][part]
    messages = " | ".join(c["message"] for c in result["checks"] if not c["passed"])
    assert result["score"] < result["max"], result
    assert words in messages, messages


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
