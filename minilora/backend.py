"""Where a tensor's numbers live: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every op is written once against ``xp``, the array module of its inputs, the
pattern CuPy's guide calls ``cupy.get_array_module``. CuPy is imported only
when a GPU array is asked for, so the CPU path never needs it installed.

Device names are ``"cpu"`` and ``"cuda"``. The default device comes from the
environment variable ``MINILORA_DEVICE`` (``cpu`` when unset).
"""

from __future__ import annotations

import functools
import os

import numpy as np

DEVICES = ("cpu", "cuda")
_cupy = None  # the cupy module, once imported


def _import_cupy():
    """Import CuPy and check that a GPU is visible, or explain what is missing."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy
    except ImportError as err:
        raise RuntimeError(
            "device 'cuda' needs CuPy, which is not installed. "
            "Install the GPU extra: pip install 'minilora[gpu]' "
            "(or the cupy-cudaXXx wheel matching your CUDA), or use device='cpu'."
        ) from err
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDA driver missing or broken
        raise RuntimeError(
            f"device 'cuda': CuPy is installed but no CUDA device can be used ({err}). "
            "Available device: 'cpu'."
        ) from err
    if count == 0:
        raise RuntimeError("device 'cuda': CuPy is installed but no GPU was found. Use 'cpu'.")
    _cupy = cupy
    return cupy


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        _import_cupy()
        return True
    except RuntimeError:
        return False


def check_device(device: str | None) -> str:
    """Return a valid device name (``None`` means the default)."""
    if device is None:
        return default_device()
    if device not in DEVICES:
        raise ValueError(f"device={device!r} is not a device; expected one of {DEVICES}")
    return device


def default_device() -> str:
    """The device from ``MINILORA_DEVICE``, or ``"cpu"``."""
    device = os.environ.get("MINILORA_DEVICE", "cpu").strip().lower() or "cpu"
    if device not in DEVICES:
        raise ValueError(f"MINILORA_DEVICE={device!r} is not a device; expected one of {DEVICES}")
    return device


def array_module(device: str):
    """``numpy`` for "cpu", ``cupy`` for "cuda"."""
    return _import_cupy() if check_device(device) == "cuda" else np


def get_array_module(array):
    """The module (numpy or cupy) that owns ``array``."""
    if isinstance(array, np.ndarray) or np.isscalar(array):
        return np
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy
    raise TypeError(f"expected a numpy or cupy array, got {type(array).__name__}")


def get_array_module_or_none(obj):
    """numpy or cupy if ``obj`` is one of their arrays, else None (lists, numbers)."""
    if isinstance(obj, np.ndarray):
        return np
    if _cupy is not None and isinstance(obj, _cupy.ndarray):
        return _cupy
    if _cupy is None and type(obj).__module__.startswith("cupy"):
        return _import_cupy()
    return None


def device_of(array) -> str:
    """The device name, "cpu" or "cuda", of an array."""
    return "cpu" if get_array_module(array) is np else "cuda"


def to_device(array, device: str):
    """Move an array to ``device`` (a no-op when it is already there)."""
    device = check_device(device)
    if device_of(array) == device:
        return array
    if device == "cuda":
        return _import_cupy().asarray(array)
    return _cupy.asnumpy(array)


def to_numpy(array) -> np.ndarray:
    """A NumPy copy (or view) of any array, for printing, saving and testing."""
    return array if isinstance(array, np.ndarray) else to_device(array, "cpu")


def scatter_add(target, index, values) -> None:
    """``target[index] += values`` where repeated indices add up (unbuffered), in place.

    NumPy and CuPy (13 and later) spell it ``add.at``; older CuPy ``cupyx.scatter_add``.
    """
    xp = get_array_module(target)
    if hasattr(xp.add, "at"):
        xp.add.at(target, index, values)
    else:
        import cupyx

        cupyx.scatter_add(target, index, values)


def describe(device: str) -> str:
    """A human-readable name of the hardware behind ``device`` (for logs and results)."""
    if check_device(device) == "cpu":
        return f"CPU ({os.cpu_count()} cores)"
    props = _import_cupy().cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


# ---- the fast-path switch ------------------------------------------------------
# The core writes each op once, as the math reads. A few ops have a faster twin in
# minilora/fast/ (in-place buffers, fused kernels), which ``import minilora`` installs
# (``minilora.fast.install``). An op that may be replaced carries ``@fast_twin``; it runs its
# twin while the fast paths are on and one is installed, else its own body. The student
# package leaves minilora/fast/ out, so there the formulas students write are what runs.
_fast_paths = os.environ.get("MINILORA_FAST_PATHS", "1") != "0"
_twins: dict = {}  # "functional.layer_norm" -> its faster twin, filled by minilora.fast


def fast_twin(op):
    """Mark ``op`` as one that minilora.fast may replace by a faster twin with its signature.

    ``op.plain`` is always the body written here (the tests hold each twin equal to it).
    """
    name = f"{op.__module__.rsplit('.', 1)[-1]}.{op.__qualname__}"

    @functools.wraps(op)
    def dispatch(*args, **kwargs):
        twin = _twins.get(name) if _fast_paths else None
        return (twin or op)(*args, **kwargs)

    dispatch.plain, dispatch.twin_name = op, name
    return dispatch


def install_twin(name: str, twin) -> None:
    """Register ``twin`` as the fast version of the op named ``name`` (None removes it)."""
    if twin is None:
        _twins.pop(name, None)
    else:
        _twins[name] = twin


def fast_paths_enabled() -> bool:
    """True when ops run their installed fast twins (MINILORA_FAST_PATHS=0 turns them off)."""
    return _fast_paths


class fast_paths:
    """Turn the fast paths on or off, for the rest of the process or for a ``with`` block.

    ``minilora.fast_paths(False)`` makes every op run its own body, so a debugger steps
    through code that reads as the formulas; ``with minilora.fast_paths(False): ...`` does
    that inside the block only.
    """

    def __init__(self, enabled: bool):
        global _fast_paths
        self._previous, _fast_paths = _fast_paths, bool(enabled)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _fast_paths
        _fast_paths = self._previous
