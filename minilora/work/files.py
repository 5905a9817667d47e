"""Atomic writes: a file, or a whole directory, is on disk complete or not at all.

A file is written under a temporary name in its own directory, flushed to the
disk (``fsync``) and renamed over the target. ``os.replace`` is atomic, so a
reader, or the next run after a crash, finds the old file or the new one,
never half of one.

A directory (a checkpoint, an adapter, an export) is built the same way one
level up. Every file goes into a fresh temporary directory beside the target.
When the last one is on disk, the old directory is renamed aside, the new one
renamed into its place, and the old one removed. An error or an interruption
before that leaves the old directory as it was and removes the temporary one;
an error between the two renames puts the old one back.

What the old directory held and the new one does not write (training's
``last/`` and ``best/`` beside a final checkpoint, a README of your own) is
moved into the new directory, not lost: only what is written again is replaced.

Files and directories get the permissions the user's umask allows (0644 and
0755 with the usual umask 022), not the owner-only 0600 and 0700 of
``tempfile``, so a saved model is readable like any file the user writes.

This module stands below ``io`` and ``data`` so that both can use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


class CheckpointError(ValueError):
    """A file that is missing, damaged, or not what the caller expected."""


def _umask() -> int:
    """The process's umask (read by setting it and putting it back: Python has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(path) -> None:
    """Flush a directory's entries (new names, renames) to disk, where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory; its renames are durable anyway
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, data: bytes | Callable[[BinaryIO], object]) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename.

    ``data`` is the bytes themselves or a function that writes them into the open
    binary file it is given (``lambda f: fig.savefig(f, format="png")``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_directory(target, replace: bool = True) -> Iterator[Path]:
    """Yield a new, empty temporary directory beside ``target``; it becomes ``target`` at the end.

    Write every file of the directory into the yielded path. When the ``with``
    block ends without an error, the directory is flushed to disk and renamed
    to ``target``. With ``replace=True`` an existing ``target`` is replaced
    then (keeping what only it held, see the module's docstring); with
    ``replace=False`` it must not exist or be empty, and is checked before
    anything is written. On any error, or an interruption, the temporary
    directory is removed and ``target`` is as it was.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise CheckpointError(
            f"{target}: exists and is not a directory; expected a directory there, or nothing "
            "(nothing was written)"
        )
    if not replace and target.is_dir() and any(target.iterdir()):
        raise CheckpointError(
            f"{target}: already exists and is not an empty directory; "
            "choose a new output directory (nothing was written)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield new
        os.chmod(new, 0o777 & ~_umask())  # mkdtemp made it 0700
        _fsync_directory(new)
        _put_in_place(new, target)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise


def _put_in_place(new: Path, target: Path) -> None:
    """Rename the complete directory ``new`` to ``target``; an old ``target`` goes only after."""
    if not target.exists():
        os.replace(new, target)
        _fsync_directory(target.parent)
        return
    old = new.with_suffix(".old")  # .NAME.XXXX.old beside .NAME.XXXX.tmp
    kept = sorted(p.name for p in target.iterdir() if not os.path.lexists(new / p.name))
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)  # the old directory back where it was
        raise
    for name in kept:  # what only the old directory held moves into the new one
        try:
            os.replace(old / name, target / name)
        except OSError as err:
            raise OSError(
                f"{target} is saved, but {old / name} could not be moved into it ({err}); "
                f"move it by hand (the old directory {old} is kept)"
            ) from None
    shutil.rmtree(old)
    _fsync_directory(target.parent)
