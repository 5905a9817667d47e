"""Rebuild the generated blocks of docs/REPRODUCTION.md from the committed run records.

    python docs/update_tables.py        # from the repository root; trains nothing

Runs ``minilora reproduce`` on every name in ``BLOCKS`` with
``--budget full-recorded`` into a temporary directory, then replaces each block between
``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->`` with NAME.md (its title
dropped, its headings one level down) and copies the figures to docs/figures/. The prose
around the blocks is written by hand from the same tables.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

from minilora.paper.reproduce import reproduce  # noqa: E402
from minilora.work.files import write_atomic  # noqa: E402

BLOCKS = (
    "sweeps", "table4", "table5", "table6", "bases", "converged", "figure2", "table16",
    "appendix_e", "longer", "placement", "loraplus", "scale", "table1",
)  # fmt: skip
FIGURES = {  # written by reproduce -> name under docs/figures
    "sweep-sql.png": "protocol-sweep-sql.png", "sweep-nli.png": "protocol-sweep-nli.png",
    "curves-sql.png": "protocol-curves-sql.png", "curves-nli.png": "protocol-curves-nli.png",
    "table4.png": "protocol-table4.png", "table6.png": "protocol-table6.png",
    "table1.png": "table1.png",
    "bases.png": "protocol-bases.png",
    "converged.png": "protocol-converged.png",
    "converged-directions.png": "protocol-converged-directions.png",
    "figure2.png": "protocol-figure2.png",
}  # fmt: skip


def block(text: str) -> str:
    """A reproduction's Markdown as a block of the document."""
    lines = text.splitlines()[1:]  # the title: the document has its own heading
    lines = ["#" + line if line.startswith("## ") else line for line in lines]
    body = "\n".join(lines).strip()
    for old, new in FIGURES.items():
        body = body.replace(f"]({old})", f"](figures/{new})")
    return body


def main() -> int:
    doc_path = DOCS / "REPRODUCTION.md"
    doc = doc_path.read_text()
    with tempfile.TemporaryDirectory() as out:
        paths = reproduce(list(BLOCKS), "full-recorded", out, progress=False)
        for name in BLOCKS:
            pattern = re.compile(
                rf"(<!-- generated: {name} -->\n).*?(<!-- end generated: {name} -->)", re.S
            )
            if not pattern.search(doc):
                raise SystemExit(f"REPRODUCTION.md has no block '{name}' (its markers are missing)")
            body = block(paths[name].read_text())
            doc = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), doc)
        for old, new in FIGURES.items():
            if (Path(out) / old).is_file():
                shutil.copyfile(Path(out) / old, DOCS / "figures" / new)
    write_atomic(doc_path, doc.encode())
    print(f"{doc_path}: blocks {', '.join(BLOCKS)} rebuilt from the records")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
