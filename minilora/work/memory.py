"""Keep freed activation buffers in the process instead of handing them back to the OS.

Not a fast path of an op (those are in minilora/fast/) but a setting of the process, made
where long work starts; the student package keeps it.
"""

from __future__ import annotations

import os

malloc_tuned = False  # set by tune_malloc()


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds, so that malloc reuses freed activation buffers.

    The engine allocates fresh NumPy arrays for every op (a few MB each). With glibc's
    defaults, buffers above 128 KiB are mmap-ed, and freed ones are returned to the OS, so
    the next step takes them back page by page: tens of thousands of page faults per
    training step (benchmarks/RESULTS.md). Raising the thresholds (``mallopt``, the same as
    the MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ environment variables) lets malloc
    reuse them. Only glibc (Linux) has ``mallopt``; elsewhere, or with
    MINILORA_MALLOC_TUNING=0, nothing changes. Returns True when the thresholds were raised.

    It changes the whole process, so importing minilora never calls it: the places where
    long work starts do (``work.train.train``, the ``minilora`` command, the benchmarks).
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
