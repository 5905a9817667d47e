"""Golden vectors: fixed inputs and the engine's outputs, for graders in any framework.

One command writes them (``minilora exercises golden OUT_DIR``); the shipped copy
is ``minilora/teach/golden/v2/`` (this module is ``minilora.teach.golden``; that folder holds
only data files):

* ``golden.safetensors``: every array, under the key ``CASE/in/NAME`` or
  ``CASE/out/NAME``, float64 (integers as int64; numbers as 0-d arrays). Any
  framework reads it (``safetensors.numpy``, ``safetensors.torch``, ...).
* ``manifest.json``: the minilora version, dtype and tolerances, and for every
  case its function's signature and formula, the seed its inputs were drawn
  with, the exercise it belongs to, and its inputs and outputs in call order.

A grader checks any implementation, ours or a student's, by calling it on a
case's inputs (in the manifest's order) and comparing every output ``got`` with
the stored ``want`` by the one tolerance rule (``RULE``; the notebooks' check cells use
it too): pass if ``max|got - want| <= atol + rtol * max|want|`` over the whole output,
with the tolerance of the dtype the implementation computed in. Integer outputs are
compared by the same rule, which for counts below 10^9 means exactly.

Format 2 (this one) against format 1: an input's ``array_shape`` (was ``shape``) is the
shape of the stored array, and inputs of kind "shape", "int" and "float" also give their
``value``; a case lists the inputs that must receive ``no_gradient``; the manifest states
the tolerance ``rule`` and names what its digest covers (``weights_sha256``).

``reproduce(device)`` recomputes every case with minilora's engine (on NumPy,
or CuPy with "cuda"): the tests hold the engine to the stored vectors.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from minilora.teach.checking import RULE, TOLERANCE, within
from minilora.teach.golden_cases import DTYPE, GoldenCase, golden_cases

__all__ = [
    "DTYPE", "RULE", "TOLERANCE", "GoldenCase", "golden_cases", "load_golden", "make_golden",
    "reproduce", "within",
]  # fmt: skip

FORMAT = "minilora-golden"
FORMAT_VERSION = 2
GOLDEN_DIR = Path(__file__).parent / "golden" / f"v{FORMAT_VERSION}"
WEIGHTS, MANIFEST = "golden.safetensors", "manifest.json"
# ---- writing, reading, checking ----------------------------------------------------------


def _stored(value) -> np.ndarray:
    """``value`` as the array to store, C-ordered: safetensors writes an array's memory as it
    lies, so a transposed view (attention's output is one) would be stored scrambled."""
    if isinstance(value, tuple):  # a shape
        return np.asarray(value, dtype=np.int64)
    if isinstance(value, (int, np.integer)) or np.asarray(value).dtype.kind in "iu":
        return np.asarray(value, dtype=np.int64).copy(order="C")
    return np.asarray(value, dtype=DTYPE).copy(order="C")


def _kind(value) -> str:
    if isinstance(value, tuple):
        return "shape"
    if isinstance(value, (int, np.integer)):
        return "int"
    return "float" if np.ndim(value) == 0 else "array"


def make_golden(out_dir) -> Path:
    """Compute every case with the engine on NumPy; write golden.safetensors + manifest.json."""
    from safetensors.numpy import save

    from minilora._version import __version__
    from minilora.work.io import write_atomic, write_json

    out_dir = Path(out_dir)
    arrays, entries = {}, []
    for case in golden_cases():
        inputs = case.inputs
        outputs = case.reference(inputs, "cpu")
        ins, outs = [], []
        for name, value in inputs.items():
            key = f"{case.name}/in/{name}"
            arrays[key] = _stored(value)
            spec = {"name": name, "key": key, "kind": _kind(value)}
            spec["array_shape"] = list(arrays[key].shape)
            if spec["kind"] != "array":
                spec["value"] = list(value) if isinstance(value, tuple) else value
            ins.append(spec)
        for name, value in outputs.items():
            key = f"{case.name}/out/{name}"
            arrays[key] = _stored(value)
            outs.append({"name": name, "key": key, "array_shape": list(arrays[key].shape)})
        entries.append(
            {
                "name": case.name,
                "signature": case.signature,
                "formula": case.formula,
                "function": case.function,
                "exercise": case.exercise,
                "dtype": "float64",
                "seed": case.seed,
                "no_gradient": list(case.no_gradient),
                "inputs": ins,
                "outputs": outs,
            }
        )
    # safetensors directly, not io.save_arrays: np.ascontiguousarray would turn 0-d into 1-d
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / WEIGHTS, save(arrays, metadata={"format": FORMAT}))
    digest = hashlib.sha256((out_dir / WEIGHTS).read_bytes()).hexdigest()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "minilora_version": __version__,
        "numpy_version": np.__version__,
        "made_by": "minilora exercises golden OUT_DIR",
        "dtype": "float64 (integer inputs as int64, numbers as 0-d arrays)",
        "seed": "per case: numpy.random.default_rng(seed) draws that case's inputs",
        "tolerance": {"rule": RULE, **TOLERANCE},
        "how_to_check": "call the function with each case's inputs in order (kind 'shape' as a "
        "tuple, 'int' as an int, 'float' as a float, 'array' as an array); compare every output "
        "by tolerance.rule; an input listed in a case's no_gradient must receive no gradient "
        "(a frozen weight: requires_grad False, its .grad stays None)",
        "fields": {
            "array_shape": "the shape of the array stored under key in the weights file (a "
            "'shape' input (3, 1) is stored as the int64 array [3, 1], array_shape [2])",
            "value": "inputs of kind shape, int, float: the value itself, as the call takes it",
            "kind": "array: a float64 array; shape: a tuple of ints; int; float (0-d arrays)",
            "no_gradient": "inputs the implementation must not compute a gradient for",
            "weights_sha256": "SHA-256 of the bytes of the weights file, exactly as stored",
        },
        "weights": WEIGHTS,
        "weights_sha256": digest,
        "cases": entries,
    }
    write_json(out_dir / MANIFEST, manifest)
    return out_dir


