"""The ``minilora exercises`` sub-command: strip solutions, write golden vectors, run notebooks.

* ``strip NOTEBOOK OUT``: the student version. Every region between nbgrader's markers
  ``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes ``raise NotImplementedError()``
  at the marker's indentation; outputs are cleared. (nbgrader's own ``generate_assignment``
  accepts the same notebooks: the exercise cells carry its cell metadata.)
* ``golden OUT_DIR``: the golden vectors (``minilora.teach.golden.make_golden``).
* ``execute NOTEBOOK...``: run each notebook top to bottom in a clean kernel (nbclient) and
  write it back with its outputs; this is how the committed notebooks are regenerated.

nbclient and nbformat (the ``notebooks`` extra) are imported only by ``execute``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
# The kernel's environment when a notebook's outputs are written (notebooks/run_all.py) and
# when they are checked (tests/test_notebooks.py): one BLAS thread, because OpenBLAS sums in
# another order on two; and the AVX2 code of OpenBLAS and of numpy's element-wise loops on every
# x86 CPU, because on an AVX-512 CPU both pick other code whose results differ in the last bits
# (a merge's round trip, a softmax, a training run): outputs written on one machine kind would
# not repeat on the other. (numpy 2.x names its AVX-512 targets so; other names only warn.)
KERNEL_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}
STUB = "raise NotImplementedError()"


def strip_source(source: str) -> str:
    """``source`` with every solution region replaced by ``raise NotImplementedError()``."""
    out, inside = [], False
    for line in source.splitlines(keepends=True):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"{BEGIN!r} inside a solution region")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}{STUB}\n")
        elif marker == END:
            if not inside:
                raise ValueError(f"{END!r} without {BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN!r} without {END!r}")
    return "".join(out).rstrip("\n")


def strip_notebook(notebook, out) -> int:
    """Write the student version of ``notebook`` to ``out``; return the number of regions."""
    try:
        nb = json.loads(Path(notebook).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{notebook}: not a Jupyter notebook (not valid JSON: {err})") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ValueError(f"{notebook}: not a Jupyter notebook (expected a JSON object with cells)")
    regions = 0
    for cell in nb["cells"]:
        source = cell["source"]
        source = "".join(source) if isinstance(source, list) else source
        if cell["cell_type"] == "code":
            regions += sum(line.strip() == BEGIN for line in source.splitlines())
            cell["source"] = strip_source(source)
            cell["outputs"], cell["execution_count"] = [], None
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return regions


def execute_notebook(path, out=None, timeout: int = 600, allow_errors: bool = False):
    """Run ``path`` from a clean kernel in its own folder; write it (with outputs) to ``out``.

    Returns (the executed nbformat notebook, seconds). Raises nbclient's
    CellExecutionError on the first failing cell unless ``allow_errors``.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    # the kernel imports the same minilora as this process, installed or not
    root = str(Path(__file__).resolve().parents[2])  # the checkout: minilora/teach/ -> ..
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, saved) if p)
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    seconds = time.perf_counter() - start
    if out is not None:
        nb.metadata.pop("widgets", None)
        nbformat.write(nb, out)
    return nb, seconds


def _strip(args, command):
    from minilora.work.command import about

    with about("NOTEBOOK", args.notebook):
        n = strip_notebook(args.notebook, args.out)
    print(f"{args.out}: {n} solution regions replaced by {STUB}")


def _golden(args, command):
    from minilora.teach.golden import make_golden

    out = make_golden(args.out_dir)
    print(f"golden vectors written to {out} (golden.safetensors, manifest.json)")


def _execute(args, command):
    for path in args.notebooks:
        try:
            _, seconds = execute_notebook(path, path, timeout=args.timeout)
        except Exception as err:
            if type(err).__name__ != "CellExecutionError":  # nbclient's: a cell raised
                raise
            raise RuntimeError(
                f"{path}: a cell raised {getattr(err, 'ename', '?')}: {getattr(err, 'evalue', '')}"
            ) from err
        print(f"{path}: executed in {seconds:.1f} s, outputs written back")


def add_cli(subparsers) -> dict:
    """Add ``exercises {strip,golden,execute}`` to the CLI; return {"exercises": handler}."""
    from minilora.work.command import integer, outputs

    p = subparsers.add_parser("exercises", help="course tools: strip solutions, golden vectors")
    sub = p.add_subparsers(dest="exercises_command", required=True)
    s = sub.add_parser("strip", help="write the student version of a notebook")
    s.add_argument("notebook")
    s.add_argument("out")
    s.set_defaults(exercises_handler=_strip)
    outputs(s, ("out", "OUT", "file"))
    g = sub.add_parser("golden", help="write the golden vectors (safetensors + manifest.json)")
    g.add_argument("out_dir")
    g.set_defaults(exercises_handler=_golden)
    outputs(g, ("out_dir", "OUT_DIR", "dir"))
    e = sub.add_parser("execute", help="run notebooks in a clean kernel, keep their outputs")
    e.add_argument("notebooks", nargs="+")
    e.add_argument("--timeout", type=integer(1), default=600, help="seconds per cell (default 600)")
    e.set_defaults(exercises_handler=_execute)
    return {"exercises": lambda args, command: args.exercises_handler(args, command)}
