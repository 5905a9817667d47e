"""The layering of the package, as a test (README, "Layout").

Every module of ``minilora/`` belongs to exactly one layer, and may import only
from its own layer and the layers below it. Imports are read with ``ast`` from
the source, wherever they stand (top of the file or inside a function), and so
are ``importlib`` strings: any string constant that names a minilora module
counts as an import of it. A new file must be placed in ``LAYERS`` before this
test passes, and nothing may import in a cycle.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minilora"

# Lowest first. A module may import its own layer and every layer before it.
LAYERS = {
    "engine": [
        "minilora._version",
        "minilora.backend",
        "minilora.checks",
        "minilora.tensor",
        "minilora.broadcasting",
        "minilora.ops",
        "minilora.functional",
        "minilora.creation",
        "minilora.gradcheck",
    ],
    "model": ["minilora.nn", "minilora.transformer", "minilora.optim"],
    "lora": ["minilora.lora", "minilora.lora_config"],
    "fast": ["minilora.fast"],
    "work": ["minilora.work"],
    "interop": ["minilora.interop"],
    "paper": ["minilora.paper"],
    "teach": ["minilora.teach"],
    "app": ["minilora", "minilora.cli", "minilora.demo"],
}
CORE = ("engine", "model", "lora")
ORDER = list(LAYERS)


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name; a package entry covers everything under it."""
    for layer, members in LAYERS.items():
        for member in members:
            if module == member or (member != "minilora" and module.startswith(member + ".")):
                return layer
    return None


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_sources(root: Path = PACKAGE) -> dict[str, str]:
    """{dotted module name: source} for every .py file of the package."""
    return {module_name(p, root): p.read_text() for p in sorted(root.rglob("*.py"))}


def imports_of(module: str, source: str, known: set[str]) -> set[str]:
    """The minilora modules that ``source`` imports, anywhere in the file."""
    package = (
        module if module in known and _is_package(module, known) else module.rpartition(".")[0]
    )
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .y import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in known and "." in node.value:  # import_module("minilora.paper.x")
                found.add(node.value)
    return {m for m in found if m == "minilora" or m.startswith("minilora.")} - {module}


def _is_package(module: str, known: set[str]) -> bool:
    return any(other.startswith(module + ".") for other in known)