def load_golden(directory=None) -> tuple[dict, dict]:
    """(manifest, arrays) of a golden directory (default: the shipped ``teach/golden/v2``)."""
    from minilora.work.io import CheckpointError, load_arrays

    directory = Path(directory) if directory is not None else GOLDEN_DIR
    manifest = json.loads((directory / MANIFEST).read_text())
    if manifest.get("format") != FORMAT or manifest.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{directory / MANIFEST}: not a {FORMAT} v{FORMAT_VERSION} manifest")
    return manifest, load_arrays(directory / manifest["weights"])


def case_arguments(entry: dict, arrays: dict) -> dict:
    """A manifest case's inputs as Python values, in call order."""
    out = {}
    for spec in entry["inputs"]:
        value = arrays[spec["key"]]
        kind = spec["kind"]
        out[spec["name"]] = (
            tuple(int(v) for v in value) if kind == "shape"
            else int(value) if kind == "int"
            else float(value) if kind == "float"
            else np.array(value)
        )  # fmt: skip
    return out


def reproduce(device: str = "cpu", directory=None) -> list[dict]:
    """Recompute every stored case with the engine on ``device``; one row per output."""
    manifest, arrays = load_golden(directory)
    references = {case.name: case.reference for case in golden_cases()}
    rows = []
    for entry in manifest["cases"]:
        outputs = references[entry["name"]](case_arguments(entry, arrays), device)
        for spec in entry["outputs"]:
            ok, diff = within(outputs[spec["name"]], arrays[spec["key"]])
            rows.append(
                {"case": entry["name"], "output": spec["name"], "ok": ok, "max_abs_diff": diff}
            )
    return rows
