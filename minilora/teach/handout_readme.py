"""The files ``minilora course make`` writes beside the student package: README.md (how to set
up, the parts in order, each part's contract with the grader, how work is checked) and a
pyproject.toml, so that ``pip install -e .`` works in the handout as the README says.

Every command the README gives is run by tests/test_handout.py on a fresh handout.
"""

from __future__ import annotations

from minilora.teach.parts import CONTRACTS, PARTS

PYPROJECT = """[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "minilora"
version = "0.0.0+student"
description = "minilora with its core left for students to write"
requires-python = ">=3.10"
dependencies = ["numpy>=1.24", "safetensors>=0.4", "tqdm>=4.60"]

[project.scripts]
minilora = "minilora.cli:main"

[tool.setuptools.packages.find]
include = ["minilora*"]

[tool.setuptools.package-data]
minilora = ["**/*.json", "**/*.safetensors", "**/*.txt", "**/*.npz"]
"""


def _rows(parts: dict[str, list[str]]) -> str:
    ordered = sorted(parts.items(), key=lambda item: list(PARTS).index(item[0]))
    return "\n".join(
        f"| {i} | `{part}` | `minilora/{files[0]}` | `{PARTS[part][1]}` | {PARTS[part][2]} |"
        for i, (part, files) in enumerate(ordered, 1)
    )


def _contracts() -> str:
    blocks = []
    for part, c in CONTRACTS.items():
        lines = [f"**`{part}`** ({PARTS[part][1]} in `minilora/{PARTS[part][0]}`)", ""]
        lines.append(f"- must: {c['defines']}")
        lines.append(f"- may rely on: {c['relies']}")
        lines.append(f"- autograd for its backward: {c['autograd']}")
        lines.append(f"- also accepted: {c['accepted']}")
        if c["limits"]:
            lines.append(f"- limits: {c['limits']}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def student_readme(parts: dict[str, list[str]]) -> str:
    return f"""# Build LoRA yourself: the minilora student package

This is minilora (LoRA, Hu et al. 2021, from scratch on a NumPy autograd engine) with its
core left for you to write. Each part is a region of the library's own code between

    # BEGIN STUDENT: <part>
    raise NotImplementedError("<part>: ...")
    # END STUDENT: <part>

Replace the `raise` by your code, between the markers (keep the markers: the grader finds
your code by them). The signature, the docstring and the comments around each region say
what it must do; the contracts below say exactly what is graded. Everything else is the
finished library, so you can use it freely.

## Set up

Work in this folder (the one that holds `minilora/` and this README). Either put it first on
Python's path:

    export PYTHONPATH=$PWD                # Windows: set PYTHONPATH=%CD%
    python -m minilora.cli --help

or install it (this folder has a `pyproject.toml`; numpy, safetensors and tqdm are needed):

    pip install -e .
    minilora --help

Either way, `python -c "import minilora; print(minilora.__file__)"` must print this folder's
`minilora/__init__.py`. The fast paths (fused kernels that would bypass your code) are not in
this package, so your code is what runs.

## The parts, in the order the course meets them

| # | part | file | where | what to write |
|---|------|------|-------|---------------|
{_rows(parts)}

Until a part is written, the code that uses it raises `NotImplementedError` naming the part:
the notebooks (`notebooks/`) run on this package too, so a notebook's cells need the parts
they use.

## What each part must do (its contract with the grader)

Each part is graded alone: the grader puts your code between the markers of that part into
the finished library and runs its checks, so a part may rely on the other parts doing their
job, never on something only your version of another part would do. Only the code between the
markers is graded: write any helper function inside the region. The checks run in float32 as
well as float64 wherever a part computes with floats (a float32 input must give float32
results), and each has a time limit of a few seconds.

{_contracts()}

## Checking your work

* **The notebooks' exercises**: each exercise cell is followed by a check cell
  (`from minilora.teach.exercises import check_...`) that compares your function with the
  reference's answers, recorded in `minilora/teach/recorded/`, and names the likely fault
  when it differs (this package holds no formula, so the checks give no hint). The checks of
  functions of arrays need none of the package's parts; those that take a model (greedy
  decoding, injecting adapters, the training step, AdamW's state) run the parts the model
  uses, and say which one is not written yet.
* **The package's parts** are graded by course staff, with a full copy of minilora:

      minilora grade path/to/this/folder              # every part
      minilora grade path/to/this/folder --part lora_forward
      minilora grade path/to/this/folder --json scores.json

  It runs each part in a separate process with the project's own proofs: finite-difference
  gradient checks in float64, float32 results staying float32, dW = 0 at the start bit for
  bit, dropout where Eq. 3 puts it, merge and unmerge through the model, only A and B
  training, the paper's parameter count 2 x L_hat x d_model x r, greedy decoding, the
  answer-only loss, the training step's order and a short fine-tune that must learn. It
  prints a score per part and, for each failed check, the likely fault. The grader is not in
  this package (its checks would give the answers away): `python -m minilora.cli grade .`
  here says so and stops.
"""