def violations(sources: dict[str, str]) -> list[str]:
    """Every import that goes up a layer, every unplaced module, every cycle."""
    known = set(sources)
    problems, graph = [], {}
    for module, source in sources.items():
        layer = layer_of(module)
        if layer is None:
            problems.append(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
            continue
        graph[module] = imports_of(module, source, known)
        for target in sorted(graph[module]):
            target_layer = layer_of(target)
            if target_layer is None:
                continue  # reported as unplaced above
            if ORDER.index(target_layer) > ORDER.index(layer):
                problems.append(
                    f"{module} ({layer}) imports {target} ({target_layer}): "
                    f"the {layer} layer may not import the {target_layer} layer"
                )
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group) + [sorted(group)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# ---- the package as it is -------------------------------------------------------


def test_every_module_is_placed_and_imports_only_downwards():
    problems = violations(read_sources())
    assert not problems, "\n".join(problems)


def test_the_core_imports_nothing_that_stands_on_it():
    sources = read_sources()
    known = set(sources)
    for module, source in sources.items():
        if layer_of(module) in CORE:
            above = {t for t in imports_of(module, source, known) if layer_of(t) not in CORE}
            assert not above, f"{module} imports {sorted(above)}"


def test_the_engine_knows_no_lora():
    for module in LAYERS["engine"]:
        source = (PACKAGE / f"{module.split('.')[-1]}.py").read_text()
        mentions = re.findall(r"\w*(?<!mini)lora\w*", source, flags=re.IGNORECASE)
        assert not mentions, f"{module} mentions LoRA: {sorted(set(mentions))}"


def test_import_minilora_loads_the_core_only():
    code = (
        "import minilora, sys; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('minilora'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out and all(layer_of(m) in (*CORE, "fast", "app") for m in out), out
    assert "minilora.work" not in out and "minilora.work.data" not in out


def test_import_changes_no_process_settings():
    code = "import minilora, minilora.work.memory as m; print(m.malloc_tuned)"
    env = {"PATH": "/usr/bin:/bin", "MINILORA_MALLOC_TUNING": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "False"


def test_the_core_holds_formulas_and_no_fast_code():
    """Speed lives in minilora/fast/: no core file runs in-place buffer tricks or picks a
    version by the switch (the switch itself, ``fast_twin`` in backend.py, is the exception)."""
    fast_code = re.compile(r"fast_paths_enabled\(|sum_last|row_blocks|copyto|ThreadPool|_plain\b")
    for module in (m for layer in CORE for m in LAYERS[layer] if m != "minilora.backend"):
        source = (PACKAGE / f"{module.split('.')[-1]}.py").read_text()
        found = fast_code.findall(source)
        assert not found, f"{module} holds fast code: {sorted(set(found))}"


def test_no_file_is_over_400_lines():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, long


# ---- the checker itself catches what it should ------------------------------------


def _with(sources, module, extra_line):
    changed = dict(sources)
    changed[module] = sources.get(module, "") + "\n" + extra_line + "\n"
    return changed


@pytest.mark.parametrize(
    "module, line, expected",
    [
        ("minilora.ops", "from minilora.lora import LoRALinear", "engine) imports minilora.lora"),
        ("minilora.tensor", "from minilora import ops", "import cycle"),
        ("minilora.nn", "import minilora.lora", "the model layer may not import the lora"),
        ("minilora.lora", "from minilora.work import io", "lora) imports minilora.work.io"),
        (
            "minilora.transformer",
            "def f():\n    from minilora.work.tasks import make_task",
            "imports minilora.work.tasks",
        ),
        (
            "minilora.paper.tables",
            "import importlib\nimportlib.import_module('minilora.cli')",
            "the paper layer may not import the app",
        ),
        ("minilora.teach.golden", "from minilora import cli", "imports minilora.cli"),
        ("minilora.work.io", "from minilora.interop import adapters", "work) imports"),
        ("minilora.engine_extra", "", "minilora.engine_extra is in no layer"),
    ],
)
def test_a_deliberately_wrong_import_is_caught(module, line, expected):
    sources = read_sources()
    assert not violations(sources)
    problems = violations(_with(sources, module, line))
    assert any(expected in p for p in problems), problems


# ---- the README's tree is the package's ------------------------------------------------


def readme_tree() -> dict[str, set[str]]:
    """{folder: file names} from the README's Layout block ('' is the top of the package)."""
    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    tree: dict[str, set[str]] = {"": set()}
    folder = ""
    for line in block.splitlines():
        words = line.split()
        if not line.startswith("  ") or not words:
            continue
        if words[0].endswith("/"):
            folder = words[0].rstrip("/")
            tree[folder] = {w for w in words[1:] if w.endswith(".py")}
        elif all(w.endswith(".py") for w in words) and line.startswith("    "):
            tree[folder] |= set(words)  # a folder's list continued on the next line
        elif words[0].endswith(".py"):
            tree[""].add(words[0])
    return tree


def test_the_readme_tree_matches_the_package():
    tree = readme_tree()
    for folder, listed in tree.items():
        actual = {p.name for p in (PACKAGE / folder).glob("*.py")} - {"__init__.py"}
        assert listed == actual, (
            f"README's Layout block, minilora/{folder}: missing {sorted(actual - listed)}, "
            f"not in the package {sorted(listed - actual)}"
        )
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders == set(tree) - {""}


def test_the_readme_reading_order_lists_every_core_file_with_its_length():
    """README's "Reading order" table: every file of the core, each with its line count now."""
    readme = (PACKAGE.parent / "README.md").read_text()
    table = readme.split("**Reading order.**", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ") and "`" in line]
    listed = {row[2].strip().strip("`"): int(row[3]) for row in rows}
    core = {f"{m.split('.')[-1]}.py" for layer in CORE for m in LAYERS[layer]}
    core = (core - {"_version.py", "checks.py"}) | {"__init__.py"}
    assert set(listed) == core, set(listed) ^ core
    for name, lines in listed.items():
        actual = len((PACKAGE / name).read_text().splitlines())
        assert lines == actual, f"README says {name} has {lines} lines; it has {actual}"
