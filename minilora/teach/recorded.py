"""The notebooks' checkers' answers as data, for the student package, which holds no formula.

``minilora course make`` calls ``write(teach_dir)``: it computes every exercise's answers with
``exercise_answers.answers`` (the right outputs, the known wrong ones, no hints) and writes them
to ``teach_dir/recorded/answers.json`` (the structure) and ``answers.npz`` (the arrays), each
to a temporary name first. ``lookup(name)`` reads them back (``np.load`` without pickle) and is
what ``answers`` returns wherever they exist, that is in the student package only.

JSON holds dicts, lists, strings, numbers and None; an array is ``{"array": key}`` into the
npz file, a tuple (a shape) ``{"tuple": [...]}``, a NumPy scalar its Python number.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FOLDER = "recorded"
STRUCTURE, ARRAYS = "answers.json", "answers.npz"


def _encode(value, arrays: dict):
    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"array": key}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, arrays) for v in value]}
    if isinstance(value, list):
        return [_encode(v, arrays) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v, arrays) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(value, arrays):
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if isinstance(value, dict):
        if set(value) == {"array"}:
            return np.array(arrays[value["array"]])
        if set(value) == {"tuple"}:
            return tuple(_decode(v, arrays) for v in value["tuple"])
        return {k: _decode(v, arrays) for k, v in value.items()}
    return value


def write(teach_dir) -> Path:
    """Record every exercise's answers, without hints, into ``teach_dir/recorded``."""
    from minilora.teach.exercise_answers import answers, names

    folder = Path(teach_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict = {}
    tree = {name: _encode({**answers(name), "hints": {}}, arrays) for name in names()}
    for name, write_to in ((STRUCTURE, _write_json), (ARRAYS, _write_npz)):
        tmp = folder / f".{name}.tmp"
        write_to(tmp, tree if name == STRUCTURE else arrays)
        os.replace(tmp, folder / name)
    return folder


def _write_json(path: Path, tree) -> None:
    path.write_text(json.dumps(tree, indent=1) + "\n")


def _write_npz(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@cache
def _load(folder: Path):
    if not (folder / STRUCTURE).is_file():
        return None
    tree = json.loads((folder / STRUCTURE).read_text())
    with np.load(folder / ARRAYS, allow_pickle=False) as arrays:
        return tree, {k: arrays[k] for k in arrays.files}


def answers(name: str) -> dict:
    """What the checker of exercise ``name`` compares with: the recorded answers in the student
    package, computed from the golden vectors and the reference elsewhere
    (``exercise_answers.answers``, which the student package leaves out)."""
    found = lookup(name)
    if found is not None:
        return found
    from minilora.teach.exercise_answers import answers as compute

    return compute(name)


def hint_of(name: str, output: str = "") -> str:
    """The hint of exercise ``name`` (for ``output``); none in the student package."""
    return answers(name)["hints"].get(output, "")


def lookup(name: str, folder: Path = HERE / FOLDER):
    """The recorded answers of exercise ``name`` (fresh copies), or None where none are."""
    loaded = _load(Path(folder))
    return None if loaded is None else _decode(loaded[0][name], loaded[1])
