"""The student package: minilora with its core left for students to write, from the real source.

What students write is marked in the library's own code, so there is one source of truth:
the lines between a comment line ``# BEGIN STUDENT: <part>`` and the comment line
``# END STUDENT: <part>`` (e.g. ``lora_forward`` around Eq. 3 in ``LoRALinear.forward``).

``minilora course make OUT_DIR`` copies the package to ``OUT_DIR/minilora`` and replaces
every marked region by ``raise NotImplementedError("<part>: ...")`` at the marker's
indentation, keeping the markers, the signatures, the docstrings and the comments around
them. It writes ``OUT_DIR/README.md`` for students (how to set up, the parts in order with
the file and function of each, each part's contract with the grader, how work is checked:
``handout_readme.py``) and ``OUT_DIR/pyproject.toml``. The copy leaves out minilora/fast/
(the faster twins of a few ops), so the formulas that students write are what runs; the
grader's checks (``minilora/teach/grade_*.py``) are left out too, since they spell out the
answers (``grade.py`` stays, and says so), and so are the notebooks' checkers' formulas
(``exercise_answers*.py``) and the golden vectors: the checkers in the copy compare with their
answers recorded as data (``recorded.py``). Students put ``OUT_DIR`` first on ``PYTHONPATH``
or ``pip install -e OUT_DIR``, and fill in the parts.

A second kind of region, ``# BEGIN ANSWER: <part>`` / ``# END ANSWER: <part>``, marks
code that is not what students write but would give a part's answer away: the fast
twins (``fast/lora.py`` spells out Eq. 3, ``fast/norms.py`` layer norm's backward,
``fast/attention.py`` softmax's). The copy leaves their folder out; a copy that kept it
would find those regions stubbed. The grader puts the
reference back into the ANSWER regions of every part but the one it grades, and stubs
that part's own (so no reference code for a part ever runs while it is graded).

``minilora grade OUT_DIR`` (``minilora.teach.grade``, from a full copy of minilora) grades
what comes back, part by part. The parts and their contracts: ``parts.py``.
The notebooks for the same course: ``make_student_notebooks`` is the hook that
``course make`` calls; it strips the notebooks of a checkout with ``minilora exercises
strip`` (``notebook_tools.strip_notebook``) and does nothing where there are none.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from minilora.teach.handout_readme import PYPROJECT, student_readme
from minilora.teach.parts import PARTS
from minilora.teach.recorded import write as record_answers

PACKAGE = Path(__file__).resolve().parent.parent  # our minilora/
MARKER = re.compile(
    r"^(?P<indent>[ \t]*)# (?P<kind>BEGIN|END) (?P<role>STUDENT|ANSWER): (?P<part>[a-z_]+)\s*$"
)
ROLES = ("STUDENT", "ANSWER")  # what students write; code elsewhere that would reveal it
# in teach/, what would give the answers away: the grader's checks, the notebooks' checkers'
# formulas (recorded as data instead: recorded.py), the golden vectors and their references
LEFT_OUT = ("grade_*.py", "exercise_answers*.py", "golden*", "torch_grader.py", "recorded")
LEFT_OUT_FOLDERS = ("fast",)  # the fast twins: the formulas students write run instead


class MarkerError(ValueError):
    """Student markers that do not pair up."""


def regions(
    source: str, where: str = "source", roles=ROLES
) -> list[tuple[str, int, int, str, str]]:
    """The marked regions of ``source`` whose role (STUDENT, ANSWER) is in ``roles``:
    (part, BEGIN line index, END line index, indent, role)."""
    found, open_ = [], None
    for i, line in enumerate(source.splitlines()):
        m = MARKER.match(line)
        if m is None:
            continue
        kind, part, role = m["kind"], m["part"], m["role"]
        if kind == "BEGIN":
            if open_ is not None:
                raise MarkerError(f"{where}:{i + 1}: BEGIN {part} inside region {open_[0]}")
            open_ = (part, i, m["indent"], role)
        else:
            if open_ is None or open_[0] != part or open_[3] != role:
                raise MarkerError(f"{where}:{i + 1}: END {role} {part} without its BEGIN")
            if role in roles:
                found.append((open_[0], open_[1], i, open_[2], role))
            open_ = None
    if open_ is not None:
        raise MarkerError(f"{where}:{open_[1] + 1}: BEGIN {open_[0]} without its END")
    return found


def stub(part: str, role: str = "STUDENT") -> str:
    if role == "ANSWER":
        return (
            f'raise NotImplementedError("{part}: the fast path is not in the student package; '
            'fast paths are off")'
        )
    what = PARTS.get(part, ("", "", "this part"))[2]
    return f'raise NotImplementedError("{part}: write this part ({what})")'


def _replace(source: str, bodies, roles=ROLES) -> str:
    """``source`` with the body of its k-th region (of ``roles``) replaced by
    ``bodies(k, part, indent, role)`` (a list of lines, or None to keep it)."""
    lines = source.splitlines(keepends=True)
    out, last = [], 0
    for k, (part, begin, end, indent, role) in enumerate(regions(source, roles=roles)):
        new = bodies(k, part, indent, role)
        if new is None:
            continue
        out += lines[last : begin + 1] + new
        last = end
    return "".join(out + lines[last:])


def strip_source(source: str, parts=None, roles=ROLES) -> str:
    """``source`` with each marked region (of ``parts``, all if None; of ``roles``, both
    STUDENT and ANSWER by default) replaced by its stub."""
    return _replace(
        source,
        lambda k, part, indent, role: (
            None if parts is not None and part not in parts else [f"{indent}{stub(part, role)}\n"]
        ),
        roles,
    )


def region_bodies(source: str, roles=ROLES) -> list[tuple[str, list[str], str]]:
    """(part, the lines between its markers, role) for each region of ``source``, in order."""
    lines = source.splitlines(keepends=True)
    return [(part, lines[b + 1 : e], role) for part, b, e, _, role in regions(source, roles=roles)]


def transplant(target: str, reference: str, parts) -> tuple[str, list[str]]:
    """``target`` with the regions (STUDENT and ANSWER) of ``parts`` taken from
    ``reference`` (the same file).

    Regions pair up by role, part and their order in the file. Returns the new source and
    the parts that could not be paired (markers missing or changed in ``target``)."""
    ref = {}
    for part, body, role in region_bodies(reference):
        ref.setdefault((role, part), []).append(body)
    seen: dict[tuple[str, str], int] = {}

    def body(k, part, indent, role):
        key = (role, part)
        n = seen[key] = seen.get(key, -1) + 1
        if part not in parts or n >= len(ref.get(key, [])):
            return None
        return ref[key][n]

    new = _replace(target, body)
    counts = {key: len(v) for key, v in ref.items() if key[1] in parts}
    missing = [key[1] for key, n in counts.items() if seen.get(key, -1) + 1 != n]
    return new, list(dict.fromkeys(missing))


def package_sources(root: Path = PACKAGE) -> dict[str, str]:
    """{path relative to the package: source} for every .py file under ``root``."""
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def marked_parts(root: Path = PACKAGE, roles=("STUDENT",)) -> dict[str, list[str]]:
    """{part: the files (relative to the package) that mark it for students to write}
    (``roles=("ANSWER",)``: the files that hide code revealing it)."""
    found: dict[str, list[str]] = {}
    for rel, source in package_sources(root).items():
        for part, *_ in regions(source, rel, roles):
            if rel not in found.setdefault(part, []):
                found[part].append(rel)
    return found


def _ignore(directory, names):
    left_out = {"__pycache__"}
    if (Path(directory) / "__init__.py").exists() and Path(directory).name == "minilora":
        left_out |= set(LEFT_OUT_FOLDERS) & set(names)
    if Path(directory).name == "teach":
        left_out |= {n for n in names if any(Path(n).match(p) for p in LEFT_OUT)}
    return left_out


def make_student_package(out_dir, source: Path = PACKAGE) -> dict[str, list[str]]:
    """Write the student package to ``out_dir/minilora`` and ``out_dir/README.md``.

    Returns {part: files} of the parts left to write. ``out_dir/minilora`` must not exist yet
    unless it is an earlier student package (which is replaced)."""
    out_dir = Path(out_dir)
    target = out_dir / "minilora"
    if target.exists():
        if not (target / "__init__.py").exists():
            raise FileExistsError(f"{target} exists and is not a minilora package")
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=_ignore)
    for rel, text in package_sources(target).items():
        stripped = strip_source(text)
        if stripped != text:
            (target / rel).write_text(stripped)
    record_answers(target / "teach")
    parts = marked_parts(source)
    (out_dir / "README.md").write_text(student_readme(parts))
    (out_dir / "pyproject.toml").write_text(PYPROJECT)
    make_student_notebooks(out_dir)
    return parts


def make_student_notebooks(out_dir) -> list[Path]:
    """The hook for the course's notebooks: strip each notebook of a checkout into
    ``out_dir/notebooks`` (``minilora exercises strip``). Nothing where there are none."""
    from minilora.teach.notebook_tools import strip_notebook

    notebooks = sorted((PACKAGE.parent / "notebooks").glob("*.ipynb"))
    written = []
    for nb in notebooks:
        out = Path(out_dir) / "notebooks" / nb.name
        strip_notebook(nb, out)
        written.append(out)
    return written


def _order(item):
    return list(PARTS).index(item[0]) if item[0] in PARTS else len(PARTS)


# ---- the command line -----------------------------------------------------------------


def add_cli(subparsers) -> dict:
    """Add ``minilora course make OUT_DIR`` (``minilora grade``: teach/grade.py)."""
    from minilora.work.command import outputs

    p = subparsers.add_parser("course", help="course kit: write the student package")
    sub = p.add_subparsers(dest="course_command", required=True)
    m = sub.add_parser(
        "make",
        help="write the student package (marked parts stubbed) and its README",
        description="Copy minilora to OUT_DIR/minilora with every '# BEGIN STUDENT' region "
        "replaced by raise NotImplementedError, fast paths off; write OUT_DIR/README.md.",
    )
    m.add_argument("out_dir")
    outputs(m, ("out_dir", "OUT_DIR", "dir"))
    return {"course": _make}


def _make(args, command):
    parts = make_student_package(args.out_dir)
    print(f"{args.out_dir}: student package with {len(parts)} parts to write")
    for part, files in sorted(parts.items(), key=_order):
        print(f"  {part:16s} minilora/{', minilora/'.join(files)}")
