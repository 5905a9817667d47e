"""Re-run every teaching notebook from a clean kernel and write it back with its outputs.

    python notebooks/run_all.py              # all five, in order
    python notebooks/run_all.py 02 04        # only those whose names start so

It also refreshes ``figures/lora_vs_full_ft.png`` (the README's figure) from notebook 4.
The same as ``minilora exercises execute notebooks/*.ipynb``. Needs the ``notebooks``
extra: ``pip install -e '.[notebooks]'``.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's minilora, installed or not

from minilora.teach.notebook_tools import execute_notebook  # noqa: E402

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


def main(prefixes: list[str]) -> int:
    paths = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if prefixes:
        paths = [p for p in paths if p.name.startswith(tuple(prefixes))]
    total = 0.0
    for path in paths:
        _, seconds = execute_notebook(path, path)
        total += seconds
        print(f"{path.name}: {seconds:.0f} s")
        if path.name == README_FIGURE[0]:
            save_figure(path, *README_FIGURE[1:])
    print(f"{len(paths)} notebooks in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
