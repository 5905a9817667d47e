"""Where a tensor's numbers live: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every op is written once against ``xp``, the array module of its inputs, the
pattern CuPy's guide calls ``cupy.get_array_module``. CuPy is imported only
when a GPU array is asked for, so the CPU path never needs it installed.

Device names are ``"cpu"`` and ``"cuda"``. The default device comes from the
environment variable ``MINILORA_DEVICE`` (``cpu`` when unset).
"""

from __future__ import annotations

import math
import os

import numpy as np

DEVICES = ("cpu", "cuda")
_cupy = None  # the cupy module, once imported


def tune_malloc() -> bool:
    """Keep freed activation buffers in the process instead of handing them back to the OS.

    The engine allocates fresh NumPy arrays for every op (a few MB each). With
    glibc's defaults, buffers above 128 KiB are mmap-ed, and freed ones are
    returned to the OS, so the next step takes them back page by page: tens of
    thousands of page faults per training step, 10-25% of its time here (see
    benchmarks/RESULTS.md). Raising the mmap and trim thresholds (glibc's
    ``mallopt``, the same as the MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_
    environment variables) lets malloc reuse them. Only glibc (Linux) has
    ``mallopt``; elsewhere, or with MINILORA_MALLOC_TUNING=0, nothing changes.
    Returns True when the thresholds were raised.

    It changes the whole process, so importing minilora never calls it: the places
    where long work starts do (``work.train.train``, the ``minilora`` command, the
    benchmarks). Calling it again is harmless.
    """
    global malloc_tuned
    if os.environ.get("MINILORA_MALLOC_TUNING", "1") == "0":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        ok = libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)  # glibc's largest allowed value
        ok &= libc.mallopt(m_trim_threshold, 512 * 1024 * 1024)
        ok &= libc.mallopt(m_top_pad, 64 * 1024 * 1024)  # grow the heap in large steps
        malloc_tuned = bool(ok)
        return malloc_tuned
    except (OSError, AttributeError):
        return False


