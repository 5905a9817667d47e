"""Re-run every teaching notebook from a clean kernel and write it back with its outputs.

    python notebooks/run_all.py              # all six, one after the other
    python notebooks/run_all.py 02 04        # only those whose names start so

It also refreshes ``figures/lora_vs_full_ft.png`` (the README's figure) from notebook 4, and
prints each notebook's wall time and its kernel's CPU time (the CPU seconds of the kernel
process, which has one thread: what the notebook takes on a core of its own, whatever else the
machine is doing). notebooks/README.md states the times measured so.
Like ``minilora exercises execute notebooks/0*.ipynb``, except that the kernel gets one BLAS
thread and the AVX2 code of OpenBLAS and numpy (``notebook_tools.KERNEL_ENV``), as
tests/test_notebooks.py gives it when it checks the committed outputs against a fresh run:
OpenBLAS sums in another order on two threads, and both compute differently with AVX-512 code,
which changes a training run in its last bits.
Needs the ``notebooks`` extra: ``pip install -e '.[notebooks]'``.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's minilora, installed or not

from minilora.teach.notebook_tools import KERNEL_ENV, execute_notebook  # noqa: E402

# The figure the README's "Learn" section shows: notebook 4's loss curves, LoRA against full FT.
README_FIGURE = ("04_finetune_and_merge.ipynb", 0, HERE / "figures" / "lora_vs_full_ft.png")


def save_figure(notebook: Path, index: int, out: Path) -> None:
    """Write the ``index``-th PNG output of ``notebook`` to ``out``."""
    images = [
        o["data"]["image/png"]
        for c in json.loads(notebook.read_text())["cells"]
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(base64.b64decode(images[index]))


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(prefixes: list[str]) -> int:
    paths = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if prefixes:
        paths = [p for p in paths if p.name.startswith(tuple(prefixes))]
    os.environ.update(KERNEL_ENV)  # the kernel inherits this process's environment
    total = 0.0
    for path in paths:
        before = _children_cpu_seconds()
        _, seconds = execute_notebook(path, path)
        total += seconds
        cpu = _children_cpu_seconds() - before  # the kernel, a child process, has exited
        print(f"{path.name}: {seconds:.0f} s wall, {cpu:.0f} s CPU in its kernel")
        if path.name == README_FIGURE[0]:
            save_figure(path, *README_FIGURE[1:])
    print(f"{len(paths)} notebooks in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