malloc_tuned = False  # set by tune_malloc()


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
    The fast path (NumPy, rows of a 2-D ``target`` picked by a 1-D ``index``: the
    embedding's backward) is ``scatter_add_rows``.
    """
    xp = get_array_module(target)
    rows = isinstance(index, np.ndarray) and index.ndim == 1 and index.dtype.kind in "iu"
    rows = rows and target.ndim == 2 and np.shape(values) == (index.size, target.shape[1])
    if rows and xp is np and fast_paths_enabled():
        scatter_add_rows(target, index, values)
    elif hasattr(xp.add, "at"):
        xp.add.at(target, index, values)
    else:
        import cupyx

        cupyx.scatter_add(target, index, values)


def scatter_add_rows(target, index, values) -> None:
    """``scatter_add`` for rows: sort the rows of ``values`` by index, sum each run of equal
    indices in one ``add.reduceat``, add each sum once. NumPy's ``add.at`` adds the rows one
    by one, 5-10x slower here (benchmarks/RESULTS.md); the same sums, added in another order."""
    if index.size == 0:
        return
    index = np.where(index < 0, index + target.shape[0], index)  # -1 and rows - 1: one row
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    target[ordered[starts]] += np.add.reduceat(values[order], starts, axis=0)


# ---- sums that NumPy runs slowly ------------------------------------------------
# NumPy sums a short last axis (rows of 64-512 numbers, as in layer norm and softmax) about
# 5x slower than BLAS's matrix-vector product computes the same sums, so the CPU fast paths
# sum rows and columns as products with a vector of ones (benchmarks/RESULTS.md). The
# additions run in another order: equal to ``.sum()`` to a few ulps of the sum of |terms|.
_ones = {}


def _ones_vector(n: int, dtype):
    key = (n, np.dtype(dtype))
    if key not in _ones:
        _ones[key] = np.ones(n, dtype=dtype)
    return _ones[key]


def sum_last(a, scale: float = 1.0, weights=None):
    """``(a * weights).sum(axis=-1, keepdims=True) * scale``, ``weights`` a vector the length
    of a's last axis (None: ones); on NumPy, one matrix-vector product."""
    if not isinstance(a, np.ndarray) or a.ndim == 0:
        return (a if weights is None else a * weights).sum(axis=-1, keepdims=True) * scale
    rows = a.reshape(math.prod(a.shape[:-1]), a.shape[-1])  # (-1 cannot be inferred for 0)
    sums = rows @ (_ones_vector(a.shape[-1], a.dtype) if weights is None else weights)
    if scale != 1.0:
        sums *= scale
    return sums.reshape(*a.shape[:-1], 1)


def sum_rows(a):
    """The sum of a 2-D array's rows, ``a.sum(axis=0)``; on NumPy, one vector-matrix product."""
    if not isinstance(a, np.ndarray):
        return a.sum(axis=0)
    return _ones_vector(a.shape[0], a.dtype) @ a


def describe(device: str) -> str:
    """A human-readable name of the hardware behind ``device`` (for logs and results)."""
    if check_device(device) == "cpu":
        return f"CPU ({os.cpu_count()} cores)"
    props = _import_cupy().cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


# ---- element-wise work on every core ---------------------------------------------
# NumPy runs an element-wise expression on one core, where PyTorch splits it over all of
# them. The CPU fast paths (GELU, layer norm) do that by hand: the rows of an array are cut
# into blocks of about BLOCK_ELEMENTS numbers (small enough that a chain of in-place
# operations on one block stays in the core's cache), and the blocks are shared among
# threads; NumPy releases the GIL inside its loops, so the threads run at once. The blocks
# do not depend on the number of threads, and each row is computed exactly as it would be
# in the whole array, so the results are the same bits on one thread or many.
BLOCK_ELEMENTS = 1 << 16
_threads = None  # cpu_threads(), read once
_pool = None  # the worker threads, made on first use


def cpu_threads() -> int:
    """Threads for element-wise work on the CPU, read once from the environment.

    MINILORA_NUM_THREADS, else OMP_NUM_THREADS or OPENBLAS_NUM_THREADS (the setting a run
    gives its BLAS: a process told to use one core keeps to one), else the CPUs this process
    may run on.
    """
    global _threads
    if _threads is None:
        # Opt-in: with torch imported in the same process, the threaded blocks gave a different
        # demo result (unexplained, 2026-11-30), so the default is one thread.
        for name in ("MINILORA_NUM_THREADS",):
            value = os.environ.get(name, "").strip()
            if not value:
                continue
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{name}={value!r}: expected a whole number of threads >= 1")
            _threads = int(value)
            break
        else:
            _threads = 1
    return _threads


def for_row_blocks(work, rows: int, row_size: int, xp=np) -> None:
    """Call ``work(start, stop)`` on blocks of rows that cover ``range(rows)`` once each.

    On the CPU the blocks hold about BLOCK_ELEMENTS numbers and run on ``cpu_threads()``
    threads; ``work`` must write only its own rows. With CuPy (``xp`` not NumPy) the GPU
    already runs element-wise work in parallel: one call covers every row.
    """
    if xp is not np or rows == 0:
        work(0, rows)
        return
    step = max(1, BLOCK_ELEMENTS // max(row_size, 1))
    blocks = [(start, min(start + step, rows)) for start in range(0, rows, step)]
    n = min(cpu_threads(), len(blocks))
    if n == 1:
        for start, stop in blocks:
            work(start, stop)
        return
    global _pool
    if _pool is None or _pool._max_workers < n - 1:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(n - 1, thread_name_prefix="minilora")

    def share(k):  # every n-th block, from the k-th
        for start, stop in blocks[k::n]:
            work(start, stop)

    futures = [_pool.submit(share, k) for k in range(1, n)]
    try:
        share(0)
    finally:
        for future in futures:  # wait for all; the first error, if any, is raised
            future.result()


def _forget_pool():  # a forked child has none of its parent's threads
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


# ---- the fast-path switch ------------------------------------------------------
# Ops whose fastest form hides their formula (in-place buffers, fused kernels) are
# written twice: the plain version as the math reads, and a fast version beside
# it that the tests hold equal to the plain one. This switch picks which runs.
# The student package (``minilora course make``) writes "0" here: the plain code students write
# is what runs, never a fast path that would bypass it.
FAST_PATHS_DEFAULT = "1"
_fast_paths = os.environ.get("MINILORA_FAST_PATHS", FAST_PATHS_DEFAULT) != "0"


def fast_paths_enabled() -> bool:
    """True when ops take their fast path (the default, except in the student package;
    MINILORA_FAST_PATHS=0 turns it off, =1 on)."""
    return _fast_paths


class fast_paths:
    """Turn the fast paths on or off, for the rest of the process or for a ``with`` block.

    ``minilora.fast_paths(False)`` makes every op run its plain version, so a
    debugger steps through code that reads as the formulas; ``with
    minilora.fast_paths(False): ...`` does that inside the block only.
    """

    def __init__(self, enabled: bool):
        global _fast_paths
        self._previous, _fast_paths = _fast_paths, bool(enabled)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _fast_paths
        _fast_paths = self._previous
